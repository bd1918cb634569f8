//! The built binary, as a newcomer runs it: CLI user/token management, `serve` with a temp
//! config on port 0 (its address read from its log, through [`Served`]), curl-like key calls,
//! SIGTERM; plus a malformed master key refused at start. Everything the process logs is
//! captured and searched for secrets.

use crate::common::binary::{self, listening_addr, Served};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

fn cmd(dir: &Path, master: &str) -> Command {
    let mut c = binary::command(dir);
    c.env("BYOK_MASTER_KEY", master)
        .env("BYOK_ADMIN_TOKEN", "admin-token-for-binary-test-0123456789")
        .env("RUST_LOG", "debug");
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

#[test]
fn listening_addr_reads_text_coloured_and_json_lines() {
    let want: SocketAddr = "127.0.0.1:40123".parse().unwrap();
    for line in [
        "2026-01-01T00:00:00Z  INFO byok_proxy::cli::commands: byok-proxy listening addr=127.0.0.1:40123 store=\"sqlite\"",
        "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m byok-proxy listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:40123 \u{1b}[3mstore\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"sqlite\"",
        r#"{"timestamp":"x","level":"INFO","message":"byok-proxy listening","addr":"127.0.0.1:40123"}"#,
    ] {
        assert_eq!(listening_addr(line), Some(want), "{line}");
    }
    assert_eq!(listening_addr("byok-proxy started addr=127.0.0.1:1"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_flow_through_the_binary_never_logs_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let master = byok_proxy::keys::crypto::MasterKey::generate()
        .to_base64()
        .expose()
        .clone();
    // The default config path is read: it sets the port (0: the address comes from the log).
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/byok-proxy.toml"),
        "listen = \"127.0.0.1:0\"\n",
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

    // serve, with everything it logs captured; its port comes from the config file.
    let mut serve = cmd(dir.path(), &master);
    serve.env_remove("BYOK_LISTEN").arg("serve");
    let server = Served::start(serve).await;
    let base = server.base();
    let http = reqwest::Client::new();

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
    let (status, log) = server.stop().await;
    assert!(status.success(), "exit status {status:?}");
    logs += &log;

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
    let mut serve = binary::command(dir.path());
    serve.arg("serve");
    let (status, err) = Served::start(serve).await.stop().await;
    assert!(status.success(), "{status:?}: {err}");
    let key_file = dir.path().join("data/master.key");
    assert!(dir.path().join("data/byok.db").exists());
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
    let mut c = cmd(dir.path(), &master);
    c.env("BYOK_UPSTREAM__GATEWAY__BASE_URL", fake.base_url())
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
    c.arg("serve");
    let server = Served::start(c).await;
    let base = server.base();
    let http = reqwest::Client::new();
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
    // A failed authentication inside the (default, 60 s) audit window.
    let bad = http
        .get(format!("{base}/api/keys"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    server.terminate().await;
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
    let (status, err) = server.wait().await;
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("usage flushed"), "{err}");
    // The usage of the stream is in the database.
    let conn = rusqlite::Connection::open(dir.path().join("data/byok.db")).unwrap();
    let (n, prompt): (i64, i64) = conn
        .query_row("SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0) FROM usage_events WHERE status = 'ok'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((n, prompt), (1, 11));
    // The failure's window was still open: shutdown wrote its row.
    let fails: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'auth.failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fails, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_reach_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let master = byok_proxy::keys::crypto::MasterKey::generate()
        .to_base64()
        .expose()
        .clone();
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
    c.env("RUST_LOG", "info").arg("serve");
    let server = Served::start(c).await;
    let base = server.base();
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
    server.kill().await;
}

/// `token create` takes the same scopes as the APIs: stored on the token, refused when
/// malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_token_create_takes_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let master = byok_proxy::keys::crypto::MasterKey::generate()
        .to_base64()
        .expose()
        .clone();
    run_ok(
        cmd(dir.path(), &master),
        &["user", "create", "--name", "ci"],
    )
    .await;
    let (token, _) = run_ok(
        cmd(dir.path(), &master),
        &[
            "token",
            "create",
            "--user",
            "ci",
            "--allow-model",
            "openai/text-embedding-*",
            "--allow-route",
            "embeddings",
            "--requests-per-minute",
            "30",
        ],
    )
    .await;
    assert!(token.trim().starts_with("bkp_"));
    let conn = rusqlite::Connection::open(dir.path().join("data/byok.db")).unwrap();
    let (models, routes, rpm): (String, String, i64) = conn
        .query_row(
            "SELECT allowed_models, allowed_routes, requests_per_minute FROM app_tokens",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(models, r#"["openai/text-embedding-*"]"#);
    assert_eq!(routes, r#"["embeddings"]"#);
    assert_eq!(rpm, 30);
    let out = cmd(dir.path(), &master)
        .args(["token", "create", "--user", "ci", "--allow-route", "admin"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allowed_routes"));
}
