//! An OpenAI-compatible caching gateway over the engine (feature `gateway`): chat completions (JSON
//! and streamed), embeddings and the model list, answered from the [`Cache`] when they can be and
//! from an upstream provider when not — the provider key staying on the server.
//!
//! [`Gateway::chat`] reads one request as a straight line: validate → resolve the model → decide
//! whether the cache may take part ([`Policy`], [`Bounds`], [`Directives`]) → key (the last user
//! message as the query, everything else as the partition; see [`IGNORED_FIELDS`]) → look up
//! (exact, then semantic with the engine's verifiers) → on a miss, one upstream call shared by
//! every identical request in flight, streamed to each as it arrives → store the answer if it
//! finished normally. A hit is served in the shape asked for: a cached stream replays its deltas
//! as server-sent events, or is assembled into a JSON completion; a cached JSON completion is
//! streamed as deltas; `id` and `created` are fresh each time.
//!
//! The HTTP framing is left to the caller (resk-server): a [`Reply`] is a JSON value or a stream
//! of SSE frames, with its [`Provenance`]; a [`GatewayError`] carries the status and OpenAI's
//! error body.

use std::{
    borrow::Cow,
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use resk_core::{CacheKey, TenantId};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::{Cache, Hit, Lookup, Outcome, PutOptions, Source};

mod flight;
mod policy;
mod record;
mod request;
mod savings;
mod upstream;

pub use policy::{Bounds, Directives, OnDisconnect, Policy};
pub use request::{Bypass, IGNORED_FIELDS};
pub use savings::{ModelSavings, Price};
pub use upstream::{UpstreamConfig, UpstreamTimeouts};

use flight::{End, Flights};
use policy::Effective;
use record::{Recorded, Renderer, StreamHead};
use request::ChatRequest;
use savings::{Counted, Savings};
use upstream::{Upstreams, scrub};

/// An error answered in OpenAI's format: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayError(Box<Detail>);

#[derive(Clone, Debug, PartialEq)]
struct Detail {
    status: u16,
    kind: Cow<'static, str>,
    code: Option<Cow<'static, str>>,
    message: String,
    param: Option<String>,
    retry_after: Option<Duration>,
    /// The upstream's own error object, passed on as it was (key removed).
    upstream: Option<Value>,
}

impl GatewayError {
    /// An error of `status`, OpenAI `kind` and `code`.
    pub fn new(
        status: u16,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self(Box::new(Detail {
            status,
            kind: Cow::Borrowed(kind),
            code: code.map(Cow::Borrowed),
            message: message.into(),
            param: None,
            retry_after: None,
            upstream: None,
        }))
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// OpenAI's error `type` (`invalid_request_error`, `api_error`, …).
    pub fn kind(&self) -> &str {
        &self.0.kind
    }

    /// The machine-readable `code` (`model_not_found`, `upstream_timeout`, `cache_miss`, …).
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The offending parameter.
    pub fn param_name(&self) -> Option<&str> {
        self.0.param.as_deref()
    }

    /// How long to wait before retrying (an upstream 429 passed on).
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// 400 `invalid_request_error`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", None, message)
    }

    /// The same error naming the parameter at fault.
    #[must_use]
    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.0.param = Some(param.into());
        self
    }

    /// 404 for a model the operator does not allow (OpenAI answers an unknown model so).
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .param("model")
    }

    /// 504 for `Cache-Control: only-if-cached` without a cached answer.
    pub fn not_cached() -> Self {
        Self::new(
            504,
            "invalid_request_error",
            Some("cache_miss"),
            "no cached answer, and the request asked for only-if-cached",
        )
    }

    pub(crate) fn upstream_timeout() -> Self {
        Self::new(
            504,
            "api_error",
            Some("upstream_timeout"),
            "the upstream model provider did not answer in time",
        )
    }

    pub(crate) fn upstream_unreachable() -> Self {
        Self::new(
            502,
            "api_error",
            Some("upstream_unreachable"),
            "the upstream model provider could not be reached",
        )
    }

    pub(crate) fn upstream_cut() -> Self {
        Self::new(
            502,
            "api_error",
            Some("upstream_stream_cut"),
            "the upstream model provider ended the answer before it was complete",
        )
    }

    pub(crate) fn upstream_malformed() -> Self {
        Self::new(
            502,
            "api_error",
            Some("upstream_malformed"),
            "the upstream model provider sent an answer that is not an OpenAI chat completion",
        )
    }

    pub(crate) fn upstream_config() -> Self {
        Self::new(
            500,
            "api_error",
            Some("upstream_config"),
            "the gateway's upstream is misconfigured",
        )
    }

    /// An upstream answer with a non-success `status`: its 4xx passed on (the client's request
    /// was at fault) with the upstream's error object, except 401/403 (resk's own credentials were
    /// refused: 502); its 5xx as a 502.
    pub(crate) fn from_upstream(
        status: reqwest::StatusCode,
        text: &str,
        upstream: &UpstreamConfig,
        retry_after: Option<Duration>,
    ) -> Self {
        let clean = scrub(text, upstream);
        let object = serde_json::from_str::<Value>(&clean)
            .ok()
            .and_then(|v| v.get("error").filter(|e| e.is_object()).cloned());
        let message = object
            .as_ref()
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map_or_else(|| clean.chars().take(200).collect(), str::to_owned);
        let code = status.as_u16();
        let mut err = match code {
            401 | 403 => Self::new(
                502,
                "api_error",
                Some("upstream_auth"),
                "the upstream model provider refused the gateway's credentials",
            ),
            400..=499 => {
                let mut e = Self::new(code, "invalid_request_error", None, message);
                e.0.upstream = object;
                e
            }
            _ => Self::new(
                502,
                "api_error",
                Some("upstream_error"),
                format!("the upstream model provider failed (HTTP {code}): {message}"),
            ),
        };
        err.0.retry_after = retry_after.filter(|_| code == 429);
        err
    }

    /// An `error` event in the middle of an upstream stream.
    pub(crate) fn upstream_stream_error(
        event: &Map<String, Value>,
        upstream: &UpstreamConfig,
    ) -> Self {
        let text = scrub(&Value::Object(event.clone()).to_string(), upstream);
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "the upstream model provider reported an error".into());
        Self::new(502, "api_error", Some("upstream_error"), message)
    }

    /// The body to answer: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Value {
        let d = &*self.0;
        if let Some(object) = &d.upstream {
            return serde_json::json!({ "error": object });
        }
        serde_json::json!({
            "error": {
                "message": d.message,
                "type": d.kind,
                "param": d.param,
                "code": d.code,
            }
        })
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.0.status, self.0.kind, self.0.message)
    }
}

