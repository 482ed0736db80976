//! `resk-ingest`: batch-embed a corpus of question/answer pairs into resk's cache and vector store.
//!
//! ```text
//! JWT_SECRET=… CACHE_BACKEND=sqlite SQLITE_PATH=resk.sqlite \
//!   cargo run --release -p resk-ingest -- --input faq.jsonl --tenant acme
//! ```
//!
//! It reads the same environment as `resk-server` (cache backend, secrets, embedder, vector store), so
//! the entries it writes are the ones the server answers: same keys, same encryption, same vectors.
//!
//! * **Input:** JSONL, one `{"query", "response", "metadata"?, "language"?, "model"?, "params"?,
//!   "ttl"?}` per line; or CSV with a header row naming at least `query` and `response` (optional
//!   `language`, `model`, `ttl`, and `metadata` as a JSON object); CSV responses are strings.
//! * **Batches:** rows are embedded `--batch` at a time through the embedder pipeline (provider
//!   batching, bounded concurrency, retries) and upserted in one call per batch.
//! * **Resumable:** a row whose entry already exists (same key) is skipped, so an interrupted run is
//!   restarted with the same command. Vectors are written before entries, so a crash between the two
//!   leaves the row "not present" and it is redone.
//! * **Bad rows** are reported with their line number and skipped; the run goes on. A backend failure
//!   (embedder or store down) stops the run with exit code 1; rerun to resume.
//! * **Progress** on a terminal: a bar with rate and ETA; a summary at the end.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use resk_core::{CacheEntry, CacheStore, KeyInput, Origin, TenantId};
use resk_server::{Backends, Config, ServeArgs, semantic::IndexItem};
use serde::Deserialize;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "resk-ingest", version, about)]
struct Args {
    /// Corpus file (`.jsonl` or `.csv`).
    #[arg(long)]
    input: PathBuf,
    /// Input format; default: from the file extension.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Tenant the entries belong to.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Rows embedded and upserted per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Subject recorded as the entries' writer.
    #[arg(long, default_value = "ingest")]
    subject: String,
    /// Server settings (the same variables resk-server reads).
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

/// One input row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    query: String,
    response: serde_json::Value,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    params: Option<serde_json::Value>,
    #[serde(default)]
    ttl: Option<u64>,
}

/// A CSV record (strings only).
#[derive(Debug, Deserialize)]
struct CsvRow {
    query: String,
    response: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    metadata: Option<String>,
}

impl CsvRow {
    fn into_row(self) -> Result<Row, String> {
        let metadata = match self.metadata.filter(|m| !m.trim().is_empty()) {
            None => None,
            Some(m) => Some(
                serde_json::from_str(&m)
                    .map_err(|e| format!("metadata is not a JSON object: {e}"))?,
            ),
        };
        Ok(Row {
            query: self.query,
            response: serde_json::Value::String(self.response),
            metadata,
            language: self.language.filter(|s| !s.is_empty()),
            model: self.model.filter(|s| !s.is_empty()),
            params: None,
            ttl: self.ttl,
        })
    }
}

#[derive(Debug, Default)]
struct Summary {
    ingested: u64,
    skipped: u64,
    bad: Vec<(u64, String)>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.serve.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("resk-ingest: configuration error: {}", e.message());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("resk-ingest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args, &config)) {
        Ok(summary) => {
            let mut err = std::io::stderr().lock();
            for (line, why) in &summary.bad {
                let _ = writeln!(err, "bad row at line {line}: {why}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("resk-ingest: {message}");
            ExitCode::FAILURE
        }
    }
}

fn format_of(args: &Args) -> Result<Format, String> {
    if let Some(f) = args.format {
        return Ok(f);
    }
    match args.input.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson" | "json") => Ok(Format::Jsonl),
        Some("csv") => Ok(Format::Csv),
        _ => Err(format!(
            "cannot tell the format of {}; pass --format jsonl|csv",
            args.input.display()
        )),
    }
}

/// A row's line number and the row, or why it is bad.
type Parsed = (u64, Result<Row, String>);

/// The rows of the file, read as they are consumed (the corpus is never held in memory): each with its
/// line number, parsed or with the reason it is bad. An I/O error ends the run.
fn read_rows(
    path: &Path,
    format: Format,
) -> Result<Box<dyn Iterator<Item = Result<Parsed, String>>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let shown = path.display().to_string();
    match format {
        Format::Jsonl => Ok(Box::new(
            BufReader::new(file)
                .lines()
                .enumerate()
                .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
                .map(move |(i, line)| {
                    let line = line.map_err(|e| format!("{shown}: {e}"))?;
                    let row = serde_json::from_str::<Row>(&line).map_err(|e| e.to_string());
                    Ok((i as u64 + 1, row))
                }),
        )),
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
            let headers = reader
                .headers()
                .map_err(|e| format!("{shown}: header row: {e}"))?
                .clone();
            Ok(Box::new(reader.into_records().map(move |record| {
                match record {
                    Ok(record) => {
                        let line = record.position().map_or(0, |p| p.line());
                        let row = if record.len() != headers.len() {
                            Err(format!(
                                "{} fields; the header has {}",
                                record.len(),
                                headers.len()
                            ))
                        } else {
                            record
                                .deserialize::<CsvRow>(Some(&headers))
                                .map_err(|e| e.to_string())
                                .and_then(CsvRow::into_row)
                        };
                        Ok((line, row))
                    }
                    Err(e) => match e.position() {
                        // A malformed record: report it and go on.
                        Some(p) => Ok((p.line(), Err(e.to_string()))),
                        None => Err(format!("{shown}: {e}")),
                    },
                }
            })))
        }
    }
}

