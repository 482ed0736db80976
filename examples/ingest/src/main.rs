//! `resk-ingest`: batch-embed a corpus of question/answer pairs into resk's cache and vector store.
//!
//! ```text
//! JWT_SECRET=… CACHE_BACKEND=sqlite SQLITE_PATH=resk.sqlite \
//!   cargo run --release -p resk-ingest -- --input faq.jsonl --tenant acme
//! ```
//!
//! It reads the same environment as `resk-server` (cache backend, secrets, embedder, vector store:
//! the argument groups of [`resk::env`], which the server flattens too) and writes through the same
//! engine ([`resk::Cache::put_many`]), so the entries it writes are the ones the server answers:
//! same keys, same encryption, same vectors. It depends on `resk`, not on the server.
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

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use resk::{
    Cache, CacheEntry, CacheStore, Lookup, PutOptions, TenantId,
    env::{CacheBackend, ResilienceArgs, SemanticArgs, StoreArgs, StoreConfig},
};
use serde::Deserialize;
use zeroize::Zeroizing;

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
    /// The server's JWT secret: the cache key secret is derived from it when `CACHE_KEY_SECRET`
    /// is unset, as the server does.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Where entries live (the same variables resk-server reads).
    #[command(flatten)]
    store: StoreArgs,
    /// Embedder and vector store (the same variables resk-server reads).
    #[command(flatten)]
    semantic: SemanticArgs,
    /// Circuit breakers and bulkheads.
    #[command(flatten)]
    resilience: ResilienceArgs,
}

/// The validated settings.
struct Config {
    store: StoreConfig,
    semantic: SemanticArgs,
}

impl Args {
    fn resolve(&self) -> resk::Result<Config> {
        let derived = match &self.jwt_secret {
            Some(secret) => Some((
                "JWT_SECRET",
                resk::env::derive_key_secret(
                    Zeroizing::new(secret.clone().into_bytes()).as_slice(),
                )?,
            )),
            None => None,
        };
        self.semantic.validate()?;
        let store = self.store.resolve(derived)?;
        Ok(Config {
            semantic: self.semantic.for_store(&store),
            store,
        })
    }
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
    let config = match args.resolve() {
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

/// The engine the server would run on these settings.
async fn engine(args: &Args, config: &Config) -> resk::Result<Cache> {
    let resilience = args.resilience.config();
    let built = resk::env::build_store(&config.store, resilience).await?;
    let mut builder = Cache::builder()
        .assembled_store(built.cache)
        .keys(config.store.keys.clone())
        .ttl(config.store.ttl);
    if config.semantic.enabled {
        builder = builder.semantic(resk::env::build_semantic(&config.semantic, resilience).await?);
    }
    builder.build()
}

/// The question a row answers.
fn lookup<'a>(tenant: &TenantId, subject: &'a str, row: &'a Row) -> Lookup<'a> {
    let mut lookup = Lookup::new(tenant.clone(), row.query.as_str()).subject(subject);
    if let Some(language) = &row.language {
        lookup = lookup.language(language.as_str());
    }
    if let Some(model) = &row.model {
        lookup = lookup.model(model.as_str());
    }
    if let Some(params) = &row.params {
        lookup = lookup.params_ref(params);
    }
    lookup
}

async fn run(args: &Args, config: &Config) -> Result<Summary, String> {
    if config.store.backend == CacheBackend::Memory {
        return Err(
            "CACHE_BACKEND=memory would lose everything when ingest exits; use sqlite or redis"
                .into(),
        );
    }
    let tenant = TenantId::new(&args.tenant).map_err(|e| format!("--tenant: {}", e.message()))?;
    let format = format_of(args)?;
    let total = count_lines(&args.input)?;
    let mut rows = read_rows(&args.input, format)?;
    let cache = engine(args, config).await.map_err(|e| e.to_string())?;
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
            if let Err(e) = cache.ttl_policy().resolve(row.ttl) {
                summary.bad.push((*line, format!("ttl: {}", e.message())));
                continue;
            }
            // Ingested answers are shared by the tenant.
            let ask = lookup(&tenant, &args.subject, row);
            let key = match cache.key(&ask) {
                Ok(key) => key,
                Err(e) => {
                    summary.bad.push((*line, e.message().to_owned()));
                    continue;
                }
            };
            if cache
                .store()
                .get(&key)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                summary.skipped += 1;
                continue;
            }
            let mut options = PutOptions::new()
                .origin("ingest")
                .metadata(row.metadata.clone().unwrap_or_default());
            if let Some(ttl) = row.ttl {
                options = options.ttl(std::time::Duration::from_secs(ttl));
            }
            pending.push((ask, &row.response, options));
        }
        let stored = cache
            .put_many(&pending)
            .await
            .map_err(|e| format!("{e} (rerun to resume)"))?;
        summary.ingested += stored.len() as u64;
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
