//! Coding agents against the proxy: the real Claude Code and Codex CLIs from npm, run
//! non-interactively (`claude -p ...`, `codex exec ...`) against the real proxy (in-process,
//! gateway mode, SQLite) with the fake gateway behind it and a user holding an OpenAI and an
//! Anthropic key.
//!
//! - A revoked app token must make Claude Code give up within seconds: the proxy answers
//!   401 with `x-should-retry: false`, so at most 2 requests reach the proxy and none the
//!   gateway, instead of minutes of retries.
//! - With a good token, Claude Code streams `/v1/messages` (its bare `claude-*` model becomes
//!   `anthropic/<name>`) and prints the fake's answer.
//! - Codex with its default model and no alias streams `/v1/responses`; the bare model name
//!   reaches the gateway as `openai/<name>` (`models.bare_names`), and Codex prints the
//!   fake's answer.
//!
//! Each CLI runs with a temporary HOME and config directory, a clean environment (nothing of
//! the developer's keys or proxies), telemetry, update checks and other non-essential traffic
//! off, stdin closed, and is killed after [`RUN_LIMIT`]. The CLIs are pinned in
//! tests/agents/package.json and package-lock.json and installed by `cargo xtask test`; when
//! they are missing (or at another version) these tests fail, never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "it/common/mod.rs"]
mod common;

use common::fake_upstream::{Behavior, FakeUpstream, Recorded};
use common::{contains, Backend, TestDb, TestProxy};
use http::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GATEWAY_KEY: &str = "gw-agents-test-key";
const OPENAI_KEY: &str = "sk-openai-agent-key-0001";
const ANTHROPIC_KEY: &str = "sk-ant-agent-key-0001";
/// The fake gateway's answer text.
const REPLY: &str = "Hello from fake";
/// Upper bound for one CLI run; it is killed after that.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// "Fails within seconds": the most a CLI may take to give up on a refused token.
const GIVE_UP_LIMIT: Duration = Duration::from_secs(20);

const INSTALL_HINT: &str = "run `cargo xtask test` (from the repository root): it installs the \
     CLIs pinned in tests/agents/package-lock.json into tests/agents/node_modules";

fn agents_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/agents")
}

/// `node_modules/.bin/<cli>` and the version tests/agents/package.json pins for `package`.
fn pinned(cli: &str, package: &str) -> (PathBuf, String) {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(agents_dir().join("package.json")).unwrap()).unwrap();
    let version = manifest["dependencies"][package]
        .as_str()
        .unwrap_or_else(|| panic!("tests/agents/package.json does not pin {package}"))
        .to_string();
    (agents_dir().join("node_modules/.bin").join(cli), version)
}

/// The CLI, checked to run and to be the pinned version; panics with the install hint.
#[track_caller]
fn require(cli: &str, package: &str) -> PathBuf {
    let (bin, version) = pinned(cli, package);
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CODEX_HOME", home.path())
        .env("CLAUDE_CONFIG_DIR", home.path())
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&version) => bin,
        Ok(o) => panic!(
            "{} --version says {:?}, tests/agents/package.json pins {version}: {INSTALL_HINT}",
            bin.display(),
            String::from_utf8_lossy(&o.stdout).trim()
        ),
        Err(e) => panic!("cannot run {} ({e}): {INSTALL_HINT}", bin.display()),
    }
}

