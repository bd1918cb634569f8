//! `POST /api/keys/{id}/test`: a minimal real upstream request with that one key. Gateway
//! mode: a 1-token completion on the provider's test model, with only this credential in
//! `byok` and routing pinned to the provider. Direct mode: the provider's model list.
//! Answers `{ok, status, latency_ms, message}`; the message never contains the key.

use crate::config::UpstreamMode;
use crate::keys::ring::Credential;
use crate::state::AppState;
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct TestOutcome {
    pub ok: bool,
    /// Upstream HTTP status; 0 when no answer came.
    pub status: u16,
    pub latency_ms: u64,
    pub message: String,
}

/// The model a key test uses when `models.test_models` does not name one.
fn default_test_model(provider: &str) -> &'static str {
    match provider {
        "anthropic" | "bedrock" => "anthropic/claude-3-haiku",
        "google" | "vertex" => "google/gemini-2.0-flash",
        "xai" => "xai/grok-3-mini",
        "groq" => "meta/llama-3.1-8b",
        "mistral" => "mistral/mistral-small",
        "deepseek" => "deepseek/deepseek-chat",
        _ => "openai/gpt-4o-mini",
    }
}

/// Longest test time, whatever the configured first-byte timeout.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(app: &AppState, cred: &Credential) -> TestOutcome {
    let started = Instant::now();
    let provider = cred.provider.as_str();
    let req = match app.config.upstream.mode {
        UpstreamMode::Gateway => {
            let model = app
                .config
                .models
                .test_models
                .get(provider)
                .map_or(default_test_model(provider), String::as_str);
            let body = format!(
                "{{\"model\":{},\"messages\":[{{\"role\":\"user\",\"content\":\"ping\"}}],\"max_tokens\":1,\
                 \"providerOptions\":{{\"gateway\":{{\"only\":[{}],\"byok\":{{{}:[{}]}}}}}}}}",
                json!(model),
                json!(provider),
                json!(provider),
                cred.json.expose()
            );
            let mut r = Request::post(format!(
                "{}/chat/completions",
                app.config.upstream.gateway_base_url
            ))
            .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(k) = &app.config.upstream.gateway_api_key {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", k.expose())) {
                    r = r.header(http::header::AUTHORIZATION, v);
                }
            }
            r.body(Full::new(Bytes::from(body)))
        }
        UpstreamMode::Direct => {
            let Some(base) = app.config.upstream.direct.get(provider) else {
                return TestOutcome {
                    ok: false,
                    status: 0,
                    latency_ms: 0,
                    message: format!("no direct endpoint configured for {provider} (upstream.direct.{provider}.base_url)"),
                };
            };
            let key = cred
                .api_key
                .as_ref()
                .map(|k| k.expose().as_str())
                .unwrap_or("");
            let mut r = Request::get(format!("{base}/models"));
            let header = if provider == "anthropic" {
                r = r.header("anthropic-version", "2023-06-01");
                ("x-api-key", HeaderValue::from_str(key))
            } else {
                (
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {key}")),
                )
            };
            if let (name, Ok(v)) = header {
                r = r.header(name, v);
            }
            r.body(Full::new(Bytes::new()))
        }
    };
    let Ok(req) = req else {
        return TestOutcome {
            ok: false,
            status: 0,
            latency_ms: 0,
            message: "could not build the test request".into(),
        };
    };
    let timeout = app.upstream.first_byte_timeout.min(TEST_TIMEOUT);
    let result = app.upstream.send_within(req, timeout).await;
    let outcome = match result {
        Err(e) => TestOutcome {
            ok: false,
            status: 0,
            latency_ms: 0,
            message: match e {
                crate::upstream::Error::Timeout(d) => format!("no answer within {}s", d.as_secs()),
                crate::upstream::Error::Unavailable(_) => "upstream unreachable".into(),
            },
        },
        Ok(resp) => {
            let status = resp.status();
            let body = tokio::time::timeout(
                timeout,
                http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect(),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|c| c.to_bytes())
            .unwrap_or_default();
            let message = if status.is_success() {
                "the key works".to_string()
            } else {
                upstream_message(&body).unwrap_or_else(|| format!("upstream answered {status}"))
            };
            TestOutcome {
                ok: status.is_success(),
                status: status.as_u16(),
                latency_ms: 0,
                message,
            }
        }
    };
    TestOutcome {
        latency_ms: started.elapsed().as_millis() as u64,
        message: scrub(&outcome.message, cred),
        ..outcome
    }
}

/// `error.message` of an OpenAI- or Anthropic-shaped error body, shortened.
fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = v.pointer("/error/message").and_then(Value::as_str)?;
    Some(m.chars().take(300).collect())
}

/// Removes the key (and any long fragment of it) from an upstream message.
fn scrub(message: &str, cred: &Credential) -> String {
    let mut out = message.to_string();
    if let Some(k) = &cred.api_key {
        let k = k.expose();
        if k.len() >= 8 {
            out = out.replace(k.as_str(), "[redacted]");
            for w in (0..k.len().saturating_sub(7)).step_by(4) {
                if let Some(frag) = k.get(w..w + 8) {
                    out = out.replace(frag, "[redacted]");
                }
            }
        }
    }
    out
}
