//! `AppState`: everything a request may need, built once at start and shared by every
//! connection. It imports no handler, so handlers and the spine (`app.rs`) sit above it.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::keys::crypto::{MasterKey, Vault};
use crate::keys::ring::KeyRing;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::request::BodyLimits;
use crate::store::Store;
use crate::upstream::catalog::Catalog;
use crate::upstream::Upstream;
use crate::usage::Recorder;
use std::sync::Arc;

pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub vault: Vault,
    /// Token hash -> caller (cached), web sessions, the admin token, failed-auth accounting.
    pub auth: Authenticator,
    /// Web sign-in, when `auth.oidc` is configured.
    pub oidc: Option<crate::auth::oidc::Oidc>,
    /// User -> decrypted active credentials, cached.
    pub keyring: KeyRing,
    /// The pooled upstream client.
    pub upstream: Upstream,
    /// The gateway's URIs and the operator's key header, built once.
    pub gateway: crate::upstream::gateway::Endpoint,
    /// The cached upstream model catalog.
    pub catalog: Catalog,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Usage records to the batch writer.
    pub usage: Recorder,
    /// Per-provider health from upstream outcomes.
    pub health: crate::health::Health,
    /// Every live response body, swept for clients that stopped reading.
    pub responses: Arc<crate::watchdog::Responses>,
}

/// Builds the vault from the configured keys, or from the development key file (created on
/// first use with a loud warning).
///
/// # Errors
/// The key file cannot be created or read.
pub fn vault_from_config(config: &Config) -> Result<Vault, crate::keys::crypto::Error> {
    let current = match &config.crypto.master_key {
        Some(k) => k.clone(),
        None => {
            let (key, created) = MasterKey::load_or_create_file(&config.crypto.master_key_file)?;
            tracing::warn!(
                file = %config.crypto.master_key_file.display(),
                created,
                "NO MASTER KEY CONFIGURED: using a development key file. Production must set \
                 BYOK_MASTER_KEY (base64 of 32 random bytes, e.g. `openssl rand -base64 32`); \
                 anyone who can read this file can decrypt every stored provider key"
            );
            key
        }
    };
    Ok(Vault::new(current, config.crypto.old_keys.clone()))
}

impl AppState {
    /// Connects the store, applies migrations, opens the vault and starts the background
    /// tasks (usage writer, failed-auth writer, cross-replica invalidation, Redis watcher).
    ///
    /// # Errors
    /// The database is unreachable or a migration fails, or the master key cannot be loaded.
    pub async fn build(config: Config) -> anyhow::Result<Arc<AppState>> {
        let vault = vault_from_config(&config)?;
        let store = Store::connect(&config.database.url, config.database.pool_size).await?;
        let applied = store.migrate().await?;
        if !applied.is_empty() {
            tracing::info!(?applied, backend = store.backend(), "applied migrations");
        }
        let upstream = Upstream::new(&config.upstream);
        let catalog = Catalog::new(&config.upstream.gateway_base_url, config.models.catalog_ttl);
        let metrics = Arc::new(Metrics::new()?);
        let limits = Limits::new(&config.limits)?;
        let usage = Recorder::spawn(store.clone(), metrics.clone(), 65_536);
        let auth = Authenticator::new(store.clone(), &config, metrics.clone());
        let oidc = match &config.auth.oidc {
            Some(o) => Some(crate::auth::oidc::Oidc::new(
                o.clone(),
                &config.public_base_url,
                vault.clone(),
            )?),
            None => None,
        };
        let gateway = crate::upstream::gateway::Endpoint::new(
            &config.upstream.gateway_base_url,
            config.upstream.gateway_api_key.as_ref(),
        );
        let listen_url = store.listen_url();
        let app = Arc::new(AppState {
            responses: crate::watchdog::Responses::start(config.server.idle_timeout),
            health: crate::health::Health::new(config.health.clone()),
            metrics,
            limits,
            usage,
            keyring: KeyRing::new(store.clone(), vault.clone()),
            config: Arc::new(config),
            store,
            vault,
            auth,
            oidc,
            gateway,
            upstream,
            catalog,
        });
        if let Some(url) = listen_url {
            tokio::spawn(crate::store::notify::listen(url, Arc::downgrade(&app)));
        }
        if let Store::Sqlite(sqlite) = &app.store {
            tokio::spawn(crate::store::notify::watch_sqlite(
                sqlite.clone(),
                Arc::downgrade(&app),
            ));
        }
        Ok(app)
    }

    /// The limits a request body is read under: `max_bytes` (at most `limits.max_body_bytes`),
    /// `server.body_read_timeout` and the global buffered-bytes budget.
    pub fn body_limits(&self, max_bytes: usize) -> BodyLimits<'_> {
        BodyLimits {
            max_bytes: max_bytes.min(self.config.limits.max_body_bytes),
            timeout: self.config.server.body_read_timeout,
            budget: &self.limits.budget,
        }
    }

    /// Drops everything cached about `user_id` (tokens, sessions and credentials) after a
    /// change.
    pub fn invalidate_user(&self, user_id: uuid::Uuid) {
        self.auth.tokens.invalidate_user(user_id);
        self.auth.sessions.invalidate_user(user_id);
        self.keyring.invalidate(user_id);
    }
}

impl crate::store::notify::Invalidate for AppState {
    fn invalidate_user(&self, user_id: uuid::Uuid) {
        AppState::invalidate_user(self, user_id);
    }

    fn invalidate_all(&self) {
        self.auth.tokens.clear();
        self.auth.sessions.clear();
        self.keyring.clear();
    }
}
