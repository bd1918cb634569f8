//! Keeps `deploy/` honest: these checks fail the day a metric, a setting or a command is
//! renamed in the code without the deploy files (Dockerfile, compose, Prometheus, Grafana,
//! Kubernetes, systemd) and the README following.
//!
//! - Metrics: every metric the Grafana dashboard queries and every `byok_*` metric the README
//!   names appears in a live `/metrics` scrape of the real binary (`serve` in a temp dir on
//!   SQLite, the fake gateway behind it) after a few requests: a key added through the API, a
//!   chat completion, a streamed one, an upstream 5xx and a 401.
//! - Settings: every `BYOK_*` (and `AI_GATEWAY_API_KEY`) variable that compose, `.env.example`,
//!   the Kubernetes manifests, the systemd unit (and its env file) and the Dockerfile mention is
//!   one the config loader reads (a hostile value makes it fail), and each file's environment,
//!   with its literal values and plausible ones for secrets, loads with `Config::load`; so does
//!   the ConfigMap's embedded config file. `BYOK_CONFIG` (read by the CLI, not the loader) is
//!   checked against `byok-proxy --help`.
//! - Syntax and consistency: compose, the Kubernetes manifests, the Prometheus and Grafana
//!   provisioning files parse as YAML and the dashboard as JSON, and they agree with each other
//!   (service names, ports, probes, labels, secret keys, grace period over the drain deadline).
//!   `systemd-analyze verify` accepts the unit; it runs on a copy whose `ExecStart` points at
//!   the binary under test, because `/usr/local/bin/byok-proxy` does not exist on a build
//!   machine. `systemd-analyze` comes from `cargo xtask test`; when it is missing the test
//!   fails and says so.
//! - Dockerfile: the build stage runs the README's build command, the runtime stage runs as a
//!   non-root `USER`, with `byok-proxy serve` as entrypoint and command and a `/healthz`
//!   health check; no secret is set in it. No Docker engine is needed: the file is read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "it/common/mod.rs"]
mod common;

use byok_proxy::config::{Config, DatabaseUrl, EnvMap};
use byok_proxy::keys::crypto::MasterKey;
use common::binary::{self, Served, BIN};
use common::fake_upstream::{Behavior, FakeUpstream};
use serde::Deserialize;
use serde_json::{json, Value};
use serde_yaml_ng::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Metric families the dashboard must chart (issue: "Deploy and operate", item 3).
const DASHBOARD_MUST_QUERY: &[&str] = &[
    "byok_http_requests_total",
    "byok_http_request_duration_seconds",
    "byok_upstream_ttfb_seconds",
    "byok_streams_active",
    "byok_rate_limited_total",
    "byok_tokens_total",
    "byok_credential_cache_total",
    "byok_system_credential_fallback_total",
    "byok_upstream_errors_total",
    "byok_in_flight_requests",
    "byok_provider_health",
];

/// `byok_` words in the README that are not metrics.
const README_NOT_METRICS: &[&str] = &[
    // the PostgreSQL NOTIFY channel
    "byok_invalidate",
    // the web sign-in cookies
    "byok_session",
    "byok_login",
];

/// Settings that must never be given a value in an image or a committed file.
const SECRET_VARS: &[&str] = &[
    "BYOK_MASTER_KEY",
    "BYOK_ADMIN_TOKEN",
    "AI_GATEWAY_API_KEY",
    "BYOK_DATABASE__URL",
    "BYOK_CRYPTO__OLD_KEYS",
    "BYOK_AUTH__OIDC__CLIENT_SECRET",
];

/// Read by the CLI (clap `env`), not by the config loader.
const CLI_VARS: &[&str] = &["BYOK_CONFIG"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// Every document of a (possibly multi-document) YAML file.
fn yaml_docs(rel: &str) -> Vec<Yaml> {
    let text = read(rel);
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/byok-proxy.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/byok-proxy.json is not valid JSON: {e}"))
}

fn ystr<'a>(v: &'a Yaml, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

/// A YAML scalar as text (numbers and booleans too).
fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("`{addr}` has no port"))
}

// =========================================================================================
// PromQL and exposition parsing

/// Metric names (`byok_*`, `process_*`) referenced by a PromQL expression (or a Grafana
/// `label_values(...)` query). String literals are skipped, so label values never count.
fn promql_metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            // Part of a number (1e-9) or of a Grafana variable ($__rate_interval)?
            let glued = start > 0 && (chars[start - 1].is_ascii_digit() || chars[start - 1] == '$');
            let word: String = chars[start..i].iter().collect();
            if !glued && (word.starts_with("byok_") || word.starts_with("process_")) {
                names.push(word);
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn promql_parser_finds_metric_names_only() {
    let got = promql_metric_names(
        r#"histogram_quantile(0.95, sum by (le, provider) (rate(byok_upstream_ttfb_seconds_bucket{job=~"$job", route="byok_not_a_metric"}[$__rate_interval]))) / on() group_left process_open_fds{a='byok_x'} + 1e-9"#,
    );
    assert_eq!(
        got,
        ["byok_upstream_ttfb_seconds_bucket", "process_open_fds"]
    );
    assert_eq!(
        promql_metric_names(r#"label_values(byok_http_requests_total{job=~"$job"}, instance)"#),
        ["byok_http_requests_total"]
    );
}

/// What a `/metrics` scrape exposes: family types and sample names.
struct Exposition {
    /// family name -> type (`counter`, `gauge`, `histogram`, ...)
    families: BTreeMap<String, String>,
    samples: BTreeSet<String>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut families = BTreeMap::new();
        let mut samples = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                    families.insert(name.to_string(), kind.to_string());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let name: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':'))
                    .collect();
                samples.insert(name);
            }
        }
        Exposition { families, samples }
    }

    /// The family `name` belongs to: itself, or a histogram/summary it is a series of.
    fn family_of(&self, name: &str) -> Option<&str> {
        if let Some((k, _)) = self.families.get_key_value(name) {
            return Some(k);
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some((k, kind)) = self.families.get_key_value(base) {
                    if kind == "histogram" || (kind == "summary" && suffix != "_bucket") {
                        return Some(k);
                    }
                }
            }
        }
        None
    }
}

