//! Self-service tokens and scopes through HTTP: create / list / revoke (shown once, audited,
//! another user's id 404), a scoped token cannot mint (403 `insufficient_scope`), requested
//! scopes only narrow, scopes stored on both stores (also from the admin API and the CLI's
//! path), and enforcement on every `/v1` route — `route_not_allowed` before the handler,
//! `model_not_allowed` for the primary model and every fallback (aliases resolved) with
//! nothing sent upstream, `/v1/models` filtered, the per-token rate limit.

use crate::both_backends;
use crate::common::fake_upstream::FakeUpstream;
use crate::common::{assert_error, Backend, TestProxy};
use crate::proxy::{add_key, proxy_for};
use reqwest::Method;
use serde_json::{json, Value};

async fn create(p: &TestProxy, token: &str, body: Value) -> (u16, Value) {
    p.post("/api/tokens", token, body).await
}

async fn self_service_tokens(backend: Backend) {
    let p = TestProxy::start(backend).await;
    let (_, alice) = p.user("alice").await;
    let (_, bob) = p.user("bob").await;

    // Create: 201 with the token, once.
    let scopes = json!({
        "allowed_models": ["openai/*", "anthropic/claude-*"],
        "allowed_routes": ["chat", "models"],
        "requests_per_minute": 30,
    });
    let (s, made) = create(
        &p,
        &alice,
        json!({"name": "laptop IDE", "expires_in": "30d", "scopes": scopes}),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    let new_token = made["token"].as_str().unwrap().to_string();
    assert!(new_token.starts_with("bkp_") && new_token.len() == 47);
    assert_eq!(made["name"], "laptop IDE");
    assert_eq!(made["scopes"]["allowed_routes"], json!(["chat", "models"]));
    assert_eq!(made["scopes"]["requests_per_minute"], 30);
    assert!(made["expires_at"].is_string());
    let id = made["id"].as_str().unwrap().to_string();

    // List: never the token; the scopes as stored (sorted, on both stores).
    let (s, list) = p.get("/api/tokens", &alice).await;
    assert_eq!(s, 200);
    let data = list["data"].as_array().unwrap();
    assert_eq!(
        data.len(),
        2,
        "the admin-made token and the new one: {list}"
    );
    assert!(!list.to_string().contains(&new_token));
    let mine = data.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(
        mine["scopes"]["allowed_models"],
        json!(["anthropic/claude-*", "openai/*"])
    );
    for field in [
        "prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ] {
        assert!(mine.get(field).is_some(), "{field}: {mine}");
    }
    // The new token works and reports its scopes.
    let (s, me) = p.get("/api/me", &new_token).await;
    assert_eq!(s, 200);
    assert_eq!(me["auth"], "token");
    assert_eq!(me["scopes"]["requests_per_minute"], 30);
    // Its use is recorded (off the request path) for the list's "last used".
    crate::common::within(std::time::Duration::from_secs(3), async || {
        let (_, list) = p.get("/api/tokens", &alice).await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str() && t["last_used_at"].is_string())
    })
    .await;

    // A scoped token may read its tokens but not create or revoke any.
    assert_eq!(p.get("/api/tokens", &new_token).await.0, 200);
    let (s, body) = create(&p, &new_token, json!({"name": "x"})).await;
    assert_error(s, &body, 403, "insufficient_scope");
    let (s, body) = p
        .call(
            Method::DELETE,
            &format!("/api/tokens/{id}"),
            &new_token,
            None,
        )
        .await;
    assert_error(s, &body, 403, "insufficient_scope");
    // Nor change provider keys; reading them is fine.
    assert_eq!(p.get("/api/keys", &new_token).await.0, 200);
    let (s, body) = p
        .post(
            "/api/keys",
            &new_token,
            json!({"provider": "openai", "credentials": {"apiKey": "sk-scoped-0000000000"}}),
        )
        .await;
    assert_error(s, &body, 403, "insufficient_scope");

    // Another user's token: 404 for revoke, not in their list.
    let (s, body) = p
        .call(Method::DELETE, &format!("/api/tokens/{id}"), &bob, None)
        .await;
    assert_error(s, &body, 404, "not_found");
    let (_, bobs) = p.get("/api/tokens", &bob).await;
    assert!(!bobs.to_string().contains(&id));
    assert_eq!(
        p.get("/api/me", &new_token).await.0,
        200,
        "bob revoked nothing"
    );

    // Bad requests.
    for (body, what) in [
        (json!({"name": ""}), "empty name"),
        (json!({"name": "x", "expires_in": "soon"}), "bad expiry"),
        (
            json!({"name": "x", "scopes": {"allowed_routes": ["admin"]}}),
            "unknown route",
        ),
        (
            json!({"name": "x", "scopes": {"requests_per_minute": 0}}),
            "zero rate",
        ),
        (
            json!({"name": "x", "scopes": {"allowed_models": ["a b"]}}),
            "bad pattern",
        ),
        (json!({"name": "x", "scopes": {"nope": 1}}), "unknown scope"),
    ] {
        let (s, body) = create(&p, &alice, body).await;
        assert_error(s, &body, 400, "invalid_request");
        assert!(!body.to_string().contains(&alice), "{what}");
    }

    // Revoke: 204, effective on the next request, audited.
    let (s, _) = p
        .call(Method::DELETE, &format!("/api/tokens/{id}"), &alice, None)
        .await;
    assert_eq!(s, 204);
    let (s, body) = p.get("/api/me", &new_token).await;
    assert_error(s, &body, 401, "invalid_api_key");
    let (_, list) = p.get("/api/tokens", &alice).await;
    let revoked = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(revoked["revoked_at"].is_string());
    let (_, audit) = p.get("/api/audit", &alice).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"token.created") && actions.contains(&"token.revoked"));
    assert!(
        !audit.to_string().contains(&new_token),
        "no token material in the audit log"
    );
    p.stop().await;
}
both_backends!(self_service_tokens);

