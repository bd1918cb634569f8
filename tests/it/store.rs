//! Store-level tests on both backends: migrations (twice, concurrently), AAD binding of
//! ciphertexts to their row, and key rotation.

use crate::both_backends;
use crate::common::{Backend, TestDb};
use byok_proxy::keys::{
    self,
    crypto::{MasterKey, Vault},
};
use byok_proxy::store::{AuditEntry, Store};
use serde_json::json;

fn audit(action: &'static str) -> AuditEntry {
    AuditEntry {
        actor_user_id: None,
        action,
        target: None,
        detail: json!({}),
        request_id: None,
        remote_addr: None,
    }
}

async fn migrations_are_idempotent_and_concurrent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let a = Store::connect(&db.url, 2).await.unwrap();
    let b = Store::connect(&db.url, 2).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // Each migration was applied exactly once, by one of the two.
    let mut all: Vec<i64> = ra.iter().chain(rb.iter()).copied().collect();
    all.sort_unstable();
    let want: Vec<i64> = match backend {
        Backend::Sqlite => byok_proxy::store::SQLITE_MIGRATIONS,
        Backend::Postgres => byok_proxy::store::POSTGRES_MIGRATIONS,
    }
    .iter()
    .map(|(v, _)| *v)
    .collect();
    assert_eq!(all, want, "{ra:?} {rb:?}");
    assert!(a.migrate().await.unwrap().is_empty());
    a.create_user("x", None, audit("user.created"))
        .await
        .unwrap();
    assert_eq!(b.list_users().await.unwrap().len(), 1);
}
both_backends!(migrations_are_idempotent_and_concurrent);

async fn copied_ciphertext_fails_to_open(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let master = MasterKey::generate();
    let vault = Vault::new(master.clone(), vec![]);
    let alice = store
        .create_user("alice", None, audit("user.created"))
        .await
        .unwrap();
    let bob = store
        .create_user("bob", None, audit("user.created"))
        .await
        .unwrap();
    let secret = "sk-alice-secret-value-9999";
    let a = keys::add_key(
        &store,
        &vault,
        alice.id,
        "openai",
        &json!({"apiKey": secret}),
        None,
        audit("key.created"),
    )
    .await
    .unwrap();
    let b = keys::add_key(
        &store,
        &vault,
        bob.id,
        "openai",
        &json!({"apiKey": "sk-bob-000000000000"}),
        None,
        audit("key.created"),
    )
    .await
    .unwrap();
    let a2 = keys::add_key(
        &store,
        &vault,
        alice.id,
        "anthropic",
        &json!({"apiKey": "sk-ant-alice-0000000"}),
        None,
        audit("key.created"),
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(keys::open(&vault, &a).unwrap().expose()).contains(secret));

    // Alice's ciphertext copied onto Bob's row, and onto her own row of another provider.
    for target in [&b, &a2] {
        let mut forged = store
            .get_key(target.user_id, target.id)
            .await
            .unwrap()
            .unwrap();
        forged.sealed = a.sealed.clone();
        let err = keys::open(&vault, &forged).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains(secret), "{text}");
    }
    // Written into the database for real, `key rotate` refuses it and reports the row.
    store
        .delete_key(bob.id, b.id, audit("key.deleted"))
        .await
        .unwrap();
    let forged = byok_proxy::store::ProviderKey {
        id: b.id,
        user_id: bob.id,
        provider: "openai".into(),
        sealed: a.sealed.clone(),
        ..b.clone()
    };
    store
        .insert_key(forged, audit("key.created"))
        .await
        .unwrap();
    let new_vault = Vault::new(MasterKey::generate(), vec![master]);
    let report = keys::rotate(&store, &new_vault, 1).await.unwrap();
    assert_eq!(report.failed, vec![b.id]);
    assert_eq!(report.rotated, 2);
}
both_backends!(copied_ciphertext_fails_to_open);

async fn rotation_then_only_the_new_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let v_old = Vault::new(old.clone(), vec![]);
    let user = store
        .create_user("alice", None, audit("user.created"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..25 {
        let k = keys::add_key(
            &store,
            &v_old,
            user.id,
            "openai",
            &json!({"apiKey": format!("sk-rotate-{i:03}-zzzzzzzz")}),
            None,
            audit("key.created"),
        )
        .await
        .unwrap();
        ids.push(k.id);
    }
    // A rotation interrupted after one batch, then resumed.
    let v_rot = Vault::new(new.clone(), vec![old.clone()]);
    let first = store
        .keys_to_rotate(v_rot.current_version(), 10)
        .await
        .unwrap();
    let reseals = first
        .iter()
        .map(|k| {
            let plain = keys::open(&v_rot, k).unwrap();
            let aad = keys::crypto::aad(k.user_id, &k.provider, k.id);
            byok_proxy::store::Reseal {
                id: k.id,
                old_version: k.sealed.key_version,
                sealed: v_rot.seal(plain.expose(), &aad).unwrap(),
            }
        })
        .collect();
    assert_eq!(store.reseal_keys(reseals).await.unwrap(), 10);
    let report = keys::rotate(&store, &v_rot, 7).await.unwrap();
    assert_eq!(report.rotated, 15);
    assert!(report.failed.is_empty());
    assert_eq!(keys::rotate(&store, &v_rot, 7).await.unwrap().rotated, 0);

    // Only the new key from now on: every credential opens.
    let v_new = Vault::new(new, vec![]);
    let all = store.list_keys(user.id).await.unwrap();
    assert_eq!(all.len(), 25);
    for k in &all {
        assert_eq!(k.sealed.key_version, v_new.current_version());
        let plain = keys::open(&v_new, k).unwrap();
        assert!(String::from_utf8_lossy(plain.expose()).contains("sk-rotate-"));
    }
    // And the old key alone no longer opens anything.
    assert!(all.iter().all(|k| keys::open(&v_old, k).is_err()));
}
both_backends!(rotation_then_only_the_new_key);
