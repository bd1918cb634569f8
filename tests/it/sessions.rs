//! Web sessions through HTTP, signed in through the real OpenID provider: the cookie's
//! attributes and storage (hash only), idle and absolute expiry (the session clock is moved
//! forward, nothing sleeps), logout, a disabled user cut off (also across two replicas on
//! PostgreSQL), sessions refused on `/v1`, and the CSRF refusals.

use crate::both_backends;
use crate::common::fake_upstream::FakeUpstream;
use crate::common::oidc::{self, session_cookie, start_with_provider, Browser, OidcProvider};
use crate::common::{assert_error, within, Backend, TestDb, TestProxy};
use crate::oidc::session_rows;
use reqwest::Method;
use serde_json::json;
use sha2::Digest;
use std::time::Duration;

async fn signed_in(backend: Backend) -> (TestProxy, OidcProvider, Browser, String) {
    let (p, provider) = start_with_provider(TestDb::new(backend).await, &[], |_| {}).await;
    let b = Browser::new();
    let value = b.sign_in(&p, "ann@example.com").await;
    (p, provider, b, value)
}

async fn csrf(b: &Browser, p: &TestProxy) -> String {
    let (s, me) = b.me(p).await;
    assert_eq!(s, 200, "{me}");
    me["csrf"].as_str().unwrap().to_string()
}