impl std::error::Error for GatewayError {}

/// Whether the cache answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheStatus {
    /// From the cache.
    Hit,
    /// From the upstream (and stored, if it finished normally and storing was allowed).
    Miss,
    /// From the upstream, the cache left out ([`Provenance::reason`] says why).
    Bypass,
}

impl CacheStatus {
    /// `hit`, `miss` or `bypass` (the `x-resk-cache` header).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// Where an answer came from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Provenance {
    /// Hit, miss or bypass.
    pub status: CacheStatus,
    /// A hit's source (a store's name, or `semantic`).
    pub source: Option<Source>,
    /// A semantic hit's similarity.
    pub similarity: Option<f32>,
    /// A hit's age.
    pub age: Option<Duration>,
    /// Why the cache was bypassed.
    pub reason: Option<&'static str>,
    /// A miss that shared another request's upstream call.
    pub coalesced: bool,
    /// The entry that answered, or that a miss is stored under.
    pub key: Option<CacheKey>,
    /// A semantic hit's id for feedback.
    pub hit_id: Option<String>,
}

impl Provenance {
    /// Where `hit` came from: its source, similarity, age, entry and feedback id.
    fn hit(hit: &Hit) -> Self {
        let mut provenance = Self::new(CacheStatus::Hit);
        provenance.source = Some(hit.source);
        provenance.similarity = hit.similarity;
        provenance.age = Some(
            (OffsetDateTime::now_utc() - hit.created_at)
                .try_into()
                .unwrap_or_default(),
        );
        provenance.key = Some(hit.key.clone());
        provenance.hit_id = hit.hit_id.clone();
        provenance
    }

    fn new(status: CacheStatus) -> Self {
        Self {
            status,
            source: None,
            similarity: None,
            age: None,
            reason: None,
            coalesced: false,
            key: None,
            hit_id: None,
        }
    }
}

/// A stream of server-sent events, each frame complete (`data: …\n\n`).
pub type SseStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// An answer's body.
#[non_exhaustive]
pub enum ReplyBody {
    /// A JSON document.
    Json(Value),
    /// `text/event-stream`.
    Stream(SseStream),
}

