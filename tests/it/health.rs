//! Provider health through HTTP: with the fake failing, stalling or resetting for one
//! provider, it goes degraded then down and back to healthy, while another stays healthy;
//! the proxy's own 400/401/403 answers move nothing; the endpoint needs a token; the gauge
//! is exported. (The window forgetting old outcomes is a unit test with injected time.)

use crate::common::assert_error;
use crate::common::fake_upstream::{Behavior, FakeUpstream};
use crate::proxy::{add_key, alice_with_openai_key, proxy_for};
use serde_json::{json, Value};

fn status_of(health: &Value, provider: &str) -> (String, Value) {
    let e = health["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["provider"] == provider)
        .unwrap()
        .clone();
    (e["status"].as_str().unwrap().to_string(), e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_degrades_goes_down_and_recovers() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_UPSTREAM__FIRST_BYTE_TIMEOUT".into(), "300ms".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    add_key(
        &p,
        &token,
        "anthropic",
        json!({"apiKey": "sk-ant-user-00000000002"}),
    )
    .await;
    let openai = json!({"model": "openai/gpt-4o", "messages": []});
    let anthropic = json!({"model": "anthropic/claude-sonnet-4.5", "messages": []});
    let health = || async { p.get("/api/providers/health", &token).await.1 };

    let (s, b) = p.get("/api/providers/health", "").await;
    assert_error(s, &b, 401, "invalid_api_key");
    assert_eq!(status_of(&health().await, "openai").0, "unknown");

    for _ in 0..6 {
        assert_eq!(
            p.post("/v1/chat/completions", &token, openai.clone())
                .await
                .0,
            200
        );
        assert_eq!(
            p.post("/v1/chat/completions", &token, anthropic.clone())
                .await
                .0,
            200
        );
    }
    let h = health().await;
    assert_eq!(status_of(&h, "openai").0, "healthy");
    let (_, e) = status_of(&h, "openai");
    assert_eq!(e["requests"], 6);
    assert!(e["ttfb_p50_ms"].as_u64().is_some());

    // Two upstream 500s: 2 of 8 failed -> degraded.
    for _ in 0..2 {
        fake.push(Behavior::gateway_error(
            500,
            "internal_server_error",
            "boom",
        ));
        assert_eq!(
            p.post("/v1/chat/completions", &token, openai.clone())
                .await
                .0,
            500
        );
    }
    let (status, e) = status_of(&health().await, "openai");
    assert_eq!(status, "degraded", "{e}");
    assert_eq!(e["last_error_kind"], "status_5xx");

    // A stall (504) and two resets (502): five failures in a row -> down.
    fake.push(Behavior::Stall);
    assert_eq!(
        p.post("/v1/chat/completions", &token, openai.clone())
            .await
            .0,
        504
    );
    for _ in 0..2 {
        fake.push(Behavior::Reset);
        assert_eq!(
            p.post("/v1/chat/completions", &token, openai.clone())
                .await
                .0,
            502
        );
    }
    let (status, e) = status_of(&health().await, "openai");
    assert_eq!(status, "down", "{e}");
    assert_eq!(e["consecutive_failures"], 5);

    // The proxy's own refusals do not move anything.
    let before = health().await;
    assert_eq!(
        p.post("/v1/chat/completions", &token, json!({"messages": []}))
            .await
            .0,
        400
    );
    assert_eq!(
        p.post("/v1/chat/completions", "bkp_nope", openai.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        p.post(
            "/v1/chat/completions",
            &token,
            json!({"model": "xai/grok-3"})
        )
        .await
        .0,
        403
    );
    let after = health().await;
    assert_eq!(
        status_of(&before, "openai").1["requests"],
        status_of(&after, "openai").1["requests"]
    );
    assert_eq!(status_of(&after, "xai").0, "unknown");

    // A provider 429 is counted apart, not as a failure.
    fake.push(Behavior::gateway_error(
        429,
        "rate_limit_exceeded",
        "slow down",
    ));
    assert_eq!(
        p.post("/v1/chat/completions", &token, anthropic.clone())
            .await
            .0,
        429
    );
    let (status, e) = status_of(&health().await, "anthropic");
    assert_eq!(
        (status.as_str(), e["rate_limited"].as_u64()),
        ("healthy", Some(1))
    );

    // Recovery: successes end the failure run and bring the ratio under the threshold.
    for _ in 0..20 {
        assert_eq!(
            p.post("/v1/chat/completions", &token, openai.clone())
                .await
                .0,
            200
        );
    }
    let (status, e) = status_of(&health().await, "openai");
    assert_eq!(status, "healthy", "{e}");

    // The gauge.
    let m = p.metrics().await;
    assert!(
        m.contains("byok_provider_health{provider=\"openai\",status=\"healthy\"} 1"),
        "{m}"
    );
    assert!(m.contains("byok_provider_health{provider=\"openai\",status=\"down\"} 0"));
    assert!(m.contains("byok_provider_health{provider=\"xai\",status=\"unknown\"} 1"));
}
