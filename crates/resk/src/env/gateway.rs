//! The gateway's settings ([`GatewayArgs`] → [`GatewayConfig`]).

use std::{collections::HashMap, time::Duration};

use clap::{Args, ValueEnum};
use resk_core::{Error, ErrorKind, Result};

use crate::gateway::{
    Bounds, GatewayConfig, OnDisconnect, Policy, Price, UpstreamConfig, UpstreamTimeouts,
};

fn config_err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, "gateway", "config", message)
}

/// [`OnDisconnect`] as a flag value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DisconnectArg {
    /// Keep reading and cache the answer.
    Finish,
    /// Stop and cache nothing.
    Abort,
}

/// The OpenAI-compatible gateway (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`). Off
/// unless `UPSTREAM_BASE_URL` or `UPSTREAM_ROUTES` is set.
#[derive(Clone, Debug, Args)]
pub struct GatewayArgs {
    /// OpenAI-compatible API base the gateway calls, e.g. `https://api.openai.com/v1`.
    #[arg(long, env = "UPSTREAM_BASE_URL")]
    pub upstream_base_url: Option<String>,
    /// The upstream's API key (sent as a bearer token; never logged, never returned).
    #[arg(long, env = "UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,
    /// Per-model upstreams, `pattern=base_url` or `pattern=base_url|KEY_VARIABLE`, comma-separated;
    /// a pattern is a model name or a prefix ending in `*`; the key is read from the variable named
    /// (so keys never sit in this list). Models no route claims go to UPSTREAM_BASE_URL.
    #[arg(long, env = "UPSTREAM_ROUTES", default_value = "")]
    pub upstream_routes: String,
    /// Models clients may ask for (after aliases), comma-separated; empty: any.
    #[arg(long, env = "UPSTREAM_MODELS", default_value = "")]
    pub upstream_models: String,
    /// Model aliases, `alias=model`, comma-separated.
    #[arg(long, env = "UPSTREAM_ALIASES", default_value = "")]
    pub upstream_aliases: String,
    /// Time until an upstream answer's headers (and a JSON answer's body), in milliseconds.
    #[arg(long, env = "UPSTREAM_TIMEOUT_MS", default_value_t = 120_000)]
    pub upstream_timeout_ms: u64,
    /// Longest silence between two events of a streamed answer, in milliseconds.
    #[arg(long, env = "UPSTREAM_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub upstream_idle_timeout_ms: u64,
    /// Retries of an upstream call before its answer began (refused connection, timeout, 5xx, 429).
    #[arg(long, env = "UPSTREAM_RETRIES", default_value_t = 2)]
    pub upstream_retries: u32,
    /// Cache answers that call tools.
    #[arg(long, env = "GATEWAY_CACHE_TOOL_CALLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub gateway_cache_tool_calls: bool,
    /// Cache requests with `n` above 1.
    #[arg(long, env = "GATEWAY_CACHE_N", default_value_t = false, action = clap::ArgAction::Set)]
    pub gateway_cache_n: bool,
    /// Cache requests that ask for `logprobs`.
    #[arg(long, env = "GATEWAY_CACHE_LOGPROBS", default_value_t = false, action = clap::ArgAction::Set)]
    pub gateway_cache_logprobs: bool,
    /// Requests with a `temperature` above this are not cached (absent = 1).
    #[arg(long, env = "GATEWAY_MAX_TEMPERATURE", default_value_t = 1.0)]
    pub gateway_max_temperature: f64,
    /// When every client of an upstream call has gone: finish it and cache the answer, or abort.
    #[arg(
        long,
        env = "GATEWAY_ON_DISCONNECT",
        value_enum,
        default_value = "finish"
    )]
    pub gateway_on_disconnect: DisconnectArg,
    /// Time to live of a cached gateway answer, in seconds (default: CACHE_TTL_SECS).
    #[arg(long, env = "GATEWAY_TTL_SECS")]
    pub gateway_ttl_secs: Option<u64>,
    /// Lowest semantic similarity any gateway hit may have (clients may ask for more, never less).
    #[arg(long, env = "GATEWAY_MIN_THRESHOLD")]
    pub gateway_min_threshold: Option<f32>,
    /// Oldest answer the gateway serves, in seconds (clients may ask for younger).
    #[arg(long, env = "GATEWAY_MAX_AGE_SECS")]
    pub gateway_max_age_secs: Option<u64>,
    /// Dollars per million tokens, `model=prompt:completion`, comma-separated (savings figures).
    #[arg(long, env = "GATEWAY_PRICES", default_value = "")]
    pub gateway_prices: String,
}