impl std::fmt::Debug for ReplyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyBody::Json(v) => f.debug_tuple("Json").field(v).finish(),
            ReplyBody::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A successful answer.
#[derive(Debug)]
#[non_exhaustive]
pub struct Reply {
    /// The body.
    pub body: ReplyBody,
    /// Where it came from.
    pub provenance: Provenance,
}

/// Who asks: the tenant every entry is confined to, the subject (recorded as the writer), and the
/// caller's own bounds.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Caller {
    /// The tenant.
    pub tenant: TenantId,
    /// The subject.
    pub subject: String,
    /// Limits from the caller's token, tightened with the operator's.
    pub bounds: Bounds,
}

impl Caller {
    /// `subject` of `tenant`, with no bounds of its own.
    pub fn new(tenant: TenantId, subject: impl Into<String>) -> Self {
        Self {
            tenant,
            subject: subject.into(),
            bounds: Bounds::default(),
        }
    }

    /// With bounds.
    #[must_use]
    pub fn bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }
}

/// Everything the gateway is configured with.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The providers: the first without a model list serves every model no other claims.
    pub upstreams: Vec<UpstreamConfig>,
    /// Time limits and retries of upstream calls.
    pub timeouts: UpstreamTimeouts,
    /// What is cached.
    pub policy: Policy,
    /// The models clients may ask for (after aliases); empty: any.
    pub allowed_models: Vec<String>,
    /// Names clients may use for a model: `(alias, model)`.
    pub aliases: Vec<(String, String)>,
    /// Prices for the savings figures, by model.
    pub prices: HashMap<String, Price>,
}

impl GatewayConfig {
    /// One upstream for every model, default policy.
    pub fn new(upstream: UpstreamConfig) -> Self {
        Self {
            upstreams: vec![upstream],
            ..Self::default()
        }
    }
}

struct Inner {
    cache: Cache,
    upstreams: Upstreams,
    policy: Policy,
    allowed: Vec<String>,
    aliases: HashMap<String, String>,
    flights: Flights,
    savings: Savings,
}

/// The gateway: one per server, cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstreams", &self.inner.upstreams)
            .field("policy", &self.inner.policy)
            .field("in_flight", &self.inner.flights.len())
            .finish_non_exhaustive()
    }
}

