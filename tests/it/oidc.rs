//! Web sign-in through HTTP: the whole flow against a real OpenID provider (oidc-provider,
//! on both stores), and every rejection — bad `state`, replayed code, an ID token with the
//! wrong `aud`, `iss` or `nonce`, expired, signed by a key the proxy does not trust, a
//! disallowed domain, `email_verified: false` — each leaving no session and no user. Forged
//! ID tokens come from [`FakeIssuer`], a small issuer of our own (discovery, JWKS, token
//! endpoint) that signs whatever the test asks for.

use crate::both_backends;
use crate::common::oidc::{self, session_cookie, start_with_provider, Browser};
use crate::common::{Backend, TestDb, TestProxy, ADMIN_TOKEN};
use byok_proxy::keys::crypto::MasterKey;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    Audience, EmptyAdditionalClaims, EndUserEmail, IssuerUrl, JsonWebKeyId, Nonce,
    PrivateSigningKey, StandardClaims, SubjectIdentifier,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

async fn users(p: &TestProxy) -> Vec<Value> {
    let (s, body) = p.admin(Method::GET, "/admin/users", None).await;
    assert_eq!(s, 200);
    body["data"].as_array().unwrap().clone()
}

async fn audit_actions(p: &TestProxy) -> Vec<String> {
    let (_, body) = p.admin(Method::GET, "/admin/audit?limit=200", None).await;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

/// The session rows, counted straight in the database.
pub async fn session_rows(p: &TestProxy) -> i64 {
    match &p.db.url {
        byok_proxy::config::DatabaseUrl::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
                .unwrap()
        }
        byok_proxy::config::DatabaseUrl::Postgres(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .query_one("SELECT COUNT(*) FROM sessions", &[])
                .await
                .unwrap()
                .get(0)
        }
    }
}

fn param(url: &str, name: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

async fn sign_in_flow(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (p, _provider) = start_with_provider(db, &[], |env| {
        env.insert(
            "BYOK_AUTH__OIDC__ADMIN_EMAILS".into(),
            r#"["Boss@Example.com"]"#.into(),
        );
    })
    .await;

    // The login page learns the issuer's name and the proxy's public address.
    let (s, config) = p.get("/auth/config", "").await;
    assert_eq!(s, 200);
    assert_eq!(config["sign_in"]["name"], "Test issuer");
    assert_eq!(config["sign_in"]["login_url"], "/auth/login");
    assert_eq!(config["public_base_url"], p.url(""));

    // Login redirects to the issuer with the code flow, PKCE S256, state and nonce, and binds
    // the state to the browser with a short-lived cookie.
    let b = Browser::new();
    let login = b.http.get(p.url("/auth/login")).send().await.unwrap();
    assert_eq!(login.status(), 302);
    let to = login.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(param(&to, "response_type"), "code");
    assert_eq!(param(&to, "code_challenge_method"), "S256");
    assert_eq!(param(&to, "client_id"), oidc::CLIENT_ID);
    assert_eq!(param(&to, "redirect_uri"), p.url("/auth/callback"));
    assert!(param(&to, "scope").contains("email"));
    assert!(param(&to, "state").len() >= 16 && param(&to, "nonce").len() >= 16);
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("byok_login="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/auth", "Max-Age=600"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains(&param(&to, "state")),
        "the cookie is sealed"
    );

    // First sign-in creates the user and a session.
    let value = b.sign_in(&p, "ann@example.com").await;
    let (s, me) = b.me(&p).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["auth"], "session");
    assert_eq!(me["user"]["email"], "ann@example.com");
    assert_eq!(me["user"]["name"], "ann@example.com");
    assert_eq!(me["user"]["is_admin"], false);
    assert!(me["csrf"].as_str().unwrap().len() >= 32);
    assert!(
        !me.to_string().contains(&value),
        "the cookie is never echoed"
    );
    let all = users(&p).await;
    assert_eq!(all.len(), 1);
    assert!(all[0]["oidc_subject"].is_string());
    assert_eq!(session_rows(&p).await, 1);

    // Signing in again finds the same user (by issuer and subject); a new session.
    let b2 = Browser::new();
    b2.sign_in(&p, "ann@example.com").await;
    assert_eq!(users(&p).await.len(), 1);
    assert_eq!(session_rows(&p).await, 2);

    // admin_emails (case-insensitive) make admins.
    let boss = Browser::new();
    boss.sign_in(&p, "boss@example.COM").await;
    let (_, me) = boss.me(&p).await;
    assert_eq!(me["user"]["is_admin"], true, "{me}");
    let (s, list) = boss.call(&p, Method::GET, "/admin/users", None, None).await;
    assert_eq!(s, 200, "an admin's session works on /admin: {list}");
    let (s, _) = b.call(&p, Method::GET, "/admin/users", None, None).await;
    assert_eq!(s, 401, "a non-admin's session does not");

    let actions = audit_actions(&p).await;
    assert_eq!(actions.iter().filter(|a| *a == "user.created").count(), 2);
    assert_eq!(
        actions.iter().filter(|a| *a == "session.created").count(),
        3
    );
    p.stop().await;
}
both_backends!(sign_in_flow);

