//! Identity through HTTP on both backends: the operator API, app-token authentication and
//! its SPEC §5 errors, revocation and expiry taking effect on the very next request, audit.

use crate::both_backends;
use crate::common::{assert_error, Backend, TestDb, TestProxy, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

async fn token_auth_errors(backend: Backend) {
    let p = TestProxy::start(backend).await;
    let (_, token) = p.user("alice").await;
    // No token.
    let resp = p.http.get(p.url("/api/keys")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let body: Value = resp.json().await.unwrap();
    assert_error(401, &body, 401, "invalid_api_key");
    // Unknown, malformed, and the admin token used as an app token.
    let unknown = format!("bkp_{}", "A".repeat(43));
    for bad in [unknown.as_str(), "bkp_short", "sk-not-ours", ADMIN_TOKEN] {
        let (status, body) = p.get("/api/keys", bad).await;
        assert_error(status, &body, 401, "invalid_api_key");
        assert!(!body.to_string().contains(bad));
    }
    // The three accepted headers.
    for header in ["authorization", "x-api-key", "api-key"] {
        let value = if header == "authorization" {
            format!("Bearer {token}")
        } else {
            token.clone()
        };
        let resp = p
            .http
            .get(p.url("/api/keys"))
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{header}");
        assert!(resp.headers().contains_key("x-request-id"));
    }
    // Request ids are propagated.
    let resp = p
        .http
        .get(p.url("/api/keys"))
        .bearer_auth(&token)
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
    // Failed attempts (no token, 4 bad ones) are audited off the request path, aggregated per
    // source address, without the token.
    let mut found = false;
    for _ in 0..100 {
        let (_, audit) = p.admin(Method::GET, "/admin/audit?limit=100", None).await;
        let fails: Vec<&Value> = audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "auth.failed")
            .collect();
        let count: u64 = fails
            .iter()
            .map(|e| e["detail"]["count"].as_u64().unwrap())
            .sum();
        if count >= 5 {
            assert_eq!(count, 5, "{audit}");
            assert!(fails.iter().all(|e| e["remote_addr"] == "127.0.0.1"));
            let reasons = &fails[0]["detail"]["reasons"];
            assert!(reasons["malformed"].as_u64().unwrap() >= 1, "{audit}");
            assert!(!audit.to_string().contains(&unknown));
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(found, "auth.failed events not recorded");
}
both_backends!(token_auth_errors);

async fn revoked_and_expired_tokens_fail_on_the_next_request(backend: Backend) {
    let p = TestProxy::start(backend).await;
    let (uid, token) = p.user("alice").await;
    // Warm the cache, then revoke through the operator API.
    assert_eq!(p.get("/api/keys", &token).await.0, 200);
    let (_, tokens) = p
        .admin(Method::GET, &format!("/admin/users/{uid}/tokens"), None)
        .await;
    let tid = tokens["data"][0]["id"].as_str().unwrap().to_string();
    assert!(tokens.to_string().find("token_hash").is_none());
    assert!(!tokens.to_string().contains(&token));
    let (status, _) = p
        .admin(Method::DELETE, &format!("/admin/tokens/{tid}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = p.get("/api/keys", &token).await;
    assert_error(status, &body, 401, "invalid_api_key");
    let (status, body) = p
        .admin(
            Method::DELETE,
            &format!("/admin/tokens/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_error(status, &body, 404, "not_found");

    // A token that expires: create one with a 1s lifetime, use it, wait it out.
    let (status, tok) = p
        .admin(
            Method::POST,
            &format!("/admin/users/{uid}/tokens"),
            Some(json!({"expires_in": "1s"})),
        )
        .await;
    assert_eq!(status, 201, "{tok}");
    let short = tok["token"].as_str().unwrap().to_string();
    assert!(tok["expires_at"].is_string());
    assert_eq!(p.get("/api/keys", &short).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = p.get("/api/keys", &short).await;
    assert_error(status, &body, 401, "invalid_api_key");

    // Bad expiry is refused.
    let (status, body) = p
        .admin(
            Method::POST,
            &format!("/admin/users/{uid}/tokens"),
            Some(json!({"expires_in": "tomorrow"})),
        )
        .await;
    assert_error(status, &body, 400, "invalid_request");
}
both_backends!(revoked_and_expired_tokens_fail_on_the_next_request);

async fn disabled_users_are_refused(backend: Backend) {
    let p = TestProxy::start(backend).await;
    let (uid, token) = p.user("alice").await;
    assert_eq!(p.get("/api/keys", &token).await.0, 200);
    let (status, user) = p
        .admin(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(user["disabled"], true);
    let (status, body) = p.get("/api/keys", &token).await;
    assert_error(status, &body, 403, "user_disabled");
    let (_, user) = p
        .admin(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(json!({"disabled": false, "requests_per_minute": 5})),
        )
        .await;
    assert_eq!(user["requests_per_minute"], 5);
    assert_eq!(p.get("/api/keys", &token).await.0, 200);
    let (_, user) = p
        .admin(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(json!({"requests_per_minute": null})),
        )
        .await;
    assert_eq!(user["requests_per_minute"], Value::Null);
    let (_, audit) = p
        .admin(Method::GET, &format!("/admin/audit?user={uid}"), None)
        .await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"user.disabled")
            && actions.contains(&"user.created")
            && actions.contains(&"token.created"),
        "{actions:?}"
    );
}
both_backends!(disabled_users_are_refused);

async fn operator_api(backend: Backend) {
    let p = TestProxy::start(backend).await;
    // Wrong or missing admin token.
    for auth in [None, Some("wrong"), Some("")] {
        let mut req = p.http.get(p.url("/admin/users"));
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_error(status, &body, 401, "invalid_api_key");
    }
    // An app token is not an admin token.
    let (_, token) = p.user("alice").await;
    let (status, body) = p.get("/admin/users", &token).await;
    assert_error(status, &body, 401, "invalid_api_key");
    // Duplicate and invalid names.
    let (status, body) = p
        .admin(Method::POST, "/admin/users", Some(json!({"name": "alice"})))
        .await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = p
        .admin(
            Method::POST,
            "/admin/users",
            Some(json!({"name": "has space"})),
        )
        .await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = p
        .admin(Method::POST, "/admin/users", Some(json!({"nme": "x"})))
        .await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = p
        .admin(
            Method::PATCH,
            &format!("/admin/users/{}", uuid::Uuid::new_v4()),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, users) = p.admin(Method::GET, "/admin/users", None).await;
    assert_eq!(status, 200);
    assert_eq!(users["data"].as_array().unwrap().len(), 1);
    let (status, body) = p.get("/nowhere", &token).await;
    assert_error(status, &body, 404, "not_found");
}
both_backends!(operator_api);

#[tokio::test]
async fn operator_api_is_closed_without_an_admin_token() {
    let p = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.remove("BYOK_ADMIN_TOKEN");
    })
    .await;
    let (status, body) = p.admin(Method::GET, "/admin/users", None).await;
    assert_error(status, &body, 401, "invalid_api_key");
}

async fn health_and_readiness(backend: Backend) {
    let p = TestProxy::start(backend).await;
    let resp = p.http.get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = p.http.get(p.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}
both_backends!(health_and_readiness);

#[tokio::test]
async fn openapi_describes_every_api_and_admin_route() {
    let p = TestProxy::start(Backend::Sqlite).await;
    let resp = p.http.get(p.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/me", vec!["get"]),
        ("/api/providers", vec!["get"]),
        ("/api/providers/health", vec!["get"]),
        ("/api/keys", vec!["get", "post"]),
        ("/api/keys/{id}", vec!["patch", "delete"]),
        ("/api/keys/{id}/test", vec!["post"]),
        ("/api/usage", vec!["get"]),
        ("/api/audit", vec!["get"]),
        ("/api/tokens", vec!["get", "post"]),
        ("/api/tokens/{id}", vec!["delete"]),
        ("/auth/config", vec!["get"]),
        ("/auth/login", vec!["get"]),
        ("/auth/callback", vec!["get"]),
        ("/auth/logout", vec!["post"]),
        ("/admin/users", vec!["get", "post"]),
        ("/admin/users/{id}", vec!["get", "patch"]),
        ("/admin/users/{id}/tokens", vec!["get", "post"]),
        ("/admin/tokens/{id}", vec!["delete"]),
        ("/admin/audit", vec!["get"]),
    ] {
        // Each documented route is the route the router serves under the same template.
        let concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000");
        assert_eq!(byok_proxy::router::Route::parse(&concrete).label(), path);
        for m in methods {
            assert!(paths[path].get(m).is_some(), "{m} {path} undocumented");
        }
    }
    // Every schema reference resolves.
    let text = doc.to_string();
    for r in text.split("#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
    }
}
