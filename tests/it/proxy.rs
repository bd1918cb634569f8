//! The proxy path through HTTP against the fake gateway: what the upstream received (gateway
//! bearer, BYOK object, every other byte as sent), streaming, disconnects, every SPEC §5 row of
//! the proxy routes, `/v1/models`, aliases, direct mode, and key tests.

use crate::common::fake_upstream::{chat_stream_chunks, Behavior, FakeUpstream};
use crate::common::{assert_error, Backend, TestDb, TestProxy};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const GATEWAY_KEY: &str = "gw-test-key-123";

/// A proxy in gateway mode in front of `fake`, with `edit` applied to its environment.
pub async fn proxy_for(
    fake: &FakeUpstream,
    edit: impl FnOnce(&mut byok_proxy::config::EnvMap),
) -> TestProxy {
    TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.insert("BYOK_UPSTREAM__GATEWAY__BASE_URL".into(), fake.base_url());
        env.insert("AI_GATEWAY_API_KEY".into(), GATEWAY_KEY.into());
        edit(env);
    })
    .await
}

/// A proxy in direct mode with `fake` as the OpenAI and the Anthropic endpoint.
pub async fn direct_proxy_for(fake: &FakeUpstream) -> TestProxy {
    TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.insert("BYOK_UPSTREAM__MODE".into(), "direct".into());
        env.insert(
            "BYOK_UPSTREAM__DIRECT".into(),
            format!(
                r#"{{ openai = {{ base_url = "{0}" }}, anthropic = {{ base_url = "{0}" }} }}"#,
                fake.base_url()
            ),
        );
    })
    .await
}

