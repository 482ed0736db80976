//! A chat completion as the cache keeps it, and the two shapes it is served in.
//!
//! A streamed answer is kept as its sequence of chunks (without `id`, `created` and `usage`, which
//! belong to one response), so a hit replays the same deltas in the same order — content,
//! `tool_calls`, `refusal`, reasoning fields, whatever the upstream sent — and as the assembled
//! message, so a JSON request can be answered from it. A JSON answer is kept as its choices; a
//! stream request answered from it gets chunks made from each choice (role, then each field,
//! then `finish_reason`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The cached form of one chat completion.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Recorded {
    /// Marks gateway entries (and their format version).
    pub(crate) resk_gateway: u32,
    pub(crate) model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) system_fingerprint: Option<Value>,
    /// The choices, assembled (`message`, `finish_reason`, `logprobs`, `index`).
    pub(crate) choices: Vec<Value>,
    /// The chunks of a streamed answer, in order (absent for a JSON answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) chunks: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Value>,
    /// Other top-level fields of the answer (`service_tier`, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub(crate) extra: Map<String, Value>,
}

/// Format version of [`Recorded`].
pub(crate) const VERSION: u32 = 1;

/// Top-level members of a completion that belong to one response, or that [`Recorded`] keeps in a
/// field of its own.
const PER_RESPONSE: &[&str] = &[
    "id",
    "object",
    "created",
    "model",
    "system_fingerprint",
    "usage",
    "choices",
];

/// Whether every choice ended normally (`stop`, or `tool_calls` when those are cached), and whether
/// one calls tools.
pub(crate) fn finished(choices: &[Value], allow_tool_calls: bool) -> bool {
    !choices.is_empty()
        && choices.iter().all(|c| {
            let calls = c
                .pointer("/message/tool_calls")
                .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()))
                || c.pointer("/message/function_call")
                    .is_some_and(|f| !f.is_null());
            match c.get("finish_reason").and_then(Value::as_str) {
                Some("stop") => !calls || allow_tool_calls,
                Some("tool_calls" | "function_call") => allow_tool_calls,
                _ => false,
            }
        })
}

impl Recorded {
    /// From a JSON completion.
    pub(crate) fn from_completion(completion: &Map<String, Value>) -> Self {
        let mut extra = completion.clone();
        extra.retain(|k, _| !PER_RESPONSE.contains(&k.as_str()));
        Self {
            resk_gateway: VERSION,
            model: completion
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            system_fingerprint: completion
                .get("system_fingerprint")
                .filter(|v| !v.is_null())
                .cloned(),
            choices: completion
                .get("choices")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            chunks: None,
            usage: completion.get("usage").filter(|v| !v.is_null()).cloned(),
            extra,
        }
    }

    /// From the chunks of a stream (each without its per-response members), its first chunk's
    /// model and fingerprint, and the usage the stream reported.
    pub(crate) fn from_chunks(head: &StreamHead, chunks: Vec<Value>, usage: Option<Value>) -> Self {
        Self {
            resk_gateway: VERSION,
            model: head.model.clone(),
            system_fingerprint: head.system_fingerprint.clone(),
            choices: assemble(&chunks),
            chunks: Some(chunks),
            usage,
            extra: head.extra.clone(),
        }
    }

    /// The JSON completion, with a fresh `id` and `created`.
    pub(crate) fn completion(&self, id: &str, created: i64) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), Value::from(id));
        out.insert("object".into(), Value::from("chat.completion"));
        out.insert("created".into(), Value::from(created));
        out.insert("model".into(), Value::from(self.model.clone()));
        out.insert("choices".into(), Value::Array(self.choices.clone()));
        out.insert("usage".into(), self.usage.clone().unwrap_or(Value::Null));
        if let Some(fp) = &self.system_fingerprint {
            out.insert("system_fingerprint".into(), fp.clone());
        }
        for (k, v) in &self.extra {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(out)
    }

    /// The chunks to stream: the recorded ones, or ones made from the choices.
    pub(crate) fn stream_chunks(&self) -> Vec<Value> {
        match &self.chunks {
            Some(chunks) => chunks.clone(),
            None => synthesize(&self.choices),
        }
    }

    /// What a stream begins with.
    pub(crate) fn head(&self) -> StreamHead {
        StreamHead {
            model: self.model.clone(),
            system_fingerprint: self.system_fingerprint.clone(),
            extra: self.extra.clone(),
        }
    }

    /// Prompt and completion tokens of the original call, from its `usage`.
    pub(crate) fn tokens(&self) -> (u64, u64) {
        let get = |name: &str| {
            self.usage
                .as_ref()
                .and_then(|u| u.get(name))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        (get("prompt_tokens"), get("completion_tokens"))
    }
}