/// A bad `state`, a callback without the browser's login cookie, a replayed code, an
/// unverified email, a disallowed domain, an issuer error: each 302s to the UI with a reason
/// and leaves no session and no user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_rejections_leave_nothing_behind() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (p, _provider) = start_with_provider(db, &["eve@example.com"], |env| {
        env.insert(
            "BYOK_AUTH__OIDC__ALLOWED_EMAIL_DOMAINS".into(),
            r#"["Example.com"]"#.into(),
        );
    })
    .await;
    let refused = |landing: &oidc::Landing, code: &str| {
        assert_eq!(landing.status, 302);
        assert_eq!(landing.location, format!("/ui/?login_error={code}"));
        assert!(
            session_cookie(landing).is_none(),
            "{:?}",
            landing.set_cookies
        );
    };

    // Bad state: the code is genuine, the state is not this browser's.
    let b = Browser::new();
    let url = b.authorize(&p, "ann@example.com").await;
    let state = param(&url, "state");
    let forged = url.replace(&state, "forged-state-value");
    refused(&b.land(&forged).await, "bad_state");
    // The same callback from another browser (no login cookie).
    refused(&Browser::new().land(&url).await, "bad_state");
    assert_eq!(users(&p).await.len(), 0);

    // Replayed code: the first use signs in; the same callback again — even with the
    // browser's login cookie, as an attacker who captured both would send it — is refused
    // (the issuer refuses a used code) and signs nobody in.
    let b = Browser::new();
    let url = b.authorize(&p, "ann@example.com").await;
    let cb = reqwest::Url::parse(&url).unwrap();
    use reqwest::cookie::CookieStore;
    let login_cookie = b.jar.cookies(&cb).unwrap().to_str().unwrap().to_string();
    assert!(login_cookie.contains("byok_login="), "{login_cookie}");
    let first = b.land(&url).await;
    assert!(session_cookie(&first).is_some());
    let before = session_rows(&p).await;
    let replay = Browser::new();
    let resp = replay
        .http
        .get(&url)
        .header("cookie", &login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "/ui/?login_error=exchange_failed"
    );
    assert!(!resp.headers().get_all("set-cookie").iter().any(|c| c
        .to_str()
        .unwrap()
        .starts_with("byok_session=")
        && !c.to_str().unwrap().starts_with("byok_session=;")));
    assert_eq!(session_rows(&p).await, before);
    assert_eq!(users(&p).await.len(), 1);

    // email_verified: false.
    let b = Browser::new();
    let url = b.authorize(&p, "eve@example.com").await;
    refused(&b.land(&url).await, "email_not_verified");
    // A domain that is not exactly the allowed one.
    for email in [
        "mallory@evil.io",
        "sub@dept.example.com",
        "x@example.com.evil.io",
    ] {
        let b = Browser::new();
        let url = b.authorize(&p, email).await;
        refused(&b.land(&url).await, "domain_not_allowed");
    }
    // The issuer said no.
    let b = Browser::new();
    let _ = b.http.get(p.url("/auth/login")).send().await.unwrap();
    let denied = b
        .land(&p.url("/auth/callback?error=access_denied&state=x"))
        .await;
    refused(&denied, "denied");
    assert_eq!(
        users(&p).await.len(),
        1,
        "only the one good sign-in made a user"
    );
    assert_eq!(session_rows(&p).await, before);
    p.stop().await;
}

