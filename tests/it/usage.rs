//! Usage accounting and metrics through HTTP: JSON and every streaming route, aborted
//! streams, `/api/usage` totals against what the fake reported, `last_used_at`, the
//! system-credential fallback, and every SPEC §6 metric family moving.

use crate::common::fake_upstream::{Behavior, FakeUpstream};
use crate::common::TestProxy;
use crate::proxy::{add_key, alice_with_openai_key, proxy_for};
use byok_proxy::config::DatabaseUrl;
use serde_json::{json, Value};
use std::time::Duration;

/// (model, status, prompt, completion) of every usage row, oldest first (SQLite).
fn usage_rows(p: &TestProxy) -> Vec<(String, String, i64, i64)> {
    let DatabaseUrl::Sqlite(path) = &p.db.url else {
        panic!("sqlite only")
    };
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut st = conn
        .prepare("SELECT model, status, prompt_tokens, completion_tokens FROM usage_events ORDER BY created_at")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn stream_text(p: &TestProxy, path: &str, token: &str, body: Value) -> String {
    let resp = p
        .http
        .post(p.url(path))
        .bearer_auth(token)
        .header("x-api-key", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_recorded_for_json_and_every_stream() {
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

    let (s, _) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o", "messages": []}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        fake.requests()[0].json().get("stream_options").is_none(),
        "non-stream requests are left alone"
    );
    let text = stream_text(
        &p,
        "/v1/chat/completions",
        &token,
        json!({"model": "openai/gpt-4o", "stream": true, "messages": []}),
    )
    .await;
    assert!(
        text.contains("\"usage\""),
        "the client sees the usage the proxy asked for"
    );
    stream_text(
        &p,
        "/v1/responses",
        &token,
        json!({"model": "openai/gpt-4o", "stream": true, "input": "hi"}),
    )
    .await;
    stream_text(&p, "/v1/messages", &token, json!({"model": "anthropic/claude-sonnet-4.5", "stream": true, "max_tokens": 9, "messages": []})).await;
    let (s, _) = p
        .post(
            "/v1/embeddings",
            &token,
            json!({"model": "openai/text-embedding-3-small", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(s, 200);
    p.app.usage.flush().await;

    let rows = usage_rows(&p);
    let want = [
        ("openai/gpt-4o", "ok", 11, 7),
        ("openai/gpt-4o", "ok", 11, 7),
        ("openai/gpt-4o", "ok", 9, 4),
        ("anthropic/claude-sonnet-4.5", "ok", 12, 6),
        ("openai/text-embedding-3-small", "ok", 5, 0),
    ];
    let got: Vec<(&str, &str, i64, i64)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2, r.3))
        .collect();
    assert_eq!(got, want);

    let (s, usage) = p.get("/api/usage", &token).await;
    assert_eq!(s, 200);
    assert_eq!(usage["totals"]["prompt_tokens"], 11 + 11 + 9 + 12 + 5);
    assert_eq!(usage["totals"]["completion_tokens"], 7 + 7 + 4 + 6);
    assert_eq!(usage["totals"]["requests"], 5);
    let gpt = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "openai/gpt-4o")
        .unwrap();
    assert_eq!(gpt["requests"], 3);
    assert!(
        (gpt["cost"].as_f64().unwrap() - 0.00084).abs() < 1e-9,
        "{gpt}"
    );
    assert_eq!(gpt["day"].as_str().unwrap().len(), 10);
    // Keys that served requests are marked used.
    let (_, keys) = p.get("/api/keys", &token).await;
    assert!(
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["last_used_at"].is_string()),
        "{keys}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_streams_are_recorded_as_aborted() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    // Upstream drops mid-stream.
    let chunks = crate::common::fake_upstream::chat_stream_chunks("openai/gpt-4o", true);
    fake.push(Behavior::DropMidStream {
        chunks: chunks[..2].to_vec(),
        delay: Duration::from_millis(10),
    });
    let resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "openai/gpt-4o", "stream": true}))
        .send()
        .await
        .unwrap();
    assert!(
        resp.text().await.is_err(),
        "the client sees the cut, not a clean end"
    );
    // The client goes away mid-stream.
    fake.push(Behavior::Stream {
        chunks,
        delay: Duration::from_millis(300),
    });
    let mut resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "openai/gpt-4o", "stream": true}))
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap();
    drop(resp);
    assert!(fake.wait_for_disconnect(Duration::from_secs(1)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    p.app.usage.flush().await;
    let rows = usage_rows(&p);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.1 == "aborted"), "{rows:?}");
    assert!(
        rows.iter().all(|r| r.2 == 0 && r.3 == 0),
        "usage unseen in a cut stream counts as 0: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_every_family_and_move() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    // The gateway says it fell back to the operator's credentials.
    fake.push(Behavior::Json {
        status: 200,
        body: r#"{"id":"gen_1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"is_byok":false}}"#.into(),
    });
    assert_eq!(
        p.post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        p.post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o"})
        )
        .await
        .0,
        200
    );
    fake.push(Behavior::Reset);
    assert_eq!(
        p.post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o"})
        )
        .await
        .0,
        502
    );
    assert_eq!(p.get("/api/keys", "bkp_nope").await.0, 401);
    p.app.usage.flush().await;
    let m = p.metrics().await;
    for family in [
        "byok_http_requests_total",
        "byok_http_request_duration_seconds",
        "byok_upstream_ttfb_seconds",
        "byok_upstream_errors_total",
        "byok_streams_active",
        "byok_stream_bytes_total",
        "byok_rate_limited_total",
        "byok_tokens_total",
        "byok_credential_cache_total",
        "byok_system_credential_fallback_total",
        "process_resident_memory_bytes",
    ] {
        assert!(m.contains(&format!("# TYPE {family} ")), "missing {family}");
    }
    let value = |m: &str, series: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        value(
            &m,
            "byok_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "byok_http_requests_total{route=\"/v1/chat/completions\",status=\"502\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "byok_http_requests_total{route=\"/api/keys\",status=\"401\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "byok_upstream_errors_total{kind=\"connect\",provider=\"openai\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "byok_tokens_total{kind=\"prompt\",provider=\"openai\"}"),
        14.0
    );
    assert_eq!(
        value(
            &m,
            "byok_tokens_total{kind=\"completion\",provider=\"openai\"}"
        ),
        9.0
    );
    assert_eq!(
        value(&m, "byok_credential_cache_total{result=\"miss\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "byok_credential_cache_total{result=\"hit\"}"),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "byok_system_credential_fallback_total{provider=\"openai\"}"
        ),
        1.0
    );
    assert_eq!(value(&m, "byok_streams_active"), 0.0);
    assert!(value(&m, "byok_stream_bytes_total") > 100.0);
    assert!(value(&m, "byok_upstream_ttfb_seconds_count{provider=\"openai\"}") >= 2.0);
    assert!(
        !m.contains(&token) && !m.contains("alice"),
        "no user data in metrics"
    );
    let (_, audit) = p.get("/api/audit", &token).await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "byok.system_credentials_used"));
}
