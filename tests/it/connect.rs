//! "Connect your tools": every snippet the web UI's Tokens page offers (`ui/snippets.js`,
//! imported as is through `node`) is run — or, for config files, parsed and then used the
//! way the tool uses it — against the real proxy in front of the fake gateway, with a real
//! token:
//!
//! - the OpenAI Python and Node SDK snippets run with the official `openai` packages;
//! - Claude Code's environment drives the official `anthropic` Python SDK (which reads the
//!   same `ANTHROPIC_BASE_URL` / `ANTHROPIC_AUTH_TOKEN`), and a Claude-Code-style bare model;
//! - Codex CLI's `config.toml` is parsed and its provider called on the Responses API;
//! - Continue's `config.yaml` is parsed and its model called through its `apiBase`;
//! - both curl snippets run with `sh`.
//!
//! The SDKs are pinned in tests/sdk and installed by `cargo xtask test` (Python ones in
//! `target/sdk-venv`); when they are missing the test fails (never skips) with that command.

use crate::common::fake_upstream::FakeUpstream;
use crate::common::TestProxy;
use crate::proxy::{add_key, proxy_for};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;

const INSTALL_HINT: &str = "run `cargo xtask test` (it installs the pinned SDKs of tests/sdk: \
     openai and anthropic for Python in target/sdk-venv, openai for Node)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `BYOK_SDK_PYTHON`, else the virtualenv `cargo xtask test` makes, else `python3`.
fn python() -> String {
    std::env::var("BYOK_SDK_PYTHON").unwrap_or_else(|_| {
        let venv = root().join("target/sdk-venv/bin/python");
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

/// Runs `program args` with `env`, returning stdout; panics with stderr on failure.
async fn run(program: &str, args: &[&str], env: &[(&str, &str)], dir: &PathBuf) -> String {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}: {INSTALL_HINT}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn preflight() {
    let py = std::process::Command::new(python())
        .args(["-c", "import openai, anthropic"])
        .stdin(Stdio::null())
        .output();
    match py {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "the Python SDKs are missing for `{}`: {INSTALL_HINT}",
            python()
        ),
    }
    let pkg = root().join("tests/sdk/node_modules/openai/package.json");
    assert!(
        pkg.is_file(),
        "{} is missing: {INSTALL_HINT}",
        pkg.display()
    );
}

/// The snippets of `ui/snippets.js` for this proxy and token, as the page computes them.
async fn snippets(base: &str, token: &str) -> Vec<Value> {
    let module = root().join("ui/snippets.js");
    let script = format!(
        "import({:?}).then((m) => console.log(JSON.stringify(m.snippets({{ baseUrl: process.env.BASE, token: process.env.TOKEN }}))))",
        format!("file://{}", module.display())
    );
    let out = run(
        &node(),
        &["--input-type=module", "-e", &script],
        &[("BASE", base), ("TOKEN", token)],
        &root(),
    )
    .await;
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn text<'a>(all: &'a [Value], id: &str) -> &'a str {
    all.iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no snippet {id}"))["text"]
        .as_str()
        .unwrap()
}

/// `export NAME='value'` lines of a shell snippet (`#` comment prefixes allowed).
fn exports(snippet: &str) -> Vec<(String, String)> {
    snippet
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            let (k, v) = l.strip_prefix("export ")?.split_once('=')?;
            Some((k.to_string(), v.trim_matches('\'').to_string()))
        })
        .collect()
}

