//! Test harness: `TestDb` (a fresh migrated SQLite file or PostgreSQL schema per test),
//! `TestProxy` (the real server in-process on 127.0.0.1:0), and small HTTP helpers.

#![allow(dead_code)]

pub mod binary;
pub mod fake_upstream;
pub mod oidc;

use byok_proxy::config::{Config, DatabaseUrl, EnvMap};
use byok_proxy::keys::crypto::MasterKey;
use byok_proxy::state::AppState;
use byok_proxy::store::Store;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789-abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite` and `postgres` test functions running the same async body.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    };
}

/// The PostgreSQL server tests use: `BYOK_TEST_DATABASE_URL`, or the local default. Never
/// skipped: if it is unreachable, the test fails.
pub fn pg_base_url() -> String {
    std::env::var("BYOK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh, empty database for one test: a temporary SQLite file, or a new schema in the
/// test PostgreSQL database (dropped afterwards).
pub struct TestDb {
    pub backend: Backend,
    pub url: DatabaseUrl,
    pub dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestDb {
                backend,
                url: DatabaseUrl::Sqlite(dir.path().join("byok.db")),
                dir,
                schema: None,
            },
            Backend::Postgres => {
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let base = pg_base_url();
                let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL at BYOK_TEST_DATABASE_URL is unreachable: {e}")
                    });
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .await
                    .unwrap();
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
                TestDb {
                    backend,
                    url: DatabaseUrl::Postgres(url),
                    dir,
                    schema: Some(schema),
                }
            }
        }
    }

    /// Another handle on the same database (for a second proxy instance); dropping it
    /// leaves the database alone.
    pub fn share(&self) -> TestDb {
        TestDb {
            backend: self.backend,
            url: self.url.clone(),
            dir: tempfile::tempdir().unwrap(),
            schema: None,
        }
    }

    /// The URL as text, for configs and environment variables.
    pub fn url_string(&self) -> String {
        match &self.url {
            DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            DatabaseUrl::Postgres(u) => u.clone(),
        }
    }

    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, 4).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// Raw bytes of everything stored: the SQLite file(s), or every column of every row of
    /// the credential table as text/bytes.
    pub async fn raw_bytes(&self) -> Vec<u8> {
        match &self.url {
            DatabaseUrl::Sqlite(p) => {
                let mut all = Vec::new();
                for suffix in ["", "-wal", "-shm"] {
                    let path = format!("{}{suffix}", p.display());
                    if let Ok(b) = std::fs::read(&path) {
                        all.extend(b);
                    }
                }
                all
            }
            DatabaseUrl::Postgres(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut all = Vec::new();
                for table in ["ai_provider_keys", "audit_log", "app_tokens", "users"] {
                    let rows = client
                        .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
                        .await
                        .unwrap();
                    for r in rows {
                        let s: String = r.get(0);
                        all.extend(s.into_bytes());
                    }
                }
                let rows = client
                    .query("SELECT encrypted_key FROM ai_provider_keys", &[])
                    .await
                    .unwrap();
                for r in rows {
                    let b: Vec<u8> = r.get(0);
                    all.extend(b);
                }
                all
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let base = pg_base_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The environment for a test proxy on `db`, with a random master key and the test admin
/// token.
pub fn test_env(db: &TestDb, master: &MasterKey) -> EnvMap {
    let mut env = EnvMap::new();
    env.insert("BYOK_DATABASE__URL".into(), db.url_string());
    env.insert("BYOK_DATABASE__POOL_SIZE".into(), "8".into());
    env.insert(
        "BYOK_MASTER_KEY".into(),
        master.to_base64().expose().clone(),
    );
    env.insert("BYOK_ADMIN_TOKEN".into(), ADMIN_TOKEN.into());
    env.insert("BYOK_LISTEN".into(), "127.0.0.1:0".into());
    // Failed-auth audit rows are written per window; tests read them soon after.
    env.insert("BYOK_AUDIT__AUTH_FAILURE_WINDOW".into(), "100ms".into());
    // Tests that are not about limits must not trip them.
    env.insert("BYOK_LIMITS__REQUESTS_PER_MINUTE".into(), "1000000".into());
    env.insert("BYOK_LIMITS__BURST".into(), "100000".into());
    env.insert(
        "BYOK_LIMITS__MAX_CONCURRENT_REQUESTS".into(),
        "10000".into(),
    );
    env
}

/// The real server, in-process, on 127.0.0.1:0.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub app: Arc<AppState>,
    pub db: TestDb,
    pub master: MasterKey,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestProxy {
    pub async fn start(backend: Backend) -> TestProxy {
        TestProxy::start_with(TestDb::new(backend).await, |_| {}).await
    }

    /// Starts on `db`, letting the test adjust the environment first.
    pub async fn start_with(db: TestDb, edit: impl FnOnce(&mut EnvMap)) -> TestProxy {
        TestProxy::start_with_key(db, MasterKey::generate(), edit).await
    }

    /// Starts on `db` with a given master key (replicas share one).
    pub async fn start_with_key(
        db: TestDb,
        master: MasterKey,
        edit: impl FnOnce(&mut EnvMap),
    ) -> TestProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestProxy::start_bound(listener, db, master, edit).await
    }

    /// Starts on a listener bound beforehand (so the test knows the address, e.g. for a
    /// sign-in redirect URI, before the configuration is built).
    pub async fn start_bound(
        listener: tokio::net::TcpListener,
        db: TestDb,
        master: MasterKey,
        edit: impl FnOnce(&mut EnvMap),
    ) -> TestProxy {
        let mut env = test_env(&db, &master);
        edit(&mut env);
        let config = Config::load(None, &env).unwrap();
        let app = AppState::build(config).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(byok_proxy::server::run(
            listener,
            app.clone(),
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        ));
        TestProxy {
            addr,
            app,
            db,
            master,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Creates a user through the operator API and a token for it; returns (user id, token).
    pub async fn user(&self, name: &str) -> (String, String) {
        let (status, user) = self
            .admin(
                reqwest::Method::POST,
                "/admin/users",
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{user}");
        let id = user["id"].as_str().unwrap().to_string();
        let (status, tok) = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/users/{id}/tokens"),
                Some(serde_json::json!({"name": "test"})),
            )
            .await;
        assert_eq!(status, 201, "{tok}");
        (id, tok["token"].as_str().unwrap().to_string())
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call(method, path, ADMIN_TOKEN, body).await
    }

    /// A JSON call with a bearer token; returns status and the JSON body (Null if empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, json)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Starts a streamed chat completion and returns once its headers arrived (the body is
    /// still coming).
    pub async fn open_stream(&self, token: &str) -> reqwest::Response {
        let resp = self
            .http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(token)
            .json(&serde_json::json!({"model": "openai/gpt-4o", "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Polls `check` every 20 ms until it holds, failing the test after `limit`; returns how long
/// it took.
pub async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts an OpenAI error envelope with `status` and `code`.
#[track_caller]
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    let err = &body["error"];
    assert_eq!(err["code"], want_code, "{body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(err["type"].is_string(), "{body}");
    assert!(err.get("param").is_some(), "{body}");
}
