//! Canonical cache keys.
//!
//! Two questions that differ only in letter case, spacing or Unicode form should share one entry; two
//! questions that differ in anything that changes the answer (tenant, model, language, parameters) must
//! never share one. resk gets both properties in two steps:
//!
//! 1. **Normalise the query** with [`normalize_query`]: Unicode NFKC, full default case folding
//!    (so `Straße` and `STRASSE` meet), NFKC again, removal of zero-width characters, trimming, and
//!    collapsing every run of Unicode white space into one ASCII space — repeated until nothing changes,
//!    which makes the function idempotent by construction.
//! 2. **Key it**: HMAC-SHA-256 under a service secret over a length-prefixed encoding of a version tag,
//!    the tenant, the normalised query, the language (trimmed, ASCII-lowercased), the model (trimmed) and
//!    the parameters as canonical JSON (object keys sorted at every depth; `null` and `{}` mean "none").
//!    Length prefixes make the encoding injective, so no choice of fields can collide with another; the
//!    HMAC means a key reveals nothing about the query to someone who can list the store but does not
//!    hold the secret, and cannot be precomputed for a dictionary of likely questions.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;

use crate::{CacheKey, Error, ErrorKind, Result, TenantId};

/// Normalise a query for keying; see the module docs for the exact steps.
///
/// ```
/// use resk_core::normalize_query;
/// assert_eq!(normalize_query("  How do I   RESET my password?\n"), "how do i reset my password?");
/// assert_eq!(normalize_query("ﬁle Straße"), normalize_query("FILE STRASSE"));
/// ```
pub fn normalize_query(query: &str) -> String {
    if query.is_ascii() {
        // For ASCII, NFKC is the identity and full case folding is ASCII lowercasing, so one pass of
        // lowercase + white-space collapse is exactly the general algorithm's fixed point.
        return normalize_ascii(query);
    }
    let mut current = normalize_once(query);
    // Each round can only expose more folding; real text settles after one, pathological after two.
    for _ in 0..8 {
        let next = normalize_once(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

fn normalize_ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().map(|c| c.to_ascii_lowercase()));
    }
    out
}

fn normalize_once(text: &str) -> String {
    let composed: String = text.nfkc().collect();
    let folded = caseless::default_case_fold_str(&composed);
    let mut out = String::with_capacity(folded.len());
    for word in folded
        .nfkc()
        .filter(|c| !is_zero_width(*c))
        .collect::<String>()
        .split_whitespace()
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Invisible characters that change nothing a reader sees (zero-width space/joiners, word joiner, BOM,
/// soft hyphen).
fn is_zero_width(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}'
    )
}

/// Everything that decides which answer a query gets.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyInput<'a> {
    /// The user's question, as sent.
    pub query: &'a str,
    /// Answer language (e.g. `en`, `fr-CA`), if the answer depends on it.
    pub language: Option<&'a str>,
    /// The LLM that produced the answer, if answers differ per model.
    pub model: Option<&'a str>,
    /// Generation parameters that change the answer (temperature, system prompt id, …).
    pub params: Option<&'a serde_json::Value>,
    /// The writer's subject when the entry is private to it: only the same subject derives the same
    /// key (and semantic scope). `None`: shared by the tenant.
    pub owner: Option<&'a str>,
    /// The conversation before the query, as [`context_digest`] makes it: the same question after
    /// different turns derives a different key and semantic scope. `None`: no context.
    pub context: Option<[u8; 32]>,
}

/// A digest of the conversation before a query: each turn's role and its content (compared as
/// [`normalize_query`] compares queries), in order, length-prefixed, SHA-256. It only ever enters
/// a key through the keyed HMAC of [`KeyBuilder`].
pub fn context_digest<'t>(turns: impl IntoIterator<Item = crate::Turn<'t>>) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = Sha256::new();
    for turn in turns {
        for part in [
            turn.role.trim().to_ascii_lowercase(),
            normalize_query(turn.content),
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
    }
    hash.finalize().into()
}

