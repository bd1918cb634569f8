//! Billing integrity (SPEC §8) through HTTP against the fake gateway: in `deny` mode no request
//! is forwarded unless every model it can reach has the caller's own credential, routing is
//! pinned to the providers whose credentials are sent, system-credential use is detected in
//! JSON and streams and shows on the key; `allow` mode forwards what `deny` refuses; direct
//! mode never forwards gateway fields.

use crate::common::fake_upstream::{Behavior, FakeUpstream};
use crate::common::{within, TestProxy};
use crate::proxy::{add_key, alice_with_openai_key, direct_proxy_for, proxy_for, GATEWAY_KEY};
use serde_json::{json, Value};
use std::time::Duration;

/// Every /v1 route that takes a model, with a minimal body for it.
fn routes() -> [(&'static str, Value); 5] {
    [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/v1/embeddings", json!({"input": "hi"})),
        ("/v1/responses", json!({"input": "hi"})),
        ("/v1/messages", json!({"max_tokens": 5, "messages": []})),
        ("/v1/messages/count_tokens", json!({"messages": []})),
    ]
}

fn with(base: &Value, extra: Value) -> Value {
    let mut v = base.clone();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// The error's code (OpenAI shape) or type (Anthropic shape on /v1/messages*), and message.
fn error_of(path: &str, body: &Value) -> (String, String) {
    if path.starts_with("/v1/messages") {
        assert_eq!(body["type"], "error", "{body}");
        (
            body["error"]["type"].as_str().unwrap().to_string(),
            body["error"]["message"].as_str().unwrap().to_string(),
        )
    } else {
        (
            body["error"]["code"].as_str().unwrap().to_string(),
            body["error"]["message"].as_str().unwrap().to_string(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_refuses_any_reachable_model_without_a_key_on_every_route() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    for (path, base) in routes() {
        for (extra, model) in [
            // The issue's probe: an Anthropic primary with an OpenAI fallback.
            (
                json!({"model": "anthropic/claude-sonnet-4", "models": ["openai/gpt-4o"]}),
                "anthropic/claude-sonnet-4",
            ),
            // The fallback is the one without a key, in providerOptions.gateway.models.
            (
                json!({"model": "openai/gpt-4o", "providerOptions": {"gateway": {"models": ["google/gemini-2.5-pro"]}}}),
                "google/gemini-2.5-pro",
            ),
            // A client `only` that leaves no provider the caller has a key for.
            (
                json!({"model": "openai/gpt-4o", "providerOptions": {"gateway": {"only": ["azure"]}}}),
                "openai/gpt-4o",
            ),
        ] {
            let (s, b) = p.post(path, &token, with(&base, extra.clone())).await;
            assert_eq!(s, 403, "{path} {extra} {b}");
            let (code, message) = error_of(path, &b);
            let want = if path.starts_with("/v1/messages") {
                "permission_error"
            } else {
                "no_provider_key"
            };
            assert_eq!(code, want, "{path} {b}");
            assert!(message.contains(model), "{path}: {message}");
        }
        // Fallback creators refused as a primary are refused as fallbacks (400).
        for fallback in ["meta/llama-3", "bogusprov/x"] {
            let body = with(
                &base,
                json!({"model": "openai/gpt-4o", "models": [fallback]}),
            );
            let (s, b) = p.post(path, &token, body).await;
            assert_eq!(s, 400, "{path} {fallback} {b}");
            let (code, message) = error_of(path, &b);
            if !path.starts_with("/v1/messages") {
                assert_eq!(code, "unknown_provider");
            }
            assert!(message.contains(fallback), "{message}");
        }
    }
    assert_eq!(
        fake.request_count(),
        0,
        "nothing refused reaches the gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_requests_pin_only_and_order_and_keep_every_other_option() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert(
            "BYOK_MODELS__ALIASES".into(),
            r#"{ sonnet = "anthropic/claude-sonnet-4.5" }"#.into(),
        );
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    add_key(
        &p,
        &token,
        "anthropic",
        json!({"apiKey": "sk-ant-alice-000000001"}),
    )
    .await;
    add_key(
        &p,
        &token,
        "xai",
        json!({"apiKey": "xai-alice-not-needed-01"}),
    )
    .await;
    for (i, (path, base)) in routes().into_iter().enumerate() {
        // Raw JSON, so "every other byte" can be checked as text.
        let mut body = with(
            &base,
            json!({"model": "openai/gpt-4o", "models": ["sonnet"]}),
        );
        body["providerOptions"] = json!({
            "gateway": {
                "tags": ["feature:chat", "team:a"],
                "user": "u-42",
                "order": ["vertex", "anthropic", "openai"],
                "byok": {"xai": [{"apiKey": "client-typed-must-vanish"}]}
            },
            "openai": {"store": false}
        });
        let (s, b) = p.post(path, &token, body).await;
        assert_eq!(s, 200, "{path} {b}");
        let reqs = fake.wait_for_requests(i + 1, Duration::from_secs(5)).await;
        let r = &reqs[i];
        assert_eq!(
            r.header("authorization").unwrap(),
            format!("Bearer {GATEWAY_KEY}")
        );
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(!text.contains("client-typed-must-vanish"), "{text}");
        assert!(
            !text.contains("xai-alice"),
            "a provider the request cannot use: {text}"
        );
        assert!(
            text.contains(r#""tags":["feature:chat","team:a"],"user":"u-42""#),
            "{text}"
        );
        assert!(text.contains(r#""openai":{"store":false}"#), "{text}");
        let v = r.json();
        let gw = &v["providerOptions"]["gateway"];
        assert_eq!(
            gw["byok"],
            json!({"openai": [{"apiKey": "sk-openai-user-0000000001"}], "anthropic": [{"apiKey": "sk-ant-alice-000000001"}]}),
            "{path}"
        );
        assert_eq!(gw["only"], json!(["openai", "anthropic"]), "{path}");
        assert_eq!(gw["order"], json!(["anthropic", "openai"]), "{path}");
        assert_eq!(
            v["models"],
            json!(["anthropic/claude-sonnet-4.5"]),
            "alias resolved"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_only_narrower_and_wider() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    add_key(
        &p,
        &token,
        "azure",
        json!({"apiKey": "azure-alice-0000001", "resourceName": "res"}),
    )
    .await;
    let chat = |only: Value| json!({"model": "openai/gpt-4o", "messages": [], "providerOptions": {"gateway": {"only": only}}});
    // Narrower: the caller asked for azure only.
    let (s, _) = p
        .post("/v1/chat/completions", &token, chat(json!(["azure"])))
        .await;
    assert_eq!(s, 200);
    // Wider: providers without a key of the caller are dropped from `only` and from `byok`.
    let (s, _) = p
        .post(
            "/v1/chat/completions",
            &token,
            chat(json!(["bedrock", "openai", "azure", "vertex"])),
        )
        .await;
    assert_eq!(s, 200);
    let reqs = fake.requests();
    let gw0 = &reqs[0].json()["providerOptions"]["gateway"];
    assert_eq!(gw0["only"], json!(["azure"]));
    assert_eq!(
        gw0["byok"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["azure"]
    );
    let gw1 = &reqs[1].json()["providerOptions"]["gateway"];
    assert_eq!(gw1["only"], json!(["openai", "azure"]));
    // Disjoint: 403, nothing sent.
    let (s, b) = p
        .post("/v1/chat/completions", &token, chat(json!(["vertex"])))
        .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("only"),
        "{b}"
    );
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_mode_forwards_what_deny_refuses_and_counts_it() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert(
            "BYOK_UPSTREAM__GATEWAY__SYSTEM_CREDENTIALS".into(),
            "allow".into(),
        );
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    let body = json!({"model": "anthropic/claude-sonnet-4", "models": ["openai/gpt-4o"], "messages": [], "providerOptions": {"gateway": {"only": ["azure", "anthropic", "openai"]}}});
    let (s, b) = p.post("/v1/chat/completions", &token, body).await;
    assert_eq!(s, 200, "{b}");
    let r = &fake.requests()[0];
    let gw = &r.json()["providerOptions"]["gateway"];
    assert_eq!(
        gw["byok"],
        json!({"openai": [{"apiKey": "sk-openai-user-0000000001"}]})
    );
    assert_eq!(
        gw["only"],
        json!(["azure", "anthropic", "openai"]),
        "as the client sent it"
    );
    let m = p.metrics().await;
    assert!(
        m.contains("byok_system_credential_fallback_total{provider=\"anthropic\"} 1"),
        "{m}"
    );
}

/// A chat answer whose routing says the gateway fell back to system credentials.
fn routed_json(credential: &str, is_byok: bool) -> String {
    json!({
        "id": "gen_1", "object": "chat.completion", "model": "openai/gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi",
            "provider_metadata": {"gateway": {"routing": {"originalModelId": "openai/gpt-4o", "finalProvider": "openai",
                "attempts": [
                    {"provider": "openai", "credentialType": "byok", "success": credential == "byok", "statusCode": if credential == "byok" { 200 } else { 429 }},
                    {"provider": "openai", "credentialType": credential, "success": true, "statusCode": 200}
                ]}}}}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "is_byok": is_byok}
    })
    .to_string()
}

async fn key_status(p: &TestProxy, token: &str) -> (String, Value) {
    let (_, keys) = p.get("/api/keys", token).await;
    let k = keys["data"][0].clone();
    (k["status"].as_str().unwrap().to_string(), k)
}

async fn wait_status(p: &TestProxy, token: &str, want: &str) -> Value {
    let mut last = Value::Null;
    within(Duration::from_secs(5), async || {
        let (s, k) = key_status(p, token).await;
        last = k;
        s == want
    })
    .await;
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_credential_use_is_detected_in_json_and_streams_and_shows_on_the_key() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    let chat = json!({"model": "openai/gpt-4o", "messages": []});
    let metric = "byok_system_credential_fallback_total{provider=\"openai\"}";
    let count = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(metric))
            .map_or(0, |v| v.trim().parse().unwrap())
    };

    // 1. JSON, routing metadata says system (usage still claims BYOK).
    fake.push(Behavior::Json {
        status: 200,
        body: routed_json("system", true),
    });
    let (s, _) = p.post("/v1/chat/completions", &token, chat.clone()).await;
    assert_eq!(s, 200);
    let k = wait_status(&p, &token, "failing").await;
    let err = k["last_error"].as_str().unwrap();
    assert!(
        err.contains("operator's credentials") && err.contains("429"),
        "{k}"
    );
    assert!(!err.contains("sk-openai"), "{k}");
    assert_eq!(count(&p.metrics().await), 1);

    // 2. A clean BYOK answer clears it.
    fake.push(Behavior::Json {
        status: 200,
        body: routed_json("byok", true),
    });
    p.post("/v1/chat/completions", &token, chat.clone()).await;
    let k = wait_status(&p, &token, "active").await;
    assert!(k["last_error"].is_null(), "{k}");

    // 3. JSON with only usage.is_byok false.
    fake.push(Behavior::Json {
        status: 200,
        body: json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "is_byok": false}}).to_string(),
    });
    p.post("/v1/chat/completions", &token, chat.clone()).await;
    wait_status(&p, &token, "failing").await;
    fake.push(Behavior::Json {
        status: 200,
        body: routed_json("byok", true),
    });
    p.post("/v1/chat/completions", &token, chat.clone()).await;
    wait_status(&p, &token, "active").await;

    // 4. A stream whose final chunk carries the routing metadata.
    let last = json!({"id": "gen_s", "object": "chat.completion.chunk", "choices": [{"index": 0, "finish_reason": "stop",
        "delta": {"provider_metadata": {"gateway": {"routing": {"finalProvider": "openai",
            "attempts": [{"provider": "openai", "credentialType": "system", "success": true}]}}}}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2}});
    fake.push(Behavior::Stream {
        chunks: vec![
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n".into(),
            format!("data: {last}\n\n"),
            "data: [DONE]\n\n".into(),
        ],
        delay: Duration::from_millis(5),
    });
    let resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "openai/gpt-4o", "messages": [], "stream": true}))
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains("[DONE]"));
    wait_status(&p, &token, "failing").await;
    assert_eq!(count(&p.metrics().await), 3);
    // Audited, per use, for the caller.
    within(Duration::from_secs(5), async || {
        let (_, audit) = p.get("/api/audit", &token).await;
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "byok.system_credentials_used")
            .count()
            == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_never_forwards_gateway_fields_or_unusable_keys() {
    let fake = FakeUpstream::start().await;
    let p = direct_proxy_for(&fake).await;
    let token = alice_with_openai_key(&p).await;
    // Fallbacks cannot happen in direct mode: refused, not silently ignored.
    for body in [
        json!({"model": "openai/gpt-4o", "models": ["bogusprov/x"]}),
        json!({"model": "openai/gpt-4o", "providerOptions": {"gateway": {"models": ["openai/gpt-4o-mini"]}}}),
    ] {
        let (s, b) = p.post("/v1/chat/completions", &token, body).await;
        assert_eq!(s, 400, "{b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("direct mode"),
            "{b}"
        );
    }
    // providerOptions (a client-typed byok included) never reaches a provider.
    let (s, _) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o", "messages": [], "providerOptions": {"gateway": {"byok": {"openai": [{"apiKey": "client-typed"}]}}}}),
        )
        .await;
    assert_eq!(s, 200);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let text = String::from_utf8(reqs[0].body.to_vec()).unwrap();
    assert!(
        !text.contains("providerOptions") && !text.contains("client-typed"),
        "{text}"
    );
    assert_eq!(reqs[0].json()["model"], "gpt-4o");
    // Bedrock and Vertex keys cannot be used in direct mode: refused at the route, and
    // /api/providers says so.
    let (s, b) = p
        .post(
            "/api/keys",
            &token,
            json!({"provider": "bedrock", "credentials": {"accessKeyId": "AKIAX", "secretAccessKey": "s3cr3t-bedrock"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("direct mode"),
        "{b}"
    );
    assert!(!b.to_string().contains("s3cr3t"));
    let (_, providers) = p.get("/api/providers", &token).await;
    let by_id = |id: &str| {
        providers["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("bedrock")["available"], false);
    assert_eq!(by_id("vertex")["available"], false);
    assert_eq!(by_id("openai")["available"], true);
    assert_eq!(by_id("groq")["available"], false, "no endpoint configured");
    assert_eq!(fake.request_count(), 1);
}
