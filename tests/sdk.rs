//! Real third-party clients against the real proxy, with the fake gateway behind it.
//!
//! Each test starts a [`FakeUpstream`], a proxy pointed at it (gateway mode, SQLite), a user
//! with an OpenAI and an Anthropic key, then runs one client script from `tests/sdk/`:
//! the official `openai` Python SDK (`openai_client.py`), the official `openai` Node SDK
//! (`openai_client.mjs`) or the official `anthropic` Python SDK (`anthropic_client.py`). The
//! script asserts what the SDK parsed; this file then asserts what the fake gateway received:
//! the gateway key as `Authorization`, the user's key as `providerOptions.gateway.byok`, and
//! never the app token or an `x-api-key`.
//!
//! The clients are pinned in `tests/sdk/requirements.txt` and `tests/sdk/package-lock.json`
//! and installed by `cargo xtask test` (Python ones in the virtualenv `target/sdk-venv`, Node
//! ones in `tests/sdk/node_modules`). When they are missing (or at another version) these
//! tests fail, never skip. `BYOK_SDK_PYTHON` / `BYOK_SDK_NODE` override the interpreters
//! (default: `target/sdk-venv/bin/python` when it exists, else `python3`; `node` on PATH).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "it/common/mod.rs"]
mod common;

use common::fake_upstream::{catalog_json, FakeUpstream, Recorded};
use common::{contains, Backend, TestDb, TestProxy};
use http::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

const GATEWAY_KEY: &str = "gw-test-key";
const OPENAI_KEY: &str = "sk-openai-user-key-0001";
const ANTHROPIC_KEY: &str = "sk-ant-user-key-0001";
const CHAT_MODEL: &str = "openai/gpt-4o";
const EMBEDDING_MODEL: &str = "openai/text-embedding-3-small";
const MESSAGES_MODEL: &str = "anthropic/claude-sonnet-4.5";
/// Upper bound for one client script (its SDK timeouts are 15 s, no retries).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

const INSTALL_HINT: &str = "run `cargo xtask test` (from the repository root): it installs the \
     pinned SDKs of tests/sdk/requirements.txt (into target/sdk-venv) and \
     tests/sdk/package-lock.json, then runs the tests";

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

/// `BYOK_SDK_PYTHON`, else the virtualenv `cargo xtask test` makes, else `python3`.
fn python() -> String {
    std::env::var("BYOK_SDK_PYTHON").unwrap_or_else(|_| {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python");
        if venv.is_file() {
            venv.display().to_string()
        } else {
            "python3".into()
        }
    })
}

fn node() -> String {
    std::env::var("BYOK_SDK_NODE").unwrap_or_else(|_| "node".into())
}

// ---------------------------------------------------------------------------------------
// Preflight: the pinned clients must be installed. Checked once per process; a failure
// fails every test that needs them, with the command that fixes it.

