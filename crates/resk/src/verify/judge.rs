//! An LLM judge over an OpenAI-compatible chat-completions endpoint: the two questions (and the
//! conversation, when the lookup has one) are sent to a model that must answer a strict JSON
//! verdict, `{"same": true|false, "reason": "…"}`. Asked only about candidates in the band (it
//! costs a call and tokens); temperature 0; the answer's `usage` is counted
//! (`resk_judge_tokens_total{kind}`) and priced (`resk_judge_cost_microdollars_total`) with the
//! operator's prices.
//!
//! What it catches: whatever the model understands — scope, entities, intent, a paraphrase that
//! shares no words. What it misses: what the model gets wrong; it is also the slowest and the only
//! paid verifier, and it sends both questions to the endpoint (keep it on your own deployment when
//! the questions are sensitive). A reply that is not the JSON verdict is an error: the candidate is
//! rejected (fail closed) unless `fail_open` is set, in which case the judge abstains and the other
//! verifiers decide.

use std::time::Duration;

use resk_core::{Error, ErrorKind, Judgement, Pair, Result, Verifier, VerifierInfo};
use resk_http::{JsonApi, Method, RetryPolicy, header::HeaderMap};
use serde::Deserialize;
use serde_json::json;

const SYSTEM: &str = "You decide whether the answer cached for one question also correctly answers \
another question. Reply with only a JSON object {\"same\": true or false, \"reason\": \"at most ten words\"}. \
Say same only when both questions ask for the same information: a different entity, object, number, \
date, negation, direction, product, plan or platform makes them different.";

/// Where the judge is and what it costs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JudgeConfig {
    /// The API base, e.g. `https://api.openai.com/v1` (`/chat/completions` is appended).
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` (never logged).
    pub api_key: Option<String>,
    /// The model asked.
    pub model: String,
    /// Per call.
    pub timeout: Duration,
    /// Retries of transient failures (429, 5xx, time-outs).
    pub max_retries: u32,
    /// Price of 1 000 prompt tokens, in dollars (for `resk_judge_cost_microdollars_total`).
    pub price_per_1k_prompt: f64,
    /// Price of 1 000 completion tokens, in dollars.
    pub price_per_1k_completion: f64,
    /// On an error or a reply that is not the verdict, abstain instead of rejecting.
    pub fail_open: bool,
}

impl JudgeConfig {
    /// `model` at `base_url`, no key, 5 s, one retry, no prices, fail closed.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            timeout: Duration::from_secs(5),
            max_retries: 1,
            price_per_1k_prompt: 0.0,
            price_per_1k_completion: 0.0,
            fail_open: false,
        }
    }
}

/// The LLM judge.
#[derive(Debug, Clone)]
pub struct Judge {
    info: VerifierInfo,
    api: JsonApi,
    config: JudgeConfig,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Verdict {
    same: bool,
    #[serde(default)]
    reason: Option<String>,
}

fn bad_reply(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Backend, "judge", "verify", message)
}

impl Judge {
    /// A judge at `config.base_url` (a bad URL or key is a [`ErrorKind::Config`] error).
    pub fn new(config: JudgeConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            headers.insert(
                resk_http::header::AUTHORIZATION,
                resk_http::secret_header(&format!("Bearer {key}"))?,
            );
        }
        let retry = RetryPolicy {
            max_retries: config.max_retries,
            ..RetryPolicy::default()
        };
        let api = JsonApi::new("judge", &config.base_url, config.timeout, retry, headers)?;
        Ok(Self {
            info: VerifierInfo::new("judge"),
            api,
            config,
        })
    }

    /// Check the endpoint answers (`GET /models` with the key): what start-up asks of a judge that
    /// may fail open, so a wrong URL or key is found at once rather than on the first candidate.
    pub async fn probe(&self) -> Result<()> {
        self.api
            .call::<serde::de::IgnoredAny>("probe", Method::GET, "/models", None::<&()>)
            .await
            .map(|_| ())
    }

    async fn ask(&self, pair: &Pair<'_>) -> Result<Judgement> {
        let conversation: Vec<_> = pair
            .context
            .iter()
            .map(|t| json!({"role": t.role, "content": t.content}))
            .collect();
        let question = json!({
            "cached_question": pair.cached,
            "new_question": pair.query,
            "conversation": conversation,
        });
        let body = json!({
            "model": self.config.model,
            "temperature": 0,
            "max_tokens": 60,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question.to_string()},
            ],
        });
        let completion: Completion = self
            .api
            .call("verify", Method::POST, "/chat/completions", Some(&body))
            .await?;
        if let Some(usage) = &completion.usage {
            metrics::counter!("resk_judge_tokens_total", "kind" => "prompt")
                .increment(usage.prompt_tokens);
            metrics::counter!("resk_judge_tokens_total", "kind" => "completion")
                .increment(usage.completion_tokens);
            let dollars = usage.prompt_tokens as f64 / 1000.0 * self.config.price_per_1k_prompt
                + usage.completion_tokens as f64 / 1000.0 * self.config.price_per_1k_completion;
            metrics::counter!("resk_judge_cost_microdollars_total")
                .increment((dollars * 1_000_000.0).round() as u64);
        }
        let content = completion
            .choices
            .first()
            .and_then(|c| c.message.content.as_deref())
            .ok_or_else(|| bad_reply("the judge's reply has no message content"))?;
        let verdict: Verdict = serde_json::from_str(content.trim()).map_err(|e| {
            bad_reply(format!(
                "the judge's reply is not the JSON verdict {{\"same\": bool, \"reason\": string}}: {e}"
            ))
        })?;
        let reason: String = verdict
            .reason
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect();
        Ok(if verdict.same {
            Judgement::accept(format!("judge_same: {reason}"))
        } else {
            Judgement::reject(format!("judge_different: {reason}"))
        })
    }
}

impl Verifier for Judge {
    fn info(&self) -> &VerifierInfo {
        &self.info
    }

    async fn verify(&self, pair: &Pair<'_>) -> Result<Judgement> {
        match self.ask(pair).await {
            Err(err) if self.config.fail_open => {
                tracing::warn!(error = %err, "judge failed; abstaining (fail open)");
                Ok(Judgement::abstain(format!(
                    "judge_unavailable: {}",
                    err.kind().as_str()
                )))
            }
            other => other,
        }
    }
}