// === a forging issuer ===

/// What the fake issuer's next ID token looks like.
#[derive(Clone)]
struct Scenario {
    iss: String,
    aud: String,
    nonce: String,
    /// Seconds from now (negative: already expired).
    exp_in: i64,
    foreign_key: bool,
    email: String,
    verified: bool,
}

/// An issuer that signs the ID token the test describes: `/.well-known/openid-configuration`,
/// `/jwks` (the trusted key only) and `/token`.
struct FakeIssuer {
    url: String,
    scenario: Arc<Mutex<Option<Scenario>>>,
}

const TRUSTED_PEM: &str = include_str!("fixtures/oidc-trusted-key.pem");
const FOREIGN_PEM: &str = include_str!("fixtures/oidc-foreign-key.pem");

fn key(pem: &str) -> CoreRsaPrivateSigningKey {
    CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new("k1".into()))).unwrap()
}

impl FakeIssuer {
    async fn start() -> FakeIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let scenario: Arc<Mutex<Option<Scenario>>> = Arc::new(Mutex::new(None));
        let (u, sc) = (url.clone(), scenario.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (u, sc) = (u.clone(), sc.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (u, sc) = (u.clone(), sc.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(&u, &sc, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeIssuer { url, scenario }
    }

    fn scenario(&self, nonce: &str) -> Scenario {
        Scenario {
            iss: self.url.clone(),
            aud: oidc::CLIENT_ID.into(),
            nonce: nonce.into(),
            exp_in: 300,
            foreign_key: false,
            email: "ann@example.com".into(),
            verified: true,
        }
    }
}

async fn answer(
    url: &str,
    scenario: &Mutex<Option<Scenario>>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<bytes::Bytes>> {
    let path = req.uri().path().to_string();
    let _ = req.into_body().collect().await;
    let body = match path.as_str() {
        "/.well-known/openid-configuration" => json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }),
        "/jwks" => serde_json::to_value(CoreJsonWebKeySet::new(vec![
            key(TRUSTED_PEM).as_verification_key()
        ]))
        .unwrap(),
        "/token" => {
            let s = scenario.lock().unwrap().clone().expect("no scenario set");
            let now = chrono::Utc::now();
            let claims = CoreIdTokenClaims::new(
                IssuerUrl::new(s.iss).unwrap(),
                vec![Audience::new(s.aud)],
                now + chrono::Duration::seconds(s.exp_in),
                now - chrono::Duration::seconds(600),
                StandardClaims::new(SubjectIdentifier::new("forged-subject".into()))
                    .set_email(Some(EndUserEmail::new(s.email)))
                    .set_email_verified(Some(s.verified)),
                EmptyAdditionalClaims {},
            )
            .set_nonce(Some(Nonce::new(s.nonce)));
            let pem = if s.foreign_key {
                FOREIGN_PEM
            } else {
                TRUSTED_PEM
            };
            let token = CoreIdToken::new(
                claims,
                &key(pem),
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                None,
                None,
            )
            .unwrap();
            json!({
                "access_token": "fake-access-token",
                "token_type": "Bearer",
                "expires_in": 60,
                "id_token": token.to_string(),
            })
        }
        _ => json!({"error": "not_found"}),
    };
    let mut resp = hyper::Response::new(Full::new(bytes::Bytes::from(body.to_string())));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

/// ID tokens that must not sign anyone in: wrong `aud`, wrong `iss`, wrong `nonce`, expired,
/// signed by a key the issuer does not publish, unverified email. The control case (the
/// same issuer, a correct token) signs in, so each refusal is about its one defect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_id_tokens_are_refused() {
    let issuer = FakeIssuer::start().await;
    let (listener, base) = oidc::bind().await;
    let p = TestProxy::start_bound(
        listener,
        TestDb::new(Backend::Sqlite).await,
        MasterKey::generate(),
        |env| oidc::oidc_env(env, &base, &issuer.url),
    )
    .await;

    type Edit = Box<dyn Fn(&mut Scenario) + Send>;
    let attempt = |edit: Edit| {
        let (p, issuer) = (&p, &issuer);
        async move {
            let b = Browser::new();
            let login = b.http.get(p.url("/auth/login")).send().await.unwrap();
            assert_eq!(login.status(), 302);
            let to = login.headers()["location"].to_str().unwrap().to_string();
            assert!(
                to.starts_with(&format!("{}/authorize?", issuer.url)),
                "{to}"
            );
            let mut s = issuer.scenario(&param(&to, "nonce"));
            edit(&mut s);
            *issuer.scenario.lock().unwrap() = Some(s);
            let cb = p.url(&format!(
                "/auth/callback?code=c0de&state={}",
                param(&to, "state")
            ));
            b.land(&cb).await
        }
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "wrong aud",
            Box::new(|s| s.aud = "someone-else".into()),
            "invalid_id_token",
        ),
        (
            "wrong iss",
            Box::new(|s| s.iss = "http://127.0.0.1:1".into()),
            "invalid_id_token",
        ),
        (
            "wrong nonce",
            Box::new(|s| s.nonce = "not-the-nonce".into()),
            "invalid_id_token",
        ),
        ("expired", Box::new(|s| s.exp_in = -120), "invalid_id_token"),
        (
            "foreign signature",
            Box::new(|s| s.foreign_key = true),
            "invalid_id_token",
        ),
        (
            "unverified email",
            Box::new(|s| s.verified = false),
            "email_not_verified",
        ),
    ];
    for (what, edit, code) in cases {
        let landing = attempt(edit).await;
        assert_eq!(landing.status, 302, "{what}");
        assert_eq!(
            landing.location,
            format!("/ui/?login_error={code}"),
            "{what}"
        );
        assert!(session_cookie(&landing).is_none(), "{what}");
        assert_eq!(users(&p).await.len(), 0, "{what} created a user");
        assert_eq!(session_rows(&p).await, 0, "{what} created a session");
    }
    // The control: a correct token from the same issuer signs in.
    let landing = attempt(Box::new(|_| {})).await;
    assert_eq!(landing.location, "/ui/");
    assert!(session_cookie(&landing).is_some());
    assert_eq!(users(&p).await.len(), 1);
    p.stop().await;
}

/// Without `auth.oidc` the sign-in routes do not exist and the UI keeps taking tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_oidc_there_is_no_sign_in() {
    let p = TestProxy::start(Backend::Sqlite).await;
    for path in ["/auth/login", "/auth/callback?code=a&state=b"] {
        let (s, body) = p.get(path, "").await;
        crate::common::assert_error(s, &body, 404, "not_found");
    }
    let (s, config) = p.get("/auth/config", "").await;
    assert_eq!(s, 200);
    assert!(config["sign_in"].is_null(), "{config}");
    let (_, token) = p.user("alice").await;
    let (s, me) = p.get("/api/me", &token).await;
    assert_eq!(s, 200);
    assert_eq!(me["auth"], "token");
    assert_eq!(me["user"]["name"], "alice");
    assert!(me.get("csrf").is_none());
    let _ = ADMIN_TOKEN;
    p.stop().await;
}