fn fresh_id(prefix: &str) -> String {
    format!(
        "{prefix}{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

fn now_secs() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// An engine error met while keying or looking up: the request's fault (a 400) or the cache's
/// (served without it).
fn engine_invalid(err: &resk_core::Error) -> Option<GatewayError> {
    (err.kind() == resk_core::ErrorKind::InvalidInput)
        .then(|| GatewayError::invalid_request(err.message().to_owned()))
}

impl Gateway {
    /// A gateway over `cache`.
    pub fn new(cache: Cache, config: GatewayConfig) -> resk_core::Result<Self> {
        let GatewayConfig {
            upstreams,
            timeouts,
            policy,
            allowed_models,
            aliases,
            prices,
        } = config;
        Ok(Self {
            inner: Arc::new(Inner {
                cache,
                upstreams: Upstreams::new(upstreams, timeouts)?,
                policy,
                allowed: allowed_models,
                aliases: aliases.into_iter().collect(),
                flights: Flights::default(),
                savings: Savings::new(prices),
            }),
        })
    }

    /// The model `asked` names (through the aliases), if the operator allows it.
    fn resolve(&self, asked: &str) -> Result<String, GatewayError> {
        let model = self
            .inner
            .aliases
            .get(asked)
            .cloned()
            .unwrap_or_else(|| asked.to_owned());
        if !self.inner.allowed.is_empty() && !self.inner.allowed.contains(&model) {
            return Err(GatewayError::model_not_found(asked));
        }
        Ok(model)
    }

    /// The savings of `tenant`, per model, since start.
    pub fn savings(&self, tenant: &TenantId) -> Vec<ModelSavings> {
        self.inner.savings.of(tenant.as_str())
    }

    /// The savings of `tenant` summed over its models, since start (`model` is empty).
    pub fn total_savings(&self, tenant: &TenantId) -> ModelSavings {
        self.savings(tenant)
            .into_iter()
            .fold(ModelSavings::default(), |mut t, m| {
                t.hits += m.hits;
                t.misses += m.misses;
                t.bypasses += m.bypasses;
                t.upstream_calls += m.upstream_calls;
                t.saved_prompt_tokens += m.saved_prompt_tokens;
                t.saved_completion_tokens += m.saved_completion_tokens;
                t.saved_usd += m.saved_usd;
                t
            })
    }

    /// `GET /v1/models`: the allowed models and aliases, or, without an allow-list, what the
    /// default upstream lists.
    pub async fn models(&self) -> Result<Value, GatewayError> {
        if self.inner.allowed.is_empty() {
            let upstream = self
                .inner
                .upstreams
                .first()
                .ok_or_else(GatewayError::upstream_config)?;
            let mut listed = self.inner.upstreams.json(upstream, "/models", None).await?;
            if let Some(Value::Array(data)) = listed.get_mut("data") {
                let aliases = self.inner.aliases.keys().map(|a| model_object(a));
                data.extend(aliases);
            }
            return Ok(Value::Object(listed));
        }
        let mut names: Vec<&String> = self.inner.allowed.iter().collect();
        names.extend(self.inner.aliases.keys());
        names.sort();
        names.dedup();
        Ok(serde_json::json!({
            "object": "list",
            "data": names.into_iter().map(|n| model_object(n)).collect::<Vec<_>>(),
        }))
    }

    /// `POST /v1/chat/completions`.
    pub async fn chat(
        &self,
        caller: &Caller,
        body: &[u8],
        directives: Directives,
    ) -> Result<Reply, GatewayError> {
        let inner = &*self.inner;
        let req = ChatRequest::parse(body, |m| self.resolve(m))?;
        let upstream = inner
            .upstreams
            .for_model(&req.model)
            .cloned()
            .ok_or_else(|| GatewayError::model_not_found(&req.requested_model))?;
        let effective = Effective::new(directives, inner.policy.bounds.tighten(caller.bounds));
        let bypass = if directives.no_store {
            Some(Bypass::NoStore)
        } else {
            req.bypass(&inner.policy)
        };
        let tenant = caller.tenant.as_str();
        if let Some(reason) = bypass {
            if effective.only_if_cached {
                return Err(GatewayError::not_cached());
            }
            inner.savings.count(tenant, &req.model, Counted::Bypass);
            let mut provenance = Provenance::new(CacheStatus::Bypass);
            provenance.reason = Some(reason.as_str());
            return self.passthrough(&req, &upstream, provenance).await;
        }

        let parts = req.key_parts(inner.cache.inner.max_query_chars);
        let base = Lookup::new(caller.tenant.clone(), parts.query.as_str())
            .subject(caller.subject.as_str())
            .model(req.model.as_str())
            .params_ref(&parts.params)
            .semantic(parts.semantic);
        let key = inner.cache.key(&base).map_err(|e| {
            engine_invalid(&e)
                .unwrap_or_else(|| GatewayError::invalid_request(e.message().to_owned()))
        })?;
        if effective.read {
            let mut read = base.clone().semantic(parts.semantic && effective.semantic);
            if let Some(t) = effective.threshold {
                read = read.threshold(t);
            }
            if let Some(age) = effective.max_age {
                read = read.max_age(age);
            }
            if let Some(hit) = self.cached(&read).await?
                && let Ok(recorded) = hit.answer_as::<Recorded>()
                && recorded.resk_gateway == record::VERSION
            {
                let (prompt, completion) = recorded.tokens();
                let usd =
                    inner
                        .savings
                        .count(tenant, &req.model, Counted::Hit { prompt, completion });
                inner.cache.record_saving(&caller.tenant, usd);
                return Ok(replay(&req, &recorded, Provenance::hit(&hit)));
            }
        }
        if effective.only_if_cached {
            return Err(GatewayError::not_cached());
        }

        // One upstream call per identical request in flight.
        let flight_key = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}",
            caller.tenant,
            key.name(),
            req.stream,
            effective.write
        );
        let (mut sub, leader) = inner.flights.join(&flight_key);
        inner.savings.count(
            tenant,
            &req.model,
            Counted::Miss {
                called: leader.is_some(),
            },
        );
        if let Some(flight) = leader {
            let call = Call {
                gateway: self.clone(),
                flight,
                flight_key,
                upstream,
                body: Value::Object(req.body.clone()),
                stream: req.stream,
                store: effective.write.then(|| Store {
                    tenant: caller.tenant.clone(),
                    subject: caller.subject.clone(),
                    query: parts.query.clone(),
                    model: req.model.clone(),
                    params: parts.params.clone(),
                    semantic: parts.semantic,
                }),
            };
            tokio::spawn(call.run());
        }
        let mut provenance = Provenance::new(CacheStatus::Miss);
        provenance.coalesced = !sub.leader;
        provenance.key = Some(key);
        if req.stream {
            sub.started().await?;
            let renderer = Renderer {
                id: fresh_id("chatcmpl-"),
                created: now_secs(),
                include_usage: req.include_usage,
            };
            Ok(Reply {
                body: ReplyBody::Stream(sub.into_sse(renderer)),
                provenance,
            })
        } else {
            let leader = sub.leader;
            let mut json = sub.json().await?;
            if !leader {
                json.insert("id".into(), Value::from(fresh_id("chatcmpl-")));
                json.insert("created".into(), Value::from(now_secs()));
            }
            Ok(Reply {
                body: ReplyBody::Json(Value::Object(json)),
                provenance,
            })
        }
    }

    /// A request the cache stays out of: straight to the upstream and back.
    async fn passthrough(
        &self,
        req: &ChatRequest,
        upstream: &Arc<UpstreamConfig>,
        provenance: Provenance,
    ) -> Result<Reply, GatewayError> {
        let body = Value::Object(req.body.clone());
        let ups = &self.inner.upstreams;
        if !req.stream {
            let json = ups.json(upstream, "/chat/completions", Some(&body)).await?;
            return Ok(Reply {
                body: ReplyBody::Json(Value::Object(json)),
                provenance,
            });
        }
        let chunks = ups.stream(upstream, "/chat/completions", &body).await?;
        let frames = chunks
            .map(|item| match item {
                Ok(chunk) => record::sse(&Value::Object(chunk)),
                Err(e) => record::sse(&e.body()),
            })
            .chain(futures_util::stream::once(async {
                Bytes::from_static(record::DONE)
            }));
        // An error event ends the stream without `[DONE]`.
        let mut failed = false;
        let frames = frames.take_while(move |frame| {
            let keep = !failed;
            failed = failed || frame.starts_with(b"data: {\"error\"");
            std::future::ready(keep)
        });
        Ok(Reply {
            body: ReplyBody::Stream(Box::pin(frames)),
            provenance,
        })
    }

    /// `POST /v1/embeddings`: an exact cache of whole requests (embeddings do not vary).
    pub async fn embeddings(
        &self,
        caller: &Caller,
        body: &[u8],
        directives: Directives,
    ) -> Result<Reply, GatewayError> {
        let inner = &*self.inner;
        let mut body = request::json_object(body)?;
        let asked = request::model_of(&body)?;
        let input_ok = match body.get("input") {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(items)) => !items.is_empty(),
            _ => false,
        };
        if !input_ok {
            return Err(
                GatewayError::invalid_request("input must be a non-empty string or array")
                    .param("input"),
            );
        }
        let model = self.resolve(&asked)?;
        body.insert("model".into(), Value::String(model.clone()));
        let upstream = inner
            .upstreams
            .for_model(&model)
            .cloned()
            .ok_or_else(|| GatewayError::model_not_found(&asked))?;
        let effective = Effective::new(directives, inner.policy.bounds.tighten(caller.bounds));
        let tenant = caller.tenant.as_str();
        let forward = Value::Object(body.clone());
        if directives.no_store {
            if effective.only_if_cached {
                return Err(GatewayError::not_cached());
            }
            inner.savings.count(tenant, &model, Counted::Bypass);
            let json = inner
                .upstreams
                .json(&upstream, "/embeddings", Some(&forward))
                .await?;
            let mut provenance = Provenance::new(CacheStatus::Bypass);
            provenance.reason = Some(Bypass::NoStore.as_str());
            return Ok(Reply {
                body: ReplyBody::Json(Value::Object(json)),
                provenance,
            });
        }
        body.retain(|k, _| k != "model" && k != "user");
        let query = request::digest_query(&Value::Object(body));
        let params = serde_json::json!({"resk_gateway": "embeddings/1"});
        let lookup = Lookup::new(caller.tenant.clone(), query.as_str())
            .subject(caller.subject.as_str())
            .model(model.as_str())
            .params_ref(&params)
            .semantic(false);
        if effective.read {
            let mut read = lookup.clone();
            if let Some(age) = effective.max_age {
                read = read.max_age(age);
            }
            if let Some(hit) = self.cached(&read).await?
                && let Ok(answer) = hit.answer_as::<Value>()
            {
                let prompt = answer
                    .pointer("/usage/prompt_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let usd = inner.savings.count(
                    tenant,
                    &model,
                    Counted::Hit {
                        prompt,
                        completion: 0,
                    },
                );
                inner.cache.record_saving(&caller.tenant, usd);
                return Ok(Reply {
                    body: ReplyBody::Json(answer),
                    provenance: Provenance::hit(&hit),
                });
            }
        }
        if effective.only_if_cached {
            return Err(GatewayError::not_cached());
        }
        inner
            .savings
            .count(tenant, &model, Counted::Miss { called: true });
        let json = inner
            .upstreams
            .json(&upstream, "/embeddings", Some(&forward))
            .await?;
        let complete = json
            .get("data")
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty());
        let mut provenance = Provenance::new(CacheStatus::Miss);
        if complete && effective.write {
            let options = self.put_options();
            match inner.cache.put(&lookup, &json, &options).await {
                Ok(stored) => provenance.key = Some(stored.key),
                Err(e) => tracing::warn!(error = %e, "could not cache an embeddings answer"),
            }
        }
        Ok(Reply {
            body: ReplyBody::Json(Value::Object(json)),
            provenance,
        })
    }

    /// The cached answer to `lookup`, if any. A cache that fails is logged and counts as a miss
    /// (the upstream answers instead); an invalid lookup is the request's fault, a 400.
    async fn cached(&self, lookup: &Lookup<'_>) -> Result<Option<Hit>, GatewayError> {
        match self.inner.cache.lookup(lookup).await {
            Ok(Outcome::Hit(hit)) => Ok(Some(hit)),
            Ok(Outcome::Miss(_)) => Ok(None),
            Err(e) => match engine_invalid(&e) {
                Some(err) => Err(err),
                None => {
                    tracing::warn!(error = %e, "gateway lookup failed; calling the upstream");
                    Ok(None)
                }
            },
        }
    }

    fn put_options(&self) -> PutOptions {
        let mut options = PutOptions::new().origin("gateway");
        if let Some(ttl) = self.inner.policy.ttl {
            options = options.ttl(ttl);
        }
        options
    }
}

