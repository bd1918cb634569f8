//! The built binary, as a newcomer runs it: CLI user/token management, `serve` with a temp
//! config on a free port, curl-like key calls, SIGTERM; plus a malformed master key refused at
//! start. Everything the process logs is captured and searched for secrets.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_byok-proxy");

fn cmd(dir: &Path, master: &str) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BYOK_MASTER_KEY", master)
        .env("BYOK_ADMIN_TOKEN", "admin-token-for-binary-test-0123456789")
        .env("RUST_LOG", "debug")
        .kill_on_drop(true);
    c
}

async fn run_ok(mut c: Command, args: &[&str]) -> (String, String) {
    let out = c.args(args).output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{args:?} failed: {stdout} {stderr}");
    (stdout, stderr)
}

/// Waits (at most 10 s) until the server at `base` answers `/readyz` with 200.
async fn wait_ready(http: &reqwest::Client, base: &str) {
    crate::common::within(Duration::from_secs(10), async || {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_flow_through_the_binary_never_logs_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let master = byok_proxy::keys::crypto::MasterKey::generate()
        .to_base64()
        .expose()
        .clone();
    let port = free_port();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/byok-proxy.toml"),
        format!("listen = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let mut logs = String::new();

    let (out, err) = run_ok(
        cmd(dir.path(), &master),
        &[
            "user",
            "create",
            "--name",
            "alice",
            "--email",
            "alice@example.com",
        ],
    )
    .await;
    assert!(out.contains("created user alice"), "{out}");
    logs += &err;
    let (out, err) = run_ok(
        cmd(dir.path(), &master),
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "laptop",
            "--expires-in",
            "90d",
        ],
    )
    .await;
    let token = out.trim().to_string();
    assert!(token.starts_with("bkp_") && token.len() == 47, "{out}");
    assert!(!err.contains(&token));
    logs += &err;
    let (out, err) = run_ok(
        cmd(dir.path(), &master),
        &["token", "list", "--user", "alice"],
    )
    .await;
    assert!(
        out.contains(&token[..8]) && !out.contains(&token) && out.contains("active"),
        "{out}"
    );
    logs += &err;
    let (out, _) = run_ok(cmd(dir.path(), &master), &["user", "list"]).await;
    assert!(out.contains("alice") && out.contains("alice@example.com"));

    // serve, with everything it logs captured.
    let mut server = cmd(dir.path(), &master)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;

    let secret = "sk-proj-BINARYTEST-never-log-me-0123456789";
    let resp = http
        .post(format!("{base}/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"provider": "openai", "credentials": {"apiKey": secret}, "label": "work"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let key: Value = resp.json().await.unwrap();
    let resp = http
        .get(format!("{base}/api/keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["data"][0]["masked_hint"], "sk-proj-...6789");
    // A wrong field carrying a secret, and a near-miss token, are refused without echo.
    let resp = http
        .post(format!("{base}/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"provider": "openai", "credentials": {"key": secret}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(!resp.text().await.unwrap().contains(secret));
    let wrong = format!("{}X", &token[..46]);
    let resp = http
        .get(format!("{base}/api/keys"))
        .bearer_auth(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .delete(format!("{base}/api/keys/{}", key["id"].as_str().unwrap()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    // `key rotate` with a new master key and the old one in old_keys, then serve with only the new.
    // (SIGTERM first: graceful shutdown exits 0.)
    let pid = server.id().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(10), async {
        let mut stderr = server.stderr.take().unwrap();
        let mut buf = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut buf)
            .await
            .unwrap();
        (server.wait().await.unwrap(), buf)
    })
    .await
    .expect("server did not exit after SIGTERM");
    assert!(out.0.success(), "exit status {:?}", out.0);
    logs += &out.1;

    assert!(
        logs.contains("byok-proxy listening"),
        "no startup line in logs: {logs}"
    );
    assert!(logs.contains("/api/keys"), "no access lines in logs");
    assert!(!logs.contains(secret), "a provider key reached the logs");
    assert!(
        !logs.contains("BINARYTEST"),
        "part of a provider key reached the logs"
    );
    assert!(!logs.contains(&token), "an app token reached the logs");
    assert!(
        !logs.contains(&token[4..20]),
        "part of an app token reached the logs"
    );
    assert!(!logs.contains(&wrong), "a presented token reached the logs");
    assert!(!logs.contains(&master), "the master key reached the logs");
}

#[tokio::test]
async fn malformed_master_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, why) in [
        ("dG9vLXNob3J0", "decodes to 9 bytes"),
        ("not base64 !!", "not valid base64"),
    ] {
        let out = cmd(dir.path(), bad).arg("serve").output().await.unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("crypto.master_key") && err.contains("BYOK_MASTER_KEY"),
            "{err}"
        );
        assert!(
            err.contains(why) && err.contains("openssl rand -base64 32"),
            "{err}"
        );
        assert!(!err.contains(bad), "{err}");
        let out = cmd(dir.path(), bad)
            .arg("check-config")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
    // No key at all: a development key file is created, mode 0600, with a loud warning.
    let port = free_port();
    let mut c = Command::new(BIN);
    c.current_dir(dir.path())
        .env_clear()
        .env("BYOK_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.arg("serve").spawn().unwrap();
    let key_file = dir.path().join("data/master.key");
    for _ in 0..200 {
        if key_file.exists() && dir.path().join("data/byok.db").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut err)
        .await
        .unwrap();
    assert!(child.wait().await.unwrap().success());
    assert!(
        err.contains("NO MASTER KEY CONFIGURED") && err.contains("BYOK_MASTER_KEY"),
        "{err}"
    );
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&key_file).unwrap();
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn key_rotate_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let old = byok_proxy::keys::crypto::MasterKey::generate();
    let new = byok_proxy::keys::crypto::MasterKey::generate();
    let (old_b64, new_b64) = (
        old.to_base64().expose().clone(),
        new.to_base64().expose().clone(),
    );
    // Seal two credentials under the old key.
    let store = byok_proxy::store::Store::connect(
        &byok_proxy::config::DatabaseUrl::Sqlite(dir.path().join("data/byok.db")),
        1,
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let vault = byok_proxy::keys::crypto::Vault::new(old.clone(), vec![]);
    let audit = byok_proxy::store::AuditEntry {
        actor_user_id: None,
        action: "user.created",
        target: None,
        detail: json!({}),
        request_id: None,
        remote_addr: None,
    };
    let user = store
        .create_user("alice", None, audit.clone())
        .await
        .unwrap();
    for i in 0..2 {
        byok_proxy::keys::add_key(
            &store,
            &vault,
            user.id,
            "openai",
            &json!({"apiKey": format!("sk-cli-rotate-{i}-00000000")}),
            None,
            audit.clone(),
        )
        .await
        .unwrap();
    }
    drop(store);
    let mut c = cmd(dir.path(), &new_b64);
    c.env("BYOK_CRYPTO__OLD_KEYS", format!("[\"{old_b64}\"]"));
    let (out, _) = run_ok(c, &["key", "rotate", "--batch", "1"]).await;
    assert!(out.contains("re-encrypted 2 credential(s)"), "{out}");
    // With only the new key, everything opens.
    let store = byok_proxy::store::Store::connect(
        &byok_proxy::config::DatabaseUrl::Sqlite(dir.path().join("data/byok.db")),
        1,
    )
    .await
    .unwrap();
    let only_new = byok_proxy::keys::crypto::Vault::new(new, vec![]);
    for k in store.list_keys(user.id).await.unwrap() {
        assert!(byok_proxy::keys::open(&only_new, &k).is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_stream_finish_and_flushes_usage() {
    use crate::common::fake_upstream::{chat_stream_chunks, Behavior, FakeUpstream};
    let fake = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let master = byok_proxy::keys::crypto::MasterKey::generate()
        .to_base64()
        .expose()
        .clone();
    let port = free_port();
    let mut c = cmd(dir.path(), &master);
    c.env("BYOK_LISTEN", format!("127.0.0.1:{port}"))
        .env("BYOK_UPSTREAM__GATEWAY__BASE_URL", fake.base_url())
        .env("AI_GATEWAY_API_KEY", "gw")
        .env("RUST_LOG", "info");
    let (_, _) = run_ok(
        cmd(dir.path(), &master),
        &["user", "create", "--name", "alice"],
    )
    .await;
    let (token, _) = run_ok(
        cmd(dir.path(), &master),
        &["token", "create", "--user", "alice"],
    )
    .await;
    let token = token.trim().to_string();
    let mut server = c.arg("serve").stderr(Stdio::piped()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    let resp = http
        .post(format!("{base}/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"provider": "openai", "credentials": {"apiKey": "sk-openai-shutdown-0001"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let chunks = chat_stream_chunks("openai/gpt-4o", true);
    fake.push(Behavior::Stream {
        chunks: chunks.clone(),
        delay: Duration::from_millis(250),
    });
    let mut stream = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "openai/gpt-4o", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut got = stream.chunk().await.unwrap().unwrap().to_vec();
    Command::new("kill")
        .args(["-TERM", &server.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    // New connections are refused while the stream goes on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "still accepting after SIGTERM"
    );
    while let Some(c) = stream.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got, chunks.concat().into_bytes(), "the stream completed");
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(server.stderr.as_mut().unwrap(), &mut err)
        .await
        .unwrap();
    assert!(err.contains("usage flushed"), "{err}");
    // The usage of the stream is in the database.
    let conn = rusqlite::Connection::open(dir.path().join("data/byok.db")).unwrap();
    let (n, prompt): (i64, i64) = conn
        .query_row("SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0) FROM usage_events WHERE status = 'ok'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((n, prompt), (1, 11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_reach_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let master = byok_proxy::keys::crypto::MasterKey::generate()
        .to_base64()
        .expose()
        .clone();
    let port = free_port();
    run_ok(
        cmd(dir.path(), &master),
        &["user", "create", "--name", "alice"],
    )
    .await;
    run_ok(
        cmd(dir.path(), &master),
        &["user", "create", "--name", "bob"],
    )
    .await;
    let (alice, _) = run_ok(
        cmd(dir.path(), &master),
        &["token", "create", "--user", "alice"],
    )
    .await;
    let (bob, _) = run_ok(
        cmd(dir.path(), &master),
        &["token", "create", "--user", "bob"],
    )
    .await;
    let (alice, bob) = (alice.trim().to_string(), bob.trim().to_string());
    let mut c = cmd(dir.path(), &master);
    c.env("BYOK_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn");
    let mut server = c.arg("serve").spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let status = |t: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/api/keys"))
                .bearer_auth(t)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    wait_ready(&http, &base).await;
    // Both tokens are now cached by the server.
    assert_eq!(status(alice.clone()).await, 200);
    assert_eq!(status(bob.clone()).await, 200);
    let (list, _) = run_ok(
        cmd(dir.path(), &master),
        &["token", "list", "--user", "alice"],
    )
    .await;
    let token_id = list
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    run_ok(cmd(dir.path(), &master), &["token", "revoke", &token_id]).await;
    run_ok(cmd(dir.path(), &master), &["user", "disable", "bob"]).await;
    let start = std::time::Instant::now();
    loop {
        let (a, b) = (status(alice.clone()).await, status(bob.clone()).await);
        if a == 401 && b == 403 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "CLI changes not enforced: {a} {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill().await.unwrap();
}
