//! `POST /api/keys/{id}/test`: a minimal real upstream request with that one key. Gateway
//! mode: a 1-token completion on the provider's test model, with only this credential in
//! `byok` and routing pinned to the provider (`only`); an answer that reports system
//! credentials is not a success. Direct mode: the provider's model list with the key as the
//! provider expects it (providers direct mode cannot call are refused, never "tested" without
//! the key).
//!
//! Answers `{ok, status, latency_ms, message}`. The message never contains the gateway key or
//! any value of the credential, nor any piece of one: every run of 6 or more characters
//! shared (case-insensitively) with a secret is blanked, whatever the upstream echoed.

use crate::config::UpstreamMode;
use crate::keys::ring::Credential;
use crate::state::AppState;
use crate::upstream::direct;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

#[derive(Debug, Serialize)]
pub struct TestOutcome {
    pub ok: bool,
    /// Upstream HTTP status; 0 when no answer came.
    pub status: u16,
    pub latency_ms: u64,
    pub message: String,
}

impl TestOutcome {
    fn failed(message: impl Into<String>) -> TestOutcome {
        TestOutcome {
            ok: false,
            status: 0,
            latency_ms: 0,
            message: message.into(),
        }
    }
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
/// Shortest run shared with a secret that is blanked from a message.
const SCRUB_RUN: usize = 6;
/// Longest message returned.
const MAX_MESSAGE: usize = 300;

pub async fn run(app: &AppState, cred: &Credential) -> TestOutcome {
    let started = Instant::now();
    let outcome = match request(app, cred) {
        Ok(req) => send(app, req).await,
        Err(outcome) => outcome,
    };
    let mut secrets = credential_values(cred);
    if let Some(k) = &app.config.upstream.gateway_api_key {
        secrets.push(Zeroizing::new(k.expose().clone()));
    }
    TestOutcome {
        latency_ms: started.elapsed().as_millis() as u64,
        message: scrub(&outcome.message, &secrets),
        ..outcome
    }
}

/// The test request for this credential, or why there is none.
fn request(app: &AppState, cred: &Credential) -> Result<Request<Full<Bytes>>, TestOutcome> {
    let provider = cred.provider.as_str();
    let upstream = &app.config.upstream;
    let built = match upstream.mode {
        UpstreamMode::Gateway => {
            let Some(key) = &upstream.gateway_api_key else {
                return Err(TestOutcome::failed(
                    "the operator has not configured the gateway key (AI_GATEWAY_API_KEY)",
                ));
            };
            let model = app
                .config
                .models
                .test_models
                .get(provider)
                .map_or(default_test_model(provider), String::as_str);
            let body = Zeroizing::new(format!(
                "{{\"model\":{},\"messages\":[{{\"role\":\"user\",\"content\":\"ping\"}}],\"max_tokens\":1,\
                 \"providerOptions\":{{\"gateway\":{{\"only\":[{}],\"byok\":{{{}:[{}]}}}}}}}}",
                json!(model),
                json!(provider),
                json!(provider),
                cred.json.expose()
            ));
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .map_err(|_| TestOutcome::failed("the gateway key is not a valid header"))?;
            auth.set_sensitive(true);
            Request::post(format!("{}/chat/completions", upstream.gateway_base_url))
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::AUTHORIZATION, auth)
                .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        }
        UpstreamMode::Direct => {
            if !direct::supports(provider) {
                return Err(TestOutcome::failed(direct::unsupported_reason(provider)));
            }
            let Some(base) = upstream.direct.get(provider) else {
                return Err(TestOutcome::failed(format!(
                    "no direct endpoint configured for {provider} (upstream.direct.{provider}.base_url)"
                )));
            };
            let Some(key) = cred.api_key.as_ref().filter(|k| !k.expose().is_empty()) else {
                return Err(TestOutcome::failed(
                    "this credential has no API key to test in direct mode",
                ));
            };
            let mut headers = HeaderMap::new();
            direct::set_auth(&mut headers, provider, key.expose())
                .map_err(|_| TestOutcome::failed("the stored key is not a valid header value"))?;
            let mut r = Request::get(format!("{base}/models"));
            if let Some(h) = r.headers_mut() {
                *h = headers;
            }
            r.body(Full::new(Bytes::new()))
        }
    };
    built.map_err(|_| TestOutcome::failed("could not build the test request"))
}

