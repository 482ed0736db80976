//! What the cache saved: per tenant and model, the hits, and the tokens and dollars the upstream
//! would have charged for them (from the original call's `usage` and a price table).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use serde::Serialize;

/// Dollars per million tokens of one model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Price {
    /// Per million prompt (input) tokens.
    pub prompt_per_million: f64,
    /// Per million completion (output) tokens.
    pub completion_per_million: f64,
}

impl Price {
    /// A price.
    pub fn new(prompt_per_million: f64, completion_per_million: f64) -> Self {
        Self {
            prompt_per_million,
            completion_per_million,
        }
    }

    /// The cost of `prompt` and `completion` tokens, in dollars.
    pub fn cost(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * self.prompt_per_million + completion as f64 * self.completion_per_million)
            / 1e6
    }
}

/// One tenant's figures for one model, since the process started.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ModelSavings {
    /// The model (as the upstream named it in the lookup).
    pub model: String,
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that called the upstream (including coalesced followers, which did not).
    pub misses: u64,
    /// Requests that bypassed the cache.
    pub bypasses: u64,
    /// Upstream calls made.
    pub upstream_calls: u64,
    /// Prompt tokens not sent upstream thanks to hits.
    pub saved_prompt_tokens: u64,
    /// Completion tokens not generated thanks to hits.
    pub saved_completion_tokens: u64,
    /// Dollars not spent (by the configured price table; 0 for unpriced models).
    pub saved_usd: f64,
}

/// What happened to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    Hit { prompt: u64, completion: u64 },
    Miss { called: bool },
    Bypass,
}

/// The counters behind [`super::Gateway::savings`] and the `resk_gateway_*` metrics.
#[derive(Debug, Default)]
pub(crate) struct Savings {
    prices: HashMap<String, Price>,
    by_tenant: Mutex<HashMap<String, BTreeMap<String, ModelSavings>>>,
}

impl Savings {
    pub(crate) fn new(prices: HashMap<String, Price>) -> Self {
        Self {
            prices,
            by_tenant: Mutex::default(),
        }
    }

    pub(crate) fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied()
    }

    /// Count one request; the dollars a hit saved (0 otherwise).
    pub(crate) fn count(&self, tenant: &str, model: &str, what: Counted) -> f64 {
        let (status, cost) = match what {
            Counted::Hit { prompt, completion } => {
                let cost = self
                    .price(model)
                    .map_or(0.0, |p| p.cost(prompt, completion));
                for (kind, n) in [("prompt", prompt), ("completion", completion)] {
                    metrics::counter!("resk_gateway_saved_tokens_total",
                        "tenant" => tenant.to_owned(), "model" => model.to_owned(), "kind" => kind)
                    .increment(n);
                }
                metrics::counter!("resk_gateway_saved_cost_microdollars_total",
                    "tenant" => tenant.to_owned(), "model" => model.to_owned())
                .increment((cost * 1e6).round() as u64);
                ("hit", cost)
            }
            Counted::Miss { .. } => ("miss", 0.0),
            Counted::Bypass => ("bypass", 0.0),
        };
        metrics::counter!("resk_gateway_requests_total",
            "tenant" => tenant.to_owned(), "model" => model.to_owned(), "cache" => status)
        .increment(1);
        let mut map = self
            .by_tenant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let row = map
            .entry(tenant.to_owned())
            .or_default()
            .entry(model.to_owned())
            .or_insert_with(|| ModelSavings {
                model: model.to_owned(),
                ..ModelSavings::default()
            });
        match what {
            Counted::Hit { prompt, completion } => {
                row.hits += 1;
                row.saved_prompt_tokens += prompt;
                row.saved_completion_tokens += completion;
                row.saved_usd += cost;
            }
            Counted::Miss { called } => {
                row.misses += 1;
                row.upstream_calls += u64::from(called);
            }
            Counted::Bypass => {
                row.bypasses += 1;
                row.upstream_calls += 1;
            }
        }
        cost
    }

    pub(crate) fn of(&self, tenant: &str) -> Vec<ModelSavings> {
        self.by_tenant
            .lock()
            .map(|m| {
                m.get(tenant)
                    .map(|t| t.values().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_save_what_the_original_call_cost() {
        let s = Savings::new(HashMap::from([("m".to_owned(), Price::new(0.15, 0.60))]));
        s.count("t", "m", Counted::Miss { called: true });
        s.count("t", "m", Counted::Miss { called: false });
        s.count(
            "t",
            "m",
            Counted::Hit {
                prompt: 1_000_000,
                completion: 500_000,
            },
        );
        s.count("t", "m", Counted::Bypass);
        s.count(
            "other",
            "m",
            Counted::Hit {
                prompt: 1,
                completion: 1,
            },
        );
        let rows = s.of("t");
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.hits, r.misses, r.bypasses, r.upstream_calls),
            (1, 2, 1, 2)
        );
        assert_eq!(
            (r.saved_prompt_tokens, r.saved_completion_tokens),
            (1_000_000, 500_000)
        );
        assert!((r.saved_usd - 0.45).abs() < 1e-9, "{}", r.saved_usd);
        assert!(s.of("nobody").is_empty());
    }
}