/// Derives [`CacheKey`]s with HMAC-SHA-256 under a service secret.
///
/// ```
/// use resk_core::{KeyBuilder, KeyInput, TenantId};
/// let keys = KeyBuilder::new(b"a service secret of at least 32 bytes!").unwrap();
/// let t = TenantId::new("acme").unwrap();
/// let a = keys.key(&t, &KeyInput { query: "Reset my password", ..Default::default() });
/// let b = keys.key(&t, &KeyInput { query: "  reset MY password ", ..Default::default() });
/// assert_eq!(a, b);
/// assert_eq!(a.name().len(), 64);
/// ```
#[derive(Clone)]
pub struct KeyBuilder {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBuilder { secret: <redacted> }")
    }
}

const KEY_DOMAIN: &[u8] = b"resk/cache-key/v1";
const SCOPE_DOMAIN: &[u8] = b"resk/semantic-scope/v1";
const PSEUDONYM_DOMAIN: &[u8] = b"resk/pseudonym/v1";

impl KeyBuilder {
    /// Shortest accepted secret, in bytes.
    pub const MIN_SECRET_LEN: usize = 32;

    /// A key builder under `secret` (at least [`Self::MIN_SECRET_LEN`] bytes).
    pub fn new(secret: &[u8]) -> Result<Self> {
        let config_err =
            |msg: &str| Error::new(ErrorKind::Config, "cache-key", "new", msg.to_owned());
        if secret.len() < Self::MIN_SECRET_LEN {
            return Err(config_err("cache key secret must be at least 32 bytes"));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| config_err("cache key secret rejected by HMAC"))?;
        Ok(Self { mac })
    }

    /// The key of `input` within `tenant`: a 64-character lowercase hex name.
    pub fn key(&self, tenant: &TenantId, input: &KeyInput<'_>) -> CacheKey {
        let digest = self.digest(KEY_DOMAIN, tenant, Some(input.query), input);
        // 64 hex characters: always within CacheKey's name bounds.
        CacheKey::new_unchecked(tenant.clone(), hex(&digest).into())
    }

    /// The semantic scope of `input` within `tenant`: the same HMAC over everything that decides an
    /// answer *except the query* (language, model, parameters) plus the embedding model, so a
    /// similarity search only compares questions whose answers are interchangeable. 32 hex characters.
    ///
    /// ```
    /// use resk_core::{KeyBuilder, KeyInput, TenantId};
    /// let keys = KeyBuilder::new(b"a service secret of at least 32 bytes!").unwrap();
    /// let t = TenantId::new("acme").unwrap();
    /// let en = KeyInput { query: "a", language: Some("en"), ..Default::default() };
    /// let en2 = KeyInput { query: "b", language: Some("EN"), ..Default::default() };
    /// let fr = KeyInput { query: "a", language: Some("fr"), ..Default::default() };
    /// assert_eq!(keys.scope(&t, "minilm", &en), keys.scope(&t, "minilm", &en2));
    /// assert_ne!(keys.scope(&t, "minilm", &en), keys.scope(&t, "minilm", &fr));
    /// assert_ne!(keys.scope(&t, "minilm", &en), keys.scope(&t, "other-model", &en));
    /// ```
    pub fn scope(&self, tenant: &TenantId, embedding_model: &str, input: &KeyInput<'_>) -> String {
        let mut domain = SCOPE_DOMAIN.to_vec();
        domain.extend_from_slice(&(embedding_model.len() as u64).to_be_bytes());
        domain.extend_from_slice(embedding_model.as_bytes());
        let digest = self.digest(&domain, tenant, None, input);
        hex(&digest[..16])
    }

