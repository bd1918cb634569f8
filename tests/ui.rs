//! The web UI (`/ui/`, SPEC §4 "Web UI"): what the server sends (strict CSP, no inline script or
//! style, correct types, 404 for unknown files) and a real browser driving every page.
//!
//! The browser test starts a [`FakeUpstream`] gateway and the real proxy (SQLite), creates a
//! user and token, then runs `tests/ui/e2e.mjs` (Playwright's `playwright-core` from npm,
//! driving Debian's `/usr/bin/chromium` headless). That script logs in, adds, tests, toggles
//! and deletes keys, chats with a streamed answer and stops one, searches and filters the
//! catalog and opens the usage page, saving a screenshot of each page under
//! `target/ui-screenshots/`. It asks this harness to script the fake gateway over stdout/stdin
//! (`@@stream <ms>` / `@@error <status> <message>` → `ok`). Afterwards this file checks what the fake
//! gateway received: the user's key as BYOK, the gateway key as `Authorization`, never the
//! app token, and that Stop dropped the upstream stream.
//!
//! The browser and the npm packages are installed by `cargo xtask test`; when they are
//! missing the test fails (never skips) and says to run it. `BYOK_UI_CHROMIUM` / `BYOK_UI_NODE`
//! override the browser and `node`. With `BYOK_UI_UPDATE_SCREENSHOTS=1` the screenshots are
//! also copied to `docs/screenshots/` (the README's).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "it/common/mod.rs"]
mod common;

use common::fake_upstream::{chat_stream_chunks, Behavior, FakeUpstream, Recorded};
use common::{contains, Backend, TestDb, TestProxy};
use http::Method;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const GATEWAY_KEY: &str = "gw";
const OPENAI_KEY: &str = "sk-ui-test-openai-work-0001";
const OPENAI_SPARE_KEY: &str = "sk-ui-test-openai-spare-0002";
const STREAM_MODEL: &str = "openai/gpt-4o";
/// Upper bound for the whole browser run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

const INSTALL_HINT: &str = "run `cargo xtask test` (from the repository root): it installs \
     Debian's chromium and the npm packages of tests/ui/package-lock.json, then runs the tests";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ui_test_dir() -> PathBuf {
    root().join("tests/ui")
}

