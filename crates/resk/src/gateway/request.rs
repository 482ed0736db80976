//! A chat-completions request read once: validated, its model resolved, and split into what makes
//! its cache key (the last user message, and the partition made of everything else) and what does
//! not.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{GatewayError, policy::Policy};

/// Request fields that never change the answer, so they are left out of the key: who asks
/// (`user`, `safety_identifier`), how the answer is delivered (`stream`, `stream_options`), and
/// bookkeeping for the provider (`metadata`, `store`, `service_tier`, `prompt_cache_key`,
/// `prompt_cache_retention`). Every other field is in the key, including ones resk does not know:
/// a new parameter can only split the cache, never merge two answers.
pub const IGNORED_FIELDS: &[&str] = &[
    "user",
    "safety_identifier",
    "stream",
    "stream_options",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
];

/// Why a request is answered by the upstream without the cache (`x-resk-cache: bypass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bypass {
    /// `Cache-Control: no-store`.
    NoStore,
    /// `n` above 1 (several answers are asked for).
    Choices,
    /// `logprobs` asked for.
    Logprobs,
    /// `temperature` above the configured ceiling.
    Temperature,
}

impl Bypass {
    /// The reason as the `x-resk-cache-reason` header gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Bypass::NoStore => "no-store",
            Bypass::Choices => "n",
            Bypass::Logprobs => "logprobs",
            Bypass::Temperature => "temperature",
        }
    }
}

/// A request body: a JSON object, or a 400 saying what it is instead.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid_request(format!("the body is not valid JSON: {e}")))?;
    match value {
        Value::Object(body) => Ok(body),
        _ => Err(GatewayError::invalid_request(
            "the body must be a JSON object",
        )),
    }
}

/// A request's `model`: a non-blank string of at most 256 characters.
pub(crate) fn model_of(body: &Map<String, Value>) -> Result<String, GatewayError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() && m.chars().count() <= 256 => Ok(m.clone()),
        Some(_) => Err(invalid("model", "model must be a non-empty string")),
        None => Err(invalid("model", "you must provide a model parameter")),
    }
}

/// A validated chat-completions request.
#[derive(Clone, Debug)]
pub(crate) struct ChatRequest {
    /// The body as it goes upstream: as received, with the model resolved.
    pub(crate) body: Map<String, Value>,
    /// The model asked for (an alias, perhaps).
    pub(crate) requested_model: String,
    /// The model sent upstream.
    pub(crate) model: String,
    pub(crate) stream: bool,
    /// `stream_options.include_usage`.
    pub(crate) include_usage: bool,
}

/// What the key is made of.
#[derive(Clone, Debug)]
pub(crate) struct KeyParts {
    /// The last user message (or a digest of the last message when it is not plain text or too
    /// long to compare).
    pub(crate) query: String,
    /// Whether the query may be matched semantically (plain text of a user message).
    pub(crate) semantic: bool,
    /// Everything else that changes the answer: the partition.
    pub(crate) params: Value,
}

fn invalid(param: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message).param(param)
}