fn model_object(id: &str) -> Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "resk"})
}

/// A cached answer in the shape the request asked for.
fn replay(req: &ChatRequest, recorded: &Recorded, provenance: Provenance) -> Reply {
    let id = fresh_id("chatcmpl-");
    let created = now_secs();
    if !req.stream {
        return Reply {
            body: ReplyBody::Json(recorded.completion(&id, created)),
            provenance,
        };
    }
    let renderer = Renderer {
        id,
        created,
        include_usage: req.include_usage,
    };
    let head = recorded.head();
    let mut frames: Vec<Bytes> = recorded
        .stream_chunks()
        .iter()
        .map(|chunk| renderer.chunk(&head, chunk))
        .collect();
    frames.extend(renderer.usage(&head, recorded.usage.as_ref()));
    frames.push(Bytes::from_static(record::DONE));
    Reply {
        body: ReplyBody::Stream(Box::pin(futures_util::stream::iter(frames))),
        provenance,
    }
}

/// Where a finished answer is stored.
struct Store {
    tenant: TenantId,
    subject: String,
    query: String,
    model: String,
    params: Value,
    semantic: bool,
}

/// One upstream call, run in its own task for every client of its flight.
struct Call {
    gateway: Gateway,
    flight: Arc<flight::Flight>,
    flight_key: String,
    upstream: Arc<UpstreamConfig>,
    body: Value,
    stream: bool,
    store: Option<Store>,
}