/// `GET /api/me` with exactly this cookie value (not the jar's).
async fn me_with(p: &TestProxy, value: &str) -> u16 {
    p.http
        .get(p.url("/api/me"))
        .header("cookie", format!("byok_session={value}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn cookie_storage_expiry_and_logout(backend: Backend) {
    let (p, _provider) = start_with_provider(TestDb::new(backend).await, &[], |_| {}).await;
    let b = Browser::new();
    let url = b.authorize(&p, "ann@example.com").await;
    let landing = b.land(&url).await;
    let set = landing
        .set_cookies
        .iter()
        .find(|c| c.starts_with("byok_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain http base URL: no Secure flag: {set}"
    );
    // The pending-login cookie is cleared.
    assert!(landing
        .set_cookies
        .iter()
        .any(|c| c.starts_with("byok_login=;") && c.contains("Max-Age=0")));
    let value = session_cookie(&landing).unwrap();
    assert_eq!(value.len(), 43, "256 random bits, base64url");

    // Only the SHA-256 of the cookie is stored.
    let hash: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
    let stored = p.app.store.session_by_hash(&hash).await.unwrap().unwrap();
    assert_eq!(stored.user.email.as_deref(), Some("ann@example.com"));
    assert_eq!(
        stored.session.expires_at - stored.session.created_at,
        chrono::Duration::hours(12)
    );
    assert!(stored.session.user_agent.is_none() || stored.session.user_agent.is_some());
    assert!(!crate::common::contains(
        &p.db.raw_bytes().await,
        value.as_bytes()
    ));
    assert_eq!(me_with(&p, &value).await, 200);

    // Idle expiry: 2 h without a request.
    let clock = &p.app.auth.sessions.clock;
    clock.advance(Duration::from_secs(2 * 3600 + 1));
    assert_eq!(me_with(&p, &value).await, 401);
    assert_eq!(
        session_rows(&p).await,
        0,
        "an expired session's row is deleted"
    );

    // Absolute expiry: active every 1 h 50 min, still ended 12 h after sign-in.
    let value = b.sign_in(&p, "ann@example.com").await;
    for _ in 0..6 {
        clock.advance(Duration::from_secs(110 * 60));
        assert_eq!(me_with(&p, &value).await, 200, "active sessions stay alive");
    }
    clock.advance(Duration::from_secs(60 * 60));
    assert_eq!(me_with(&p, &value).await, 401, "12 h after sign-in it ends");

    // Logout: CSRF needed; then the row is gone and the cookie cleared.
    let b = Browser::new();
    let value = b.sign_in(&p, "ann@example.com").await;
    let (s, body) = b.call(&p, Method::POST, "/auth/logout", None, None).await;
    assert_error(s, &body, 403, "csrf_failed");
    let token = csrf(&b, &p).await;
    let resp = b
        .http
        .post(p.url("/auth/logout"))
        .header("x-byok-csrf", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let cleared = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("byok_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(me_with(&p, &value).await, 401);
    assert_eq!(session_rows(&p).await, 0);
    let (_, audit) = p.admin(Method::GET, "/admin/audit?limit=100", None).await;
    let ended: Vec<_> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "session.ended")
        .collect();
    assert!(
        ended.iter().any(|e| e["detail"]["reason"] == "logout"),
        "{audit}"
    );
    assert!(
        ended.iter().any(|e| e["detail"]["reason"] == "expired"),
        "{audit}"
    );
    p.stop().await;
}
both_backends!(cookie_storage_expiry_and_logout);

/// With an https `public_base_url` both cookies are `Secure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_behind_https() {
    let (listener, base) = oidc::bind().await;
    let public = "https://proxy.example.test";
    let provider = OidcProvider::start(&[format!("{public}/auth/callback")], &[]).await;
    let issuer = provider.issuer.clone();
    let p = TestProxy::start_bound(
        listener,
        TestDb::new(Backend::Sqlite).await,
        byok_proxy::keys::crypto::MasterKey::generate(),
        |env| oidc::oidc_env(env, public, &issuer),
    )
    .await;
    let first = Browser::new();
    let url2 = first
        .authorize_to(&p, "ann@example.com", &format!("{public}/auth/callback"))
        .await;
    // The load balancer would route this to the proxy: land on it directly.
    let landing = first.land(&url2.replace(public, &base)).await;
    assert_eq!(landing.location, "/ui/", "{:?}", landing.set_cookies);
    let set = landing
        .set_cookies
        .iter()
        .find(|c| c.starts_with("byok_session="))
        .unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
    let login = Browser::new()
        .http
        .get(p.url("/auth/login"))
        .send()
        .await
        .unwrap();
    assert!(login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .ends_with("; Secure"));
    p.stop().await;
}

async fn disabled_user_cut_off(backend: Backend) {
    let (p, _provider, b, value) = signed_in(backend).await;
    let (_, me) = b.me(&p).await;
    let uid = me["user"]["id"].as_str().unwrap().to_string();
    let csrf = me["csrf"].as_str().unwrap().to_string();
    // A token of the same user, made with the session.
    let (s, tok) = b
        .call(
            &p,
            Method::POST,
            "/api/tokens",
            Some(&csrf),
            Some(json!({"name": "cli"})),
        )
        .await;
    assert_eq!(s, 201, "{tok}");
    let token = tok["token"].as_str().unwrap().to_string();
    assert_eq!(p.get("/api/keys", &token).await.0, 200);

    let (s, _) = p
        .admin(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, 200);
    let status = me_with(&p, &value).await;
    assert!(
        status == 401 || status == 403,
        "session of a disabled user: {status}"
    );
    let (s, body) = p.get("/api/keys", &token).await;
    assert_error(s, &body, 403, "user_disabled");
    assert_eq!(session_rows(&p).await, 0, "disabling ends the sessions");
    // Signing in again is refused while disabled.
    let b2 = Browser::new();
    let url = b2.authorize(&p, "ann@example.com").await;
    let landing = b2.land(&url).await;
    assert_eq!(landing.location, "/ui/?login_error=user_disabled");
    assert!(session_cookie(&landing).is_none());
    p.stop().await;
}
both_backends!(disabled_user_cut_off);

/// `/v1` takes app tokens only: a session cookie (even with its CSRF header) is a 401 and
/// nothing goes upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_refused_on_v1() {
    let fake = FakeUpstream::start().await;
    let base = fake.base_url();
    let (p, _provider) = start_with_provider(TestDb::new(Backend::Sqlite).await, &[], |env| {
        env.insert("BYOK_UPSTREAM__GATEWAY__BASE_URL".into(), base);
        env.insert("AI_GATEWAY_API_KEY".into(), "gw".into());
    })
    .await;
    let b = Browser::new();
    b.sign_in(&p, "ann@example.com").await;
    let csrf = csrf(&b, &p).await;
    let chat = json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    for (method, path, body) in [
        (Method::GET, "/v1/models", None),
        (Method::GET, "/v1/models/openai%2Fgpt-4o", None),
        (Method::POST, "/v1/chat/completions", Some(chat.clone())),
        (
            Method::POST,
            "/v1/embeddings",
            Some(json!({"model": "openai/text-embedding-3-small", "input": "x"})),
        ),
        (Method::POST, "/v1/responses", Some(chat.clone())),
    ] {
        let (s, body) = b.call(&p, method, path, Some(&csrf), body).await;
        assert_error(s, &body, 401, "invalid_api_key");
    }
    let resp = b
        .http
        .post(p.url("/v1/messages"))
        .header("x-byok-csrf", &csrf)
        .json(&json!({"model": "claude-3-haiku", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(fake.request_count(), 0, "nothing went upstream");
    p.stop().await;
}

async fn csrf_refusals(backend: Backend) {
    let (p, _provider, b, _) = signed_in(backend).await;
    let token = csrf(&b, &p).await;
    let new = || Some(json!({"name": "laptop"}));
    // No header, a wrong one: refused, and nothing was created.
    let (s, body) = b.call(&p, Method::POST, "/api/tokens", None, new()).await;
    assert_error(s, &body, 403, "csrf_failed");
    let (s, body) = b
        .call(
            &p,
            Method::POST,
            "/api/tokens",
            Some("not-the-csrf-value"),
            new(),
        )
        .await;
    assert_error(s, &body, 403, "csrf_failed");
    // The right header from a foreign origin: refused.
    let resp = b
        .http
        .post(p.url("/api/tokens"))
        .header("x-byok-csrf", &token)
        .header("origin", "https://evil.example")
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (s, list) = b.call(&p, Method::GET, "/api/tokens", None, None).await;
    assert_eq!(s, 200, "reads need no CSRF header");
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // PATCH and DELETE too.
    let (s, body) = b
        .call(
            &p,
            Method::PATCH,
            "/api/keys/00000000-0000-0000-0000-000000000000",
            None,
            Some(json!({})),
        )
        .await;
    assert_error(s, &body, 403, "csrf_failed");
    let (s, body) = b
        .call(
            &p,
            Method::DELETE,
            "/api/tokens/00000000-0000-0000-0000-000000000000",
            None,
            None,
        )
        .await;
    assert_error(s, &body, 403, "csrf_failed");
    // The right header, with the proxy's own origin or none: accepted.
    let resp = b
        .http
        .post(p.url("/api/tokens"))
        .header("x-byok-csrf", &token)
        .header("origin", p.url(""))
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let (s, _) = b
        .call(&p, Method::POST, "/api/tokens", Some(&token), new())
        .await;
    assert_eq!(s, 201);
    // Another session's CSRF value does not fit this one.
    let other = Browser::new();
    other.sign_in(&p, "bob@example.com").await;
    let (s, body) = other
        .call(&p, Method::POST, "/api/tokens", Some(&token), new())
        .await;
    assert_error(s, &body, 403, "csrf_failed");
    p.stop().await;
}
both_backends!(csrf_refusals);

/// Two replicas on one PostgreSQL: a login started on A finishes on B (the pending login
/// travels sealed in its cookie), the session works on both, and disabling the user on A
/// cuts the session off on B at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_sessions_and_cut_off_disabled_users() {
    let db = TestDb::new(Backend::Postgres).await;
    let shared = db.share();
    let master = byok_proxy::keys::crypto::MasterKey::generate();
    let (la, base_a) = oidc::bind().await;
    let (lb, _) = oidc::bind().await;
    // Behind one load balancer both replicas have A's address as their public URL.
    let provider = OidcProvider::start(&[format!("{base_a}/auth/callback")], &[]).await;
    let issuer = provider.issuer.clone();
    let a = TestProxy::start_bound(la, db, master.clone(), |env| {
        oidc::oidc_env(env, &base_a, &issuer)
    })
    .await;
    let b = TestProxy::start_bound(lb, shared, master, |env| {
        oidc::oidc_env(env, &base_a, &issuer)
    })
    .await;
    let browser = Browser::new();
    let url = browser.authorize(&a, "ann@example.com").await;
    let landing = browser.land(&url.replace(&base_a, &b.url(""))).await;
    assert_eq!(landing.location, "/ui/", "{:?}", landing.set_cookies);
    let value = session_cookie(&landing).unwrap();
    assert_eq!(me_with(&a, &value).await, 200);
    assert_eq!(me_with(&b, &value).await, 200);
    let (_, me) = browser.me(&a).await;
    let uid = me["user"]["id"].as_str().unwrap().to_string();
    let (s, _) = a
        .admin(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, 200);
    let took = within(Duration::from_secs(2), async || {
        me_with(&b, &value).await != 200
    })
    .await;
    println!("the disabled user's session ended on replica B after {took:?}");
    assert_eq!(me_with(&a, &value).await, 401);
    a.stop().await;
    b.stop().await;
}