/// Scopes only narrow: a scoped token cannot mint at all, and the admin API stores the same
/// scopes; the store keeps whatever it is given only after `checked()`.
async fn scopes_from_the_admin_api(backend: Backend) {
    let p = TestProxy::start(backend).await;
    let (uid, _) = p.user("carol").await;
    let (s, made) = p
        .admin(
            Method::POST,
            &format!("/admin/users/{uid}/tokens"),
            Some(json!({"name": "ci", "scopes": {"allowed_routes": ["embeddings"], "allowed_models": ["openai/text-embedding-*"]}})),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    let token = made["token"].as_str().unwrap();
    let (_, list) = p
        .admin(Method::GET, &format!("/admin/users/{uid}/tokens"), None)
        .await;
    let t = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == made["id"])
        .unwrap()
        .clone();
    assert_eq!(t["scopes"]["allowed_routes"], json!(["embeddings"]));
    // Its scopes hold on /v1 (route known before the handler: no body needed).
    let (s, body) = p
        .post(
            "/v1/chat/completions",
            token,
            json!({"model": "openai/gpt-4o"}),
        )
        .await;
    assert_error(s, &body, 403, "route_not_allowed");
    let (s, body) = p
        .admin(
            Method::POST,
            &format!("/admin/users/{uid}/tokens"),
            Some(json!({"scopes": {"allowed_routes": ["everything"]}})),
        )
        .await;
    assert_error(s, &body, 400, "invalid_request");
    p.stop().await;
}
both_backends!(scopes_from_the_admin_api);

// === enforcement on /v1 ===