    /// A keyed digest (32 hex characters) of any other identifier, for storing it where it must be
    /// matched but not read: a rate-limit key naming a subject, say. `purpose` separates uses, so
    /// one identifier gets unrelated pseudonyms in different places.
    ///
    /// ```
    /// use resk_core::KeyBuilder;
    /// let keys = KeyBuilder::new(b"a service secret of at least 32 bytes!").unwrap();
    /// assert_eq!(keys.pseudonym("rate", "alice"), keys.pseudonym("rate", "alice"));
    /// assert_ne!(keys.pseudonym("rate", "alice"), keys.pseudonym("other", "alice"));
    /// assert_eq!(keys.pseudonym("rate", "alice").len(), 32);
    /// ```
    pub fn pseudonym(&self, purpose: &str, identifier: &str) -> String {
        let mut mac = self.mac.clone();
        for part in [PSEUDONYM_DOMAIN, purpose.as_bytes(), identifier.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        hex(&mac.finalize().into_bytes()[..16])
    }

    fn digest(
        &self,
        domain: &[u8],
        tenant: &TenantId,
        query: Option<&str>,
        input: &KeyInput<'_>,
    ) -> [u8; 32] {
        let mut mac = self.mac.clone();
        let mut field = |bytes: Option<&[u8]>| match bytes {
            None => mac.update(&[0]),
            Some(b) => {
                mac.update(&[1]);
                mac.update(&(b.len() as u64).to_be_bytes());
                mac.update(b);
            }
        };
        field(Some(domain));
        field(Some(tenant.as_str().as_bytes()));
        field(query.map(normalize_query).as_deref().map(str::as_bytes));
        let language = input.language.map(|l| l.trim().to_ascii_lowercase());
        field(
            language
                .as_deref()
                .filter(|l| !l.is_empty())
                .map(str::as_bytes),
        );
        field(
            input
                .model
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::as_bytes),
        );
        let params = input
            .params
            .filter(|p| !is_empty_params(p))
            .map(canonical_json);
        field(params.as_deref());
        // Appended only for private entries, so the keys of shared entries stay what they were.
        // Every field is length-prefixed, so the longer input never collides with a shorter one.
        if let Some(owner) = input.owner {
            field(Some(b"owner"));
            field(Some(owner.as_bytes()));
        }
        // Appended only with a context, for the same reason.
        if let Some(context) = &input.context {
            field(Some(b"context"));
            field(Some(context));
        }
        mac.finalize().into_bytes().into()
    }
}

fn is_empty_params(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// JSON with object keys sorted at every depth and no insignificant white space.
fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn write(value: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value;
        match value {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Value::String(s) => write_str(s, out),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(k, out);
                    out.push(b':');
                    write(v, out);
                }
                out.push(b'}');
            }
        }
    }
    fn write_str(s: &str, out: &mut Vec<u8>) {
        // Serialising a str cannot fail; fall back to a length-tagged raw form to stay total.
        match serde_json::to_vec(s) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(_) => {
                out.extend_from_slice(&(s.len() as u64).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let a = serde_json::json!({"b": 1, "a": {"y": [1, 2], "x": null}});
        assert_eq!(
            canonical_json(&a),
            br#"{"a":{"x":null,"y":[1,2]},"b":1}"#.to_vec()
        );
    }

    #[test]
    fn ascii_fast_path_equals_the_general_algorithm() {
        // Every printable ASCII character and every ASCII white-space character, in many arrangements.
        let alphabet: Vec<char> = (0u8..128).map(char::from).collect();
        for start in 0..alphabet.len() {
            let text: String = alphabet
                .iter()
                .cycle()
                .skip(start)
                .step_by(7)
                .take(90)
                .collect();
            let mut general = normalize_once(&text);
            loop {
                let next = normalize_once(&general);
                if next == general {
                    break;
                }
                general = next;
            }
            assert_eq!(normalize_ascii(&text), general, "{text:?}");
        }
    }

    #[test]
    fn short_secret_is_rejected() {
        assert_eq!(
            KeyBuilder::new(b"short").unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
