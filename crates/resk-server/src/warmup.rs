//! Start-up warm-up: `WARMUP_FILE` names a JSON Lines file of answers stored before the server
//! listens, so the critical ones are hits from the first request (after a deploy onto an empty
//! memory cache, say).
//!
//! Each non-blank line is a `POST /api/cache` body plus `"tenant"` (required) and `"subject"` (the
//! writer recorded in the entry, default `warmup`), e.g.
//! `{"tenant": "acme", "query": "What are your opening hours?", "response": "9 to 5", "ttl": 86400}`.
//! Entries go through the write path itself: same keys, validation, encryption, semantic indexing.
//!
//! The whole file is read and parsed first: a malformed line (not JSON, no tenant, an unknown field
//! or a wrong type) stops the start-up with its line number, before anything is stored. A line the
//! write path refuses (a `null` response, a TTL over the maximum, an over-long query) stops it too,
//! with the lines before it stored: they are valid entries, and storing them again after the file is
//! fixed rewrites the same keys. A backend that fails meanwhile does not stop it: the server starts
//! (degraded, as it would without warm-up) and the lines not stored are counted and logged.

use std::{path::Path, sync::Arc};

use resk_core::{Error, ErrorKind, Result, TenantId};

use crate::{api::WriteRequest, auth::Principal, routes::store_entry, state::AppState};

/// What a warm-up did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmupReport {
    /// Entries stored.
    pub stored: u64,
    /// Entries the backend failed to store (logged).
    pub failed: u64,
}

fn config_err(path: &Path, line: usize, message: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Config,
        "warmup",
        "parse",
        format!("WARMUP_FILE {}: line {line}: {message}", path.display()),
    )
}

/// One parsed line: who writes it and what.
fn parse_line(path: &Path, number: usize, line: &str) -> Result<(Principal, WriteRequest)> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
        .map_err(|e| config_err(path, number, format!("not a JSON object: {e}")))?;
    let tenant = match object.remove("tenant") {
        Some(serde_json::Value::String(t)) => TenantId::new(&t)
            .map_err(|e| config_err(path, number, format!("tenant: {}", e.message())))?,
        Some(_) => return Err(config_err(path, number, "tenant must be a string")),
        None => return Err(config_err(path, number, "tenant is missing")),
    };
    let subject = match object.remove("subject") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s,
        Some(_) => {
            return Err(config_err(
                path,
                number,
                "subject must be a non-blank string",
            ));
        }
        None => "warmup".to_owned(),
    };
    let request: WriteRequest = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| config_err(path, number, e))?;
    Ok((Principal::internal_writer(&subject, tenant), request))
}

/// Store every line of the file at `path` (see the module docs).
pub(crate) async fn run(app: &Arc<AppState>, path: &Path) -> Result<WarmupReport> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        Error::new(
            ErrorKind::Config,
            "warmup",
            "read",
            format!("WARMUP_FILE {}: {e}", path.display()),
        )
    })?;
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| parse_line(path, i + 1, line).map(|parsed| (i + 1, parsed)))
        .collect::<Result<Vec<_>>>()?;
    let mut report = WarmupReport::default();
    for (number, (principal, request)) in &lines {
        match store_entry(app, principal, request).await {
            Ok(_) => report.stored += 1,
            Err(err) if err.status().is_client_error() => {
                return Err(config_err(
                    path,
                    *number,
                    format!("{} ({})", err.message(), err.code()),
                ));
            }
            Err(err) => {
                report.failed += 1;
                tracing::warn!(
                    line = number,
                    code = err.code(),
                    error = err.message(),
                    "warm-up entry not stored"
                );
            }
        }
    }
    tracing::info!(
        stored = report.stored,
        failed = report.failed,
        file = %path.display(),
        "warm-up done"
    );
    Ok(report)
}