/// A call that ends any way at all (a panic included) leaves no flight behind for later
/// requests to wait on forever.
impl Drop for Call {
    fn drop(&mut self) {
        self.gateway
            .inner
            .flights
            .land(&self.flight_key, &self.flight);
        if self.flight.state().end.is_none() {
            self.flight
                .update(|s| s.end = Some(End::Failed(GatewayError::upstream_cut())));
        }
    }
}

impl Call {
    async fn run(mut self) {
        let start = Instant::now();
        let abort = self.gateway.inner.policy.on_disconnect == OnDisconnect::Abort;
        let flight = self.flight.clone();
        let work = async {
            if self.stream {
                self.run_stream().await
            } else {
                self.run_json().await
            }
        };
        let recorded = if abort {
            tokio::select! {
                recorded = work => recorded,
                () = flight.abandoned() => {
                    metrics::counter!("resk_gateway_abandoned_total").increment(1);
                    flight.update(|s| s.end = Some(End::Failed(GatewayError::upstream_cut())));
                    None
                }
            }
        } else {
            work.await
        };
        metrics::histogram!("resk_gateway_upstream_seconds", "upstream" => self.upstream.name.clone())
            .record(start.elapsed().as_secs_f64());
        // Stored before the clients hear the end, so whoever they tell finds it; landed before
        // too, so a request after the end looks the cache up instead of joining a finished call.
        if let (Some(recorded), Some(store)) = (recorded, &self.store) {
            let lookup = Lookup::new(store.tenant.clone(), store.query.as_str())
                .subject(store.subject.as_str())
                .model(store.model.as_str())
                .params_ref(&store.params)
                .semantic(store.semantic);
            let options = self.gateway.put_options();
            if let Err(e) = self
                .gateway
                .inner
                .cache
                .put(&lookup, &recorded, &options)
                .await
            {
                tracing::warn!(error = %e, "could not cache a gateway answer");
            }
        }
        self.gateway
            .inner
            .flights
            .land(&self.flight_key, &self.flight);
        self.flight.update(|s| {
            if s.end.is_none() {
                s.end = Some(End::Done);
            }
        });
    }

