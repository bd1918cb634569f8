//! Criterion benches for the work on every proxied request: the request rewrite (BYOK splice)
//! at 1 KB, 100 KB and 1 MB, token + credential lookup on a warm cache, and the crypto used
//! when the cache fills.
//!
//! Run: `cargo bench --bench hot_path`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use byok_proxy::accounts::hash_token;
use byok_proxy::keys::crypto::{aad, MasterKey, Vault};
use byok_proxy::proxy::rewrite::{parse, Edits, GatewayEdits, ListEdit};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uuid::Uuid;

/// A chat request of about `size` bytes: many messages, tools and provider options.
fn chat_body(size: usize) -> Vec<u8> {
    let mut messages = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let m = format!(
            r#"{{"role":"{}","content":"message {i}: the quick brown fox jumps over the lazy dog, \"quoted\" and \u00e9scaped"}}"#,
            if i % 2 == 0 { "user" } else { "assistant" }
        );
        len += m.len() + 1;
        messages.push(m);
        i += 1;
    }
    format!(
        r#"{{"model":"openai/gpt-4o","messages":[{}],"temperature":0.2,"stream":true,"tools":[{{"type":"function","function":{{"name":"lookup","parameters":{{"type":"object"}}}}}}],"providerOptions":{{"openai":{{"store":false}},"gateway":{{"order":["openai"]}}}}}}"#,
        messages.join(",")
    )
    .into_bytes()
}

fn rewrite(c: &mut Criterion) {
    let byok = r#"{"openai":[{"apiKey":"sk-proj-0123456789abcdefghijklmnopqrstuvwxyz"}]}"#;
    let only = vec!["openai".to_string()];
    let mut g = c.benchmark_group("rewrite");
    for (name, size) in [("1KB", 1024), ("100KB", 100 * 1024), ("1MB", 1024 * 1024)] {
        let body = chat_body(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                let p = parse(black_box(body)).unwrap();
                p.rewrite(&Edits {
                    gateway: Some(GatewayEdits {
                        byok: Some(byok),
                        only: ListEdit::Set(&only),
                        ..GatewayEdits::default()
                    }),
                    include_usage: true,
                    ..Edits::default()
                })
            })
        });
    }
    g.finish();
}

fn crypto(c: &mut Criterion) {
    let vault = Vault::new(MasterKey::generate(), vec![]);
    let (u, k) = (Uuid::new_v4(), Uuid::new_v4());
    let a = aad(u, "openai", k);
    let cred = br#"{"apiKey":"sk-proj-0123456789abcdefghijklmnopqrstuvwxyz0123456789"}"#;
    let sealed = vault.seal(cred, &a).unwrap();
    c.bench_function("credential_seal", |b| {
        b.iter(|| vault.seal(black_box(cred), &a).unwrap())
    });
    c.bench_function("credential_open", |b| {
        b.iter(|| vault.open(black_box(&sealed), &a).unwrap())
    });
    let token = format!("bkp_{}", "a".repeat(43));
    c.bench_function("token_hash", |b| b.iter(|| hash_token(black_box(&token))));
}

/// Token + credential lookup with both caches warm: what auth and BYOK cost per request.
fn warm_lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (app, token) = rt.block_on(async {
        let mut env = byok_proxy::config::EnvMap::new();
        env.insert(
            "BYOK_DATABASE__URL".into(),
            format!("sqlite://{}", dir.path().join("b.db").display()),
        );
        env.insert(
            "BYOK_MASTER_KEY".into(),
            MasterKey::generate().to_base64().expose().clone(),
        );
        let config = byok_proxy::config::Config::load(None, &env).unwrap();
        let app = byok_proxy::state::AppState::build(config).await.unwrap();
        let audit = || byok_proxy::store::AuditEntry {
            actor_user_id: None,
            action: "bench",
            target: None,
            detail: serde_json::json!({}),
            request_id: None,
            remote_addr: None,
        };
        let user = app.store.create_user("bench", None, audit()).await.unwrap();
        let minted = byok_proxy::accounts::create_token(
            &app.store,
            &user,
            None,
            None,
            Default::default(),
            audit(),
        )
        .await
        .unwrap();
        byok_proxy::keys::add_key(
            &app.store,
            &app.vault,
            user.id,
            "openai",
            &serde_json::json!({"apiKey": "sk-bench-0123456789abcdef"}),
            None,
            audit(),
        )
        .await
        .unwrap();
        (app, minted.token)
    });
    c.bench_function("token_and_credentials_warm", |b| {
        b.to_async(&rt).iter(|| async {
            let auth = app
                .auth
                .tokens
                .authenticate(&app.store, &token)
                .await
                .unwrap();
            let byok_proxy::auth::AuthResult::Valid(caller) = auth else {
                panic!("token invalid")
            };
            let (creds, _) = app.keyring.get(caller.user_id).await.unwrap();
            black_box(creds.for_provider("openai").len())
        })
    });
}

criterion_group!(benches, rewrite, warm_lookup, crypto);
criterion_main!(benches);
