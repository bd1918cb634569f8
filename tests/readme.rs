//! The README's first commands, run as written, so the README cannot drift from the binary.
//!
//! The test reads README.md, takes the first `sh` block of "Quick start" and of "First user,
//! token and key", and runs them with bash in a temporary directory (the README's working
//! directory: no config file, SQLite and the development key under `./data/`), with two
//! substitutions and nothing else:
//! - `cargo run --release [-q] --` becomes the binary under test (`CARGO_BIN_EXE_byok-proxy`);
//! - `http://127.0.0.1:8080` (the default `listen`, checked here) becomes the address `serve`
//!   actually took: it runs with `BYOK_LISTEN=127.0.0.1:0`, parallel-safe.
//!
//! The fake gateway stands in for the Vercel AI Gateway (`BYOK_UPSTREAM__GATEWAY__BASE_URL`,
//! `AI_GATEWAY_API_KEY`). Quick start's `serve` line runs in the background for the whole
//! test; its test-suite line (`cargo xtask test`) is the command running this test, so it is
//! only checked against the cargo alias. Every command of the second block must succeed —
//! `curl` runs with `--fail-with-body`, so an HTTP error fails it — and what each answers is
//! checked against what the README's comments promise (a masked hint and never the key, the
//! key deactivated, then deleted).
//!
//! Needs bash, curl and jq (`cargo xtask test` installs them); fails, never skips, without.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "it/common/mod.rs"]
mod common;

use byok_proxy::config::{Config, EnvMap};
use common::binary::{Served, BIN};
use common::fake_upstream::FakeUpstream;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The README's address for a local `serve` (must be the default `listen`).
const README_ADDR: &str = "127.0.0.1:8080";
/// Upper bound for the whole second block.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str =
    "run `cargo xtask test` (from the repository root): it installs bash, curl and jq";

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The lines of the first ```sh block after the heading `heading` (before the next heading).
fn block_after(readme: &str, heading: &str) -> Vec<String> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.trim() == heading)
        .unwrap_or_else(|| panic!("README.md has no heading `{heading}`"));
    let mut block = None;
    for line in lines {
        match (&mut block, line.trim_end()) {
            (None, l) if l.starts_with('#') => break,
            (None, "```sh") => block = Some(Vec::new()),
            (Some(_), "```") => break,
            (Some(b), l) => b.push(l.to_string()),
            (None, _) => {}
        }
    }
    block.unwrap_or_else(|| panic!("README.md has no ```sh block under `{heading}`"))
}

/// The shell commands of a block: comments and blank lines dropped, `\` continuations joined.
fn commands(block: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "a block ends in a `\\` continuation");
    out
}

/// A command without its trailing `# comment` (the README's commands have no `#` inside).
fn without_comment(cmd: &str) -> &str {
    cmd.split(" #").next().unwrap_or(cmd).trim()
}

/// The two substitutions of the module doc; panics if anything would still go to cargo or to
/// the fixed address.
fn substitute(cmd: &str, base: &str) -> String {
    let out = cmd
        .replace("cargo run --release -q -- ", "\"$BYOK_PROXY\" ")
        .replace("cargo run --release -- ", "\"$BYOK_PROXY\" ")
        .replace(&format!("http://{README_ADDR}"), base);
    assert!(
        !out.contains("cargo ") && !out.contains(README_ADDR),
        "the test does not know how to run this README command: {cmd}"
    );
    out
}

/// The environment of every README command: nothing from the developer's, the fake gateway.
fn env_of(cmd: &mut tokio::process::Command, dir: &Path, fake: &FakeUpstream) {
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("BYOK_PROXY", BIN)
        .env("BYOK_LISTEN", "127.0.0.1:0")
        .env("BYOK_UPSTREAM__GATEWAY__BASE_URL", fake.base_url())
        .env("AI_GATEWAY_API_KEY", "gw-readme-test-key")
        .stdin(Stdio::null())
        .kill_on_drop(true);
}

