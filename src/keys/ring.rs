//! `KeyRing`: the decrypted-credential cache. Per user, the active credentials by provider,
//! newest first, filled on first use and dropped on every change to that user's keys, tokens
//! or account. A hit costs no database round-trip. Decrypted secrets live only here (and in the
//! upstream request being built); they are zeroized when an entry is evicted.

use super::crypto::Vault;
use crate::secret::Secret;
use crate::store::Store;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

/// One decrypted credential.
pub struct Credential {
    pub key_id: Uuid,
    pub provider: String,
    /// The credential JSON exactly as sealed, ready to splice into a BYOK object.
    pub json: Secret<String>,
    /// `apiKey`, for providers that take one (direct mode sends it as a header).
    pub api_key: Option<Secret<String>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Builds the cached form from an opened credential; `None` if it is not valid JSON.
    pub fn from_plaintext(
        row: &crate::store::ProviderKey,
        plain: Secret<Vec<u8>>,
    ) -> Option<Credential> {
        /// Only the field direct mode needs; the value is zeroized with the struct.
        #[derive(serde::Deserialize)]
        struct ApiKey {
            #[serde(rename = "apiKey")]
            api_key: Option<Secret<String>>,
        }
        let text = std::str::from_utf8(plain.expose()).ok()?;
        let ApiKey { api_key } = serde_json::from_str(text).ok()?;
        Some(Credential {
            key_id: row.id,
            provider: row.provider.clone(),
            json: Secret::new(text.to_string()),
            api_key,
        })
    }
}

/// A user's active credentials by provider, newest first.
#[derive(Debug, Default)]
pub struct UserCredentials {
    by_provider: HashMap<String, Vec<Arc<Credential>>>,
}

impl UserCredentials {
    pub fn for_provider(&self, provider: &str) -> &[Arc<Credential>] {
        self.by_provider.get(provider).map_or(&[], Vec::as_slice)
    }

    pub fn has(&self, provider: &str) -> bool {
        self.by_provider.contains_key(provider)
    }

    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.by_provider.keys().map(String::as_str)
    }
}

/// Cache outcome of a lookup, for the `byok_credential_cache_total{result}` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
}

impl CacheResult {
    pub fn label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
        }
    }
}

pub struct KeyRing {
    store: Store,
    vault: Vault,
    users: DashMap<Uuid, Arc<UserCredentials>>,
    /// Bumped by every invalidation, so a fill that raced with one is not cached.
    epoch: AtomicU64,
}

impl KeyRing {
    pub fn new(store: Store, vault: Vault) -> KeyRing {
        KeyRing {
            store,
            vault,
            users: DashMap::new(),
            epoch: AtomicU64::new(0),
        }
    }

    /// The user's active credentials; from memory on a hit.
    ///
    /// # Errors
    /// On a miss, the store failed.
    pub async fn get(
        &self,
        user_id: Uuid,
    ) -> Result<(Arc<UserCredentials>, CacheResult), crate::store::Error> {
        if let Some(c) = self.users.get(&user_id) {
            return Ok((c.clone(), CacheResult::Hit));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let rows = self.store.list_keys(user_id).await?;
        let mut by_provider: HashMap<String, Vec<Arc<Credential>>> = HashMap::new();
        for row in rows.iter().filter(|k| k.is_active) {
            // A credential that does not open (copied ciphertext, missing old key) is left out
            // and logged: the user's other keys keep working.
            let cred = super::open(&self.vault, row)
                .ok()
                .and_then(|plain| Credential::from_plaintext(row, plain));
            match cred {
                Some(cred) => by_provider
                    .entry(row.provider.clone())
                    .or_default()
                    .push(Arc::new(cred)),
                None => tracing::error!(
                    key_id = %row.id,
                    provider = %row.provider,
                    "stored credential does not open with any configured master key; skipping it"
                ),
            }
        }
        let creds = Arc::new(UserCredentials { by_provider });
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.users.insert(user_id, creds.clone());
        }
        Ok((creds, CacheResult::Miss))
    }

    /// Drops the user's cached credentials (after any change to their keys or account).
    pub fn invalidate(&self, user_id: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.users.remove(&user_id);
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.users.clear();
    }

    /// Whether the user's credentials are in memory.
    pub fn is_cached(&self, user_id: Uuid) -> bool {
        self.users.contains_key(&user_id)
    }

    /// Number of users cached (for tests and metrics).
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}