/// The members every chunk of one stream shares.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StreamHead {
    pub(crate) model: String,
    pub(crate) system_fingerprint: Option<Value>,
    pub(crate) extra: Map<String, Value>,
}

impl StreamHead {
    /// Split an upstream chunk into what is shared (taken from the first chunk) and what is its
    /// own (`choices` and any other member).
    pub(crate) fn split(chunk: &mut Map<String, Value>) -> StreamHead {
        let model = chunk
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let system_fingerprint = chunk
            .get("system_fingerprint")
            .filter(|v| !v.is_null())
            .cloned();
        let mut extra = Map::new();
        if let Some(tier) = chunk.get("service_tier").filter(|v| !v.is_null()) {
            extra.insert("service_tier".into(), tier.clone());
        }
        for name in [
            "id",
            "object",
            "created",
            "model",
            "system_fingerprint",
            "usage",
            "service_tier",
        ] {
            chunk.remove(name);
        }
        StreamHead {
            model,
            system_fingerprint,
            extra,
        }
    }
}

/// One server-sent event carrying `value`.
pub(crate) fn sse(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"data: ");
    // Serialising a `Value` cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The event that ends a stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// Renders one response's chunks: its own `id` and `created`, the shared head, `usage: null` on each
/// chunk and a usage chunk at the end when the client asked for usage.
pub(crate) struct Renderer {
    pub(crate) id: String,
    pub(crate) created: i64,
    pub(crate) include_usage: bool,
}

impl Renderer {
    pub(crate) fn chunk(&self, head: &StreamHead, body: &Value) -> Bytes {
        let mut out = Map::new();
        out.insert("id".into(), Value::from(self.id.clone()));
        out.insert("object".into(), Value::from("chat.completion.chunk"));
        out.insert("created".into(), Value::from(self.created));
        out.insert("model".into(), Value::from(head.model.clone()));
        if let Some(tier) = head.extra.get("service_tier") {
            out.insert("service_tier".into(), tier.clone());
        }
        if let Some(fp) = &head.system_fingerprint {
            out.insert("system_fingerprint".into(), fp.clone());
        }
        if let Some(body) = body.as_object() {
            for (k, v) in body {
                out.insert(k.clone(), v.clone());
            }
        }
        if self.include_usage {
            out.insert("usage".into(), Value::Null);
        }
        sse(&Value::Object(out))
    }

    /// The usage chunk (`choices: []`), when the client asked for it.
    pub(crate) fn usage(&self, head: &StreamHead, usage: Option<&Value>) -> Option<Bytes> {
        if !self.include_usage {
            return None;
        }
        let mut body = Map::new();
        body.insert("choices".into(), Value::Array(Vec::new()));
        let mut frame = Value::Object(body);
        let Renderer { id, created, .. } = self;
        let without = Renderer {
            id: id.clone(),
            created: *created,
            include_usage: false,
        };
        if let Some(o) = frame.as_object_mut() {
            o.insert("usage".into(), usage.cloned().unwrap_or(Value::Null));
        }
        Some(without.chunk(head, &frame))
    }
}

/// The choices of a stream, assembled: string fields of each delta concatenated (content, refusal,
/// reasoning), tool calls merged by index, the last `finish_reason`, logprobs joined.
pub(crate) fn assemble(chunks: &[Value]) -> Vec<Value> {
    let mut choices: Vec<(u64, Map<String, Value>, Value, Value)> = Vec::new();
    for chunk in chunks {
        let Some(list) = chunk.get("choices").and_then(Value::as_array) else {
            continue;
        };
        for choice in list {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let pos = match choices.iter().position(|c| c.0 == index) {
                Some(p) => p,
                None => {
                    let mut message = Map::new();
                    message.insert("role".into(), Value::from("assistant"));
                    choices.push((index, message, Value::Null, Value::Null));
                    choices.len() - 1
                }
            };
            let (_, message, finish, logprobs) = &mut choices[pos];
            if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
                merge_delta(message, delta);
            }
            if let Some(reason) = choice.get("finish_reason").filter(|v| !v.is_null()) {
                *finish = reason.clone();
            }
            if let Some(lp) = choice.get("logprobs").filter(|v| !v.is_null()) {
                merge_logprobs(logprobs, lp);
            }
        }
    }
    choices.sort_by_key(|c| c.0);
    choices
        .into_iter()
        .map(|(index, mut message, finish, logprobs)| {
            message.entry("content").or_insert(Value::Null);
            message.entry("refusal").or_insert(Value::Null);
            // A completion's tool calls carry no `index` (only stream deltas do).
            if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    if let Some(call) = call.as_object_mut() {
                        call.remove("index");
                    }
                }
            }
            let mut choice = Map::new();
            choice.insert("index".into(), Value::from(index));
            choice.insert("message".into(), Value::Object(message));
            choice.insert("logprobs".into(), logprobs);
            choice.insert("finish_reason".into(), finish);
            Value::Object(choice)
        })
        .collect()
}