async fn send(app: &AppState, req: Request<Full<Bytes>>) -> TestOutcome {
    let timeout = app.upstream.first_byte_timeout.min(TEST_TIMEOUT);
    let resp = match app.upstream.send_within(req, timeout).await {
        Err(crate::upstream::Error::Timeout(d)) => {
            return TestOutcome::failed(format!("no answer within {}s", d.as_secs()))
        }
        Err(crate::upstream::Error::Unavailable(_)) => {
            return TestOutcome::failed("upstream unreachable")
        }
        Ok(resp) => resp,
    };
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
    let gateway = app.config.upstream.mode == UpstreamMode::Gateway;
    if status.is_success()
        && gateway
        && crate::upstream::gateway::system_credentials_used(
            &body,
            crate::usage::extract(&body, &body).and_then(|u| u.is_byok),
        )
        .is_some()
    {
        return TestOutcome {
            ok: false,
            status: status.as_u16(),
            latency_ms: 0,
            message: "the gateway could not use this key and answered with the operator's \
                      credentials instead"
                .into(),
        };
    }
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

/// `error.message` of an OpenAI- or Anthropic-shaped error body.
fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Every string value in the credential (any depth), as secrets to keep out of messages.
fn credential_values(cred: &Credential) -> Vec<Zeroizing<String>> {
    fn collect(v: Value, out: &mut Vec<Zeroizing<String>>) {
        match v {
            Value::String(s) => out.push(Zeroizing::new(s)),
            Value::Array(items) => items.into_iter().for_each(|i| collect(i, out)),
            Value::Object(map) => map.into_iter().for_each(|(_, v)| collect(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<Value>(cred.json.expose()) {
        collect(v, &mut out);
    }
    out
}

/// `message` with every run of at least [`SCRUB_RUN`] bytes that also occurs in a secret
/// (ASCII case-insensitively) replaced by `[redacted]`, then shortened.
pub fn scrub(message: &str, secrets: &[Zeroizing<String>]) -> String {
    let msg = message.as_bytes();
    let mut hidden = vec![false; msg.len()];
    for secret in secrets {
        let s = secret.as_bytes();
        if s.len() < 4 {
            continue;
        }
        // A whole short value (4-5 bytes) is hidden too; pieces from 6 bytes on.
        let run = SCRUB_RUN.min(s.len());
        // Longest common suffix lengths, one row per message byte.
        let mut prev = vec![0usize; s.len() + 1];
        let mut cur = vec![0usize; s.len() + 1];
        for (i, m) in msg.iter().enumerate() {
            for (j, c) in s.iter().enumerate() {
                cur[j + 1] = if m.eq_ignore_ascii_case(c) {
                    prev[j] + 1
                } else {
                    0
                };
                if cur[j + 1] >= run {
                    for h in &mut hidden[i + 1 - cur[j + 1]..=i] {
                        *h = true;
                    }
                }
            }
            std::mem::swap(&mut prev, &mut cur);
        }
    }
    let mut out = Vec::with_capacity(msg.len());
    let mut i = 0;
    while i < msg.len() {
        if hidden[i] {
            out.extend_from_slice(b"[redacted]");
            while i < msg.len() && hidden[i] {
                i += 1;
            }
        } else {
            out.push(msg[i]);
            i += 1;
        }
    }
    let text = String::from_utf8_lossy(&out);
    text.chars().take(MAX_MESSAGE).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<Zeroizing<String>> {
        list.iter().map(|s| Zeroizing::new(s.to_string())).collect()
    }

    #[test]
    fn scrubs_keys_pieces_and_case_variants() {
        let key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123";
        let gw = "vck_gatewaykey_9876543210";
        let s = secrets(&[key, gw, "us-east-1"]);
        for echoed in [
            format!("Incorrect API key provided: {key}."),
            format!("key {} is wrong", key.to_uppercase()),
            format!("ends with ...{}", &key[key.len() - 10..]),
            format!("starts {}...", &key[..9]),
            format!("Authorization: Bearer {gw}"),
            format!("middle piece {} here", &key[13..20]),
        ] {
            let out = scrub(&echoed, &s);
            let lower = out.to_lowercase();
            for secret in [key, gw] {
                let secret = secret.to_lowercase();
                for w in secret.as_bytes().windows(SCRUB_RUN) {
                    let w = std::str::from_utf8(w).unwrap();
                    assert!(!lower.contains(w), "{w} left in {out}");
                }
            }
            assert!(out.contains("[redacted]"), "{out}");
        }
        // Ordinary text stays; region values too short to matter as pieces are hidden whole.
        assert_eq!(scrub("model not found", &s), "model not found");
        assert_eq!(scrub("region us-east-1 down", &s), "region [redacted] down");
        assert!(scrub(&"x".repeat(1000), &s).chars().count() <= MAX_MESSAGE);
    }

    proptest::proptest! {
        #[test]
        fn no_six_byte_piece_of_a_secret_survives(
            secret in "[A-Za-z0-9_-]{8,40}",
            prefix in "[ -~]{0,30}",
            suffix in "[ -~]{0,30}",
            start in 0usize..40,
            len in 6usize..40,
            upper in proptest::bool::ANY,
        ) {
            let start = start.min(secret.len() - 6);
            let end = (start + len).min(secret.len());
            let mut piece = secret[start..end].to_string();
            if upper {
                piece = piece.to_uppercase();
            }
            let out = scrub(&format!("{prefix}{piece}{suffix}"), &secrets(&[&secret]));
            let lower = out.to_lowercase();
            let s = secret.to_lowercase();
            for w in s.as_bytes().windows(6) {
                proptest::prop_assert!(!lower.contains(std::str::from_utf8(w).unwrap()));
            }
        }
    }
}