/// The family a queried name refers to, without a running server: strips the histogram
/// series suffixes.
fn base_family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Every PromQL string in the dashboard (`expr` of targets, `query`/`definition` of
/// template variables), with where it was found.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, place: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                let place = map
                    .get("title")
                    .or_else(|| map.get("name"))
                    .and_then(Value::as_str)
                    .map(|t| format!("{place} > {t}"))
                    .unwrap_or_else(|| place.to_string());
                for (k, child) in map {
                    match (k.as_str(), child) {
                        ("expr" | "query" | "definition", Value::String(s)) => {
                            out.push((place.clone(), s.clone()))
                        }
                        _ => walk(child, &place, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, place, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, "dashboard", &mut out);
    out
}

/// Metric names queried by the dashboard -> the panels that query them.
fn dashboard_metric_names() -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (place, q) in dashboard_queries(&dashboard()) {
        for n in promql_metric_names(&q) {
            names.entry(n).or_default().insert(place.clone());
        }
    }
    names
}

/// `byok_*` words in the README, minus crate paths (`byok_proxy::...`) and known non-metrics.
fn readme_metric_names() -> BTreeSet<String> {
    let text = read("README.md");
    let chars: Vec<char> = text.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !(chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '_');
        if boundary && text_at(&chars, i, "byok_") {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let crate_path = text_at(&chars, i, "::");
            let placeholder = word == "byok_" || word.ends_with('_');
            if !crate_path && !placeholder && !README_NOT_METRICS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

fn text_at(chars: &[char], i: usize, s: &str) -> bool {
    let n = s.chars().count();
    i + n <= chars.len() && chars[i..i + n].iter().copied().eq(s.chars())
}

// =========================================================================================
// Check 1: metrics

#[test]
fn dashboard_is_valid_json_and_charts_every_required_metric() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "byok-proxy");
    let panels = dash["panels"].as_array().expect("dashboard has panels");
    let mut ids = BTreeSet::new();
    let vars: BTreeSet<String> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| v["name"].as_str().expect("variable name").to_string())
        .collect();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id at {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && g["h"].as_u64().unwrap() > 0,
            "panel {title} leaves the grid"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no queries");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title}: target without expr"));
            assert!(
                !promql_metric_names(expr).is_empty() || expr.contains("up{"),
                "panel {title} queries no metric: {expr}"
            );
            assert!(
                t["refId"].is_string(),
                "panel {title}: target without refId"
            );
        }
    }
    // Every $variable used in a query is defined (Grafana built-ins start with `__`).
    for (place, q) in dashboard_queries(&dash) {
        for var in q.split('$').skip(1) {
            let name: String = var
                .trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                name.starts_with("__") || vars.contains(&name),
                "{place}: ${name} is not a dashboard variable ({vars:?})"
            );
        }
    }
    let queried: BTreeSet<String> = dashboard_metric_names()
        .keys()
        .map(|n| base_family(n).to_string())
        .collect();
    let missing: Vec<_> = DASHBOARD_MUST_QUERY
        .iter()
        .filter(|m| !queried.contains(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard charts none of {missing:?}"
    );
}

/// The real binary with a clean environment (port 0), in `dir`.
fn bin(dir: &Path, env: &[(&str, String)]) -> tokio::process::Command {
    let mut c = binary::command(dir);
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    c
}

