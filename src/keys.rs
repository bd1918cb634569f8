//! Provider keys: adding, listing (masked), changing and deleting a user's credentials, and
//! `key rotate`. Credentials are validated against their provider's shape
//! ([`providers`]), sealed with [`crypto`] and stored; only the masked hint ever leaves.

pub mod crypto;
pub mod providers;
pub mod ring;

use crate::secret::Secret;
use crate::store::{AuditEntry, KeyPatch, ProviderKey, Reseal, Store};
use chrono::{DateTime, Utc};
use crypto::Vault;
use serde::Serialize;
use uuid::Uuid;

/// How a key is shown to its owner: everything but the secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub id: Uuid,
    pub provider: String,
    pub label: Option<String>,
    pub is_active: bool,
    pub masked_hint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// `active`, `inactive`, or `failing` (active, but the gateway passed it over for the
    /// operator's credentials; see `last_error`).
    pub status: &'static str,
    pub last_error: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
}

impl From<&ProviderKey> for KeyView {
    fn from(k: &ProviderKey) -> Self {
        KeyView {
            id: k.id,
            provider: k.provider.clone(),
            label: k.label.clone(),
            is_active: k.is_active,
            masked_hint: k.masked_hint.clone(),
            created_at: k.created_at,
            updated_at: k.updated_at,
            last_used_at: k.last_used_at,
            status: match (k.is_active, k.failing_since.is_some()) {
                (false, _) => "inactive",
                (true, true) => "failing",
                (true, false) => "active",
            },
            last_error: k.last_error.clone().filter(|_| k.is_active),
            failing_since: k.failing_since.filter(|_| k.is_active),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] providers::Invalid),
    #[error(transparent)]
    Crypto(#[from] crypto::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Validates, seals and stores a new credential for `user_id`.
///
/// # Errors
/// Invalid credentials (nothing is written), or a store failure (the transaction rolls back).
pub async fn add_key(
    store: &Store,
    vault: &Vault,
    user_id: Uuid,
    provider: &str,
    credentials: &serde_json::Value,
    label: Option<String>,
    audit: AuditEntry,
) -> Result<ProviderKey, Error> {
    let valid = providers::validate(provider, credentials)?;
    let id = Uuid::new_v4();
    let sealed = vault.seal(valid.json.expose(), &crypto::aad(user_id, provider, id))?;
    let now = crate::store::now();
    let key = ProviderKey {
        id,
        user_id,
        provider: provider.to_string(),
        sealed,
        label,
        is_active: true,
        masked_hint: valid.masked_hint,
        created_at: now,
        updated_at: now,
        last_error: None,
        failing_since: None,
        last_used_at: None,
    };
    let audit = AuditEntry {
        target: Some(format!("key:{id}")),
        detail: serde_json::json!({ "provider": provider }),
        ..audit
    };
    store.insert_key(key.clone(), audit).await?;
    Ok(key)
}

/// Opens a stored credential (the plaintext JSON), for the credential cache and key tests.
///
/// # Errors
/// The ciphertext does not belong to this row, or its key version is unknown.
pub fn open(vault: &Vault, key: &ProviderKey) -> Result<Secret<Vec<u8>>, crypto::Error> {
    vault.open(
        &key.sealed,
        &crypto::aad(key.user_id, &key.provider, key.id),
    )
}

/// Changes a key's label or active flag.
///
/// # Errors
/// Store failure.
pub async fn update_key(
    store: &Store,
    user_id: Uuid,
    id: Uuid,
    patch: KeyPatch,
    audit: AuditEntry,
) -> Result<Option<ProviderKey>, Error> {
    let audit = AuditEntry {
        target: Some(format!("key:{id}")),
        detail: serde_json::json!({
            "is_active": patch.is_active,
            "label_changed": patch.label.is_some(),
        }),
        ..audit
    };
    Ok(store.update_key(user_id, id, patch, audit).await?)
}

/// Outcome of `key rotate`.
#[derive(Debug, Default, Serialize)]
pub struct RotateReport {
    /// Rows re-sealed under the current key.
    pub rotated: u64,
    /// Rows that could not be opened with any configured key (left as they are).
    pub failed: Vec<Uuid>,
}

/// Re-seals every credential not yet under the current master key, `batch` rows per
/// transaction. Safe to interrupt and run again: each batch commits on its own and rows
/// already under the current key are skipped.
///
/// # Errors
/// Store failure; batches committed before it stay committed.
pub async fn rotate(store: &Store, vault: &Vault, batch: u32) -> Result<RotateReport, Error> {
    let mut report = RotateReport::default();
    let current = vault.current_version();
    loop {
        let rows = store
            .keys_to_rotate(current, batch + report.failed.len() as u32)
            .await?;
        let todo: Vec<&ProviderKey> = rows
            .iter()
            .filter(|k| !report.failed.contains(&k.id))
            .collect();
        if todo.is_empty() {
            break;
        }
        let mut reseals = Vec::with_capacity(todo.len());
        for key in todo {
            let aad = crypto::aad(key.user_id, &key.provider, key.id);
            match vault.open(&key.sealed, &aad) {
                Ok(plain) => reseals.push(Reseal {
                    id: key.id,
                    old_version: key.sealed.key_version,
                    sealed: vault.seal(plain.expose(), &aad)?,
                }),
                Err(e) => {
                    tracing::error!(key_id = %key.id, error = %e, "cannot open credential; leaving it as it is");
                    report.failed.push(key.id);
                }
            }
        }
        if !reseals.is_empty() {
            report.rotated += store.reseal_keys(reseals).await?;
        }
    }
    Ok(report)
}