fn chromium() -> String {
    std::env::var("BYOK_UI_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn node() -> String {
    std::env::var("BYOK_UI_NODE").unwrap_or_else(|_| "node".into())
}

// ---------------------------------------------------------------------------------------
// What the server sends.

async fn get(p: &TestProxy, path: &str) -> reqwest::Response {
    p.http.get(p.url(path)).send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{} has no {name} header", r.url()))
        .to_str()
        .unwrap()
}

/// Every `<script ...>...</script>` of `html` must load a file (`src=`) and have no body, and no
/// element may carry a `style=` attribute or be a `<style>` block.
fn assert_no_inline_code(html: &str) {
    let lower = html.to_ascii_lowercase();
    let mut rest = lower.as_str();
    let mut scripts = 0;
    while let Some(i) = rest.find("<script") {
        let tag_end = rest[i..].find('>').expect("unterminated <script") + i;
        let tag = &rest[i..=tag_end];
        assert!(
            tag.contains(" src=\"/ui/"),
            "inline or foreign <script>: {tag}"
        );
        let close = rest[tag_end..]
            .find("</script>")
            .expect("unclosed <script>")
            + tag_end;
        assert!(
            rest[tag_end + 1..close].trim().is_empty(),
            "a <script> with inline content: {}",
            &rest[i..close]
        );
        scripts += 1;
        rest = &rest[close..];
    }
    assert!(scripts >= 1, "index.html loads no script");
    assert!(!lower.contains("<style"), "index.html has a <style> block");
    assert!(
        !lower.contains(" style="),
        "index.html has a style= attribute"
    );
    for attr in [
        "onload=",
        "onerror=",
        "onclick=",
        "onsubmit=",
        "javascript:",
    ] {
        assert!(!lower.contains(attr), "index.html has inline code: {attr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_is_served_with_a_strict_csp_and_no_inline_code() {
    let p = TestProxy::start(Backend::Sqlite).await;

    for path in ["/ui/", "/ui", "/", "/ui/index.html"] {
        let r = get(&p, path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            header(&r, "content-type"),
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_eq!(
            header(&r, "content-security-policy"),
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            "{path}"
        );
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&r, "referrer-policy"), "no-referrer", "{path}");
        assert!(!header(&r, "cache-control").is_empty(), "{path}");
        let html = r.text().await.unwrap();
        assert_no_inline_code(&html);
        assert!(html.contains("/ui/app.js") && html.contains("/ui/style.css"));
    }

    // Every embedded file: its type, the same headers, and no third-party origin anywhere.
    for asset in byok_proxy::ui::asset_paths() {
        let r = get(&p, &format!("/ui/{asset}")).await;
        assert_eq!(r.status(), 200, "{asset}");
        let want = match asset.rsplit('.').next().unwrap() {
            "html" => "text/html; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("no expected type for .{other}"),
        };
        assert_eq!(header(&r, "content-type"), want, "{asset}");
        assert_eq!(
            header(&r, "content-security-policy"),
            byok_proxy::ui::CSP,
            "{asset}"
        );
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{asset}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("https://"), "{asset} refers to a remote URL");
        assert!(
            body.matches("http://")
                .count()
                .eq(&body.matches("http://www.w3.org/2000/svg").count()),
            "{asset} refers to a remote URL"
        );
        if asset.ends_with(".js") {
            assert!(
                !body.contains("innerHTML") && !body.contains("eval("),
                "{asset} builds markup from strings"
            );
        }
    }

    // Client-side paths get the app; unknown files are a 404 in the error envelope.
    let r = get(&p, "/ui/chat").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    for path in ["/ui/missing.js", "/ui/app.js.map", "/ui/x/favicon.ico"] {
        let (status, body) = p.get(path, "").await;
        common::assert_error(status, &body, 404, "not_found");
    }
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// The browser.

/// Chromium is installed, `node` runs and every package of tests/ui/package-lock.json is in
/// tests/ui/node_modules at its locked version.
fn check_browser_deps() -> Result<(), String> {
    let browser = chromium();
    if !Path::new(&browser).is_file() {
        return Err(format!("{browser} does not exist"));
    }
    let out = std::process::Command::new(node())
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", node()))?;
    if !out.status.success() {
        return Err(format!("`{} --version` failed", node()));
    }
    let dir = ui_test_dir();
    let lock: Value =
        serde_json::from_slice(&std::fs::read(dir.join("package-lock.json")).unwrap()).unwrap();
    let mut bad = Vec::new();
    for (path, meta) in lock["packages"].as_object().unwrap() {
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

fn is_chat(r: &Recorded) -> bool {
    r.method == Method::POST && r.path.ends_with("/chat/completions")
}

/// The user message of a recorded chat request, if it has exactly this text somewhere.
fn sends_message(r: &Recorded, text: &str) -> bool {
    r.json()["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["content"] == text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_drives_every_page() {
    if let Err(e) = check_browser_deps() {
        panic!("the browser test's dependencies are missing ({e}): {INSTALL_HINT}");
    }

    let fake = FakeUpstream::start().await;
    let p = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.insert("BYOK_UPSTREAM__GATEWAY__BASE_URL".into(), fake.base_url());
        env.insert("AI_GATEWAY_API_KEY".into(), GATEWAY_KEY.into());
    })
    .await;
    let (_, token) = p.user("alice").await;

    let shots = root().join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();

    let mut child = tokio::process::Command::new(node())
        .arg(ui_test_dir().join("e2e.mjs"))
        .current_dir(ui_test_dir())
        .env("BASE_URL", format!("http://{}", p.addr))
        .env("TOKEN", &token)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", chromium())
        .env("OPENAI_KEY", OPENAI_KEY)
        .env("OPENAI_SPARE_KEY", OPENAI_SPARE_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}: {INSTALL_HINT}", node()));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut transcript = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("{line}");
            let Some(cmd) = line.strip_prefix("@@") else {
                transcript.push(line);
                continue;
            };
            let words: Vec<&str> = cmd.split_whitespace().collect();
            match words.as_slice() {
                ["stream", ms] => fake.push(Behavior::Stream {
                    chunks: chat_stream_chunks(STREAM_MODEL, true),
                    delay: Duration::from_millis(ms.parse().unwrap()),
                }),
                ["error", status, message @ ..] => fake.push(Behavior::gateway_error(
                    status.parse().unwrap(),
                    "upstream_error",
                    &message.join(" "),
                )),
                _ => panic!("unknown harness command from e2e.mjs: {line}"),
            }
            stdin.write_all(b"ok\n").await.unwrap();
            stdin.flush().await.unwrap();
        }
        child.wait().await.unwrap()
    };
    let status = match tokio::time::timeout(SCRIPT_TIMEOUT, run).await {
        Ok(status) => status,
        Err(_) => panic!(
            "tests/ui/e2e.mjs did not finish within {SCRIPT_TIMEOUT:?}; its output:\n{}",
            transcript.join("\n")
        ),
    };
    assert!(
        status.success(),
        "tests/ui/e2e.mjs failed ({status}); screenshots in {}",
        shots.display()
    );
    assert!(
        transcript.iter().any(|l| l.contains("all checks passed")),
        "e2e.mjs exited 0 without finishing its checks"
    );

    // What went upstream: the streamed chats carried the remaining OpenAI key as BYOK (and not
    // the deleted one), the gateway key, and never the app token.
    let requests = fake.requests();
    let chats: Vec<&Recorded> = requests
        .iter()
        .filter(|r| is_chat(r) && sends_message(r, "Say hello"))
        .collect();
    assert!(!chats.is_empty(), "the UI's chat never reached the gateway");
    for r in requests.iter().filter(|r| is_chat(r)) {
        assert_eq!(
            r.header("authorization").as_deref(),
            Some("Bearer gw"),
            "{}",
            r.path
        );
        assert!(r.header("x-api-key").is_none());
        let raw = format!("{:?}{:?}", r.headers, r.body);
        assert!(
            !contains(raw.as_bytes(), token.as_bytes()),
            "the app token went upstream"
        );
    }
    let ui_chats: Vec<&Recorded> = requests
        .iter()
        .filter(|r| is_chat(r) && r.json()["stream"] == true)
        .collect();
    assert_eq!(ui_chats.len(), 4, "four chat messages were sent");
    for r in &ui_chats {
        let body = r.json();
        assert_eq!(body["model"], STREAM_MODEL);
        let byok = &body["providerOptions"]["gateway"]["byok"];
        let openai = byok["openai"].as_array().expect("byok.openai");
        assert_eq!(openai.len(), 1, "only the remaining OpenAI key: {byok}");
        assert_eq!(openai[0]["apiKey"], OPENAI_KEY);
        assert!(
            !contains(&r.body, OPENAI_SPARE_KEY.as_bytes()),
            "the deleted key was sent"
        );
        assert!(
            byok.get("vertex").is_none(),
            "a credential the model cannot use was sent: {byok}"
        );
    }
    // The second message (Stop) carried the first turn as history.
    let second = ui_chats[1].json();
    assert!(sends_message(ui_chats[1], "Now tell me a long story"));
    assert_eq!(second["messages"][1]["content"], "Hello from fake");
    assert!(
        fake.wait_for_disconnect(Duration::from_secs(5)).await,
        "Stop did not drop the upstream stream"
    );

    // The key tests went upstream with the tested key.
    let tests: Vec<&Recorded> = requests
        .iter()
        .filter(|r| is_chat(r) && r.json()["max_tokens"] == 1)
        .collect();
    assert!(
        tests.iter().any(
            |r| r.json()["providerOptions"]["gateway"]["byok"]["openai"][0]["apiKey"] == OPENAI_KEY
        ),
        "the OpenAI key test did not go upstream"
    );
    assert!(
        tests.iter().any(
            |r| r.json()["providerOptions"]["gateway"]["byok"]["vertex"][0]["project"]
                == "ui-test-project"
        ),
        "the Vertex key test did not go upstream"
    );

    for page in [
        "login",
        "providers",
        "chat",
        "chat-streaming",
        "models",
        "usage",
        "usage-live",
        "providers-health",
        "providers-mobile",
        "chat-mobile",
        "models-mobile",
    ] {
        let f = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .len();
        assert!(len > 5_000, "{} is suspiciously small", f.display());
    }
    if std::env::var("BYOK_UI_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = root().join("docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap();
        for entry in std::fs::read_dir(&shots).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "png")
                && path.file_name().is_some_and(|n| n != "failure.png")
            {
                std::fs::copy(&path, docs.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// Web sign-in in the browser.

/// The official `openai` Node package the pasted snippet imports (tests/sdk).
fn check_sdk_node_package() -> Result<(), String> {
    let pkg = root().join("tests/sdk/node_modules/openai/package.json");
    if pkg.is_file() {
        Ok(())
    } else {
        Err(format!(
            "{} is missing: run `cargo xtask test` (it installs tests/sdk's npm packages)",
            pkg.display()
        ))
    }
}

/// A new team member signs in through a real OpenID provider, adds a key, creates a token
/// limited to OpenAI models, and the OpenAI SDK snippet pasted from "Connect your tools"
/// answers; then an admin disables them and their session ends (tests/ui/signin.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_signs_in_with_the_identity_provider() {
    if let Err(e) = check_browser_deps() {
        panic!("the browser test's dependencies are missing ({e}): {INSTALL_HINT}");
    }
    if let Err(e) = check_sdk_node_package() {
        panic!("the sign-in browser test runs the OpenAI SDK snippet: {e}");
    }
    let fake = FakeUpstream::start().await;
    let gateway = fake.base_url();
    let (p, _provider) =
        common::oidc::start_with_provider(TestDb::new(Backend::Sqlite).await, &[], |env| {
            env.insert("BYOK_UPSTREAM__GATEWAY__BASE_URL".into(), gateway);
            env.insert("AI_GATEWAY_API_KEY".into(), GATEWAY_KEY.into());
            env.insert(
                "BYOK_AUTH__OIDC__ADMIN_EMAILS".into(),
                r#"["lead@example.com"]"#.into(),
            );
        })
        .await;
    let shots = root().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::time::timeout(
        SCRIPT_TIMEOUT,
        tokio::process::Command::new(node())
            .arg(ui_test_dir().join("signin.mjs"))
            .current_dir(ui_test_dir())
            .env("BASE_URL", format!("http://{}", p.addr))
            .env("EMAIL", "new.member@example.com")
            .env("ADMIN_EMAIL", "lead@example.com")
            .env("OPENAI_KEY", OPENAI_KEY)
            .env("SDK_DIR", root().join("tests/sdk"))
            .env("SCREENSHOT_DIR", &shots)
            .env("CHROMIUM", chromium())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("tests/ui/signin.mjs did not finish in time")
    .unwrap_or_else(|e| panic!("cannot run `{}`: {e}: {INSTALL_HINT}", node()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("ui-signin: all checks passed"),
        "tests/ui/signin.mjs failed; screenshots in {}",
        shots.display()
    );
    // Upstream saw the member's own key and the gateway key, never the app token.
    let chats: Vec<Recorded> = fake.requests().into_iter().filter(is_chat).collect();
    assert!(
        chats.len() >= 3,
        "snippet, curl and the UI chat went upstream"
    );
    for r in &chats {
        assert_eq!(r.header("authorization").as_deref(), Some("Bearer gw"));
        assert_eq!(
            r.json()["providerOptions"]["gateway"]["byok"]["openai"][0]["apiKey"],
            OPENAI_KEY
        );
    }
    for page in ["signin-login", "tokens", "tokens-mobile", "admin"] {
        let f = shots.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&f)
                .map(|m| m.len() > 5_000)
                .unwrap_or(false),
            "{} missing or suspiciously small",
            f.display()
        );
    }
    p.stop().await;
}