#[track_caller]
fn require_tools() {
    for tool in ["bash", "curl", "jq"] {
        let ok = std::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "`{tool}` is not installed: {INSTALL_HINT}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_and_first_user_blocks_run_as_written() {
    require_tools();
    let readme = readme();
    // The README's URL is where `serve` listens by default.
    let defaults = Config::load(None, &EnvMap::new()).unwrap();
    assert_eq!(defaults.listen.to_string(), README_ADDR);

    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;

    // --- Quick start: `serve` in the background; the test command is this suite.
    let quick = commands(&block_after(&readme, "## Quick start"));
    let mut served = None;
    for cmd in &quick {
        let cmd = without_comment(cmd);
        if cmd.ends_with(" serve") && cmd.starts_with("cargo run") {
            let mut bash = tokio::process::Command::new("bash");
            env_of(&mut bash, dir.path(), &fake);
            bash.args(["-c", &format!("exec {}", substitute(cmd, "-"))]);
            served = Some(Served::start(bash).await);
        } else if cmd == "cargo xtask test" {
            let config = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(".cargo/config.toml"),
            )
            .unwrap();
            assert!(
                config.contains("xtask = \"run --package xtask --\""),
                "the README's test command needs the `cargo xtask` alias: {config}"
            );
        } else {
            panic!("the test does not know this Quick start command: {cmd}");
        }
    }
    let served = served.expect("Quick start runs `serve`");
    let data = dir.path().join("data");
    assert!(data.join("byok.db").is_file(), "SQLite under ./data/");
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(data.join("master.key"))
        .expect("the first serve creates ./data/master.key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    assert!(
        served.log().contains("NO MASTER KEY CONFIGURED"),
        "a loud warning: {}",
        served.log()
    );

    // --- First user, token and key: one bash script, a marker before each command.
    let block = commands(&block_after(&readme, "### First user, token and key"));
    let mut script = String::from(
        "set -euo pipefail\n\
         curl() { command curl --fail-with-body --max-time 10 \"$@\"; }\n",
    );
    for (i, cmd) in block.iter().enumerate() {
        script += &format!(
            "printf '\\n@@{i}\\n'\n{}\n",
            substitute(cmd, &served.base())
        );
    }
    script += "printf '\\n@@end TOKEN=%s KEY_ID=%s\\n' \"$TOKEN\" \"$KEY_ID\"\n";
    let mut bash = tokio::process::Command::new("bash");
    env_of(&mut bash, dir.path(), &fake);
    bash.args(["-c", &script]);
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, bash.output())
        .await
        .expect("the README block did not finish within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "a README command failed ({}):\n--- script:\n{script}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}\n--- serve:\n{}",
        out.status,
        served.log()
    );

    // What each command printed, by the marker before it.
    let mut outputs = vec![String::new(); block.len()];
    let mut vars = String::new();
    let mut current: Option<usize> = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("@@end ") {
            vars = rest.to_string();
            current = None;
        } else if let Some(n) = line.strip_prefix("@@").and_then(|n| n.parse().ok()) {
            current = Some(n);
        } else if let Some(n) = current {
            outputs[n] += line;
        }
    }
    let json = |i: usize| -> Value {
        serde_json::from_str(&outputs[i])
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}): {:?}", block[i], outputs[i]))
    };
    let token = vars
        .split_whitespace()
        .find_map(|v| v.strip_prefix("TOKEN="))
        .unwrap_or_default()
        .to_string();
    assert!(token.starts_with("bkp_"), "TOKEN is an app token: {vars}");
    let mut seen = Vec::new();
    for (i, cmd) in block.iter().enumerate() {
        let what = if cmd.contains(" user create ") {
            assert!(outputs[i].contains("created user alice"), "{}", outputs[i]);
            "user create"
        } else if cmd.starts_with("TOKEN=$(") || cmd.starts_with("KEY_ID=$(") {
            assert_eq!(outputs[i].trim(), "", "`{cmd}` prints nothing");
            "assignment"
        } else if cmd.contains("-d '{\"provider\"") {
            let key = json(i);
            let sent = cmd.split("\"apiKey\":\"").nth(1).unwrap().split('"').next();
            assert!(key["masked_hint"].is_string(), "{key}");
            assert!(
                !outputs[i].contains(sent.unwrap()),
                "the answer shows the key: {key}"
            );
            "add key"
        } else if cmd.contains("-X PATCH") {
            assert_eq!(json(i)["is_active"], false, "deactivated: {}", outputs[i]);
            "deactivate"
        } else if cmd.contains("-X DELETE") {
            assert_eq!(outputs[i].trim(), "", "204 No Content");
            "delete"
        } else if cmd.contains("/api/") {
            assert!(json(i).is_object(), "{}", outputs[i]);
            "get"
        } else {
            panic!("the test does not know this README command: {cmd}")
        };
        seen.push(what);
    }
    for needed in ["user create", "add key", "deactivate", "delete"] {
        assert!(
            seen.contains(&needed),
            "the block no longer does `{needed}`"
        );
    }
    // The key is gone, and the audit trail holds the three key events.
    let http = reqwest::Client::new();
    let keys: Value = http
        .get(served.url("/api/keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["data"], serde_json::json!([]), "{keys}");
    let audit = http
        .get(served.url("/api/audit"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for action in ["key.created", "key.updated", "key.deleted"] {
        assert!(audit.contains(action), "no {action} in {audit}");
    }
    let (status, log) = served.stop().await;
    assert!(status.success(), "{status:?}: {log}");
}
