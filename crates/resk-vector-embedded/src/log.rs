//! The append-only, CRC-checked operation log that makes a collection durable.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
};

use resk_core::{CollectionSpec, Error, ErrorKind, Metric, Result};

const MAGIC: &[u8; 8] = b"RESKVEC1";
const HEADER_LEN: usize = MAGIC.len() + 4 + 1;
const FRAME_HEAD: usize = 8;
/// Largest frame accepted on replay (a 64 Ki-dims vector with 1 MiB of metadata fits).
const MAX_FRAME: usize = 16 << 20;

/// One logged operation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Upsert {
        tenant: String,
        id: String,
        vector: Vec<f32>,
        metadata: serde_json::Map<String, serde_json::Value>,
    },
    Delete {
        tenant: String,
        ids: Vec<String>,
    },
    PurgeTenant {
        tenant: String,
    },
    PurgeAll,
}

fn io_error(op: &'static str, path: &Path, err: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Backend,
        "embedded",
        op,
        format!("{}: {err}", path.display()),
    )
    .with_source(err)
}

fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::L2 => 1,
        Metric::Dot => 2,
    }
}

fn metric_from(code: u8) -> Option<Metric> {
    match code {
        0 => Some(Metric::Cosine),
        1 => Some(Metric::L2),
        2 => Some(Metric::Dot),
        _ => None,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Op {
    /// Append this operation as one frame to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut p = Vec::new();
        match self {
            Op::Upsert {
                tenant,
                id,
                vector,
                metadata,
            } => {
                p.push(1);
                put_str(&mut p, tenant);
                put_str(&mut p, id);
                p.extend_from_slice(&(vector.len() as u32).to_le_bytes());
                for x in vector {
                    p.extend_from_slice(&x.to_le_bytes());
                }
                let meta = serde_json::to_vec(metadata).unwrap_or_else(|_| b"{}".to_vec());
                p.extend_from_slice(&(meta.len() as u32).to_le_bytes());
                p.extend_from_slice(&meta);
            }
            Op::Delete { tenant, ids } => {
                p.push(2);
                put_str(&mut p, tenant);
                p.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                for id in ids {
                    put_str(&mut p, id);
                }
            }
            Op::PurgeTenant { tenant } => {
                p.push(3);
                put_str(&mut p, tenant);
            }
            Op::PurgeAll => p.push(4),
        }
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        out.extend_from_slice(&p);
    }

    fn decode(p: &[u8]) -> Option<Op> {
        let mut r = Reader(p);
        let op = match r.u8()? {
            1 => {
                let tenant = r.string()?;
                let id = r.string()?;
                let n = r.u32()? as usize;
                let raw = r.take(n.checked_mul(4)?)?;
                let vector = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let len = r.u32()? as usize;
                let metadata = serde_json::from_slice(r.take(len)?).ok()?;
                Op::Upsert {
                    tenant,
                    id,
                    vector,
                    metadata,
                }
            }
            2 => {
                let tenant = r.string()?;
                let n = r.u32()? as usize;
                let ids = (0..n).map(|_| r.string()).collect::<Option<Vec<_>>>()?;
                Op::Delete { tenant, ids }
            }
            3 => Op::PurgeTenant {
                tenant: r.string()?,
            },
            4 => Op::PurgeAll,
            _ => return None,
        };
        r.0.is_empty().then_some(op)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// An open log file.
#[derive(Debug)]
pub(crate) struct Log {
    path: PathBuf,
    file: File,
    len: u64,
    sync: bool,
    /// Frames in the file (compaction trigger).
    pub(crate) frames: usize,
}

impl Log {
    /// Create a new, empty log for `spec` (replacing nothing: fails if it exists).
    pub(crate) fn create(path: &Path, spec: CollectionSpec, sync: bool) -> Result<Self> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(spec.dims as u32).to_le_bytes());
        header.push(metric_code(spec.metric));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(|e| io_error("create", path, e))?;
        file.write_all(&header)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("create", path, e))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            len: HEADER_LEN as u64,
            sync,
            frames: 0,
        })
    }

    /// Open an existing log: its spec and every intact operation, in order. A torn or corrupt tail
    /// (a crash mid-append) is cut off so later appends follow the last good frame.
    pub(crate) fn open(path: &Path, sync: bool) -> Result<(Self, CollectionSpec, Vec<Op>)> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io_error("open", path, e))?;
        let corrupt = |what: &str| {
            Error::new(
                ErrorKind::Backend,
                "embedded",
                "open",
                format!("{}: {what}", path.display()),
            )
        };
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a resk vector log"));
        }
        let dims = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let metric = metric_from(bytes[12]).ok_or_else(|| corrupt("unknown metric"))?;
        let spec = CollectionSpec { dims, metric };
        let mut ops = Vec::new();
        let mut at = HEADER_LEN;
        while bytes.len() - at >= FRAME_HEAD {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                as usize;
            let crc =
                u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
            let start = at + FRAME_HEAD;
            if len > MAX_FRAME || bytes.len() - start < len {
                break;
            }
            let payload = &bytes[start..start + len];
            if crc32fast::hash(payload) != crc {
                break;
            }
            let Some(op) = Op::decode(payload) else {
                break;
            };
            ops.push(op);
            at = start + len;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_error("open", path, e))?;
        if at < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                kept = ops.len(),
                dropped_bytes = bytes.len() - at,
                "vector log had a torn or corrupt tail (crash during a write?); cut it off"
            );
            file.set_len(at as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("open", path, e))?;
        }
        let frames = ops.len();
        Ok((
            Self {
                path: path.to_owned(),
                file,
                len: at as u64,
                sync,
                frames,
            },
            spec,
            ops,
        ))
    }

    /// Append encoded frames. On failure the file is cut back, so the log never holds half a batch.
    pub(crate) fn append(&mut self, frames: &[u8], count: usize) -> Result<()> {
        let written = self.file.write_all(frames).and_then(|()| {
            if self.sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(err) = written {
            let _ = self.file.set_len(self.len);
            return Err(io_error("append", &self.path, err));
        }
        self.len += frames.len() as u64;
        self.frames += count;
        Ok(())
    }

    /// Replace the log by one holding exactly `ops` (written to a temporary file, synced, renamed).
    pub(crate) fn rewrite(&mut self, spec: CollectionSpec, ops: &[Op]) -> Result<()> {
        let tmp = self.path.with_extension("bin.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut fresh = Log::create(&tmp, spec, self.sync)?;
        let mut buf = Vec::new();
        for op in ops {
            op.encode(&mut buf);
            if buf.len() > 8 << 20 {
                fresh.append(&buf, 0)?;
                buf.clear();
            }
        }
        fresh.append(&buf, 0)?;
        fresh
            .file
            .sync_all()
            .map_err(|e| io_error("compact", &tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io_error("compact", &self.path, e))?;
        if let Some(dir) = self.path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        fresh.path = self.path.clone();
        fresh.frames = ops.len();
        *self = fresh;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.bin");
        let spec = CollectionSpec {
            dims: 2,
            metric: Metric::Cosine,
        };
        let ops = vec![
            Op::Upsert {
                tenant: "t".into(),
                id: "a".into(),
                vector: vec![1.0, -2.5],
                metadata: serde_json::json!({"lang": "en"})
                    .as_object()
                    .unwrap()
                    .clone(),
            },
            Op::Delete {
                tenant: "t".into(),
                ids: vec!["a".into(), "b".into()],
            },
            Op::PurgeTenant { tenant: "u".into() },
            Op::PurgeAll,
        ];
        let mut log = Log::create(&path, spec, false).unwrap();
        let mut buf = Vec::new();
        for op in &ops {
            op.encode(&mut buf);
        }
        log.append(&buf, ops.len()).unwrap();
        // A crash mid-append: half a frame at the end.
        let mut half = Vec::new();
        ops[0].encode(&mut half);
        log.append(&half[..half.len() / 2], 1).unwrap();
        drop(log);

        let (mut log, got_spec, got) = Log::open(&path, false).unwrap();
        assert_eq!((got_spec, got.clone()), (spec, ops.clone()));
        // Appends after the cut follow the last good frame.
        log.append(&half, 1).unwrap();
        drop(log);
        let (_, _, again) = Log::open(&path, false).unwrap();
        assert_eq!(again.len(), ops.len() + 1);
        assert_eq!(again[ops.len()], ops[0]);
    }
}