/// A loopback port that accepts every connection and closes it at once. The CLIs get it as
/// their proxy for everything but loopback, so anything they would send beyond this machine
/// fails here, at once, and is counted (tests reach loopback only).
struct DeadEnd {
    url: String,
    attempts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DeadEnd {
    async fn start() -> DeadEnd {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        DeadEnd {
            url,
            attempts,
            task,
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Drop for DeadEnd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Setup {
    fake: FakeUpstream,
    proxy: TestProxy,
    user_id: String,
    token: String,
    /// HOME, config directories and working directory of the CLIs.
    home: tempfile::TempDir,
    dead_end: DeadEnd,
}

impl Setup {
    async fn start() -> Setup {
        let fake = FakeUpstream::start().await;
        let gateway = fake.base_url();
        let proxy = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
            env.insert("BYOK_UPSTREAM__GATEWAY__BASE_URL".into(), gateway);
            env.insert("AI_GATEWAY_API_KEY".into(), GATEWAY_KEY.into());
        })
        .await;
        let (user_id, token) = proxy.user("alice").await;
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
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("work")).unwrap();
        Setup {
            fake,
            proxy,
            user_id,
            token,
            home,
            dead_end: DeadEnd::start().await,
        }
    }

    /// Runs `bin args...` with only `env` (plus PATH, HOME and terminal settings), in
    /// `$HOME/work`, stdin closed; kills it after [`RUN_LIMIT`].
    async fn run(&self, bin: &Path, args: &[&str], env: &[(&str, String)]) -> Run {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args)
            .current_dir(self.home.path().join("work"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("TERM", "dumb")
            .env("NO_COLOR", "1")
            .env("LANG", "C.UTF-8")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for var in [
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "ALL_PROXY",
            "https_proxy",
            "http_proxy",
            "all_proxy",
        ] {
            cmd.env(var, &self.dead_end.url);
        }
        let shown = format!("{} {}", bin.display(), args.join(" "));
        let start = Instant::now();
        let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "`{shown}` did not finish within {RUN_LIMIT:?}; upstream received {}",
                    describe(&self.fake.requests())
                )
            })
            .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}: {INSTALL_HINT}"));
        let run = Run {
            shown,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        };
        // Shown with `--nocapture`.
        println!("{run}");
        assert_eq!(
            self.dead_end.attempts(),
            0,
            "`{}` tried to reach beyond this machine (through the dead-end proxy):\n{run}",
            run.shown
        );
        run
    }

    /// Claude Code, `claude -p PROMPT`, against the proxy with `token` as its API key.
    async fn claude(&self, token: &str) -> Run {
        let bin = require("claude", "@anthropic-ai/claude-code");
        let config = self.home.path().join(".claude");
        let env = [
            ("ANTHROPIC_BASE_URL", self.proxy.url("")),
            ("ANTHROPIC_API_KEY", token.to_string()),
            ("CLAUDE_CONFIG_DIR", config.display().to_string()),
            // No telemetry, error reports, update checks or other non-essential traffic.
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("DISABLE_AUTOUPDATER", "1".into()),
            ("DISABLE_TELEMETRY", "1".into()),
            ("DISABLE_ERROR_REPORTING", "1".into()),
            ("DISABLE_BUG_COMMAND", "1".into()),
        ];
        self.run(&bin, &["-p", "Say hello", "--max-turns", "1"], &env)
            .await
    }

    /// Codex, `codex exec PROMPT`, with a provider entry pointing at the proxy's /v1 and
    /// nothing else: no `model`, so Codex sends its default model's bare name.
    async fn codex(&self) -> Run {
        let bin = require("codex", "@openai/codex");
        let codex_home = self.home.path().join(".codex");
        std::fs::create_dir_all(&codex_home).unwrap();
        std::fs::write(
            codex_home.join("config.toml"),
            format!(
                r#"model_provider = "byok"
check_for_update_on_startup = false

[model_providers.byok]
name = "byok-proxy"
base_url = "{}"
env_key = "BYOK_TOKEN"
wire_api = "responses"

[analytics]
enabled = false

[feedback]
enabled = false

# Nothing that fetches from the internet: plugin and app catalogs, updates.
[features]
plugins = false
remote_plugin = false
plugin_sharing = false
apps = false
in_app_updates = false
"#,
                self.proxy.url("/v1")
            ),
        )
        .unwrap();
        let env = [
            ("CODEX_HOME", codex_home.display().to_string()),
            ("BYOK_TOKEN", self.token.clone()),
        ];
        self.run(
            &bin,
            &[
                "exec",
                "--skip-git-repo-check",
                "--ephemeral",
                "--color",
                "never",
                "Say hello",
            ],
            &env,
        )
        .await
    }

    /// Requests the proxy answered with `status`, over every route (its own /metrics).
    async fn answered(&self, status: u16) -> u64 {
        let label = format!("status=\"{status}\"");
        self.proxy
            .metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("byok_http_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

struct Run {
    shown: String,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- `{}`: {} after {:.1?}\n--- stdout:\n{}\n--- stderr:\n{}\n---",
            self.shown, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// One line per recorded request, for failure messages.
fn describe(reqs: &[Recorded]) -> String {
    if reqs.is_empty() {
        return "no request".into();
    }
    let lines: Vec<String> = reqs
        .iter()
        .map(|r| {
            let body = String::from_utf8_lossy(&r.body);
            format!("{} {} {}", r.method, r.path, &body[..body.len().min(200)])
        })
        .collect();
    format!("{} request(s):\n  {}", reqs.len(), lines.join("\n  "))
}

/// The POSTs to `path` (query ignored) among what the gateway received; each carries the
/// gateway key, the user's `provider` key as BYOK, and never the app token.
#[track_caller]
fn byok_posts(reqs: &[Recorded], path: &str, provider: &str, key: &str, token: &str) -> Vec<Value> {
    for r in reqs {
        assert!(
            !contains(&r.body, token.as_bytes())
                && r.headers
                    .values()
                    .all(|v| !contains(v.as_bytes(), token.as_bytes())),
            "the app token reached the gateway: {} {}",
            r.method,
            r.path
        );
        assert!(r.header("x-api-key").is_none(), "x-api-key forwarded");
    }
    let posts: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.method == Method::POST && r.path.split('?').next() == Some(path))
        .collect();
    assert!(
        !posts.is_empty(),
        "no POST {path} upstream: {}",
        describe(reqs)
    );
    posts
        .iter()
        .map(|r| {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {GATEWAY_KEY}")),
                "{path}: Authorization must be the gateway key"
            );
            let body = r.json();
            assert_eq!(
                body.pointer(&format!(
                    "/providerOptions/gateway/byok/{provider}/0/apiKey"
                )),
                Some(&json!(key)),
                "{path}: the user's {provider} key is not the BYOK credential: {}",
                body.get("providerOptions").unwrap_or(&Value::Null)
            );
            body
        })
        .collect()
}

/// (a) A revoked token: Claude Code exits non-zero within seconds, after at most 2 requests,
/// and says the credentials were refused; nothing reached the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_gives_up_at_once_on_a_revoked_token() {
    let s = Setup::start().await;
    // A second token for alice, revoked before use.
    let (status, created) = s
        .proxy
        .admin(
            reqwest::Method::POST,
            &format!("/admin/users/{}/tokens", s.user_id),
            Some(json!({"name": "revoked"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let revoked = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap();
    let (status, body) = s
        .proxy
        .admin(
            reqwest::Method::DELETE,
            &format!("/admin/tokens/{id}"),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "revoke: {status} {body}");

    let run = s.claude(&revoked).await;
    assert!(
        !run.status.success(),
        "Claude Code succeeded with a revoked token:\n{run}"
    );
    assert!(
        run.elapsed < GIVE_UP_LIMIT,
        "Claude Code took {:.1?} to give up on a 401 (retrying?):\n{run}",
        run.elapsed
    );
    let refused = s.answered(401).await;
    assert!(
        (1..=2).contains(&refused),
        "{refused} request(s) answered 401 reached the proxy, want 1 or 2:\n{run}"
    );
    // It shows the proxy's own words, which say what to do.
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("byok-proxy app token"),
        "Claude Code does not show the proxy's message:\n{run}"
    );
    // What made it stop: the 401 says retrying cannot help.
    let resp = s
        .proxy
        .http
        .post(s.proxy.url("/v1/messages"))
        .header("x-api-key", &revoked)
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    assert_eq!(
        s.fake.request_count(),
        0,
        "a refused token reached the gateway: {}",
        describe(&s.fake.requests())
    );
}

/// (b) A good token: Claude Code streams /v1/messages through the proxy and prints the
/// fake's answer; its bare `claude-*` model reaches the gateway as `anthropic/<name>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_streams_messages_through_the_proxy() {
    let s = Setup::start().await;
    let run = s.claude(&s.token).await;
    assert!(run.status.success(), "Claude Code failed:\n{run}");
    assert!(
        run.stdout.contains(REPLY),
        "no answer from the fake:\n{run}"
    );
    let reqs = s.fake.requests();
    let bodies = byok_posts(&reqs, "/v1/messages", "anthropic", ANTHROPIC_KEY, &s.token);
    let streamed = bodies
        .iter()
        .find(|b| b["stream"] == true)
        .unwrap_or_else(|| panic!("no streamed /v1/messages: {}", describe(&reqs)));
    let model = streamed["model"].as_str().unwrap_or_default();
    assert!(
        model.starts_with("anthropic/claude-"),
        "the bare Claude model became {model:?}, want anthropic/claude-..."
    );
    assert_eq!(s.answered(401).await, 0);
}

/// (c) Codex with its default model and no alias: `/v1/responses` streamed, the bare model
/// name reaching the gateway as `openai/<name>`, the fake's answer printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_default_model_streams_responses_through_the_proxy() {
    let s = Setup::start().await;
    // Codex needs the Responses API's item events around the text deltas.
    s.fake.set_default(Behavior::AutoFullEvents);
    let run = s.codex().await;
    assert!(run.status.success(), "Codex failed:\n{run}");
    assert!(
        run.stdout.contains(REPLY),
        "no answer from the fake:\n{run}"
    );
    // Codex names its model in its header: `model: <name>`.
    let default_model = format!("{}\n{}", run.stderr, run.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("model: "))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|| panic!("Codex did not print its model:\n{run}"));
    assert!(!default_model.contains('/'), "{default_model}");
    let reqs = s.fake.requests();
    let bodies = byok_posts(&reqs, "/v1/responses", "openai", OPENAI_KEY, &s.token);
    for body in &bodies {
        assert_eq!(body["model"], format!("openai/{default_model}"), "{body}");
        assert_eq!(body["stream"], true, "Codex streams: {body}");
    }
}
