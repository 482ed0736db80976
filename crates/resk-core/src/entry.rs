//! What a cached answer looks like once serialised, and how long it may live.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Error, ErrorKind, Result, TenantId};

/// Version of the [`CacheEntry`] layout; bumped on incompatible changes so old entries read as misses.
pub const SCHEMA_VERSION: u16 = 1;

/// Who or what wrote an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// How the entry arrived (`"api"`, `"ingest"`, `"library"`).
    pub source: String,
    /// The authenticated subject that wrote it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// A cached answer with its metadata: the value resk serialises into a [`crate::CacheStore`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Layout version, see [`SCHEMA_VERSION`].
    pub schema_version: u16,
    /// The tenant the entry belongs to (checked again on read, defence in depth).
    pub tenant: TenantId,
    /// The query as the writer sent it (encrypted at rest along with the rest of the entry).
    pub query: String,
    /// The cached answer, any JSON value, kept as raw JSON text: it is served back byte for byte
    /// without being parsed and re-serialised on every hit.
    pub response: Box<serde_json::value::RawValue>,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being served.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Who wrote it.
    pub origin: Origin,
    /// The subject the entry is private to (`visibility: "user"`); `None`: shared by the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// End of the grace period after `expires_at` during which the entry may still be served,
    /// flagged stale, while the caller refreshes it (stale-while-revalidate); `None`: no grace.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub stale_until: Option<OffsetDateTime>,
    /// What users reported about this entry's semantic hits (absent until the first report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
}

/// Feedback on an entry's semantic hits: the reports (similarity of the hit, right or wrong) and
/// the queries reported wrong, from which the engine derives the entry's own bounds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// The most recent reports, oldest first: `(similarity, correct)`.
    #[serde(default)]
    pub reports: Vec<(f32, bool)>,
    /// Keys (names) of the queries reported as wrongly answered by this entry: never again.
    #[serde(default)]
    pub blocked: Vec<String>,
    /// Reports ever received (the list above keeps the most recent ones).
    #[serde(default)]
    pub right: u32,
    /// Wrong reports ever received.
    #[serde(default)]
    pub wrong: u32,
}

impl PartialEq for CacheEntry {
    fn eq(&self, other: &Self) -> bool {
        self.schema_version == other.schema_version
            && self.tenant == other.tenant
            && self.query == other.query
            && self.response.get() == other.response.get()
            && self.created_at == other.created_at
            && self.expires_at == other.expires_at
            && self.origin == other.origin
            && self.owner == other.owner
            && self.stale_until == other.stale_until
            && self.feedback == other.feedback
    }
}

impl CacheEntry {
    /// A new entry written now, living for `ttl`. Use [`CacheEntry::raw`] to turn a
    /// `serde_json::Value` into the raw response.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `ttl` is longer than [`TtlPolicy::LONGEST`] (its expiry
    /// would not be a representable date).
    pub fn new(
        tenant: TenantId,
        query: String,
        response: Box<serde_json::value::RawValue>,
        ttl: Duration,
        origin: Origin,
    ) -> Result<Self> {
        let created_at = OffsetDateTime::now_utc();
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            tenant,
            query,
            response,
            created_at,
            expires_at: later(created_at, ttl)?,
            origin,
            owner: None,
            stale_until: None,
            feedback: None,
        })
    }

    /// Serve the entry, flagged stale, for `grace` after its expiry (stale-while-revalidate); a
    /// zero `grace` clears the grace period.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the grace period is longer than [`TtlPolicy::LONGEST`].
    pub fn set_grace(&mut self, grace: Duration) -> Result<()> {
        self.stale_until = if grace.is_zero() {
            None
        } else {
            Some(later(self.expires_at, grace)?)
        };
        Ok(())
    }

    /// Serialise a JSON value into the raw form entries hold.
    pub fn raw(value: &serde_json::Value) -> Result<Box<serde_json::value::RawValue>> {
        serde_json::value::to_raw_value(value).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "entry",
                "encode",
                "response is not serialisable",
            )
            .with_source(e)
        })
    }

    /// The last moment the entry may be served: the end of its grace period, or its expiry.
    pub fn servable_until(&self) -> OffsetDateTime {
        servable_until(self.expires_at, self.stale_until)
    }

    /// Whether the entry is past its expiry at `now`.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at
    }

    /// Serialise to bytes (JSON).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "entry",
                "encode",
                "entry is not serialisable",
            )
            .with_source(e)
        })
    }

    /// Parse bytes written by [`CacheEntry::to_bytes`]; an unknown schema version is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        decode(bytes, |entry: &Self| entry.schema_version)
    }
}