/// Lines in the file (the progress bar's length; a header row or blank lines make it approximate).
fn count_lines(path: &Path) -> Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0u64;
    for line in BufReader::new(file).split(b'\n') {
        line.map_err(|e| format!("{}: {e}", path.display()))?;
        n += 1;
    }
    Ok(n)
}

fn check(row: &Row) -> Result<(), String> {
    if row.query.trim().is_empty() {
        return Err("query is empty".into());
    }
    if row.response.is_null() {
        return Err("response is missing or null".into());
    }
    let raw = CacheEntry::raw(&row.response).map_err(|e| e.message().to_owned())?;
    resk::variants::validate(&raw).map_err(|e| e.message().to_owned())
}

async fn run(args: &Args, config: &Config) -> Result<Summary, String> {
    if config.backend == resk_server::config::CacheBackend::Memory {
        return Err(
            "CACHE_BACKEND=memory would lose everything when ingest exits; use sqlite or redis"
                .into(),
        );
    }
    let tenant = TenantId::new(&args.tenant).map_err(|e| format!("--tenant: {}", e.message()))?;
    let format = format_of(args)?;
    let total = count_lines(&args.input)?;
    let mut rows = read_rows(&args.input, format)?;
    let Backends {
        cache, semantic, ..
    } = resk_server::build_backends(config)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = Summary::default();
    let batch = args.batch.max(1);
    loop {
        let chunk: Vec<Parsed> = rows.by_ref().take(batch).collect::<Result<_, _>>()?;
        if chunk.is_empty() {
            break;
        }
        let mut pending = Vec::new();
        for (line, row) in &chunk {
            let row = match row
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|r| check(r).map(|()| r))
            {
                Ok(row) => row,
                Err(why) => {
                    summary.bad.push((*line, why));
                    continue;
                }
            };
            let ttl = match config.ttl.resolve(row.ttl) {
                Ok(ttl) => ttl,
                Err(e) => {
                    summary.bad.push((*line, format!("ttl: {}", e.message())));
                    continue;
                }
            };
            let input = KeyInput {
                query: &row.query,
                language: row.language.as_deref(),
                model: row.model.as_deref(),
                params: row.params.as_ref(),
                // Ingested answers are shared by the tenant.
                owner: None,
            };
            let key = config.keys.key(&tenant, &input);
            if cache.get(&key).await.map_err(|e| e.to_string())?.is_some() {
                summary.skipped += 1;
                continue;
            }
            let raw = CacheEntry::raw(&row.response).map_err(|e| e.to_string())?;
            let entry = CacheEntry::new(
                tenant.clone(),
                row.query.clone(),
                raw,
                ttl,
                Origin {
                    source: "ingest".into(),
                    subject: Some(args.subject.clone()),
                },
            )
            .map_err(|e| e.to_string())?;
            let scope = semantic
                .as_ref()
                .map(|s| s.scope(&config.keys, &tenant, &input));
            pending.push((key, entry, ttl, scope, row.metadata.clone()));
        }
        if let Some(sem) = &semantic {
            let items: Vec<IndexItem> = pending
                .iter()
                .filter_map(|(key, entry, _, scope, metadata)| {
                    scope.as_ref().map(|scope| IndexItem {
                        key: key.clone(),
                        query: entry.query.clone(),
                        scope: scope.clone(),
                        expires_at: entry.expires_at,
                        metadata: metadata.clone().unwrap_or_default(),
                    })
                })
                .collect();
            sem.index(&tenant, &items)
                .await
                .map_err(|e| format!("vector upsert failed (rerun to resume): {e}"))?;
        }
        for (key, entry, ttl, _, _) in pending {
            let bytes = entry.to_bytes().map_err(|e| e.to_string())?;
            cache
                .set(&key, Bytes::from(bytes), Some(ttl))
                .await
                .map_err(|e| format!("cache write failed (rerun to resume): {e}"))?;
            summary.ingested += 1;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    #[allow(clippy::print_stdout)] // the summary is this program's output
    {
        println!(
            "ingested {} rows, skipped {} already present, {} bad rows, in {:.1}s ({:.0} rows/s)",
            summary.ingested,
            summary.skipped,
            summary.bad.len(),
            secs,
            summary.ingested as f64 / secs
        );
    }
    Ok(summary)
}
