//! The one public error type of resk.
//!
//! Shaped after Apache OpenDAL: a [`ErrorKind`] that callers branch on, the backend and operation that
//! failed, a human message, and an optional source. Backend crates keep their own private error enums
//! and convert them into this one, so `sqlx`, `fred` or `reqwest` types never appear in a public API.

use std::fmt;

/// What went wrong, coarsely: the part of an error callers branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist.
    NotFound,
    /// The caller passed something invalid (empty query, TTL out of range, malformed key …).
    InvalidInput,
    /// Configuration is missing or wrong; raised at start-up.
    Config,
    /// Authentication failed.
    Unauthorized,
    /// Too many requests; retry later.
    RateLimited,
    /// A dependency (database, provider) is unreachable or timed out; retrying may help.
    Unavailable,
    /// The backend cannot do this (for example a filter it cannot translate).
    Unsupported,
    /// A vector does not have the dimensions the index expects.
    DimensionMismatch,
    /// Encryption or decryption failed. Messages stay opaque on purpose.
    Crypto,
    /// Any other backend failure.
    Backend,
}

impl ErrorKind {
    /// A stable, snake_case name, used in metrics labels and API error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Config => "config",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::DimensionMismatch => "dimension_mismatch",
            ErrorKind::Crypto => "crypto",
            ErrorKind::Backend => "backend",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error every resk trait returns.
///
/// ```
/// use resk_core::{Error, ErrorKind};
/// let err = Error::new(ErrorKind::Unavailable, "redis", "get", "connection refused");
/// assert!(err.is_retryable());
/// assert_eq!(err.to_string(), "unavailable at redis::get: connection refused");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{kind} at {backend}::{op}: {message}")]
pub struct Error {
    kind: ErrorKind,
    backend: &'static str,
    op: &'static str,
    message: String,
    retry_after: Option<std::time::Duration>,
    #[source]
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind`, raised by `backend` during `op`.
    pub fn new(
        kind: ErrorKind,
        backend: &'static str,
        op: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            backend,
            op,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// Record how long the service asked callers to wait (an HTTP `Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// How long the service asked callers to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// Attach the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Which backend or component raised it (`"memory"`, `"aes-gcm"`, …).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Which operation failed (`"get"`, `"seal"`, …).
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The human-readable message, without kind, backend or operation.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::RateLimited)
    }

    /// A copy for each caller of one shared call (coalesced loads, micro-batches): kind, backend,
    /// operation, message and retry hint are kept; the source, which cannot be cloned, is not.
    ///
    /// ```
    /// use resk_core::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Unavailable, "openai", "embed", "503")
    ///     .with_retry_after(std::time::Duration::from_secs(2));
    /// let copy = err.replicate();
    /// assert_eq!(copy.to_string(), err.to_string());
    /// assert_eq!(copy.retry_after(), err.retry_after());
    /// ```
    #[must_use]
    pub fn replicate(&self) -> Self {
        Self {
            kind: self.kind,
            backend: self.backend,
            op: self.op,
            message: self.message.clone(),
            retry_after: self.retry_after,
            source: None,
        }
    }
}

/// `Result` with resk's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
