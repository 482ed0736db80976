//! Who decides what is cached: the operator's [`Policy`], per-caller [`Bounds`] (from the token),
//! and the client's own [`Directives`] (`Cache-Control`, `x-resk-threshold`), which can make the
//! cache stricter, never looser.

use std::time::Duration;

use super::GatewayError;

/// What happens to an upstream call whose only client went away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDisconnect {
    /// Keep reading the upstream answer and cache it (the tokens are paid for anyway; the next
    /// asker gets it free). The default.
    #[default]
    Finish,
    /// Stop reading at once and cache nothing (saves the rest of the generation).
    Abort,
}

/// The operator's caching policy for the gateway.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Policy {
    /// Cache answers that call tools (`finish_reason: tool_calls`). Default `false`: the answer
    /// depends on the world the tools read.
    pub cache_tool_calls: bool,
    /// Cache requests with `n` above 1. Default `false`.
    pub cache_choices: bool,
    /// Cache requests that ask for `logprobs`. Default `false`.
    pub cache_logprobs: bool,
    /// Requests with a `temperature` above this are not cached (an absent temperature is 1, the
    /// API's default). Default `1.0`.
    pub max_temperature: f64,
    /// What happens to an upstream call whose clients all went away.
    pub on_disconnect: OnDisconnect,
    /// Time to live of a cached answer (default: the cache's).
    pub ttl: Option<Duration>,
    /// The bounds of callers without bounds of their own.
    pub bounds: Bounds,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            cache_tool_calls: false,
            cache_choices: false,
            cache_logprobs: false,
            max_temperature: 1.0,
            on_disconnect: OnDisconnect::Finish,
            ttl: None,
            bounds: Bounds::default(),
        }
    }
}

/// Limits on how loosely one caller may be served from the cache (an operator's per-tenant policy,
/// carried in the caller's token). A request can tighten them, never relax them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Bounds {
    /// Lowest semantic similarity a hit may have (default: the cache's threshold).
    pub min_threshold: Option<f32>,
    /// Oldest answer that may be served.
    pub max_age: Option<Duration>,
    /// Whether semantic hits are allowed at all (`false`: exact hits only).
    pub no_semantic: bool,
}

impl Bounds {
    /// Bounds from a JSON object `{"min_threshold": 0.9, "max_age": 3600, "semantic": false}`
    /// (each member optional), as a token's `resk_cache` claim carries them.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let Some(object) = value.as_object() else {
            return Err("must be an object".into());
        };
        let mut bounds = Bounds::default();
        for (name, v) in object {
            match name.as_str() {
                "min_threshold" => {
                    let t = v
                        .as_f64()
                        .filter(|t| (-1.0..=1.0).contains(t))
                        .ok_or("min_threshold must be a number from -1 to 1")?;
                    bounds.min_threshold = Some(t as f32);
                }
                "max_age" => {
                    let secs = v
                        .as_u64()
                        .filter(|s| *s >= 1)
                        .ok_or("max_age must be a whole number of seconds, at least 1")?;
                    bounds.max_age = Some(Duration::from_secs(secs));
                }
                "semantic" => {
                    bounds.no_semantic = !v.as_bool().ok_or("semantic must be a boolean")?;
                }
                other => return Err(format!("unknown member `{other}`")),
            }
        }
        Ok(bounds)
    }

    /// The stricter of `self` and `other` on every limit.
    #[must_use]
    pub fn tighten(self, other: Bounds) -> Bounds {
        Bounds {
            min_threshold: max_opt(self.min_threshold, other.min_threshold, f32::max),
            max_age: max_opt(self.max_age, other.max_age, Duration::min),
            no_semantic: self.no_semantic || other.no_semantic,
        }
    }
}

fn max_opt<T>(a: Option<T>, b: Option<T>, pick: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

/// A client's per-request cache directives, in the conventions HTTP clients know.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Directives {
    /// `Cache-Control: no-cache`: do not answer from the cache; store the fresh answer.
    pub no_cache: bool,
    /// `Cache-Control: no-store`: neither read nor write the cache.
    pub no_store: bool,
    /// `Cache-Control: max-age=N`: only answers younger than N seconds (`0` is `no-cache`).
    pub max_age: Option<Duration>,
    /// `Cache-Control: only-if-cached`: answer from the cache or fail (504); never call upstream.
    pub only_if_cached: bool,
    /// `x-resk-threshold`: the lowest similarity of a semantic hit for this request.
    pub threshold: Option<f32>,
}

