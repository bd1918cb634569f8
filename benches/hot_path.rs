//! Criterion benches for the functions on every proxied request: token hashing (auth),
//! credential open (cache fill), credential seal (key writes).
//!
//! Run: `cargo bench --bench hot_path`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use byok_proxy::accounts::hash_token;
use byok_proxy::keys::crypto::{aad, MasterKey, Vault};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use uuid::Uuid;

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

criterion_group!(benches, crypto);
criterion_main!(benches);
