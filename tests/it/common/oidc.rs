//! Web sign-in in tests: a real OpenID provider (`oidc-provider` from npm, run by
//! `tests/oidc/provider.mjs` on 127.0.0.1) and a proxy configured for it, plus an HTTP-level
//! browser ([`Browser`]: a cookie jar, redirects followed by hand) that signs in through it.
//!
//! The npm package is installed by `cargo xtask test`; when it is missing the tests fail
//! (never skip) and say so.

use super::{TestDb, TestProxy};
use byok_proxy::keys::crypto::MasterKey;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const CLIENT_ID: &str = "byok-proxy-test";
pub const CLIENT_SECRET: &str = "byok-proxy-test-client-secret-0123456789";

pub const INSTALL_HINT: &str = "run `cargo xtask test` (it installs the npm packages of \
     tests/oidc/package-lock.json: oidc-provider), or `npm ci` in tests/oidc";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// The locked `oidc-provider` is installed under tests/oidc/node_modules.
pub fn check_deps() -> Result<(), String> {
    let lock: Value = serde_json::from_slice(
        &std::fs::read(dir().join("package-lock.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut bad = Vec::new();
    for (path, meta) in lock["packages"].as_object().into_iter().flatten() {
        if path.is_empty() || meta["optional"] == true || meta["dev"] == true {
            continue;
        }
        let want = meta["version"].as_str().unwrap_or_default();
        let have = std::fs::read(dir().join(path).join("package.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned));
        if have.as_deref() != Some(want) {
            bad.push(format!("{path} (want {want}, have {have:?})"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("missing or wrong: {}", bad.join(", ")))
    }
}

/// The running OpenID provider; stopped when dropped.
pub struct OidcProvider {
    pub issuer: String,
    _child: tokio::process::Child,
}

impl OidcProvider {
    /// Starts the provider for clients redirecting to `redirect_uris`; `unverified` emails
    /// get `email_verified: false`.
    pub async fn start(redirect_uris: &[String], unverified: &[&str]) -> OidcProvider {
        if let Err(e) = check_deps() {
            panic!("the sign-in tests need oidc-provider ({e}): {INSTALL_HINT}");
        }
        let node = std::env::var("BYOK_UI_NODE").unwrap_or_else(|_| "node".into());
        let mut child = tokio::process::Command::new(&node)
            .arg(dir().join("provider.mjs"))
            .current_dir(dir())
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URIS", redirect_uris.join(" "))
            .env("UNVERIFIED", unverified.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env(
                "OIDC_DEBUG",
                std::env::var("BYOK_TEST_OIDC_DEBUG").unwrap_or_default(),
            )
            .stderr(if std::env::var("BYOK_TEST_OIDC_DEBUG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{node}`: {e}: {INSTALL_HINT}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the OpenID provider did not start within 30 s")
            .unwrap()
            .expect("the OpenID provider exited before it was ready");
        let issuer = serde_json::from_str::<Value>(&line).unwrap()["issuer"]
            .as_str()
            .unwrap()
            .to_string();
        // Keep reading what it prints, so it never writes into a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        OidcProvider {
            issuer,
            _child: child,
        }
    }
}

/// The environment of a proxy signing in with `issuer`.
pub fn oidc_env(env: &mut byok_proxy::config::EnvMap, base_url: &str, issuer: &str) {
    env.insert("BYOK_PUBLIC_BASE_URL".into(), base_url.into());
    env.insert("BYOK_AUTH__OIDC__ISSUER_URL".into(), issuer.into());
    env.insert("BYOK_AUTH__OIDC__CLIENT_ID".into(), CLIENT_ID.into());
    env.insert(
        "BYOK_AUTH__OIDC__CLIENT_SECRET".into(),
        CLIENT_SECRET.into(),
    );
    env.insert("BYOK_AUTH__OIDC__NAME".into(), "Test issuer".into());
}

/// A bound listener and the base URL it will serve.
pub async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (listener, base)
}

/// A proxy on `db` signing in with a fresh OpenID provider (returned too: dropping it stops
/// it). `edit` adjusts the environment further.
pub async fn start_with_provider(
    db: TestDb,
    unverified: &[&str],
    edit: impl FnOnce(&mut byok_proxy::config::EnvMap),
) -> (TestProxy, OidcProvider) {
    let (listener, base) = bind().await;
    let provider = OidcProvider::start(&[format!("{base}/auth/callback")], unverified).await;
    let issuer = provider.issuer.clone();
    let p = TestProxy::start_bound(listener, db, MasterKey::generate(), |env| {
        oidc_env(env, &base, &issuer);
        edit(env);
    })
    .await;
    (p, provider)
}

/// A browser at the HTTP level: one cookie jar for the proxy and the provider (both on
/// 127.0.0.1), redirects followed by hand so each hop can be inspected.
pub struct Browser {
    pub http: reqwest::Client,
    pub jar: std::sync::Arc<reqwest::cookie::Jar>,
}

/// What the last hop of a sign-in answered.
pub struct Landing {
    pub status: u16,
    pub location: String,
    /// Every `Set-Cookie` of the callback's answer.
    pub set_cookies: Vec<String>,
    /// The callback URL the provider sent the browser to (code, state).
    pub callback_url: String,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser { http, jar }
    }

    /// Follows redirects from `url` until one leaves for `stop_prefix` (returned, not
    /// followed) or a page answers.
    pub async fn follow(&self, mut url: String, stop_prefix: &str) -> (String, reqwest::Response) {
        for _ in 0..20 {
            let resp = self.http.get(&url).send().await.unwrap();
            if !resp.status().is_redirection() {
                return (url, resp);
            }
            let loc = resp.headers()["location"].to_str().unwrap().to_string();
            let next = reqwest::Url::parse(&url)
                .unwrap()
                .join(&loc)
                .unwrap()
                .to_string();
            if next.starts_with(stop_prefix) {
                return (next, resp);
            }
            url = next;
        }
        panic!("too many redirects from {url}");
    }

    /// From `/auth/login` through the provider's email form to the provider's redirect back
    /// to the proxy: returns the callback URL (not yet visited).
    pub async fn authorize(&self, p: &TestProxy, email: &str) -> String {
        self.authorize_to(p, email, &p.url("/auth/callback")).await
    }

    /// Like [`Browser::authorize`] when the proxy's `public_base_url` is not its address:
    /// stops at `callback` (the configured redirect URI).
    pub async fn authorize_to(&self, p: &TestProxy, email: &str, callback: &str) -> String {
        let login = self.http.get(p.url("/auth/login")).send().await.unwrap();
        assert_eq!(login.status(), 302);
        let to_issuer = login.headers()["location"].to_str().unwrap().to_string();
        let callback = callback.to_string();
        let (form_url, page) = self.follow(to_issuer, &callback).await;
        if form_url.starts_with(&callback) {
            return form_url; // still signed in at the provider: straight back
        }
        assert_eq!(page.status(), 200, "the provider's sign-in page");
        let action = format!("{}/login", form_url.split('?').next().unwrap());
        let resp = self
            .http
            .post(&action)
            .form(&[("email", email)])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_redirection(), "{}", resp.status());
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        let next = reqwest::Url::parse(&action)
            .unwrap()
            .join(&loc)
            .unwrap()
            .to_string();
        let (url, _) = self.follow(next, &callback).await;
        assert!(
            url.starts_with(&callback),
            "the provider did not send the browser back: {url}"
        );
        url
    }

    /// Visits the callback URL.
    pub async fn land(&self, callback_url: &str) -> Landing {
        let resp = self.http.get(callback_url).send().await.unwrap();
        Landing {
            status: resp.status().as_u16(),
            location: resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            set_cookies: resp
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect(),
            callback_url: callback_url.to_string(),
        }
    }

    /// Signs in as `email`; returns the session cookie value.
    pub async fn sign_in(&self, p: &TestProxy, email: &str) -> String {
        let url = self.authorize(p, email).await;
        let landing = self.land(&url).await;
        assert_eq!(landing.status, 302);
        assert_eq!(landing.location, "/ui/", "{:?}", landing.set_cookies);
        session_cookie(&landing).expect("no session cookie")
    }

    /// `GET /api/me` with this browser's cookies.
    pub async fn me(&self, p: &TestProxy) -> (u16, Value) {
        let resp = self.http.get(p.url("/api/me")).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A call with this browser's cookies and, for a session, its CSRF header.
    pub async fn call(
        &self,
        p: &TestProxy,
        method: reqwest::Method,
        path: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, p.url(path));
        if let Some(c) = csrf {
            req = req.header("x-byok-csrf", c);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }
}

/// The `byok_session` value set by a landing, if any (and not a deletion).
pub fn session_cookie(landing: &Landing) -> Option<String> {
    landing.set_cookies.iter().find_map(|c| {
        let v = c.strip_prefix("byok_session=")?.split(';').next()?;
        (!v.is_empty()).then(|| v.to_string())
    })
}