/// Every `name==version` line of requirements.txt is installed at that version for the
/// Python the tests run.
fn check_python_deps() -> Result<(), String> {
    const CHECK: &str = r##"
import re, sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for line in open("requirements.txt"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
    if not m:
        bad.append(f"requirements.txt line {line!r} is not a name==version pin")
        continue
    name, want = m.groups()
    try:
        have = version(name)
    except PackageNotFoundError:
        bad.append(f"{name} is not installed (want {want})")
        continue
    if have != want:
        bad.append(f"{name} {have} is installed, requirements.txt pins {want}")
try:
    import openai, anthropic  # noqa: F401
except Exception as e:
    bad.append(f"import failed: {e!r}")
if bad:
    print("; ".join(bad))
    sys.exit(1)
"##;
    let out = std::process::Command::new(python())
        .args(["-B", "-c", CHECK])
        .current_dir(sdk_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}`: {}{}",
            python(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Every package of package-lock.json is in tests/sdk/node_modules at its locked version,
/// and `node` runs.
fn check_node_deps() -> Result<(), String> {
    let out = std::process::Command::new(node())
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", node()))?;
    if !out.status.success() {
        return Err(format!("`{} --version` failed", node()));
    }
    let dir = sdk_dir();
    let lock: Value =
        serde_json::from_slice(&std::fs::read(dir.join("package-lock.json")).unwrap()).unwrap();
    let packages = lock["packages"].as_object().unwrap();
    let mut bad = Vec::new();
    for (path, meta) in packages {
        if path.is_empty() || meta["optional"] == true || meta["dev"] == true {
            continue;
        }
        let want = meta["version"].as_str().unwrap_or_default();
        let have = std::fs::read(dir.join(path).join("package.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned));
        match have {
            Some(have) if have == want => {}
            Some(have) => bad.push(format!("{path} is {have}, package-lock.json has {want}")),
            None => bad.push(format!("{path} is not installed (want {want})")),
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

#[track_caller]
fn require_python_deps() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = CHECK.get_or_init(check_python_deps) {
        panic!("the Python SDKs are not installed as pinned ({e}): {INSTALL_HINT}");
    }
}

#[track_caller]
fn require_node_deps() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = CHECK.get_or_init(check_node_deps) {
        panic!("the Node SDK is not installed as pinned ({e}): {INSTALL_HINT}");
    }
}

// ---------------------------------------------------------------------------------------
// Setup and client runs.

struct Setup {
    fake: FakeUpstream,
    proxy: TestProxy,
    token: String,
}

impl Setup {
    /// Fake gateway, proxy in gateway mode pointed at it, user "alice" with one OpenAI and
    /// one Anthropic key.
    async fn start() -> Setup {
        let fake = FakeUpstream::start().await;
        let gateway = fake.base_url();
        let proxy = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
            env.insert("BYOK_UPSTREAM__GATEWAY__BASE_URL".into(), gateway);
            env.insert("AI_GATEWAY_API_KEY".into(), GATEWAY_KEY.into());
        })
        .await;
        let (_user_id, token) = proxy.user("alice").await;
        for (provider, key) in [("openai", OPENAI_KEY), ("anthropic", ANTHROPIC_KEY)] {
            let (status, body) = proxy
                .post(
                    "/api/keys",
                    &token,
                    json!({"provider": provider, "credentials": {"apiKey": key}}),
                )
                .await;
            assert_eq!(status, 201, "POST /api/keys ({provider}): {body}");
        }
        Setup { fake, proxy, token }
    }

    /// The OpenAI-style base URL: `http://127.0.0.1:PORT/v1`.
    fn openai_base(&self) -> String {
        self.proxy.url("/v1")
    }

    /// The bare origin, as the Anthropic SDK wants it: `http://127.0.0.1:PORT`.
    fn origin(&self) -> String {
        self.proxy.url("")
    }

    /// Runs `program args...` in tests/sdk with the base URL and token in the environment;
    /// panics with its output unless it exits 0 and printed `SDK-OK <scenario>`.
    /// Returns its stdout.
    async fn run_client(
        &self,
        program: &str,
        args: &[&str],
        base_url: &str,
        scenario: &str,
        extra_env: &[(&str, String)],
    ) -> String {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(sdk_dir())
            .env("BYOK_BASE_URL", base_url)
            .env("BYOK_TOKEN", &self.token)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // Nothing from the developer's environment may steer the SDKs elsewhere.
        for var in [
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_ORG_ID",
            "OPENAI_PROJECT_ID",
            "OPENAI_LOG",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_LOG",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let shown = format!("{program} {}", args.join(" "));
        let out = tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("`{shown}` did not finish within {SCRIPT_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // Shown with `--nocapture`, and in the failure output below.
        println!("--- `{shown}` stdout:\n{stdout}--- stderr:\n{stderr}---");
        let ok_line = format!("SDK-OK {scenario}");
        assert!(
            out.status.success() && stdout.lines().any(|l| l.trim() == ok_line),
            "`{shown}` failed ({}); upstream received {}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
            out.status,
            describe(&self.fake.requests()),
        );
        stdout
    }

    async fn openai_python(&self, scenario: &str, extra_env: &[(&str, String)]) -> String {
        require_python_deps();
        self.run_client(
            &python(),
            &["-B", "openai_client.py", scenario],
            &self.openai_base(),
            scenario,
            extra_env,
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Assertions on what the fake gateway received.

/// One line per recorded request, for failure messages.
fn describe(reqs: &[Recorded]) -> String {
    if reqs.is_empty() {
        return "no request".into();
    }
    let lines: Vec<String> = reqs
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.method,
                r.path,
                String::from_utf8_lossy(&r.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )
        })
        .collect();
    format!("{} request(s):\n  {}", reqs.len(), lines.join("\n  "))
}

/// What must hold for every request the proxy sent upstream: the app token appears in no
/// header and not in the body; no `x-api-key`, `api-key` or `cookie`; any `Authorization`
/// is the gateway key.
#[track_caller]
fn assert_clean(reqs: &[Recorded], token: &str) {
    for r in reqs {
        let what = format!("upstream {} {}", r.method, r.path);
        for (name, value) in &r.headers {
            assert!(
                !contains(value.as_bytes(), token.as_bytes()),
                "{what}: the app token was forwarded in header `{name}`"
            );
        }
        assert!(
            !contains(&r.body, token.as_bytes()),
            "{what}: the app token was forwarded in the body: {}",
            String::from_utf8_lossy(&r.body)
        );
        for header in ["x-api-key", "api-key", "cookie"] {
            assert!(
                r.header(header).is_none(),
                "{what}: `{header}` was forwarded upstream: {:?}",
                r.header(header)
            );
        }
        if let Some(auth) = r.header("authorization") {
            assert_eq!(
                auth,
                format!("Bearer {GATEWAY_KEY}"),
                "{what}: Authorization is not the gateway key"
            );
        }
    }
}

/// The single proxied POST among `reqs` (GET catalog fetches are allowed beside it): its
/// path is `path`, it carries the gateway key, and its `providerOptions.gateway.byok` holds
/// exactly `provider: [{"apiKey": key}]`. Returns its JSON body.
#[track_caller]
fn assert_one_byok_post(reqs: &[Recorded], path: &str, provider: &str, key: &str) -> Value {
    let posts: Vec<&Recorded> = reqs.iter().filter(|r| r.method == Method::POST).collect();
    assert_eq!(
        posts.len(),
        1,
        "expected one POST upstream, got {}",
        describe(reqs)
    );
    for r in reqs.iter().filter(|r| r.method != Method::POST) {
        assert!(
            r.method == Method::GET && r.path.starts_with("/v1/models"),
            "unexpected upstream request besides the POST: {}",
            describe(reqs)
        );
    }
    let r = posts[0];
    assert_eq!(r.path, path, "{}", describe(reqs));
    assert_eq!(
        r.header("authorization").as_deref(),
        Some(format!("Bearer {GATEWAY_KEY}").as_str()),
        "upstream POST {path}: Authorization must be the gateway key"
    );
    let body = r.json();
    let byok = body
        .pointer("/providerOptions/gateway/byok")
        .unwrap_or_else(|| panic!("upstream POST {path}: no providerOptions.gateway.byok: {body}"));
    let byok = byok
        .as_object()
        .unwrap_or_else(|| panic!("upstream POST {path}: byok is not an object: {byok}"));
    assert_eq!(
        byok.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![provider],
        "upstream POST {path}: byok must hold only the credentials of `{provider}` (the \
         provider that serves the model), got providers {:?}",
        byok.keys().collect::<Vec<_>>()
    );
    let creds = byok[provider]
        .as_array()
        .unwrap_or_else(|| panic!("upstream POST {path}: byok.{provider} is not an array"));
    assert_eq!(
        creds.len(),
        1,
        "upstream POST {path}: byok.{provider} should hold the user's one key"
    );
    assert_eq!(
        creds[0]["apiKey"], key,
        "upstream POST {path}: byok.{provider}[0].apiKey is not the user's key"
    );
    body
}

/// The fake catalog's ids for the given providers, sorted.
fn catalog_ids(providers: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = catalog_json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .filter(|id| providers.iter().any(|p| id.starts_with(&format!("{p}/"))))
        .collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------
// The tests.

/// openai (Python): `chat.completions.create`, non-streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_chat() {
    let s = Setup::start().await;
    s.openai_python("chat", &[]).await;
    let reqs = s.fake.requests();
    assert_clean(&reqs, &s.token);
    let body = assert_one_byok_post(&reqs, "/v1/chat/completions", "openai", OPENAI_KEY);
    assert_eq!(body["model"], CHAT_MODEL, "{body}");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Say hello"}]),
        "{body}"
    );
    assert_eq!(body["max_tokens"], 16, "{body}");
    assert_ne!(body["stream"], true, "{body}");
}

/// openai (Python): `chat.completions.create(stream=True)`, deltas collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_chat_stream() {
    let s = Setup::start().await;
    s.openai_python("chat_stream", &[]).await;
    let reqs = s.fake.requests();
    assert_clean(&reqs, &s.token);
    let body = assert_one_byok_post(&reqs, "/v1/chat/completions", "openai", OPENAI_KEY);
    assert_eq!(body["model"], CHAT_MODEL, "{body}");
    assert_eq!(body["stream"], true, "{body}");
    assert_eq!(
        body["stream_options"],
        json!({"include_usage": true}),
        "{body}"
    );
}

/// openai (Python): `embeddings.create` with two inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_embeddings() {
    let s = Setup::start().await;
    s.openai_python("embeddings", &[]).await;
    let reqs = s.fake.requests();
    assert_clean(&reqs, &s.token);
    let body = assert_one_byok_post(&reqs, "/v1/embeddings", "openai", OPENAI_KEY);
    assert_eq!(body["model"], EMBEDDING_MODEL, "{body}");
    assert_eq!(
        body["input"],
        json!(["first text", "second text"]),
        "{body}"
    );
}

/// openai (Python): `models.list()` shows exactly the catalog models of the providers the
/// user holds a key for (openai, anthropic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_models_list() {
    let s = Setup::start().await;
    let expected = catalog_ids(&["openai", "anthropic"]).join(",");
    s.openai_python("models", &[("BYOK_EXPECT_MODELS", expected)])
        .await;
    let reqs = s.fake.requests();
    assert_clean(&reqs, &s.token);
    assert!(
        reqs.iter()
            .all(|r| r.method == Method::GET && r.path.starts_with("/v1/models")),
        "listing models should only read the upstream catalog: {}",
        describe(&reqs)
    );
}

