//! Tenants: the isolation boundary of every read, write and purge.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, ErrorKind, Result};

/// A validated tenant identifier.
///
/// 1 to 64 characters from `[A-Za-z0-9._-]`. The restricted alphabet lets backends embed a tenant in a
/// storage key or a Redis `SCAN` pattern without escaping: no tenant can contain a separator or a glob
/// character, so no tenant's keys can be made to match another tenant's pattern.
///
/// ```
/// use resk_core::TenantId;
/// assert!(TenantId::new("acme-prod").is_ok());
/// assert!(TenantId::new("a:b").is_err());
/// assert!(TenantId::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Longest accepted tenant id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validate and wrap a tenant id.
    pub fn new(id: &str) -> Result<Self> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if id.is_empty() || id.len() > Self::MAX_LEN || !id.chars().all(valid_char) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "tenant",
                "parse",
                "tenant id must be 1-64 characters from [A-Za-z0-9._-]",
            ));
        }
        Ok(Self(Arc::from(id)))
    }

    /// The tenant every entry belongs to when no tenant is given: `default`.
    pub fn default_tenant() -> Self {
        Self(Arc::from("default"))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `TenantId` be searched with a `&str` (hash and equality are those of the str).
impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::new(&s).map_err(serde::de::Error::custom)
    }
}