pub async fn add_key(p: &TestProxy, token: &str, provider: &str, credentials: Value) -> String {
    let (s, k) = p
        .post(
            "/api/keys",
            token,
            json!({"provider": provider, "credentials": credentials}),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    k["id"].as_str().unwrap().to_string()
}

/// User `alice` with one OpenAI key (`sk-openai-user-0000000001`); returns her token.
pub async fn alice_with_openai_key(p: &TestProxy) -> String {
    let (_, token) = p.user("alice").await;
    add_key(
        p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-user-0000000001"}),
    )
    .await;
    token
}

async fn raw_post(p: &TestProxy, path: &str, token: &str, body: &'static str) -> reqwest::Response {
    p.http
        .post(p.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("cookie", "session=abc")
        .header("x-custom-client", "dropped")
        .header("user-agent", "OpenAI/Python 1.0")
        .header("x-real-ip", "203.0.113.9")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Nothing of the app token in anything the fake received.
fn assert_no_token(fake: &FakeUpstream, token: &str) {
    for r in fake.requests() {
        assert!(!String::from_utf8_lossy(&r.body).contains(token));
        for (name, v) in &r.headers {
            assert!(
                !v.to_str().unwrap_or("").contains(token),
                "token in upstream header {name}"
            );
        }
        assert!(
            r.header("cookie").is_none()
                && r.header("x-api-key").is_none()
                && r.header("api-key").is_none()
        );
    }
}

const CHAT: &str = r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"héllo \u00e9 {\"x\":1}"}],"temperature":0.70,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}],"reasoning":{"effort":"low"},"x_unknown_field":[1,2.50,null],"providerOptions":{"openai":{"store":false},"gateway":{"order":["openai"],"byok":{"openai":[{"apiKey":"client-sent-must-vanish"}]}}},"user":"u-1"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_carries_byok_and_keeps_every_other_byte() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let (_, token) = p.user("alice").await;
    add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-older-0000000000"}),
    )
    .await;
    add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-newer-1111111111"}),
    )
    .await;
    add_key(
        &p,
        &token,
        "anthropic",
        json!({"apiKey": "sk-ant-not-needed-2222222"}),
    )
    .await;

    let resp = raw_post(&p, "/v1/chat/completions", &token, CHAT).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "set-cookie leaked"
    );
    assert_eq!(resp.headers()["x-vercel-id"], "fake");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from fake");

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(
        r.header("authorization").as_deref(),
        Some(format!("Bearer {GATEWAY_KEY}").as_str())
    );
    // Headers cross by allowlist: the client's own ones do not.
    assert_eq!(r.header("user-agent").as_deref(), Some("OpenAI/Python 1.0"));
    assert_eq!(r.header("x-custom-client"), None);
    assert_eq!(r.header("x-real-ip"), None);
    assert_eq!(r.header("cookie"), None);
    assert_eq!(r.header("x-request-id").as_deref(), Some(rid.as_str()));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    // Everything before providerOptions, and everything after it, byte for byte.
    let (before, rest) = CHAT.split_once(r#""providerOptions":"#).unwrap();
    let after = &rest[rest.find(r#","user":"u-1"}"#).unwrap()..];
    assert!(text.starts_with(before), "{text}");
    assert!(text.ends_with(after), "{text}");
    assert!(text.contains(r#""openai":{"store":false}"#));
    assert!(!text.contains("client-sent-must-vanish"));
    let v = r.json();
    assert_eq!(v["providerOptions"]["gateway"]["order"], json!(["openai"]));
    assert_eq!(v["providerOptions"]["gateway"]["only"], json!(["openai"]));
    assert_eq!(
        v["providerOptions"]["gateway"]["byok"],
        json!({"openai": [{"apiKey": "sk-openai-newer-1111111111"}, {"apiKey": "sk-openai-older-0000000000"}]}),
        "only the needed provider, newest first"
    );
    assert_no_token(&fake, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_reaches_upstream_with_byok() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    add_key(
        &p,
        &token,
        "anthropic",
        json!({"apiKey": "sk-ant-user-00000000002"}),
    )
    .await;
    let cases: [(&str, Value, &str); 5] = [
        (
            "/v1/embeddings",
            json!({"model": "openai/text-embedding-3-small", "input": "hi"}),
            "openai",
        ),
        (
            "/v1/responses",
            json!({"model": "openai/gpt-4o", "input": "hi"}),
            "openai",
        ),
        (
            "/v1/messages",
            json!({"model": "anthropic/claude-sonnet-4.5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
            "anthropic",
        ),
        (
            "/v1/messages/count_tokens",
            json!({"model": "claude-sonnet-4.5", "messages": [{"role": "user", "content": "hi"}]}),
            "anthropic",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "openai/gpt-4o", "messages": [], "stream": true}),
            "openai",
        ),
    ];
    for (i, (path, body, provider)) in cases.iter().enumerate() {
        // The Anthropic SDK sends its key as x-api-key; OpenAI-style clients as a bearer.
        let mut req = p
            .http
            .post(p.url(path))
            .json(body)
            .header("anthropic-version", "2023-06-01");
        req = if provider == &"anthropic" {
            req.header("x-api-key", &token)
        } else {
            req.bearer_auth(&token)
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let _ = resp.bytes().await.unwrap();
        let r = &fake.requests()[i];
        assert_eq!(&r.path, path);
        assert_eq!(
            r.header("authorization").as_deref(),
            Some(format!("Bearer {GATEWAY_KEY}").as_str())
        );
        let v = r.json();
        let byok = &v["providerOptions"]["gateway"]["byok"];
        assert_eq!(byok.as_object().unwrap().len(), 1, "{path}: {byok}");
        assert!(byok[provider][0]["apiKey"].is_string(), "{path}");
        assert_eq!(r.header("anthropic-version").as_deref(), Some("2023-06-01"));
    }
    // Bare model on count_tokens resolved to anthropic/...; include_usage asked for on the stream.
    assert_eq!(
        fake.requests()[3].json()["model"],
        "anthropic/claude-sonnet-4.5"
    );
    assert_eq!(
        fake.requests()[4].json()["stream_options"],
        json!({"include_usage": true})
    );
    assert_no_token(&fake, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_and_serving_providers_are_included_others_not() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert(
            "BYOK_MODELS__SERVING_PROVIDERS".into(),
            r#"{ anthropic = ["anthropic", "bedrock"] }"#.into(),
        );
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    add_key(
        &p,
        &token,
        "bedrock",
        json!({"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "bedrock-secret"}),
    )
    .await;
    add_key(
        &p,
        &token,
        "google",
        json!({"apiKey": "google-key-not-needed"}),
    )
    .await;
    let (s, body) = p
        .post("/v1/chat/completions", &token, json!({"model": "openai/gpt-4o", "models": ["anthropic/claude-sonnet-4.5"], "messages": []}))
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = p
        .post("/v1/chat/completions", &token, json!({"model": "anthropic/claude-sonnet-4.5", "messages": [], "providerOptions": {"gateway": {"models": ["openai/gpt-4o"]}}}))
        .await;
    assert_eq!(s, 200);
    let reqs = fake.requests();
    let b0 = reqs[0].json()["providerOptions"]["gateway"]["byok"].clone();
    let mut keys0: Vec<&String> = b0.as_object().unwrap().keys().collect();
    keys0.sort();
    assert_eq!(keys0, vec!["bedrock", "openai"]);
    let raw0 = String::from_utf8(reqs[0].body.to_vec()).unwrap();
    assert!(
        raw0.find("\"openai\":[").unwrap() < raw0.find("\"bedrock\":[").unwrap(),
        "model's provider first"
    );
    let b1 = reqs[1].json()["providerOptions"]["gateway"]["byok"].clone();
    assert_eq!(b1["bedrock"][0]["secretAccessKey"], "bedrock-secret");
    assert!(b1.get("google").is_none() && b1.get("openai").is_some());
    assert_eq!(
        reqs[1].json()["providerOptions"]["gateway"]["models"],
        json!(["openai/gpt-4o"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_unchanged_and_promptly() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    let chunks = chat_stream_chunks("openai/gpt-4o", true);
    fake.push(Behavior::Stream {
        chunks: chunks.clone(),
        delay: Duration::from_millis(200),
    });
    let start = Instant::now();
    let mut resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "openai/gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut got = Vec::new();
    let mut first = None;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        first.get_or_insert(start.elapsed());
        got.extend_from_slice(&chunk);
    }
    let last = start.elapsed();
    let want: Vec<u8> = chunks.concat().into_bytes();
    assert_eq!(got, want, "bytes differ");
    let first = first.unwrap();
    assert!(
        last - first >= Duration::from_millis(150 * (chunks.len() as u64 - 1)),
        "first {first:?} last {last:?}"
    );
    // The client-sent include_usage is left as it was (not duplicated).
    assert_eq!(
        fake.requests()[0].json()["stream_options"],
        json!({"include_usage": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_drops_the_upstream_request() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    fake.push(Behavior::Stream {
        chunks: chat_stream_chunks("openai/gpt-4o", true),
        delay: Duration::from_millis(400),
    });
    let mut resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "openai/gpt-4o", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap();
    assert!(first.is_some());
    let dropped_at = Instant::now();
    drop(resp);
    assert!(
        fake.wait_for_disconnect(Duration::from_secs(1)).await,
        "upstream still streaming after 1s"
    );
    assert!(dropped_at.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_follow_the_spec_and_send_nothing_upstream() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_LIMITS__MAX_BODY_BYTES".into(), "2048".into());
        env.insert(
            "BYOK_MODELS__ALIASES".into(),
            r#"{ "gpt-4o" = "openai/gpt-4o" }"#.into(),
        );
    })
    .await;
    let (uid, token) = p.user("alice").await;
    let chat = "/v1/chat/completions";
    // 401: no token, unknown token.
    let resp = p
        .http
        .post(p.url(chat))
        .json(&json!({"model": "openai/gpt-4o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (s, b) = p
        .post(
            chat,
            &format!("bkp_{}", "x".repeat(43)),
            json!({"model": "openai/gpt-4o"}),
        )
        .await;
    assert_error(s, &b, 401, "invalid_api_key");
    // 403: no key for the provider.
    let (s, b) = p
        .post(
            chat,
            &token,
            json!({"model": "openai/gpt-4o", "messages": []}),
        )
        .await;
    assert_error(s, &b, 403, "no_provider_key");
    assert!(b["error"]["message"].as_str().unwrap().contains("openai"));
    add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-user-0000000001"}),
    )
    .await;
    // 400: bad bodies.
    for body in [
        "not json",
        "[1,2]",
        "{\"messages\":[]}",
        "{\"model\":42}",
        "\"just a string\"",
    ] {
        let resp = p
            .http
            .post(p.url(chat))
            .bearer_auth(&token)
            .body(body)
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        let b: Value = resp.json().await.unwrap();
        assert_error(s, &b, 400, "invalid_request");
    }
    // 400: unknown provider prefix.
    let (s, b) = p.post(chat, &token, json!({"model": "nosuch/model"})).await;
    assert_error(s, &b, 400, "unknown_provider");
    // 413.
    let (s, b) = p
        .post(
            chat,
            &token,
            json!({"model": "openai/gpt-4o", "pad": "x".repeat(4096)}),
        )
        .await;
    assert_error(s, &b, 413, "request_too_large");
    // 403: disabled user.
    let (_, other) = p.user("bob").await;
    add_key(
        &p,
        &other,
        "openai",
        json!({"apiKey": "sk-openai-bob-00000000001"}),
    )
    .await;
    let bob_id = p.admin(reqwest::Method::GET, "/admin/users", None).await.1["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "bob")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.admin(
        reqwest::Method::PATCH,
        &format!("/admin/users/{bob_id}"),
        Some(json!({"disabled": true})),
    )
    .await;
    let (s, b) = p
        .post(chat, &other, json!({"model": "openai/gpt-4o"}))
        .await;
    assert_error(s, &b, 403, "user_disabled");
    // Anthropic routes answer in Anthropic's shape.
    let resp = p
        .http
        .post(p.url("/v1/messages"))
        .header("x-api-key", "bkp_nope")
        .json(&json!({"model": "claude"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["type"], "error");
    assert_eq!(b["error"]["type"], "authentication_error");
    let (s, b) = p
        .post(
            "/v1/messages",
            &token,
            json!({"model": "anthropic/claude-sonnet-4.5"}),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(b["error"]["type"], "permission_error");
    // Nothing went upstream for any of these.
    assert_eq!(fake.request_count(), 0, "{:?}", fake.requests());
    let _ = uid;

    // The alias works and is resolved for upstream.
    let (s, _) = p
        .post(chat, &token, json!({"model": "gpt-4o", "messages": []}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(fake.requests()[0].json()["model"], "openai/gpt-4o");

    // Upstream answered an error: status and body unchanged.
    let err = r#"{"error":{"message":"Rate limited by provider","type":"rate_limit_exceeded"}}"#;
    fake.push(Behavior::Status {
        status: 429,
        body: err.to_string(),
        content_type: "application/json",
    });
    let resp = p
        .http
        .post(p.url(chat))
        .bearer_auth(&token)
        .json(&json!({"model": "openai/gpt-4o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.text().await.unwrap(), err);

    // 502: reset before headers.
    fake.push(Behavior::Reset);
    let (s, b) = p
        .post(chat, &token, json!({"model": "openai/gpt-4o"}))
        .await;
    assert_error(s, &b, 502, "upstream_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_unreachable_and_first_byte_timeout() {
    // A port with nothing listening: 502.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.insert(
            "BYOK_UPSTREAM__GATEWAY__BASE_URL".into(),
            format!("http://{closed}/v1"),
        );
        env.insert("AI_GATEWAY_API_KEY".into(), GATEWAY_KEY.into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    let (s, b) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o"}),
        )
        .await;
    assert_error(s, &b, 502, "upstream_unavailable");

    // A stalled upstream: 504 after the first-byte timeout.
    let fake = FakeUpstream::start().await;
    fake.set_default(Behavior::Stall);
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_UPSTREAM__FIRST_BYTE_TIMEOUT".into(), "300ms".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    let (s, b) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o"}),
        )
        .await;
    assert_error(s, &b, 504, "upstream_timeout");
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_filtered_to_the_callers_providers() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert(
            "BYOK_MODELS__ALIASES".into(),
            r#"{ "sonnet" = "anthropic/claude-sonnet-4.5" }"#.into(),
        );
        env.insert(
            "BYOK_MODELS__SERVING_PROVIDERS".into(),
            r#"{ anthropic = ["anthropic", "vertex"] }"#.into(),
        );
    })
    .await;
    let (_, token) = p.user("alice").await;
    let (s, b) = p.get("/v1/models", &token).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"], json!([]));
    add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-user-0000000001"}),
    )
    .await;
    add_key(&p, &token, "vertex", json!({"project": "p", "location": "l", "googleCredentials": {"privateKey": "k", "clientEmail": "e@x"}})).await;
    let (_, b) = p.get("/v1/models", &token).await;
    let ids: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.iter()
            .all(|i| i.starts_with("openai/") || i.starts_with("anthropic/")),
        "{ids:?}"
    );
    assert!(ids.contains(&"openai/gpt-4o") && ids.contains(&"anthropic/claude-sonnet-4.5"));
    assert!(!ids.iter().any(|i| i.starts_with("google/")));
    let (_, all) = p.get("/v1/models?all=true", &token).await;
    let all = all["data"].as_array().unwrap();
    assert_eq!(
        all.len(),
        crate::common::fake_upstream::catalog_json()["data"]
            .as_array()
            .unwrap()
            .len()
    );
    let g = all
        .iter()
        .find(|m| m["id"].as_str().unwrap().starts_with("google/"))
        .unwrap();
    assert_eq!(g["accessible"], false);
    let (s, m) = p.get("/v1/models/openai/gpt-4o", &token).await;
    assert_eq!(s, 200);
    assert_eq!(m["id"], "openai/gpt-4o");
    assert_eq!(m["accessible"], true);
    let (s, m) = p.get("/v1/models/sonnet", &token).await;
    assert_eq!(s, 200);
    assert_eq!(m["id"], "anthropic/claude-sonnet-4.5");
    let (s, b) = p.get("/v1/models/nope/nothing", &token).await;
    assert_error(s, &b, 404, "not_found");
    // The catalog was fetched once (cached), without any auth.
    let fetches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/models")
        .collect();
    assert_eq!(fetches.len(), 1);
    assert!(fetches[0].header("authorization").is_none());
    // If upstream fails after the TTL, the stale copy is served (TTL 5m here: still cached).
    fake.set_default(Behavior::Status {
        status: 500,
        body: "{}".into(),
        content_type: "application/json",
    });
    assert_eq!(p.get("/v1/models", &token).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_catalog_is_served_when_refresh_fails() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_MODELS__CATALOG_TTL".into(), "50ms".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    assert_eq!(p.get("/v1/models", &token).await.0, 200);
    fake.set_default(Behavior::Status {
        status: 503,
        body: "{}".into(),
        content_type: "application/json",
    });
    tokio::time::sleep(Duration::from_millis(80)).await;
    let (s, b) = p.get("/v1/models", &token).await;
    assert_eq!(s, 200);
    assert!(!b["data"].as_array().unwrap().is_empty());
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path == "/v1/models")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_openai_style_and_anthropic() {
    let fake = FakeUpstream::start().await;
    let p = direct_proxy_for(&fake).await;
    let (_, token) = p.user("alice").await;
    add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-direct-000000001"}),
    )
    .await;
    add_key(
        &p,
        &token,
        "anthropic",
        json!({"apiKey": "sk-ant-direct-0000000002"}),
    )
    .await;
    let (s, b) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o", "messages": [], "providerOptions": {"x": 1}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let resp = p
        .http
        .post(p.url("/v1/messages"))
        .header("x-api-key", &token)
        .json(&json!({"model": "anthropic/claude-sonnet-4.5", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reqs = fake.requests();
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(
        reqs[0].header("authorization").as_deref(),
        Some("Bearer sk-openai-direct-000000001")
    );
    let v = reqs[0].json();
    assert_eq!(v["model"], "gpt-4o");
    assert!(v["providerOptions"].get("gateway").is_none());
    assert_eq!(reqs[1].path, "/v1/messages");
    assert_eq!(
        reqs[1].header("x-api-key").as_deref(),
        Some("sk-ant-direct-0000000002")
    );
    assert_eq!(
        reqs[1].header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert!(reqs[1].header("authorization").is_none());
    assert_eq!(reqs[1].json()["model"], "claude-sonnet-4.5");
    // A provider without a direct endpoint.
    add_key(
        &p,
        &token,
        "groq",
        json!({"apiKey": "gsk_direct-000000000003"}),
    )
    .await;
    let (s, b) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "groq/llama"}),
        )
        .await;
    assert_error(s, &b, 400, "unknown_provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_test_endpoint() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert(
            "BYOK_MODELS__TEST_MODELS".into(),
            r#"{ openai = "openai/gpt-4o-mini" }"#.into(),
        );
    })
    .await;
    let (_, token) = p.user("alice").await;
    let id = add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-tested-00000001"}),
    )
    .await;
    add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-other-000000002"}),
    )
    .await;
    let (s, b) = p
        .post(&format!("/api/keys/{id}/test"), &token, json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["ok"], true);
    assert_eq!(b["status"], 200);
    assert!(b["latency_ms"].is_u64());
    let r = &fake.requests()[0];
    let v = r.json();
    assert_eq!(v["model"], "openai/gpt-4o-mini");
    assert_eq!(v["max_tokens"], 1);
    assert_eq!(
        v["providerOptions"]["gateway"]["byok"],
        json!({"openai": [{"apiKey": "sk-openai-tested-00000001"}]})
    );
    // A rejected key: ok false, the upstream's message, never the key.
    fake.push(Behavior::gateway_error(
        401,
        "authentication_error",
        "Invalid API key sk-openai-tested-00000001 for openai",
    ));
    let (_, b) = p
        .post(&format!("/api/keys/{id}/test"), &token, json!({}))
        .await;
    assert_eq!(b["ok"], false);
    assert_eq!(b["status"], 401);
    assert!(b["message"].as_str().unwrap().contains("Invalid API key"));
    assert!(!b.to_string().contains("sk-openai-tested"), "{b}");
    // Another user's key: 404. Audited.
    let (_, bob) = p.user("bob").await;
    let (s, b) = p
        .post(&format!("/api/keys/{id}/test"), &bob, json!({}))
        .await;
    assert_error(s, &b, 404, "not_found");
    let (_, audit) = p.get("/api/audit", &token).await;
    assert_eq!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "key.tested")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_reach_the_credential_cache_at_once() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let (_, token) = p.user("alice").await;
    let id = add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-first-000000001"}),
    )
    .await;
    let body = json!({"model": "openai/gpt-4o", "messages": []});
    assert_eq!(
        p.post("/v1/chat/completions", &token, body.clone()).await.0,
        200
    );
    // Deactivated: no key left -> 403, nothing sent.
    p.call(
        reqwest::Method::PATCH,
        &format!("/api/keys/{id}"),
        &token,
        Some(json!({"is_active": false})),
    )
    .await;
    let (s, b) = p.post("/v1/chat/completions", &token, body.clone()).await;
    assert_error(s, &b, 403, "no_provider_key");
    // A new key is used on the next request.
    add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-second-00000002"}),
    )
    .await;
    assert_eq!(
        p.post("/v1/chat/completions", &token, body.clone()).await.0,
        200
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].json()["providerOptions"]["gateway"]["byok"]["openai"],
        json!([{"apiKey": "sk-openai-second-00000002"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_style_messages_request() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let (_, token) = p.user("alice").await;
    add_key(
        &p,
        &token,
        "anthropic",
        json!({"apiKey": "sk-ant-user-00000000002"}),
    )
    .await;
    // As Claude Code sends it: ?beta=true, x-api-key, anthropic-* headers, a dated bare model,
    // system blocks with cache_control, tools, thinking, metadata, streaming.
    let body = r#"{"model":"claude-sonnet-4-5-20250929","max_tokens":32000,"stream":true,"system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[{"name":"Bash","description":"run","input_schema":{"type":"object","properties":{"command":{"type":"string"}}}}],"thinking":{"type":"enabled","budget_tokens":1024},"metadata":{"user_id":"u"}}"#;
    let resp = p
        .http
        .post(p.url("/v1/messages?beta=true"))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: message_start") && text.contains("event: message_stop"));
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/v1/messages?beta=true");
    assert_eq!(
        r.header("anthropic-beta").as_deref(),
        Some("claude-code-20250219,interleaved-thinking-2025-05-14")
    );
    assert_eq!(
        r.header("authorization").as_deref(),
        Some(format!("Bearer {GATEWAY_KEY}").as_str())
    );
    assert!(r.header("x-api-key").is_none());
    let sent = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(sent.starts_with(r#"{"model":"anthropic/claude-sonnet-4-5-20250929","max_tokens":32000,"stream":true,"system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}]"#), "{sent}");
    assert!(sent.contains(
        r#""thinking":{"type":"enabled","budget_tokens":1024},"metadata":{"user_id":"u"}"#
    ));
    assert_eq!(
        r.json()["providerOptions"]["gateway"]["byok"],
        json!({"anthropic": [{"apiKey": "sk-ant-user-00000000002"}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_that_does_not_open_is_skipped_not_sent() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let (uid, token) = p.user("alice").await;
    let uid = uuid::Uuid::parse_str(&uid).unwrap();
    add_key(
        &p,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-good-000000001"}),
    )
    .await;
    add_key(
        &p,
        &token,
        "anthropic",
        json!({"apiKey": "sk-ant-original-0000001"}),
    )
    .await;
    // Copy the OpenAI ciphertext onto the Anthropic row: the AAD no longer matches.
    let store = &p.app.store;
    let keys = store.list_keys(uid).await.unwrap();
    let openai = keys
        .iter()
        .find(|k| k.provider == "openai")
        .unwrap()
        .clone();
    let mut forged = keys
        .iter()
        .find(|k| k.provider == "anthropic")
        .unwrap()
        .clone();
    forged.sealed = openai.sealed.clone();
    let audit = || byok_proxy::store::AuditEntry {
        actor_user_id: None,
        action: "key.created",
        target: None,
        detail: json!({}),
        request_id: None,
        remote_addr: None,
    };
    assert!(store.delete_key(uid, forged.id, audit()).await.unwrap());
    store.insert_key(forged, audit()).await.unwrap();
    p.app.keyring.invalidate(uid);
    let (s, b) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "anthropic/claude-sonnet-4.5"}),
        )
        .await;
    assert_error(s, &b, 403, "no_provider_key");
    assert!(!b.to_string().contains("sk-openai-good"));
    let (s, _) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o"}),
        )
        .await;
    assert_eq!(s, 200, "the user's other keys keep working");
    assert_eq!(fake.request_count(), 1);
    assert!(!String::from_utf8_lossy(&fake.requests()[0].body).contains("anthropic"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_without_a_gateway_key_explains_itself() {
    let fake = FakeUpstream::start().await;
    let p = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.insert("BYOK_UPSTREAM__GATEWAY__BASE_URL".into(), fake.base_url());
    })
    .await;
    assert!(p
        .app
        .config
        .warnings
        .iter()
        .any(|w| w.contains("no gateway key")));
    // Ready (the store answers), and says what is missing upstream.
    let (s, ready) = p.get("/readyz", "").await;
    assert_eq!(s, 200);
    assert_eq!(ready["upstream"]["configured"], false, "{ready}");
    let token = alice_with_openai_key(&p).await;
    let resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "openai/gpt-4o", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let b: Value = resp.json().await.unwrap();
    assert_error(502, &b, 502, "upstream_not_configured");
    assert!(b["error"]["message"].as_str().unwrap().contains("operator"));
    assert_eq!(fake.request_count(), 0, "nothing is sent without a key");

    // With a key the gateway refuses: the operator's problem, in words the user can act on.
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    fake.push(Behavior::gateway_error(
        401,
        "authentication_error",
        "Invalid API key",
    ));
    let (s, b) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o", "messages": []}),
        )
        .await;
    assert_error(s, &b, 502, "upstream_auth_failed");
    let m = b["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("operator") && m.contains("AI_GATEWAY_API_KEY"),
        "{m}"
    );
    assert!(!m.contains(GATEWAY_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_model_names_resolve_per_route_family() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    add_key(
        &p,
        &token,
        "anthropic",
        json!({"apiKey": "sk-ant-bare-0000000001"}),
    )
    .await;
    for (path, model, want) in [
        ("/v1/chat/completions", "gpt-5", "openai/gpt-5"),
        ("/v1/responses", "gpt-5-codex", "openai/gpt-5-codex"),
        (
            "/v1/embeddings",
            "text-embedding-3-small",
            "openai/text-embedding-3-small",
        ),
        (
            "/v1/messages",
            "claude-sonnet-4-5-20250929",
            "anthropic/claude-sonnet-4-5-20250929",
        ),
    ] {
        let (s, b) = p
            .post(
                path,
                &token,
                json!({"model": model, "max_tokens": 5, "messages": [], "input": "x"}),
            )
            .await;
        assert_eq!(s, 200, "{path} {b}");
        assert_eq!(fake.requests().last().unwrap().json()["model"], want);
    }
    // Configurable: "" refuses bare names on that family.
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_MODELS__BARE_NAMES__OPENAI".into(), "".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    let before = fake.request_count();
    let (s, b) = p
        .post("/v1/chat/completions", &token, json!({"model": "gpt-5"}))
        .await;
    assert_error(s, &b, 400, "unknown_provider");
    assert_eq!(fake.request_count(), before);
}