async fn post(p: &TestProxy, url: &str, token: &str, body: Value) -> Value {
    let resp = p
        .http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connect_snippet_works_against_the_proxy() {
    preflight();
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let base = p.url("");
    let (_, owner) = p.user("alice").await;
    add_key(
        &p,
        &owner,
        "openai",
        json!({"apiKey": "sk-openai-user-0000000001"}),
    )
    .await;
    add_key(
        &p,
        &owner,
        "anthropic",
        json!({"apiKey": "sk-ant-user-00000000001"}),
    )
    .await;
    // A token as the Tokens page makes it: scoped to what the snippets need.
    let (s, made) = p
        .post(
            "/api/tokens",
            &owner,
            json!({"name": "tools", "scopes": {"allowed_models": ["openai/*", "anthropic/*"]}}),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    let token = made["token"].as_str().unwrap().to_string();
    let all = snippets(&base, &token).await;
    assert_eq!(all.len(), 7);
    for s in &all {
        let t = s["text"].as_str().unwrap();
        assert!(t.contains(&token), "{} carries the token", s["id"]);
        assert!(t.contains(&base), "{} carries the proxy's address", s["id"]);
    }
    let tmp = tempfile::tempdir().unwrap();

    // OpenAI SDK, Python.
    let py = tmp.path().join("hello.py");
    std::fs::write(&py, text(&all, "openai-python")).unwrap();
    let out = run(&python(), &[py.to_str().unwrap()], &[], &root()).await;
    assert_eq!(out.trim(), "Hello from fake");

    // OpenAI SDK, Node (next to tests/sdk/node_modules).
    let sdk = root().join("tests/sdk");
    let js = sdk.join(format!(".connect-{}.mjs", uuid::Uuid::new_v4().simple()));
    std::fs::write(&js, text(&all, "openai-node")).unwrap();
    let out = run(&node(), &[js.to_str().unwrap()], &[], &sdk).await;
    let _ = std::fs::remove_file(&js);
    assert_eq!(out.trim(), "Hello from fake");

    // Claude Code: its environment, read by the official Anthropic SDK as Claude Code does,
    // with a dated bare model name as Claude Code sends.
    let env = exports(text(&all, "claude-code"));
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert!(env
        .iter()
        .any(|(k, v)| k == "ANTHROPIC_BASE_URL" && *v == base));
    let claude = "import anthropic\n\
         c = anthropic.Anthropic(max_retries=0)\n\
         m = c.messages.create(model='claude-sonnet-4.5', max_tokens=64, \
         messages=[{'role': 'user', 'content': 'Say hello'}])\n\
         print(m.content[0].text)\n";
    let out = run(&python(), &["-c", claude], &env_ref, &root()).await;
    assert_eq!(out.trim(), "Hello from fake");

    // Codex CLI: the config parses; its provider answers on the Responses API.
    let codex = text(&all, "codex");
    let config: toml::Table = codex.parse().unwrap();
    assert_eq!(config["model_provider"].as_str(), Some("byok"));
    let provider = &config["model_providers"]["byok"];
    assert_eq!(provider["wire_api"].as_str(), Some("responses"));
    let env_key = provider["env_key"].as_str().unwrap();
    let exported = exports(codex);
    let (_, codex_token) = exported.iter().find(|(k, _)| k == env_key).unwrap();
    let base_url = provider["base_url"].as_str().unwrap();
    let r = post(
        &p,
        &format!("{base_url}/responses"),
        codex_token,
        json!({"model": config["model"].as_str().unwrap(), "input": "Say hello"}),
    )
    .await;
    assert_eq!(r["object"], "response", "{r}");

    // Continue (and Cursor's two fields): the YAML parses; its model answers.
    let yaml: Value = serde_yaml_ng::from_str(text(&all, "continue")).unwrap();
    let m = &yaml["models"][0];
    assert_eq!(m["provider"], "openai");
    let r = post(
        &p,
        &format!("{}/chat/completions", m["apiBase"].as_str().unwrap()),
        m["apiKey"].as_str().unwrap(),
        json!({"model": m["model"], "messages": [{"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(r["choices"][0]["message"]["content"], "Hello from fake");

    // curl, both routes.
    let out = run("sh", &["-c", text(&all, "curl")], &[], &root()).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from fake");
    let out = run("sh", &["-c", text(&all, "curl-anthropic")], &[], &root()).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["content"][0]["text"], "Hello from fake", "{v}");

    // Everything went upstream with the user's keys, never the token.
    let requests = fake.requests();
    assert_eq!(requests.len(), 7, "one upstream request per snippet");
    for r in &requests {
        assert!(!crate::common::contains(&r.body, token.as_bytes()));
        assert_eq!(
            r.header("authorization").as_deref(),
            Some("Bearer gw-test-key-123")
        );
    }
    p.stop().await;
}