impl Directives {
    /// Read `Cache-Control` (directives are case-insensitive; unknown ones are ignored, as RFC 9111
    /// asks) and `x-resk-threshold` (a number from -1 to 1; anything else is a 400).
    pub fn parse(
        cache_control: Option<&str>,
        threshold: Option<&str>,
    ) -> Result<Self, GatewayError> {
        let mut d = Directives::default();
        for directive in cache_control.unwrap_or_default().split(',') {
            let directive = directive.trim();
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive, None),
            };
            match name.to_ascii_lowercase().as_str() {
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                "only-if-cached" => d.only_if_cached = true,
                "max-age" => {
                    let secs: u64 = value.and_then(|v| v.parse().ok()).ok_or_else(|| {
                        GatewayError::invalid_request(
                            "Cache-Control max-age must be a whole number of seconds",
                        )
                        .param("Cache-Control")
                    })?;
                    if secs == 0 {
                        d.no_cache = true;
                    } else {
                        d.max_age = Some(Duration::from_secs(secs));
                    }
                }
                _ => {}
            }
        }
        if let Some(t) = threshold {
            let t: f32 = t
                .trim()
                .parse()
                .ok()
                .filter(|t: &f32| t.is_finite() && (-1.0..=1.0).contains(t))
                .ok_or_else(|| {
                    GatewayError::invalid_request("x-resk-threshold must be a number from -1 to 1")
                        .param("x-resk-threshold")
                })?;
            d.threshold = Some(t);
        }
        Ok(d)
    }
}

/// How one request uses the cache, once policy, bounds and directives are combined.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Effective {
    pub(crate) read: bool,
    pub(crate) write: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) max_age: Option<Duration>,
    pub(crate) threshold: Option<f32>,
    pub(crate) semantic: bool,
}

impl Effective {
    /// The client's directives within `bounds`: a looser threshold or age than the bounds allow is
    /// raised to the bound.
    pub(crate) fn new(directives: Directives, bounds: Bounds) -> Self {
        let threshold = max_opt(directives.threshold, bounds.min_threshold, f32::max);
        let max_age = max_opt(directives.max_age, bounds.max_age, Duration::min);
        Self {
            read: !directives.no_cache && !directives.no_store,
            write: !directives.no_store,
            only_if_cached: directives.only_if_cached,
            max_age,
            threshold,
            semantic: !bounds.no_semantic,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn cache_control_is_read_as_clients_write_it() {
        let d = Directives::parse(Some("No-Cache, max-age=\"60\", foo=bar"), Some("0.93")).unwrap();
        assert!(d.no_cache && !d.no_store && !d.only_if_cached);
        assert_eq!(d.max_age, Some(Duration::from_secs(60)));
        assert_eq!(d.threshold, Some(0.93));
        assert!(Directives::parse(Some("max-age=0"), None).unwrap().no_cache);
        assert!(
            Directives::parse(Some("only-if-cached"), None)
                .unwrap()
                .only_if_cached
        );
        assert_eq!(
            Directives::parse(None, None).unwrap(),
            Directives::default()
        );
        for bad in ["max-age=-1", "max-age", "max-age=soon"] {
            assert_eq!(
                Directives::parse(Some(bad), None).unwrap_err().status(),
                400
            );
        }
        for bad in ["2", "nan", "x", ""] {
            assert_eq!(
                Directives::parse(None, Some(bad)).unwrap_err().status(),
                400
            );
        }
    }

    #[test]
    fn a_client_can_tighten_the_bounds_never_loosen_them() {
        let bounds = Bounds {
            min_threshold: Some(0.9),
            max_age: Some(Duration::from_secs(600)),
            no_semantic: false,
        };
        let loose = Directives {
            threshold: Some(0.5),
            max_age: Some(Duration::from_secs(86_400)),
            ..Directives::default()
        };
        let e = Effective::new(loose, bounds);
        assert_eq!(e.threshold, Some(0.9));
        assert_eq!(e.max_age, Some(Duration::from_secs(600)));
        let strict = Directives {
            threshold: Some(0.97),
            max_age: Some(Duration::from_secs(60)),
            no_store: true,
            ..Directives::default()
        };
        let e = Effective::new(strict, bounds);
        assert_eq!(e.threshold, Some(0.97));
        assert_eq!(e.max_age, Some(Duration::from_secs(60)));
        assert!(!e.read && !e.write);
    }

    #[test]
    fn bounds_come_from_a_claim_and_combine_strictly() {
        let b =
            Bounds::from_json(&json!({"min_threshold": 0.95, "max_age": 30, "semantic": false}))
                .unwrap();
        assert_eq!(b.min_threshold, Some(0.95));
        assert!(b.no_semantic);
        let both = b.tighten(Bounds {
            min_threshold: Some(0.8),
            max_age: Some(Duration::from_secs(10)),
            no_semantic: false,
        });
        assert_eq!(both.min_threshold, Some(0.95));
        assert_eq!(both.max_age, Some(Duration::from_secs(10)));
        assert!(both.no_semantic);
        for bad in [
            json!(1),
            json!({"max_age": 0}),
            json!({"min_threshold": 2}),
            json!({"x": 1}),
        ] {
            assert!(Bounds::from_json(&bad).is_err(), "{bad}");
        }
    }
}