async fn scoped(p: &TestProxy, owner: &str, scopes: Value) -> String {
    let (s, made) = create(p, owner, json!({"name": "scoped", "scopes": scopes})).await;
    assert_eq!(s, 201, "{made}");
    made["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_hold_on_every_v1_route_and_every_fallback() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert(
            "BYOK_MODELS__ALIASES".into(),
            r#"{ fast = "google/gemini-2.5-flash", smart = "openai/gpt-4o" }"#.into(),
        );
    })
    .await;
    let (_, owner) = p.user("alice").await;
    for (provider, creds) in [
        ("openai", json!({"apiKey": "sk-openai-user-0000000001"})),
        ("anthropic", json!({"apiKey": "sk-ant-user-00000000001"})),
        ("google", json!({"apiKey": "goog-user-000000000001"})),
    ] {
        add_key(&p, &owner, provider, creds).await;
    }

    // Routes: a chat-only token may call nothing else of /v1, whatever the body.
    let chat_only = scoped(&p, &owner, json!({"allowed_routes": ["chat"]})).await;
    let chat = json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        p.post("/v1/chat/completions", &chat_only, chat.clone())
            .await
            .0,
        200
    );
    for (method, path, route) in [
        (Method::POST, "/v1/embeddings", "embeddings"),
        (Method::POST, "/v1/responses", "responses"),
        (Method::POST, "/v1/messages", "messages"),
        (Method::POST, "/v1/messages/count_tokens", "messages"),
        (Method::GET, "/v1/models", "models"),
        (Method::GET, "/v1/models/openai%2Fgpt-4o", "models"),
    ] {
        let before = fake.request_count();
        let resp = p
            .http
            .request(method, p.url(path))
            .bearer_auth(&chat_only)
            .body("this is not even JSON")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        assert_eq!(resp.headers()["x-should-retry"], "false");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(fake.request_count(), before, "{path} reached upstream");
        if path.starts_with("/v1/messages") {
            assert_eq!(body["type"], "error", "Anthropic's shape on {path}");
            assert_eq!(body["error"]["type"], "permission_error");
            assert!(body["error"]["message"].as_str().unwrap().contains(route));
        } else {
            assert_eq!(body["error"]["code"], "route_not_allowed", "{path}: {body}");
        }
    }

    // Models: the primary, the fallbacks (both lists) and aliases all count.
    let openai_only = scoped(
        &p,
        &owner,
        json!({"allowed_models": ["openai/*"], "allowed_routes": ["chat", "models", "embeddings", "messages"]}),
    )
    .await;
    let cases = [
        (json!({"model": "openai/gpt-4o"}), true),
        (json!({"model": "smart"}), true),
        (json!({"model": "gpt-4o-mini"}), true),
        (json!({"model": "fast"}), false),
        (json!({"model": "anthropic/claude-3-haiku"}), false),
        (
            json!({"model": "openai/gpt-4o", "models": ["openai/gpt-4o-mini", "google/gemini-2.5-flash"]}),
            false,
        ),
        (
            json!({"model": "openai/gpt-4o", "providerOptions": {"gateway": {"models": ["fast"]}}}),
            false,
        ),
        (
            json!({"model": "openai/gpt-4o", "models": ["smart"], "providerOptions": {"gateway": {"models": ["openai/gpt-4o-mini"]}}}),
            true,
        ),
    ];
    for (mut body, allowed) in cases {
        body["messages"] = json!([{"role": "user", "content": "hi"}]);
        let before = fake.request_count();
        let (s, answer) = p
            .post("/v1/chat/completions", &openai_only, body.clone())
            .await;
        if allowed {
            assert_eq!(s, 200, "{body}: {answer}");
            assert_eq!(fake.request_count(), before + 1);
        } else {
            assert_error(s, &answer, 403, "model_not_allowed");
            assert_eq!(fake.request_count(), before, "{body} reached upstream");
        }
    }
    let (s, body) = p
        .post(
            "/v1/embeddings",
            &openai_only,
            json!({"model": "google/text-embedding-004", "input": "x"}),
        )
        .await;
    assert_error(s, &body, 403, "model_not_allowed");
    let resp = p
        .http
        .post(p.url("/v1/messages"))
        .bearer_auth(&openai_only)
        .json(&json!({"model": "claude-3-haiku", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        403,
        "bare claude names resolve to anthropic/ on /v1/messages"
    );

    // /v1/models lists only what the patterns allow (with ?all=true too); one model of
    // another provider is not found.
    for path in ["/v1/models", "/v1/models?all=true"] {
        let (s, list) = p.get(path, &openai_only).await;
        assert_eq!(s, 200);
        let ids: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert!(
            !ids.is_empty() && ids.iter().all(|id| id.starts_with("openai/")),
            "{path}: {ids:?}"
        );
    }
    let (s, _) = p.get("/v1/models/openai%2Fgpt-4o", &openai_only).await;
    assert_eq!(s, 200);
    let (s, body) = p
        .get("/v1/models/anthropic%2Fclaude-3-haiku", &openai_only)
        .await;
    assert_error(s, &body, 404, "not_found");
    // The owner's unscoped token still sees everything.
    let (_, all) = p.get("/v1/models", &owner).await;
    assert!(all["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "anthropic/claude-3-haiku"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rate_limits_that_token_only() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let (_, owner) = p.user("alice").await;
    add_key(
        &p,
        &owner,
        "openai",
        json!({"apiKey": "sk-openai-user-0000000001"}),
    )
    .await;
    let slow = scoped(&p, &owner, json!({"requests_per_minute": 3})).await;
    let chat = json!({"model": "openai/gpt-4o", "messages": []});
    for left in [2, 1, 0] {
        let resp = p
            .http
            .post(p.url("/v1/chat/completions"))
            .bearer_auth(&slow)
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "3");
        assert_eq!(
            resp.headers()["x-ratelimit-remaining-requests"],
            left.to_string().as_str()
        );
    }
    let before = fake.request_count();
    let resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&slow)
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("this token"));
    assert_eq!(fake.request_count(), before);
    // The same user's unscoped token is not held to it.
    assert_eq!(p.post("/v1/chat/completions", &owner, chat).await.0, 200);
    assert!(p
        .metrics()
        .await
        .contains("byok_rate_limited_total{limit=\"token\"} 1"));
    p.stop().await;
}