fn append_str(target: &mut Value, text: &str) {
    match target {
        Value::String(s) => s.push_str(text),
        other => *other = Value::from(text),
    }
}

fn merge_delta(message: &mut Map<String, Value>, delta: &Map<String, Value>) {
    for (name, value) in delta {
        match (name.as_str(), value) {
            ("tool_calls", Value::Array(calls)) => {
                let list = message
                    .entry("tool_calls")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !list.is_array() {
                    *list = Value::Array(Vec::new());
                }
                let Some(list) = list.as_array_mut() else {
                    continue;
                };
                for call in calls {
                    merge_tool_call(list, call);
                }
            }
            ("function_call", Value::Object(f)) => {
                let target = message
                    .entry("function_call")
                    .or_insert_with(|| Value::Object(Map::new()));
                merge_strings(target, f);
            }
            ("role", Value::String(_)) => {
                message.insert(name.clone(), value.clone());
            }
            (_, Value::String(text)) => {
                append_str(message.entry(name.clone()).or_insert(Value::Null), text);
            }
            (_, Value::Null) => {
                message.entry(name.clone()).or_insert(Value::Null);
            }
            (_, Value::Array(items)) => {
                let target = message
                    .entry(name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                match target.as_array_mut() {
                    Some(list) => list.extend(items.iter().cloned()),
                    None => *target = value.clone(),
                }
            }
            (_, other) => {
                message.insert(name.clone(), other.clone());
            }
        }
    }
}

/// String members appended, others replaced, objects merged the same way.
fn merge_strings(target: &mut Value, delta: &Map<String, Value>) {
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target) = target.as_object_mut() else {
        return;
    };
    for (name, value) in delta {
        match value {
            Value::String(text) => {
                append_str(target.entry(name.clone()).or_insert(Value::Null), text)
            }
            Value::Object(inner) => {
                merge_strings(target.entry(name.clone()).or_insert(Value::Null), inner);
            }
            Value::Null => {
                target.entry(name.clone()).or_insert(Value::Null);
            }
            other => {
                target.insert(name.clone(), other.clone());
            }
        }
    }
}

fn merge_tool_call(list: &mut Vec<Value>, call: &Value) {
    let Some(call) = call.as_object() else {
        return;
    };
    let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
    let pos = list
        .iter()
        .position(|c| c.get("index").and_then(Value::as_u64) == Some(index));
    let pos = match pos {
        Some(p) => p,
        None => {
            let mut fresh = Map::new();
            fresh.insert("index".into(), Value::from(index));
            list.push(Value::Object(fresh));
            list.len() - 1
        }
    };
    let mut rest = call.clone();
    rest.remove("index");
    // `id` and `type` come whole; name and arguments arrive in pieces.
    if let Some(target) = list[pos].as_object_mut() {
        for name in ["id", "type"] {
            if let Some(v) = rest.remove(name).filter(|v| !v.is_null()) {
                target.insert(name.into(), v);
            }
        }
    }
    merge_strings(&mut list[pos], &rest);
}

fn merge_logprobs(target: &mut Value, delta: &Value) {
    let Some(delta) = delta.as_object() else {
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target) = target.as_object_mut() else {
        return;
    };
    for (name, value) in delta {
        match (target.get_mut(name), value) {
            (Some(Value::Array(list)), Value::Array(items)) => list.extend(items.iter().cloned()),
            (_, v) => {
                target.insert(name.clone(), v.clone());
            }
        }
    }
}