impl ChatRequest {
    /// Parse and validate `body`; `resolve` maps the asked model to the upstream one (or refuses
    /// it).
    pub(crate) fn parse(
        body: &[u8],
        resolve: impl FnOnce(&str) -> Result<String, GatewayError>,
    ) -> Result<Self, GatewayError> {
        let mut body = json_object(body)?;
        let requested_model = model_of(&body)?;
        match body.get("messages") {
            Some(Value::Array(messages)) if !messages.is_empty() => {
                for (i, m) in messages.iter().enumerate() {
                    let ok = m
                        .as_object()
                        .and_then(|m| m.get("role"))
                        .and_then(Value::as_str)
                        .is_some_and(|r| !r.is_empty());
                    if !ok {
                        return Err(invalid(
                            "messages",
                            format!("messages[{i}] must be an object with a string `role`"),
                        ));
                    }
                }
            }
            Some(Value::Array(_)) => {
                return Err(invalid("messages", "messages must not be empty"));
            }
            Some(_) => return Err(invalid("messages", "messages must be an array")),
            None => return Err(invalid("messages", "you must provide a messages parameter")),
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("stream", "stream must be a boolean")),
        };
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(invalid(
                        "stream_options",
                        "stream_options.include_usage must be a boolean",
                    ));
                }
            },
            Some(_) => {
                return Err(invalid(
                    "stream_options",
                    "stream_options must be an object",
                ));
            }
        };
        match body.get("n") {
            None | Some(Value::Null) => {}
            Some(n) if n.as_u64().is_some_and(|n| (1..=128).contains(&n)) => {}
            Some(_) => return Err(invalid("n", "n must be an integer from 1 to 128")),
        }
        match body.get("temperature") {
            None | Some(Value::Null) => {}
            Some(t) if t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) => {}
            Some(_) => {
                return Err(invalid(
                    "temperature",
                    "temperature must be a number from 0 to 2",
                ));
            }
        }
        let model = resolve(&requested_model)?;
        body.insert("model".into(), Value::String(model.clone()));
        Ok(Self {
            body,
            requested_model,
            model,
            stream,
            include_usage,
        })
    }

    /// Why this request must not be answered from or written to the cache, if it must not.
    pub(crate) fn bypass(&self, policy: &Policy) -> Option<Bypass> {
        let n = self.body.get("n").and_then(Value::as_u64).unwrap_or(1);
        if n > 1 && !policy.cache_choices {
            return Some(Bypass::Choices);
        }
        let logprobs = self
            .body
            .get("logprobs")
            .is_some_and(|v| v.as_bool() == Some(true))
            || self.body.get("top_logprobs").is_some_and(|v| !v.is_null());
        if logprobs && !policy.cache_logprobs {
            return Some(Bypass::Logprobs);
        }
        let temperature = self
            .body
            .get("temperature")
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        if temperature > policy.max_temperature {
            return Some(Bypass::Temperature);
        }
        None
    }

    /// The key: the last user message is the query (compared semantically when it is plain text);
    /// every other field that changes the answer — earlier messages, system prompt, tools,
    /// parameters — is the partition, compared exactly. The model goes in the lookup's own field.
    pub(crate) fn key_parts(&self, max_query_chars: usize) -> KeyParts {
        let mut params = Map::new();
        for (name, value) in &self.body {
            if name == "model" || name == "messages" || IGNORED_FIELDS.contains(&name.as_str()) {
                continue;
            }
            params.insert(name.clone(), value.clone());
        }
        let messages = self
            .body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (last, earlier) = match messages.split_last() {
            Some((last, earlier)) => (last.clone(), earlier.to_vec()),
            None => (Value::Null, Vec::new()),
        };
        params.insert("messages".into(), Value::Array(earlier));
        let mut last = match last {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        let content = last.remove("content");
        let is_user = last.get("role").and_then(Value::as_str) == Some("user");
        let text = content.as_ref().and_then(plain_text).filter(|_| is_user);
        let (query, semantic) = match text {
            Some(text) if !text.trim().is_empty() => (text, true),
            _ => {
                // Not plain text (images, audio, a tool result, an assistant prefill): exact only,
                // over the whole content.
                last.insert("content".into(), content.unwrap_or(Value::Null));
                (digest_query(&Value::Object(last.clone())), false)
            }
        };
        let (query, semantic) = if query.chars().count() > max_query_chars {
            (digest_query(&Value::String(query)), false)
        } else {
            (query, semantic)
        };
        // The rest of the last message (its role, a `name`): part of the partition.
        params.insert("last_message".into(), Value::Object(last));
        params.insert("resk_gateway".into(), Value::from("chat.completions/1"));
        KeyParts {
            query,
            semantic,
            params: Value::Object(params),
        }
    }
}