/// `a=b` pairs of a comma-separated list.
fn pairs<'a>(list: &'a str, variable: &str) -> Result<Vec<(&'a str, &'a str)>> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(a, b)| (a.trim(), b.trim()))
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .ok_or_else(|| config_err(format!("{variable}: {p:?} is not `name=value`")))
        })
        .collect()
}

impl GatewayArgs {
    /// The gateway's configuration, or `None` when no upstream is configured; `env` reads the
    /// variables UPSTREAM_ROUTES names for route keys.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Option<GatewayConfig>> {
        let mut upstreams = Vec::new();
        for (pattern, target) in pairs(&self.upstream_routes, "UPSTREAM_ROUTES")? {
            let (url, key_var) = match target.split_once('|') {
                Some((url, var)) => (url.trim(), Some(var.trim())),
                None => (target, None),
            };
            let mut upstream = UpstreamConfig::new(pattern, url).models(vec![pattern.to_owned()]);
            if let Some(var) = key_var {
                let key = env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                    config_err(format!(
                        "UPSTREAM_ROUTES: the key variable {var} of `{pattern}` is not set"
                    ))
                })?;
                upstream = upstream.api_key(key);
            }
            upstreams.push(upstream);
        }
        if let Some(url) = self.upstream_base_url.as_deref().filter(|u| !u.is_empty()) {
            let mut upstream = UpstreamConfig::new("default", url);
            if let Some(key) = self.upstream_api_key.as_deref().filter(|k| !k.is_empty()) {
                upstream = upstream.api_key(key);
            }
            upstreams.push(upstream);
        }
        if upstreams.is_empty() {
            return Ok(None);
        }
        if !(0.0..=2.0).contains(&self.gateway_max_temperature) {
            return Err(config_err("GATEWAY_MAX_TEMPERATURE must be from 0 to 2"));
        }
        if self.upstream_timeout_ms == 0 || self.upstream_idle_timeout_ms == 0 {
            return Err(config_err(
                "UPSTREAM_TIMEOUT_MS and UPSTREAM_IDLE_TIMEOUT_MS must be at least 1",
            ));
        }
        if self
            .gateway_min_threshold
            .is_some_and(|t| !(t.is_finite() && (-1.0..=1.0).contains(&t)))
        {
            return Err(config_err("GATEWAY_MIN_THRESHOLD must be from -1 to 1"));
        }
        if self.gateway_max_age_secs == Some(0) || self.gateway_ttl_secs == Some(0) {
            return Err(config_err(
                "GATEWAY_MAX_AGE_SECS and GATEWAY_TTL_SECS must be at least 1",
            ));
        }
        let mut prices = HashMap::new();
        for (model, price) in pairs(&self.gateway_prices, "GATEWAY_PRICES")? {
            let parsed = price.split_once(':').and_then(|(p, c)| {
                let p: f64 = p.trim().parse().ok()?;
                let c: f64 = c.trim().parse().ok()?;
                (p.is_finite() && c.is_finite() && p >= 0.0 && c >= 0.0).then_some((p, c))
            });
            let (p, c) = parsed.ok_or_else(|| {
                config_err(format!(
                    "GATEWAY_PRICES: {price:?} of `{model}` is not `prompt:completion` dollars per million tokens"
                ))
            })?;
            prices.insert(model.to_owned(), Price::new(p, c));
        }
        let defaults = UpstreamTimeouts::default();
        let timeouts = UpstreamTimeouts {
            response: Duration::from_millis(self.upstream_timeout_ms),
            idle: Duration::from_millis(self.upstream_idle_timeout_ms),
            retry: resk_http::RetryPolicy {
                max_retries: self.upstream_retries,
                ..defaults.retry
            },
        };
        let policy = Policy {
            cache_tool_calls: self.gateway_cache_tool_calls,
            cache_choices: self.gateway_cache_n,
            cache_logprobs: self.gateway_cache_logprobs,
            max_temperature: self.gateway_max_temperature,
            on_disconnect: match self.gateway_on_disconnect {
                DisconnectArg::Finish => OnDisconnect::Finish,
                DisconnectArg::Abort => OnDisconnect::Abort,
            },
            ttl: self.gateway_ttl_secs.map(Duration::from_secs),
            bounds: Bounds {
                min_threshold: self.gateway_min_threshold,
                max_age: self.gateway_max_age_secs.map(Duration::from_secs),
                no_semantic: false,
            },
        };
        let config = GatewayConfig {
            upstreams,
            timeouts,
            policy,
            allowed_models: self
                .upstream_models
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            aliases: pairs(&self.upstream_aliases, "UPSTREAM_ALIASES")?
                .into_iter()
                .map(|(a, m)| (a.to_owned(), m.to_owned()))
                .collect(),
            prices,
        };
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    fn parse(args: &[&str]) -> GatewayArgs {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().gateway
    }

    #[test]
    fn settings_become_a_gateway_config() {
        assert!(parse(&[]).resolve(|_| None).unwrap().is_none());
        let config = parse(&[
            "--upstream-base-url",
            "https://api.example.com/v1",
            "--upstream-api-key",
            "sk-1",
            "--upstream-routes",
            "llama*=http://127.0.0.1:11434/v1, claude=https://c.example/v1|CLAUDE_KEY",
            "--upstream-models",
            "gpt-4o-mini, llama3",
            "--upstream-aliases",
            "fast=gpt-4o-mini",
            "--gateway-prices",
            "gpt-4o-mini=0.15:0.6",
            "--gateway-on-disconnect",
            "abort",
        ])
        .resolve(|v| (v == "CLAUDE_KEY").then(|| "ck".to_owned()))
        .unwrap()
        .unwrap();
        assert_eq!(config.upstreams.len(), 3);
        assert_eq!(config.upstreams[0].models, ["llama*"]);
        assert!(config.upstreams[1].api_key.is_some());
        assert_eq!(config.upstreams[2].name, "default");
        assert_eq!(config.allowed_models, ["gpt-4o-mini", "llama3"]);
        assert_eq!(
            config.aliases,
            [("fast".to_owned(), "gpt-4o-mini".to_owned())]
        );
        assert_eq!(config.prices["gpt-4o-mini"], Price::new(0.15, 0.6));
        assert_eq!(config.policy.on_disconnect, OnDisconnect::Abort);
    }

    #[test]
    fn bad_settings_name_the_variable() {
        for (args, variable) in [
            (vec!["--upstream-routes", "nope"], "UPSTREAM_ROUTES"),
            (vec!["--upstream-routes", "m=http://h|MISSING"], "MISSING"),
            (
                vec!["--upstream-base-url", "http://h", "--gateway-prices", "m=1"],
                "GATEWAY_PRICES",
            ),
            (
                vec![
                    "--upstream-base-url",
                    "http://h",
                    "--gateway-max-temperature",
                    "3",
                ],
                "GATEWAY_MAX_TEMPERATURE",
            ),
            (
                vec![
                    "--upstream-base-url",
                    "http://h",
                    "--gateway-min-threshold",
                    "1.5",
                ],
                "GATEWAY_MIN_THRESHOLD",
            ),
        ] {
            let err = parse(&args).resolve(|_| None).unwrap_err();
            assert!(err.to_string().contains(variable), "{err}");
        }
    }
}