/// `at + by`, refusing a `by` over [`TtlPolicy::LONGEST`] instead of overflowing the calendar.
fn later(at: OffsetDateTime, by: Duration) -> Result<OffsetDateTime> {
    (by <= TtlPolicy::LONGEST)
        .then(|| at.checked_add(time::Duration::try_from(by).ok()?))
        .flatten()
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                "ttl",
                "expiry",
                format!(
                    "a lifetime must be at most {} seconds",
                    TtlPolicy::LONGEST.as_secs()
                ),
            )
        })
}

/// A zero-copy view of a serialised [`CacheEntry`], for hot read paths: the query and the answer
/// borrow from the stored bytes instead of being copied out.
#[derive(Debug, Deserialize)]
pub struct CacheEntryView<'a> {
    /// Layout version, see [`SCHEMA_VERSION`].
    pub schema_version: u16,
    /// The tenant the entry belongs to.
    #[serde(borrow)]
    pub tenant: std::borrow::Cow<'a, str>,
    /// The query as written.
    #[serde(borrow)]
    pub query: std::borrow::Cow<'a, str>,
    /// The cached answer, raw JSON.
    #[serde(borrow)]
    pub response: &'a serde_json::value::RawValue,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being served.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The subject the entry is private to, if any.
    #[serde(default, borrow)]
    pub owner: Option<std::borrow::Cow<'a, str>>,
    /// End of the entry's grace period, if it has one ([`CacheEntry::stale_until`]).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub stale_until: Option<OffsetDateTime>,
    /// Feedback on its semantic hits ([`CacheEntry::feedback`]).
    #[serde(default)]
    pub feedback: Option<Feedback>,
}

impl<'a> CacheEntryView<'a> {
    /// Whether `subject` of the entry's tenant may read it: shared entries, or its owner.
    pub fn readable_by(&self, subject: &str) -> bool {
        self.owner.as_deref().is_none_or(|o| o == subject)
    }

    /// The last moment the entry may be served: the end of its grace period, or its expiry.
    pub fn servable_until(&self) -> OffsetDateTime {
        servable_until(self.expires_at, self.stale_until)
    }

    /// Parse bytes written by [`CacheEntry::to_bytes`] without copying; an unknown schema version is
    /// an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        decode(bytes, |view: &Self| view.schema_version)
    }
}

/// The end of the grace period, never before the expiry.
fn servable_until(
    expires_at: OffsetDateTime,
    stale_until: Option<OffsetDateTime>,
) -> OffsetDateTime {
    stale_until.map_or(expires_at, |s| s.max(expires_at))
}

/// Parse an entry (owned or borrowed) and refuse any schema version but [`SCHEMA_VERSION`].
fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], version: impl Fn(&T) -> u16) -> Result<T> {
    let entry: T = serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            "entry",
            "decode",
            "stored entry is not readable",
        )
        .with_source(e)
    })?;
    match version(&entry) {
        SCHEMA_VERSION => Ok(entry),
        other => Err(Error::new(
            ErrorKind::Backend,
            "entry",
            "decode",
            format!("unsupported entry schema version {other}"),
        )),
    }
}

/// How long entries live: the TTL used when a writer gives none, and the most a writer may ask for.
///
/// ```
/// use std::time::Duration;
/// use resk_core::TtlPolicy;
/// let policy = TtlPolicy::new(Duration::from_secs(3600), Duration::from_secs(86_400)).unwrap();
/// assert_eq!(policy.resolve(None).unwrap(), Duration::from_secs(3600));
/// assert_eq!(policy.resolve(Some(60)).unwrap(), Duration::from_secs(60));
/// assert!(policy.resolve(Some(0)).is_err());
/// assert!(policy.resolve(Some(86_401)).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    default: Duration,
    max: Duration,
}