/// The text of a message content: a string, or an array made only of text parts (joined by new
/// lines).
fn plain_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                let part = part.as_object()?;
                if part.get("type").and_then(Value::as_str) != Some("text") || part.len() != 2 {
                    return None;
                }
                texts.push(part.get("text")?.as_str()?);
            }
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// A stand-in query for content compared exactly: a SHA-256 of its canonical JSON (the key is an
/// HMAC over it, so it reveals nothing more).
pub(crate) fn digest_query(value: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(canonical(value).as_bytes());
    let digest = hasher.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// JSON with object members sorted at every depth (serde_json's map is ordered by key unless its
/// `preserve_order` feature is on; this does not rely on it).
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<ChatRequest, GatewayError> {
        ChatRequest::parse(body.to_string().as_bytes(), |m| Ok(m.to_owned()))
    }

    #[test]
    fn the_last_user_message_is_the_query_and_the_rest_the_partition() {
        let a = parse(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "How do I reset my password?"}],
            "temperature": 0.2, "user": "alice", "stream": true}))
        .unwrap();
        let parts = a.key_parts(10_000);
        assert_eq!(parts.query, "How do I reset my password?");
        assert!(parts.semantic);
        let p = parts.params.as_object().unwrap();
        assert_eq!(p["temperature"], json!(0.2));
        assert_eq!(
            p["messages"],
            json!([{"role": "system", "content": "Be brief."}])
        );
        assert!(!p.contains_key("user") && !p.contains_key("stream") && !p.contains_key("model"));
        // Same request from another user, not streamed: the same key parts.
        let b = parse(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "How do I reset my password?"}],
            "temperature": 0.2, "user": "bob", "metadata": {"x": "y"}}))
        .unwrap();
        assert_eq!(b.key_parts(10_000).params, parts.params);
        // Other earlier turns: another partition.
        let c = parse(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be verbose."},
            {"role": "user", "content": "How do I reset my password?"}],
            "temperature": 0.2}))
        .unwrap();
        assert_ne!(c.key_parts(10_000).params, parts.params);
    }

    #[test]
    fn text_parts_are_text_and_other_content_is_compared_exactly() {
        let parts = parse(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}]}),
        )
        .unwrap()
        .key_parts(10_000);
        assert_eq!(
            (parts.query.as_str(), parts.semantic),
            ("Hello\nthere", true)
        );
        let image = parse(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
        )
        .unwrap()
        .key_parts(10_000);
        assert!(!image.semantic && image.query.starts_with("sha256:"));
        let tool = parse(json!({"model": "m", "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "tool", "tool_call_id": "c1", "content": "21C"}]}))
        .unwrap()
        .key_parts(10_000);
        assert!(!tool.semantic);
        let long =
            parse(json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(50)}]}))
                .unwrap()
                .key_parts(10);
        assert!(!long.semantic && long.query.starts_with("sha256:"));
    }

    #[test]
    fn bad_requests_name_the_parameter() {
        for (body, param) in [
            (
                json!({"messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
            (
                json!({"model": "", "messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"content": "x"}]}),
                "messages",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}),
                "stream",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}], "n": 0}),
                "n",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}], "temperature": 3}),
                "temperature",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}], "stream_options": 1}),
                "stream_options",
            ),
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.status(), 400);
            assert_eq!(err.param_name(), Some(param));
        }
        assert_eq!(parse(json!([1])).unwrap_err().status(), 400);
        let err = ChatRequest::parse(b"{not json", |m| Ok(m.to_owned())).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn what_is_not_cached_by_default() {
        let policy = Policy::default();
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            parse(b).unwrap().bypass(&policy)
        };
        assert_eq!(parse(base.clone()).unwrap().bypass(&policy), None);
        assert_eq!(with("n", json!(2)), Some(Bypass::Choices));
        assert_eq!(with("logprobs", json!(true)), Some(Bypass::Logprobs));
        assert_eq!(with("temperature", json!(1.5)), Some(Bypass::Temperature));
        assert_eq!(with("temperature", json!(0.7)), None);
        let loose = Policy {
            cache_choices: true,
            cache_logprobs: true,
            max_temperature: 2.0,
            ..Policy::default()
        };
        let mut b = base.clone();
        b["n"] = json!(3);
        b["logprobs"] = json!(true);
        b["temperature"] = json!(1.9);
        assert_eq!(parse(b).unwrap().bypass(&loose), None);
    }
}