    /// Whether the answer may be kept.
    fn keep(&self, choices: &[Value]) -> bool {
        self.store.is_some()
            && record::finished(choices, self.gateway.inner.policy.cache_tool_calls)
    }

    async fn run_json(&mut self) -> Option<Recorded> {
        let ups = &self.gateway.inner.upstreams;
        let answer = ups
            .json(&self.upstream, "/chat/completions", Some(&self.body))
            .await;
        match answer {
            Ok(json) => {
                let recorded = Recorded::from_completion(&json);
                let keep = self.keep(&recorded.choices);
                self.flight.update(|s| {
                    s.started = true;
                    s.json = Some(json);
                });
                keep.then_some(recorded)
            }
            Err(e) => {
                self.flight.update(|s| s.end = Some(End::Failed(e)));
                None
            }
        }
    }

    async fn run_stream(&mut self) -> Option<Recorded> {
        // Usage is always asked of the upstream (the savings need it); a client that did not ask
        // for it does not get it.
        if let Some(body) = self.body.as_object_mut() {
            let options = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(options) = options.as_object_mut() {
                options.insert("include_usage".into(), Value::Bool(true));
            }
        }
        let ups = &self.gateway.inner.upstreams;
        let mut chunks = match ups
            .stream(&self.upstream, "/chat/completions", &self.body)
            .await
        {
            Ok(chunks) => chunks,
            Err(e) => {
                self.flight.update(|s| s.end = Some(End::Failed(e)));
                return None;
            }
        };
        self.flight.update(|s| s.started = true);
        let mut head: Option<StreamHead> = None;
        let mut kept: Vec<Value> = Vec::new();
        let mut usage = None;
        while let Some(item) = chunks.next().await {
            let mut chunk = match item {
                Ok(chunk) => chunk,
                Err(e) => {
                    self.flight.update(|s| s.end = Some(End::Failed(e)));
                    return None;
                }
            };
            if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
                usage = Some(u.clone());
            }
            let usage_only = chunk
                .get("choices")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            let ids = (head.is_none()).then(|| {
                (
                    chunk.get("id").cloned().unwrap_or(Value::Null),
                    chunk.get("created").cloned().unwrap_or(Value::Null),
                )
            });
            let this_head = StreamHead::split(&mut chunk);
            if usage_only {
                continue;
            }
            let first = head.is_none();
            let head_now = head.get_or_insert(this_head).clone();
            let value = Value::Object(chunk);
            kept.push(value.clone());
            self.flight.update(|s| {
                if first {
                    s.head = Some(head_now);
                    s.upstream_id = ids;
                }
                s.chunks.push(Arc::new(value));
            });
        }
        let usage_now = usage.clone();
        self.flight.update(|s| s.usage = usage_now);
        let head = head?;
        let recorded = Recorded::from_chunks(&head, kept, usage);
        self.keep(&recorded.choices).then_some(recorded)
    }
}

#[cfg(test)]
mod tests;