async fn cli(dir: &Path, env: &[(&str, String)], args: &[&str]) -> String {
    let out = bin(dir, env).args(args).output().await.unwrap();
    assert!(
        out.status.success(),
        "byok-proxy {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `serve`, makes a few requests, and returns the `/metrics` text.
async fn live_scrape() -> String {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    let master = cli(dir.path(), &[], &["key", "generate"])
        .await
        .trim()
        .to_string();
    let admin = "deploy-test-admin-token-0123456789".to_string();
    let env = [
        ("BYOK_MASTER_KEY", master),
        ("BYOK_ADMIN_TOKEN", admin),
        ("BYOK_UPSTREAM__GATEWAY__BASE_URL", fake.base_url()),
        ("AI_GATEWAY_API_KEY", "gw-deploy-test-key".to_string()),
        ("RUST_LOG", "info".to_string()),
    ];
    cli(dir.path(), &env, &["user", "create", "--name", "ops"]).await;
    let token = cli(
        dir.path(),
        &env,
        &["token", "create", "--user", "ops", "--name", "deploy"],
    )
    .await
    .trim()
    .to_string();
    let mut serve = bin(dir.path(), &env);
    serve.arg("serve");
    let server = Served::start(serve).await;
    let base = server.base();
    let http = reqwest::Client::new();

    let post = |path: &str, body: Value, auth: bool| {
        let mut r = http.post(format!("{base}{path}")).json(&body);
        if auth {
            r = r.bearer_auth(&token);
        }
        r.send()
    };
    let resp = post(
        "/api/keys",
        json!({"provider": "openai", "credentials": {"apiKey": "sk-deploy-test-0123456789abcdef"}}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let chat = json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let resp = post("/v1/chat/completions", chat.clone(), true)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let resp = post("/v1/chat/completions", stream, true).await.unwrap();
    assert_eq!(resp.status(), 200);
    let sse = resp.text().await.unwrap();
    assert!(sse.contains("[DONE]"), "{sse}");
    fake.push(Behavior::gateway_error(
        502,
        "server_error",
        "upstream broke",
    ));
    let resp = post("/v1/chat/completions", chat, true).await.unwrap();
    assert_eq!(resp.status(), 502);
    resp.bytes().await.unwrap();
    let resp = http.get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let _ = http
        .get(format!("{base}/api/providers/health"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await;
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Token counts are recorded when a body ends: wait until they show.
    let mut text = String::new();
    for _ in 0..100 {
        text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("byok_tokens_total{") && text.contains("byok_upstream_errors_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill().await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_readme_metrics_exist_in_a_live_scrape() {
    let dash = dashboard_metric_names();
    let readme = readme_metric_names();
    assert!(!dash.is_empty() && !readme.is_empty());
    let scrape = live_scrape().await;
    let exposed = Exposition::parse(&scrape);
    let mut problems = Vec::new();
    for (name, places) in &dash {
        if exposed.samples.contains(name) {
            continue;
        }
        match exposed.families.get(name.as_str()).map(String::as_str) {
            Some("histogram") => problems.push(format!(
                "dashboard queries histogram {name} without _bucket/_sum/_count (in {places:?})"
            )),
            _ => problems.push(format!(
                "dashboard queries {name}, which /metrics does not expose (in {places:?})"
            )),
        }
    }
    for name in &readme {
        if exposed.family_of(name).is_none() {
            problems.push(format!(
                "README.md names {name}, which /metrics does not expose (if it is not a metric, \
                 add it to README_NOT_METRICS in tests/deploy.rs)"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nexposed families: {:?}",
        problems.join("\n"),
        exposed.families.keys().collect::<Vec<_>>()
    );
}

// =========================================================================================
// Check 2: settings

/// A `BYOK_*` / `AI_GATEWAY_API_KEY` variable named in a deploy file, with its literal value
/// when the file gives one.
#[derive(Debug, Clone)]
struct EnvUse {
    name: String,
    value: Option<String>,
}

fn is_setting_var(name: &str) -> bool {
    name == "AI_GATEWAY_API_KEY"
        || (name.starts_with("BYOK_") && name.len() > 5 && !name.ends_with('_'))
}

/// Every `BYOK_*` / `AI_GATEWAY_API_KEY` word in `text`, comments included.
fn mentioned_vars(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            is_setting_var(w)
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// `NAME=value` lines of an env file (compose `.env`, systemd `EnvironmentFile`); commented
/// assignments (`# NAME=value`) document optional variables and count too.
fn env_file(rel: &str) -> Vec<EnvUse> {
    read(rel)
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches('#').trim();
            let (name, value) = line.split_once('=')?;
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            ok.then(|| EnvUse {
                name: name.to_string(),
                value: Some(unquote(value)),
            })
        })
        .collect()
}

/// The value of `${VAR...}` interpolations in compose, as the shipped `.env.example` leaves
/// them: the example's value if it has one, else the `:-default`, else a plausible value.
fn resolve_compose(value: &str, dotenv: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("unclosed ${") + start;
        let inner = &rest[start + 2..end];
        let name_end = inner.find([':', '-', '?']).unwrap_or(inner.len());
        let (name, op) = inner.split_at(name_end);
        let from_file = dotenv
            .get(name)
            .filter(|v| !v.is_empty() && !is_placeholder(v));
        let resolved = match (
            from_file,
            op.strip_prefix(":-").or_else(|| op.strip_prefix('-')),
        ) {
            (Some(v), _) => v.clone(),
            (None, Some(default)) => default.to_string(),
            (None, None) => plausible(name),
        };
        out.push_str(&resolved);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn is_placeholder(v: &str) -> bool {
    v.contains('<') || v.contains("REPLACE") || v.contains("...")
}

/// A value a real deployment would give `name` (for secrets and values left to the operator).
fn plausible(name: &str) -> String {
    let key = || MasterKey::generate().to_base64().expose().clone();
    match name {
        "BYOK_MASTER_KEY" => key(),
        "BYOK_CRYPTO__OLD_KEYS" => format!("[\"{}\"]", key()),
        "BYOK_DATABASE__URL" => "postgres://byok:secret@postgres:5432/byok".into(),
        "BYOK_LIMITS__REDIS_URL" => "redis://redis:6379".into(),
        "BYOK_LISTEN" => "0.0.0.0:8080".into(),
        n if n.ends_with("_URL") => "https://llm.example.com".into(),
        n if n.ends_with("TIMEOUT") || n.ends_with("_TTL") || n.ends_with("WINDOW") => "30s".into(),
        n if n.ends_with("__ENABLED") => "true".into(),
        n if n.ends_with("__FORMAT") => "json".into(),
        n if n.ends_with("__LEVEL") => "info".into(),
        n if n.ends_with("__MODE") => "gateway".into(),
        n if n.starts_with("BYOK_") && !SECRET_VARS.contains(&n) && n != "BYOK_ADMIN_TOKEN" => {
            "16".into()
        }
        _ => "a-long-random-secret-0123456789-abcdef".into(),
    }
}

/// The environment a file sets up, ready for the loader: literal values as written (after
/// compose interpolation), plausible ones where the file leaves the value to the operator.
fn loader_env(uses: &[EnvUse]) -> EnvMap {
    let mut env = EnvMap::new();
    for u in uses {
        if CLI_VARS.contains(&u.name.as_str()) || !is_setting_var(&u.name) {
            continue;
        }
        let value = match &u.value {
            Some(v) if !v.is_empty() && !is_placeholder(v) => v.clone(),
            _ => plausible(&u.name),
        };
        env.insert(u.name.clone(), value);
    }
    env
}

fn compose_env() -> (Vec<EnvUse>, BTreeMap<String, String>) {
    let dotenv: BTreeMap<String, String> = env_file("deploy/.env.example")
        .into_iter()
        .map(|u| (u.name, u.value.unwrap_or_default()))
        .collect();
    let compose = yaml("deploy/compose.yaml");
    let env = &compose["services"]["byok-proxy"]["environment"];
    let mut uses = Vec::new();
    if let Some(map) = env.as_mapping() {
        for (k, v) in map {
            uses.push(EnvUse {
                name: ystr(k, "compose environment key").to_string(),
                value: scalar(v).map(|v| resolve_compose(&v, &dotenv)),
            });
        }
    } else if let Some(seq) = env.as_sequence() {
        for item in seq {
            let item = ystr(item, "compose environment entry");
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            uses.push(EnvUse {
                name: k.to_string(),
                value: Some(resolve_compose(v, &dotenv)),
            });
        }
    } else {
        panic!("compose: services.byok-proxy.environment is missing");
    }
    (uses, dotenv)
}

/// `env:` entries of every container in every Kubernetes manifest.
fn k8s_env() -> Vec<EnvUse> {
    fn walk(v: &Yaml, out: &mut Vec<EnvUse>) {
        match v {
            Yaml::Mapping(m) => {
                for (k, child) in m {
                    if k.as_str() == Some("env") {
                        for e in child.as_sequence().expect("env is a list") {
                            out.push(EnvUse {
                                name: ystr(&e["name"], "env name").to_string(),
                                value: scalar(&e["value"]),
                            });
                        }
                    } else {
                        walk(child, out);
                    }
                }
            }
            Yaml::Sequence(s) => s.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for rel in k8s_files() {
        for doc in yaml_docs(&rel) {
            walk(&doc, &mut out);
        }
    }
    out
}

fn k8s_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("deploy/kubernetes/{n}"))
        .collect();
    files.sort();
    files
}

/// Splits a systemd `Environment=` value into assignments (double quotes group).
fn systemd_assignments(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in value.chars().chain([' ']) {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if let Some((k, v)) = cur.split_once('=') {
                    out.push((k.to_string(), v.to_string()));
                }
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    out
}

/// `(key, value)` of every directive in a unit file, in order.
fn unit_directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('[')
        })
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn systemd_env() -> Vec<EnvUse> {
    let mut uses: Vec<EnvUse> = unit_directives(&read("deploy/systemd/byok-proxy.service"))
        .into_iter()
        .filter(|(k, _)| k == "Environment")
        .flat_map(|(_, v)| systemd_assignments(&v))
        .map(|(name, value)| EnvUse {
            name,
            value: Some(value),
        })
        .collect();
    uses.extend(env_file("deploy/systemd/byok-proxy.env.example"));
    uses
}

// --- Dockerfile

#[derive(Debug)]
struct Instruction {
    op: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    name: Option<String>,
    instructions: Vec<Instruction>,
}

/// Instructions grouped by stage (continuation lines joined, comments dropped).
fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            logical.push(std::mem::take(&mut cur));
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for l in logical {
        let (op, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let op = op.to_ascii_uppercase();
        let args = args.trim().to_string();
        if op == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .and_then(|i| words.get(i + 1))
                .map(|s| s.to_string());
            stages.push(Stage {
                name,
                instructions: Vec::new(),
            });
        }
        stages
            .last_mut()
            .expect("Dockerfile must start with FROM")
            .instructions
            .push(Instruction { op, args });
    }
    stages
}

impl Stage {
    fn all<'a>(&'a self, op: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.op == op)
            .map(|i| i.args.as_str())
    }
}

/// `KEY=VALUE` pairs of `ENV` (and `ARG`) instructions.
fn docker_env(stage: &Stage, op: &str) -> Vec<(String, String)> {
    stage
        .all(op)
        .flat_map(|args| {
            args.split_whitespace()
                .map(|w| {
                    let (k, v) = w.split_once('=').unwrap_or((w, ""));
                    (k.to_string(), unquote(v))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn normalize(cmd: &str) -> String {
    cmd.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The build command in the README: the one `cargo build ...` line of its shell blocks.
fn readme_build_command() -> String {
    let mut in_block = false;
    let mut found = BTreeSet::new();
    for line in read("README.md").lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        let cmd = line.split(" #").next().unwrap_or("").trim();
        if in_block && cmd.starts_with("cargo build") {
            found.insert(normalize(cmd));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "README.md must show exactly one `cargo build` command in a code block, found {found:?}"
    );
    found.into_iter().next().unwrap()
}

fn dockerfile_env() -> Vec<EnvUse> {
    dockerfile_stages(&read("deploy/Dockerfile"))
        .iter()
        .flat_map(|s| docker_env(s, "ENV"))
        .map(|(name, value)| EnvUse {
            name,
            value: Some(value),
        })
        .collect()
}

/// The ConfigMap's config file, written to `dir`.
fn configmap_config(dir: &Path) -> (PathBuf, String, String) {
    let docs = yaml_docs("deploy/kubernetes/configmap.yaml");
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("configmap.yaml holds a ConfigMap");
    let data = cm["data"].as_mapping().expect("ConfigMap data");
    let (key, text) = data
        .iter()
        .find(|(k, _)| k.as_str().is_some_and(|k| k.ends_with(".toml")))
        .expect("ConfigMap has a .toml file");
    let path = dir.join("byok-proxy.toml");
    std::fs::write(&path, ystr(text, "config text")).unwrap();
    (
        path,
        ystr(key, "ConfigMap key").to_string(),
        ystr(&cm["metadata"]["name"], "ConfigMap name").to_string(),
    )
}

fn load(file: Option<&Path>, env: &EnvMap, what: &str) -> Config {
    Config::load(file, env).unwrap_or_else(|e| {
        panic!(
            "{what}: the config loader refuses it: {e}\nenvironment: {:?}",
            env.keys().collect::<Vec<_>>()
        )
    })
}

#[test]
fn every_deploy_variable_is_a_setting_the_loader_reads() {
    let mut sources: Vec<(String, String)> = [
        "deploy/compose.yaml",
        "deploy/.env.example",
        "deploy/systemd/byok-proxy.service",
        "deploy/systemd/byok-proxy.env.example",
        "deploy/Dockerfile",
    ]
    .iter()
    .map(|f| (f.to_string(), read(f)))
    .collect();
    for f in k8s_files() {
        let text = read(&f);
        sources.push((f, text));
    }
    let readme = read("README.md");
    let deploying = readme
        .split("\n## Deploying")
        .nth(1)
        .expect("README.md has a `## Deploying` section");
    let deploying = deploying.split("\n## ").next().unwrap_or(deploying);
    sources.push(("README.md (Deploying)".into(), deploying.to_string()));

    assert!(
        Config::load(None, &EnvMap::new()).is_ok(),
        "defaults must load"
    );
    let help = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let mut problems = Vec::new();
    let mut all = BTreeSet::new();
    for (file, text) in &sources {
        for var in mentioned_vars(text) {
            all.insert(var.clone());
            if CLI_VARS.contains(&var.as_str()) {
                if !help.contains(&format!("env: {var}")) {
                    problems.push(format!("{file}: {var} is not an environment variable of the CLI (byok-proxy --help)"));
                }
                continue;
            }
            // The loader reads a variable if some hostile value makes it fail; one it
            // ignores (a typo, a removed setting) loads fine with anything.
            let read_by_loader = ["[1]", "{}", "not a number", "[{}]", "x:y:z"]
                .iter()
                .any(|bad| {
                    let env = EnvMap::from([(var.clone(), bad.to_string())]);
                    Config::load(None, &env).is_err()
                });
            if !read_by_loader {
                problems.push(format!(
                    "{file}: {var} is not a setting the config loader reads"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for expected in [
        "BYOK_MASTER_KEY",
        "BYOK_ADMIN_TOKEN",
        "AI_GATEWAY_API_KEY",
        "BYOK_DATABASE__URL",
        "BYOK_LISTEN",
    ] {
        assert!(all.contains(expected), "no deploy file sets {expected}");
    }
}

#[test]
fn each_deploy_environment_loads() {
    let shipped = root().join("config/byok-proxy.toml");
    // compose: the image's config file + the service environment, as .env.example leaves it.
    let (uses, dotenv) = compose_env();
    let env = loader_env(&uses);
    let c = load(
        Some(&shipped),
        &env,
        "deploy/compose.yaml (byok-proxy environment)",
    );
    assert!(
        matches!(c.database.url, DatabaseUrl::Postgres(_)),
        "compose runs on PostgreSQL"
    );
    assert!(
        c.limits.redis_url.is_some(),
        "compose shares limits through Redis"
    );
    assert!(c.crypto.master_key.is_some() && c.admin_token.is_some());
    assert!(
        c.crypto.old_keys.is_empty(),
        "no old keys outside a rotation"
    );
    for (name, value) in &dotenv {
        if is_setting_var(name) && !value.is_empty() && !is_placeholder(value) {
            let env = EnvMap::from([(name.clone(), value.clone())]);
            load(None, &env, &format!("deploy/.env.example: {name}"));
        }
    }
    // The rotation value the .env.example documents works once filled in.
    let mut rotating = env.clone();
    rotating.insert(
        "BYOK_CRYPTO__OLD_KEYS".into(),
        plausible("BYOK_CRYPTO__OLD_KEYS"),
    );
    assert_eq!(
        load(None, &rotating, "compose while rotating")
            .crypto
            .old_keys
            .len(),
        1
    );

    // Kubernetes: the ConfigMap's file + the Deployment's environment.
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = configmap_config(dir.path());
    let cm_alone = load(Some(&path), &EnvMap::new(), "the ConfigMap's config file");
    assert_eq!(cm_alone.listen.port(), 8080);
    let c = load(
        Some(&path),
        &loader_env(&k8s_env()),
        "deploy/kubernetes (ConfigMap + Deployment env)",
    );
    assert!(
        matches!(c.database.url, DatabaseUrl::Postgres(_)),
        "Kubernetes runs on PostgreSQL"
    );
    assert!(
        c.crypto.master_key.is_some(),
        "read-only root filesystem needs BYOK_MASTER_KEY"
    );

    // systemd: the shipped config (installed to /etc/byok-proxy) + Environment= + env file.
    let c = load(
        Some(&shipped),
        &loader_env(&systemd_env()),
        "deploy/systemd",
    );
    assert!(
        c.listen.ip().is_loopback(),
        "the systemd unit listens on loopback (TLS in front)"
    );

    // Dockerfile: ENV over the config it copies into the image.
    let c = load(
        Some(&shipped),
        &loader_env(&dockerfile_env()),
        "deploy/Dockerfile ENV",
    );
    assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
}

// =========================================================================================
// Check 3: syntax and consistency

#[test]
fn compose_prometheus_and_grafana_files_agree() {
    let compose = yaml("deploy/compose.yaml");
    let services = compose["services"].as_mapping().expect("compose services");
    for s in ["byok-proxy", "postgres", "redis", "prometheus", "grafana"] {
        assert!(services.contains_key(s), "compose has no `{s}` service");
    }
    let proxy = &compose["services"]["byok-proxy"];
    assert_eq!(
        proxy["deploy"]["replicas"].as_u64(),
        Some(2),
        "two proxy replicas"
    );
    assert_eq!(proxy["build"]["dockerfile"], "deploy/Dockerfile");
    assert!(root()
        .join("deploy")
        .join(ystr(&proxy["build"]["context"], "build context"))
        .join("Cargo.toml")
        .exists());
    let (uses, dotenv) = compose_env();
    let value = |name: &str| -> String {
        uses.iter()
            .find(|u| u.name == name)
            .and_then(|u| u.value.clone())
            .unwrap_or_else(|| panic!("compose sets no {name}"))
    };
    // Secrets are interpolated from .env, never written in compose.yaml.
    let raw_env = &proxy["environment"];
    for secret in ["BYOK_MASTER_KEY", "BYOK_ADMIN_TOKEN", "AI_GATEWAY_API_KEY"] {
        let raw = scalar(&raw_env[secret]).unwrap_or_default();
        assert!(
            raw.starts_with("${"),
            "compose must take {secret} from deploy/.env, not `{raw}`"
        );
    }
    // Every ${VAR} compose interpolates is documented in .env.example.
    let text = read("deploy/compose.yaml");
    for part in text.split("${").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            dotenv.contains_key(&name),
            "compose uses ${{{name}}}, which deploy/.env.example does not document"
        );
    }
    // The proxy reaches the other services by their compose names.
    let host = |url: &str| -> String {
        let after = url.split("://").nth(1).unwrap();
        let after = after.rsplit('@').next().unwrap();
        after.split([':', '/']).next().unwrap().to_string()
    };
    for var in ["BYOK_DATABASE__URL", "BYOK_LIMITS__REDIS_URL"] {
        let h = host(&value(var));
        assert!(
            services.contains_key(h.as_str()),
            "{var} points at `{h}`, not a compose service"
        );
    }
    let listen_port = port_of(&value("BYOK_LISTEN"));
    // Published ports map to the listen port.
    for p in proxy["ports"].as_sequence().expect("byok-proxy ports") {
        let p = ystr(p, "port");
        assert_eq!(
            port_of(p),
            listen_port,
            "port mapping {p} does not reach BYOK_LISTEN"
        );
    }
    assert!(
        proxy["stop_grace_period"].as_str().is_some(),
        "stop_grace_period for the drain"
    );
    // Bind mounts exist.
    for (name, svc) in services {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let v = ystr(v, "volume");
            if let Some(src) = v.strip_prefix("./") {
                let src = src.split(':').next().unwrap();
                assert!(
                    root().join("deploy").join(src).exists(),
                    "{}: bind mount ./{src} does not exist",
                    ystr(name, "service name")
                );
            }
        }
    }
    let mount_target = |svc: &str, src: &str| -> String {
        compose["services"][svc]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| ystr(v, "volume"))
            .find(|v| v.starts_with(&format!("{src}:")))
            .unwrap_or_else(|| panic!("{svc} does not mount {src}"))
            .split(':')
            .nth(1)
            .unwrap()
            .to_string()
    };

    // Prometheus scrapes the proxy service on its listen port.
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let prom_path = mount_target("prometheus", "./prometheus/prometheus.yml");
    let cmd: Vec<String> = compose["services"]["prometheus"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| ystr(c, "command").to_string())
        .collect();
    assert!(
        cmd.contains(&format!("--config.file={prom_path}")),
        "prometheus reads {prom_path}"
    );
    let job = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "byok-proxy")
        .expect("a byok-proxy scrape job");
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    let sd = &job["dns_sd_configs"][0];
    let names: Vec<&str> = sd["names"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| ystr(n, "name"))
        .collect();
    assert_eq!(
        names,
        ["byok-proxy"],
        "Prometheus must discover every replica of the byok-proxy service"
    );
    assert_eq!(sd["type"], "A");
    assert_eq!(sd["port"].as_u64(), Some(u64::from(listen_port)));

    // Grafana: provisioning mounted, data source pointing at the prometheus service, the
    // dashboard file where the provider looks, and the dashboard's default data source.
    assert_eq!(
        mount_target("grafana", "./grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yaml");
    let ds = &ds["datasources"][0];
    assert_eq!(ds["type"], "prometheus");
    let url = ystr(&ds["url"], "datasource url");
    assert_eq!(host(url), "prometheus");
    assert_eq!(port_of(url), 9090);
    let dash_target = mount_target("grafana", "./grafana/byok-proxy.json");
    let provider = yaml("deploy/grafana/provisioning/dashboards/byok-proxy.yaml");
    let dir = ystr(
        &provider["providers"][0]["options"]["path"],
        "provider path",
    );
    assert!(
        dash_target.starts_with(&format!("{}/", dir.trim_end_matches('/'))),
        "dashboard mounted at {dash_target}, provider reads {dir}"
    );
    let dash = dashboard();
    let ds_var = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(
        ds_var["current"]["value"].as_str(),
        ds["uid"].as_str(),
        "dashboard default data source"
    );
}

fn find_kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> &'a Yaml {
    let found: Vec<_> = docs.iter().filter(|(_, d)| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind} in deploy/kubernetes");
    &found[0].1
}

fn labels_match(selector: &Yaml, labels: &Yaml) -> bool {
    selector
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[ystr(k, "label")] == v))
}

#[test]
fn kubernetes_manifests_parse_and_agree() {
    let kust = yaml("deploy/kubernetes/kustomization.yaml");
    let resources: Vec<String> = kust["resources"]
        .as_sequence()
        .expect("kustomization resources")
        .iter()
        .map(|r| ystr(r, "resource").to_string())
        .collect();
    let mut docs: Vec<(String, Yaml)> = Vec::new();
    for f in k8s_files() {
        for d in yaml_docs(&f) {
            if f.ends_with("kustomization.yaml") {
                continue;
            }
            assert!(
                d["apiVersion"].is_string()
                    && d["kind"].is_string()
                    && d["metadata"]["name"].is_string(),
                "{f}: not a Kubernetes object"
            );
            let name = f.rsplit('/').next().unwrap().to_string();
            docs.push((name, d));
        }
    }
    for r in &resources {
        assert!(
            root().join("deploy/kubernetes").join(r).exists(),
            "kustomization lists missing {r}"
        );
    }
    for (f, d) in &docs {
        if d["kind"] == "Secret" {
            assert!(
                !resources.contains(f),
                "{f} holds placeholder secrets: keep it out of the kustomization"
            );
        } else {
            assert!(resources.contains(f), "{f} is not in the kustomization");
        }
    }
    let dep = find_kind(&docs, "Deployment");
    let pod = &dep["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    assert!(labels_match(
        &dep["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let containers = pod["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let env = k8s_env();
    let env_value = |n: &str| {
        env.iter()
            .find(|u| u.name == n)
            .and_then(|u| u.value.clone())
    };

    // The config file: ConfigMap mounted where BYOK_CONFIG points.
    let dir = tempfile::tempdir().unwrap();
    let (cm_path, cm_key, cm_name) = configmap_config(dir.path());
    let config_path = env_value("BYOK_CONFIG").expect("the Deployment sets BYOK_CONFIG");
    let vol = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == cm_name.as_str())
        .expect("a volume from the ConfigMap");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == vol["name"])
        .expect("the ConfigMap volume is mounted");
    assert_eq!(
        config_path,
        format!("{}/{cm_key}", ystr(&mount["mountPath"], "mountPath"))
    );
    let config = load(
        Some(&cm_path),
        &loader_env(&env),
        "ConfigMap + Deployment env",
    );

    // Ports and probes.
    let listen = env_value("BYOK_LISTEN")
        .map(|l| port_of(&l))
        .unwrap_or(config.listen.port());
    let http_port = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    assert_eq!(http_port["containerPort"].as_u64(), Some(u64::from(listen)));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(
            get["port"] == "http" || get["port"].as_u64() == Some(u64::from(listen)),
            "{probe} port"
        );
    }
    // Graceful termination: longer than the preStop pause plus the drain deadline.
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop: u64 = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .map(|cmd| {
            cmd.iter()
                .filter_map(|w| w.as_str()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    assert!(
        grace > pre_stop + config.shutdown_timeout.as_secs(),
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop}s + shutdown_timeout {:?}",
        config.shutdown_timeout
    );
    // Non-root, read-only root filesystem, resources.
    let psc = &pod["spec"]["securityContext"];
    assert_eq!(psc["runAsNonRoot"].as_bool(), Some(true));
    assert!(psc["runAsUser"].as_u64().is_some_and(|u| u != 0));
    let csc = &c["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    for r in ["cpu", "memory"] {
        assert!(
            !c["resources"]["requests"][r].is_null(),
            "resources.requests.{r}"
        );
    }
    // The container's command line is one the CLI accepts.
    let args: Vec<String> = c["args"]
        .as_sequence()
        .map(|a| a.iter().map(|w| ystr(w, "arg").to_string()).collect())
        .unwrap_or_default();
    assert_cli_accepts(&args, "the Deployment's args");

    // Secret references: the example Secret documents every key.
    let secret_text = read("deploy/kubernetes/secret.example.yaml");
    let secret = find_kind(&docs, "Secret");
    let mut refs = 0;
    for e in c["env"].as_sequence().unwrap() {
        let r = &e["valueFrom"]["secretKeyRef"];
        if r.is_null() {
            continue;
        }
        refs += 1;
        assert_eq!(r["name"], secret["metadata"]["name"], "secret name");
        let key = ystr(&r["key"], "secret key");
        if r["optional"].as_bool() == Some(true) {
            assert!(
                secret_text.contains(key),
                "secret.example.yaml does not mention optional key {key}"
            );
        } else {
            assert!(
                !secret["stringData"][key].is_null(),
                "secret.example.yaml has no {key}"
            );
        }
    }
    assert!(
        refs >= 4,
        "master key, admin token, gateway key and database URL come from a Secret"
    );
    for name in SECRET_VARS {
        assert!(
            env.iter().all(|u| u.name != *name || u.value.is_none()),
            "{name} is written in a manifest"
        );
    }

    // Service, PDB, HPA.
    let svc = find_kind(&docs, "Service");
    assert!(labels_match(&svc["spec"]["selector"], pod_labels));
    let tp = &svc["spec"]["ports"][0]["targetPort"];
    assert!(tp == "http" || tp.as_u64() == Some(u64::from(listen)));
    let pdb = find_kind(&docs, "PodDisruptionBudget");
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let hpa = find_kind(&docs, "HorizontalPodAutoscaler");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        dep["metadata"]["name"]
    );
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    let min = hpa["spec"]["minReplicas"].as_u64().unwrap();
    let pdb_min = pdb["spec"]["minAvailable"].as_u64().unwrap();
    assert!(
        pdb_min < min,
        "PDB minAvailable {pdb_min} must leave room to evict one of {min} pods"
    );
    // The image kustomize replaces is the container's.
    let image = ystr(&c["image"], "image");
    assert!(
        kust["images"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|i| i["name"] == image),
        "kustomization images does not set {image}"
    );
}

/// The CLI parses `args` (with `--help` appended, so nothing runs).
fn assert_cli_accepts(args: &[String], what: &str) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: byok-proxy {args:?} is not a valid command line: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = read("deploy/systemd/byok-proxy.service");
    let d = unit_directives(&unit);
    let get = |k: &str| {
        d.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let one = |k: &str| {
        get(k)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("the unit sets no {k}="))
    };
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(
        get("DynamicUser") == ["yes"] || !get("User").is_empty(),
        "DynamicUser=yes or a dedicated User="
    );
    let env_file = one("EnvironmentFile");
    assert!(
        !env_file.starts_with('-'),
        "the secrets file must be required"
    );
    let state = one("StateDirectory");
    assert_eq!(
        one("WorkingDirectory"),
        format!("/var/lib/{state}"),
        "./data must land in the state directory"
    );
    let shipped = load(
        Some(&root().join("config/byok-proxy.toml")),
        &loader_env(&systemd_env()),
        "systemd",
    );
    let stop = byok_proxy::config::duration(&format!("{}s", one("TimeoutStopSec"))).unwrap();
    assert!(
        stop > shipped.shutdown_timeout,
        "TimeoutStopSec must exceed shutdown_timeout"
    );

    // ExecStart is a command line the CLI accepts (config path mapped to the shipped file).
    let exec = one("ExecStart");
    let mut words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert!(
        words[0].ends_with("/byok-proxy"),
        "ExecStart runs byok-proxy: {exec}"
    );
    assert!(
        words.contains(&"serve".to_string()),
        "ExecStart runs serve: {exec}"
    );
    if let Some(i) = words.iter().position(|w| w == "--config") {
        words[i + 1] = root().join("config/byok-proxy.toml").display().to_string();
    }
    assert_cli_accepts(&words[1..], "the unit's ExecStart");

    // systemd-analyze verify, on a copy whose ExecStart is the binary under test.
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is not installed: run `cargo xtask test` (from the repository root), \
         which installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("byok-proxy.service");
    let program = exec.split_whitespace().next().unwrap();
    let rewritten: String = unit
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("ExecStart=") {
                l.replacen(program, BIN, 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&copy, rewritten + "\n").unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about other units of this machine are not ours to fix.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("byok-proxy"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify rejects deploy/systemd/byok-proxy.service:\n{stderr}"
    );
}

// =========================================================================================
// Check 4: Dockerfile

#[test]
fn dockerfile_builds_like_the_readme_and_runs_as_non_root() {
    let stages = dockerfile_stages(&read("deploy/Dockerfile"));
    assert!(stages.len() >= 2, "a multi-stage build");
    let runtime = stages.last().unwrap();
    let bin_name = Path::new(BIN)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();

    // The runtime stage copies the binary from the build stage, which runs the README's
    // build command.
    let (from, src, dest) = runtime
        .all("COPY")
        .find_map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            let from = words.iter().find_map(|w| w.strip_prefix("--from="))?;
            let src = words.iter().rev().nth(1)?;
            Some((from.to_string(), src.to_string(), words.last()?.to_string()))
        })
        .expect("the runtime stage copies the binary from the build stage");
    assert!(
        src.ends_with(&format!("target/release/{bin_name}")),
        "copies {src}"
    );
    let build = stages
        .iter()
        .find(|s| s.name.as_deref() == Some(from.as_str()))
        .unwrap_or_else(|| panic!("no stage named {from}"));
    let want = readme_build_command();
    let runs: Vec<String> = build
        .all("RUN")
        .flat_map(|r| {
            r.split("&&")
                .flat_map(|p| p.split(';'))
                .map(normalize)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        runs.contains(&want),
        "the build stage must run the README's `{want}`; it runs {runs:?}"
    );

    // Non-root USER, entrypoint and command, health check.
    let user = runtime
        .all("USER")
        .last()
        .expect("the runtime stage sets USER");
    let user = user.split(':').next().unwrap();
    assert!(
        user != "root" && user != "0",
        "the runtime stage runs as root ({user})"
    );
    let entry: Vec<String> =
        serde_json::from_str(runtime.all("ENTRYPOINT").last().expect("ENTRYPOINT"))
            .expect("ENTRYPOINT in exec form");
    assert_eq!(entry, std::slice::from_ref(&bin_name));
    assert!(
        dest.starts_with("/usr/local/bin") || dest.starts_with("/usr/bin"),
        "the binary must be on PATH: {dest}"
    );
    let cmd: Vec<String> =
        serde_json::from_str(runtime.all("CMD").last().expect("CMD")).expect("CMD in exec form");
    assert_eq!(cmd, ["serve"]);
    assert_cli_accepts(&cmd, "the image's CMD");
    let env: BTreeMap<String, String> = docker_env(runtime, "ENV").into_iter().collect();
    let listen = port_of(env.get("BYOK_LISTEN").expect("the image sets BYOK_LISTEN"));
    let health = runtime.all("HEALTHCHECK").last().expect("a HEALTHCHECK");
    assert!(
        health.contains(&format!(":{listen}/healthz")),
        "HEALTHCHECK must call /healthz on port {listen}: {health}"
    );
    let tool = health
        .split("CMD")
        .nth(1)
        .unwrap()
        .trim()
        .trim_start_matches(['[', '"']);
    let tool = tool.split(['"', ' ']).next().unwrap();
    let installed = runtime
        .all("RUN")
        .any(|r| r.contains("apt-get install") && r.split_whitespace().any(|w| w == tool));
    assert!(
        installed || tool == bin_name,
        "HEALTHCHECK uses {tool}, which the runtime stage does not install"
    );
    assert!(
        runtime.all("EXPOSE").any(|e| e
            .split_whitespace()
            .any(|p| p.starts_with(&listen.to_string()))),
        "EXPOSE {listen}"
    );
    // BYOK_CONFIG names the config file the image carries.
    if let Some(path) = env.get("BYOK_CONFIG") {
        assert!(
            runtime.all("COPY").any(|c| c.ends_with(path.as_str())),
            "BYOK_CONFIG={path} is not copied into the image"
        );
    }
    // No secret baked in.
    for stage in &stages {
        for (k, v) in docker_env(stage, "ENV")
            .into_iter()
            .chain(docker_env(stage, "ARG"))
        {
            assert!(
                !SECRET_VARS.contains(&k.as_str()),
                "the Dockerfile sets secret {k}={v}"
            );
        }
    }
    // The build context keeps what the build needs.
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "migrations",
        "ui",
        "benches",
        "xtask",
        "config",
    ] {
        for p in &patterns {
            let p = p.trim_start_matches('/').trim_end_matches('/');
            assert!(
                p != needed && p != "*" && p != "**",
                ".dockerignore excludes {needed} ({p}), which the build needs"
            );
        }
    }
}