/// The chunks a stream of `choices` would have sent: per choice, the role (with empty content),
/// then reasoning fields, content, refusal, other fields and tool calls, each as one delta, then
/// `finish_reason` with an empty delta. Tool calls keep their order and `index`.
pub(crate) fn synthesize(choices: &[Value]) -> Vec<Value> {
    let mut chunks = Vec::new();
    let chunk = |index: &Value, delta: Value, finish: Value, logprobs: Value| {
        let mut choice = Map::new();
        choice.insert("index".into(), index.clone());
        choice.insert("delta".into(), delta);
        choice.insert("logprobs".into(), logprobs);
        choice.insert("finish_reason".into(), finish);
        let mut body = Map::new();
        body.insert("choices".into(), Value::Array(vec![Value::Object(choice)]));
        Value::Object(body)
    };
    for choice in choices {
        let index = choice.get("index").cloned().unwrap_or(Value::from(0));
        let empty = Map::new();
        let message = choice
            .get("message")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let role = message
            .get("role")
            .cloned()
            .unwrap_or(Value::from("assistant"));
        let mut first = Map::new();
        first.insert("role".into(), role);
        first.insert("content".into(), Value::from(""));
        first.insert("refusal".into(), Value::Null);
        chunks.push(chunk(
            &index,
            Value::Object(first),
            Value::Null,
            Value::Null,
        ));
        let mut names: Vec<&String> = message
            .keys()
            .filter(|k| !matches!(k.as_str(), "role" | "tool_calls"))
            .collect();
        // Reasoning first, as models send it; then the content.
        names.sort_by_key(|k| match k.as_str() {
            n if n.starts_with("reasoning") => 0,
            "content" => 1,
            "refusal" => 2,
            _ => 3,
        });
        for name in names {
            let value = &message[name.as_str()];
            if value.is_null() || value.as_str() == Some("") {
                continue;
            }
            let mut delta = Map::new();
            delta.insert(name.clone(), value.clone());
            chunks.push(chunk(
                &index,
                Value::Object(delta),
                Value::Null,
                Value::Null,
            ));
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let mut call = call.as_object().cloned().unwrap_or_default();
                    call.entry("index").or_insert(Value::from(i));
                    Value::Object(call)
                })
                .collect();
            if !calls.is_empty() {
                let mut delta = Map::new();
                delta.insert("tool_calls".into(), Value::Array(calls));
                chunks.push(chunk(
                    &index,
                    Value::Object(delta),
                    Value::Null,
                    Value::Null,
                ));
            }
        }
        chunks.push(chunk(
            &index,
            Value::Object(Map::new()),
            choice.get("finish_reason").cloned().unwrap_or(Value::Null),
            choice.get("logprobs").cloned().unwrap_or(Value::Null),
        ));
    }
    chunks
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn delta(d: Value, finish: Value) -> Value {
        json!({"choices": [{"index": 0, "delta": d, "logprobs": null, "finish_reason": finish}]})
    }

    #[test]
    fn a_stream_assembles_into_the_message_it_spelled() {
        let chunks = vec![
            delta(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ),
            delta(json!({"reasoning_content": "Think"}), Value::Null),
            delta(json!({"reasoning_content": "ing."}), Value::Null),
            delta(json!({"content": "Hel"}), Value::Null),
            delta(json!({"content": "lo"}), Value::Null),
            delta(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
            delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                Value::Null,
            ),
            delta(json!({}), json!("tool_calls")),
        ];
        let choices = assemble(&chunks);
        assert_eq!(
            choices,
            vec![
                json!({"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": "Hello", "refusal": null,
                    "reasoning_content": "Thinking.",
                    "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}})
            ]
        );
        // Made back into chunks, they assemble to the same message.
        assert_eq!(assemble(&synthesize(&choices)), choices);
    }

    #[test]
    fn only_normally_finished_answers_are_kept() {
        let stop = json!({"message": {"content": "x"}, "finish_reason": "stop"});
        let length = json!({"message": {"content": "x"}, "finish_reason": "length"});
        let tools =
            json!({"message": {"tool_calls": [{"id": "c"}]}, "finish_reason": "tool_calls"});
        assert!(finished(std::slice::from_ref(&stop), false));
        assert!(!finished(&[length], true));
        assert!(!finished(std::slice::from_ref(&tools), false));
        assert!(finished(&[tools], true));
        assert!(!finished(&[], true));
    }

    #[test]
    fn a_recorded_completion_renders_with_fresh_ids() {
        let completion = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "gpt-x", "system_fingerprint": "fp", "service_tier": "default",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi", "refusal": null},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}});
        let rec = Recorded::from_completion(completion.as_object().unwrap());
        assert_eq!(rec.tokens(), (5, 1));
        let back = rec.completion("chatcmpl-2", 9);
        assert_eq!(back["id"], "chatcmpl-2");
        assert_eq!(back["created"], 9);
        assert_eq!(back["choices"], completion["choices"]);
        assert_eq!(back["service_tier"], "default");
        let stored: Recorded = serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
        assert_eq!(stored, rec);
        let r = Renderer {
            id: "chatcmpl-3".into(),
            created: 10,
            include_usage: true,
        };
        let frame = r.chunk(&rec.head(), &rec.stream_chunks()[1]);
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(
            text.starts_with("data: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        let v: Value = serde_json::from_str(&text[6..]).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["choices"][0]["delta"]["content"], "Hi");
        assert!(v["usage"].is_null() && v.get("usage").is_some());
        let usage = r.usage(&rec.head(), rec.usage.as_ref()).unwrap();
        let u: Value = serde_json::from_str(&std::str::from_utf8(&usage).unwrap()[6..]).unwrap();
        assert_eq!(u["usage"]["total_tokens"], 6);
        assert_eq!(u["choices"], json!([]));
    }
}