/// openai (Python): `models.retrieve("openai/gpt-4o")`, which the SDK sends as
/// `GET /v1/models/openai%2Fgpt-4o`, and 404 for an unknown id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_model_retrieve() {
    let s = Setup::start().await;
    s.openai_python("model_retrieve", &[]).await;
    let reqs = s.fake.requests();
    assert_clean(&reqs, &s.token);
    assert!(
        reqs.iter().all(|r| r.method == Method::GET),
        "retrieving a model should only read the upstream catalog: {}",
        describe(&reqs)
    );
}

/// openai (Node): `chat.completions.create({stream: true})`, deltas collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_node_chat_stream() {
    let s = Setup::start().await;
    require_node_deps();
    s.run_client(
        &node(),
        &["openai_client.mjs"],
        &s.openai_base(),
        "chat_stream",
        &[],
    )
    .await;
    let reqs = s.fake.requests();
    assert_clean(&reqs, &s.token);
    let body = assert_one_byok_post(&reqs, "/v1/chat/completions", "openai", OPENAI_KEY);
    assert_eq!(body["model"], CHAT_MODEL, "{body}");
    assert_eq!(body["stream"], true, "{body}");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Say hello"}]),
        "{body}"
    );
}

/// anthropic (Python): `messages.stream(...)` on /v1/messages with the app token as
/// `x-api-key`; `get_final_text()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_messages_stream() {
    let s = Setup::start().await;
    require_python_deps();
    s.run_client(
        &python(),
        &["-B", "anthropic_client.py"],
        &s.origin(),
        "messages_stream",
        &[],
    )
    .await;
    let reqs = s.fake.requests();
    assert_clean(&reqs, &s.token);
    let body = assert_one_byok_post(&reqs, "/v1/messages", "anthropic", ANTHROPIC_KEY);
    assert_eq!(body["model"], MESSAGES_MODEL, "{body}");
    assert_eq!(body["stream"], true, "{body}");
    assert_eq!(body["max_tokens"], 64, "{body}");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Say hello"}]),
        "{body}"
    );
}