impl TtlPolicy {
    /// The longest lifetime (and grace period) any entry may have: 100 years of 365 days. Far
    /// beyond any useful cache lifetime, and far enough from the calendar's end (year 9999) that
    /// an expiry never overflows.
    pub const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    /// A policy; `default` must be non-zero and at most `max`, and `max` at most
    /// [`TtlPolicy::LONGEST`].
    pub fn new(default: Duration, max: Duration) -> Result<Self> {
        if max > Self::LONGEST {
            return Err(Error::new(
                ErrorKind::Config,
                "ttl",
                "policy",
                format!(
                    "the maximum TTL must be at most {} seconds (100 years)",
                    Self::LONGEST.as_secs()
                ),
            ));
        }
        if default.is_zero() || default > max {
            return Err(Error::new(
                ErrorKind::Config,
                "ttl",
                "policy",
                "default TTL must be greater than zero and at most the maximum TTL",
            ));
        }
        Ok(Self { default, max })
    }

    /// The TTL used when a writer gives none.
    pub fn default_ttl(&self) -> Duration {
        self.default
    }

    /// The longest TTL a writer may ask for.
    pub fn max_ttl(&self) -> Duration {
        self.max
    }

    /// The TTL for a write that asked for `requested` seconds.
    pub fn resolve(&self, requested: Option<u64>) -> Result<Duration> {
        let Some(secs) = requested else {
            return Ok(self.default);
        };
        if secs == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "ttl",
                "resolve",
                "ttl must be at least 1 second",
            ));
        }
        let ttl = Duration::from_secs(secs);
        if ttl > self.max {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "ttl",
                "resolve",
                format!("ttl must be at most {} seconds", self.max.as_secs()),
            ));
        }
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_matches_owned_decode() {
        let entry = CacheEntry::new(
            TenantId::new("acme").unwrap(),
            "a \"quoted\" question\n".into(),
            CacheEntry::raw(&serde_json::json!({"text": "é", "n": [1, 2]})).unwrap(),
            Duration::from_secs(60),
            Origin {
                source: "test".into(),
                subject: Some("s".into()),
            },
        )
        .unwrap();
        let bytes = entry.to_bytes().unwrap();
        let view = CacheEntryView::parse(&bytes).unwrap();
        let owned = CacheEntry::from_bytes(&bytes).unwrap();
        assert_eq!(owned, entry);
        assert_eq!(view.tenant, "acme");
        assert_eq!(view.query, entry.query);
        assert_eq!(view.response.get(), entry.response.get());
        assert_eq!(
            (view.created_at, view.expires_at),
            (entry.created_at, entry.expires_at)
        );
        let mut other = serde_json::to_value(&entry).unwrap();
        other["schema_version"] = 99.into();
        assert!(CacheEntryView::parse(&serde_json::to_vec(&other).unwrap()).is_err());
    }

    fn entry(ttl: Duration) -> Result<CacheEntry> {
        CacheEntry::new(
            TenantId::default_tenant(),
            "q".into(),
            CacheEntry::raw(&serde_json::json!("a"))?,
            ttl,
            Origin {
                source: "test".into(),
                subject: None,
            },
        )
    }

    #[test]
    fn lifetimes_past_the_longest_are_errors_not_panics() {
        for ttl in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_secs(i64::MAX as u64),
            TtlPolicy::LONGEST + Duration::from_secs(1),
        ] {
            let err = entry(ttl).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{ttl:?}");
            assert!(err.to_string().contains("3153600000"), "{err}");
        }
        let mut longest = entry(TtlPolicy::LONGEST).unwrap();
        assert!(longest.set_grace(Duration::MAX).is_err());
        assert_eq!(
            longest.stale_until, None,
            "a refused grace period changes nothing"
        );
        longest.set_grace(TtlPolicy::LONGEST).unwrap();
        assert!(longest.stale_until.unwrap() > longest.expires_at);
        longest.set_grace(Duration::ZERO).unwrap();
        assert_eq!(longest.stale_until, None);
    }

    #[test]
    fn a_policy_past_the_longest_is_refused_naming_it() {
        let err =
            TtlPolicy::new(Duration::from_secs(60), Duration::from_secs(u64::MAX)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("3153600000"), "{err}");
        let policy = TtlPolicy::new(Duration::from_secs(60), TtlPolicy::LONGEST).unwrap();
        assert!(policy.resolve(Some(u64::MAX)).is_err());
    }
}
