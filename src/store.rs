//! Store: the one persistence interface, an enum over the two real backends —
//! [`sqlite`] (embedded default, rusqlite on blocking threads) and [`postgres`]
//! (tokio-postgres + deadpool). Every mutation that is audited writes its audit row in the same
//! transaction, so a failed request leaves neither the change nor a misleading audit event.
//!
//! The types here are plain data; sealing and opening credentials happens in `keys`.

pub mod notify;
pub mod postgres;
pub mod sqlite;

use crate::auth::scopes::Scopes;
use crate::config::DatabaseUrl;
use crate::keys::crypto::Sealed;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The migrations, in order, as `(version, sql)` for each backend.
pub const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_usage_cost.sql")),
    (3, include_str!("../migrations/sqlite/0003_key_status.sql")),
    (4, include_str!("../migrations/sqlite/0004_identity.sql")),
];
pub const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_usage_cost.sql"),
    ),
    (
        3,
        include_str!("../migrations/postgres/0003_key_status.sql"),
    ),
    (4, include_str!("../migrations/postgres/0004_identity.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be reached (or the pool is exhausted).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was broken (e.g. a user name that exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Data in the database does not have the expected shape.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Query(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub email: Option<String>,
    pub disabled: bool,
    /// Per-user override of `limits.requests_per_minute`.
    pub requests_per_minute: Option<u32>,
    pub created_at: DateTime<Utc>,
    /// Set from `auth.oidc.admin_emails` at each web sign-in.
    pub is_admin: bool,
    /// The OIDC identity of a user created by web sign-in (issuer, subject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc_issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc_subject: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AppToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: Option<String>,
    /// The first characters of the token (`bkp_` + 4), enough to recognise it in a list.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// What the token may do beyond its user's rights (nothing set: everything).
    pub scopes: Scopes,
}

pub struct NewToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: Option<String>,
    pub prefix: String,
    /// SHA-256 of the full token; the token itself is never stored.
    pub hash: [u8; 32],
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Scopes,
}

/// A web sign-in session. The cookie holds 256 random bits; only their SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id_hash: [u8; 32],
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The absolute end (`auth.session_ttl` after sign-in).
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
}

/// The result of looking a session up by hash.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub session: Session,
    pub user: User,
}

/// A user as an OpenID provider describes them at sign-in.
#[derive(Debug, Clone)]
pub struct OidcIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// A unique user name is derived from this (suffixed when taken).
    pub preferred_name: String,
    pub is_admin: bool,
}

/// A stored provider credential, still sealed.
#[derive(Debug, Clone)]
pub struct ProviderKey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: String,
    pub sealed: Sealed,
    pub label: Option<String>,
    pub is_active: bool,
    pub masked_hint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Set while the gateway passes this key over for system credentials (SPEC §8).
    pub last_error: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone)]
pub struct UserPatch {
    pub disabled: Option<bool>,
    /// `Some(None)` clears the override.
    pub requests_per_minute: Option<Option<u32>>,
}

#[derive(Debug, Default, Clone)]
pub struct KeyPatch {
    /// `Some(None)` clears the label.
    pub label: Option<Option<String>>,
    pub is_active: Option<bool>,
}

/// An audit event to append. Never holds key or token material.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor_user_id: Option<Uuid>,
    pub action: &'static str,
    pub target: Option<String>,
    pub detail: serde_json::Value,
    pub request_id: Option<String>,
    pub remote_addr: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_user_id: Option<Uuid>,
    pub action: String,
    pub target: Option<String>,
    pub detail: serde_json::Value,
    pub request_id: Option<String>,
    pub remote_addr: Option<String>,
}

/// Which audit events to list: all, or those of one user (as actor or as target).
#[derive(Debug, Clone, Copy)]
pub struct AuditFilter {
    pub user: Option<Uuid>,
    pub limit: u32,
}

/// The result of looking a token up by hash.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub token: AppToken,
    pub user: User,
}

// === usage (plain data; extraction and the writer live in `usage`) ===

/// Token counts found in a response.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: Option<f64>,
    /// `usage.is_byok` as the gateway reports it (`false`: it used the operator's credentials).
    pub is_byok: Option<bool>,
}

/// One request's accounting.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub request_id: String,
    pub user_id: Uuid,
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    /// `ok`, `error` (upstream answered an error), `aborted` (client went away or the stream
    /// was cut), `timeout`.
    pub status: &'static str,
    pub latency_ms: u64,
    pub created_at: DateTime<Utc>,
    /// The gateway reported serving this request with the operator's credentials.
    pub system: Option<SystemCredentialUse>,
    /// The provider the gateway says served it with the caller's credentials, when known.
    pub served_by: Option<String>,
}

/// The gateway used system credentials for `provider` on a request (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemCredentialUse {
    pub provider: String,
    /// HTTP status of the caller's own attempt that failed before, when reported.
    pub byok_status: Option<u16>,
}

impl SystemCredentialUse {
    /// The `last_error` shown on the caller's key(s) for the provider. No upstream text (it
    /// may echo a key): only what happened and what to do.
    pub fn last_error(&self) -> String {
        let attempt = match self.byok_status {
            Some(s) => format!(" (your key's attempt answered HTTP {s})"),
            None => String::new(),
        };
        format!(
            "The gateway could not use this key{attempt} and served a request with the \
             operator's credentials instead. Test the key; it is marked failing until a \
             request succeeds with it."
        )
    }
}

/// A row of `GET /api/usage`: one day and model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageRow {
    pub day: String,
    pub model: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
}

/// After a request: the active keys of one user and provider either worked (`failure` is
/// `None`: used at `at`, no longer failing) or were passed over for system credentials.
#[derive(Debug, Clone)]
pub struct KeyTouch {
    pub user_id: Uuid,
    pub provider: String,
    pub at: DateTime<Utc>,
    pub failure: Option<String>,
}

/// A re-sealed credential for `key rotate`: written only if the row still has `old_version`.
pub struct Reseal {
    pub id: Uuid,
    pub old_version: u32,
    pub sealed: Sealed,
}

/// The persistence layer; cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens the database named by `url` (creating a SQLite file and its folder if needed).
    /// Does not migrate.
    ///
    /// # Errors
    /// The database cannot be opened or reached.
    pub async fn connect(url: &DatabaseUrl, pool_size: usize) -> Result<Store> {
        Ok(match url {
            DatabaseUrl::Sqlite(path) => Store::Sqlite(sqlite::SqliteStore::open(path).await?),
            DatabaseUrl::Postgres(url) => {
                Store::Postgres(postgres::PgStore::connect(url, pool_size).await?)
            }
        })
    }

    /// The URL for a LISTEN connection, on PostgreSQL.
    pub fn listen_url(&self) -> Option<String> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(p) => Some(p.url.clone()),
        }
    }

    pub fn backend(&self) -> &'static str {
        dispatch!(self, _s => match self { Store::Sqlite(_) => "sqlite", Store::Postgres(_) => "postgres" })
    }

    /// Applies pending migrations; safe to run twice and from two processes at once.
    ///
    /// # Errors
    /// The database is unreachable or a migration fails (its transaction is rolled back).
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        dispatch!(self, s => s.migrate().await)
    }

    /// # Errors
    /// The database is unreachable.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, s => s.ping().await)
    }

    // === users ===

    /// # Errors
    /// `Conflict` if the name is taken.
    pub async fn create_user(
        &self,
        name: &str,
        email: Option<&str>,
        audit: AuditEntry,
    ) -> Result<User> {
        let user = User {
            id: Uuid::new_v4(),
            name: name.to_string(),
            email: email.map(str::to_string),
            disabled: false,
            requests_per_minute: None,
            created_at: now(),
            is_admin: false,
            oidc_issuer: None,
            oidc_subject: None,
        };
        dispatch!(self, s => s.create_user(user, audit).await)
    }

    /// Finds the user of an OIDC identity, creating it on first sign-in (audited
    /// `user.created`), and brings its email and admin flag up to date. A taken name gets a
    /// short suffix. Returns the user and whether it was created.
    ///
    /// # Errors
    /// Database failure.
    pub async fn upsert_oidc_user(
        &self,
        identity: &OidcIdentity,
        audit: AuditEntry,
    ) -> Result<(User, bool)> {
        if let Some(user) =
            dispatch!(self, s => s.user_by_subject(&identity.issuer, &identity.subject).await)?
        {
            let changed = user.email != identity.email || user.is_admin != identity.is_admin;
            if !changed {
                return Ok((user, false));
            }
            let updated = dispatch!(self, s => s.set_oidc_profile(user.id, identity.email.clone(), identity.is_admin).await)?;
            return Ok((updated.unwrap_or(user), false));
        }
        let mut last = None;
        for attempt in 0..5u32 {
            let name = if attempt == 0 {
                identity.preferred_name.clone()
            } else {
                let suffix = &Uuid::new_v4().simple().to_string()[..6];
                let base: String = identity.preferred_name.chars().take(57).collect();
                format!("{base}-{suffix}")
            };
            let user = User {
                id: Uuid::new_v4(),
                name,
                email: identity.email.clone(),
                disabled: false,
                requests_per_minute: None,
                created_at: now(),
                is_admin: identity.is_admin,
                oidc_issuer: Some(identity.issuer.clone()),
                oidc_subject: Some(identity.subject.clone()),
            };
            match dispatch!(self, s => s.create_user(user, audit.clone()).await) {
                Ok(u) => return Ok((u, true)),
                Err(Error::Conflict(e)) => {
                    // The same person signing in twice at once: the other request won.
                    if let Some(u) = dispatch!(self, s => s.user_by_subject(&identity.issuer, &identity.subject).await)?
                    {
                        return Ok((u, false));
                    }
                    last = Some(Error::Conflict(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Conflict("no free user name".into())))
    }

    /// # Errors
    /// Database failure.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        dispatch!(self, s => s.list_users().await)
    }

    /// Finds a user by id or, failing that, by name.
    ///
    /// # Errors
    /// Database failure.
    pub async fn find_user(&self, id_or_name: &str) -> Result<Option<User>> {
        dispatch!(self, s => s.find_user(id_or_name).await)
    }

    /// # Errors
    /// Database failure.
    pub async fn update_user(
        &self,
        id: Uuid,
        patch: UserPatch,
        audit: Option<AuditEntry>,
    ) -> Result<Option<User>> {
        dispatch!(self, s => s.update_user(id, patch, audit).await)
    }

    // === tokens ===

    /// # Errors
    /// Database failure.
    pub async fn create_token(&self, token: NewToken, audit: AuditEntry) -> Result<AppToken> {
        dispatch!(self, s => s.create_token(token, now(), audit).await)
    }

    /// # Errors
    /// Database failure.
    pub async fn list_tokens(&self, user_id: Uuid) -> Result<Vec<AppToken>> {
        dispatch!(self, s => s.list_tokens(user_id).await)
    }

    /// Revokes a token (idempotent: an already revoked token keeps its first revocation time).
    /// `None` if no such token.
    ///
    /// # Errors
    /// Database failure.
    pub async fn revoke_token(&self, id: Uuid, audit: AuditEntry) -> Result<Option<AppToken>> {
        dispatch!(self, s => s.revoke_token(id, now(), audit).await)
    }

    /// Records that a token was used at `at` (callers do this at most once a minute per token).
    ///
    /// # Errors
    /// Database failure.
    pub async fn touch_token(&self, id: Uuid, at: DateTime<Utc>) -> Result<()> {
        dispatch!(self, s => s.touch_token(id, at).await)
    }

    /// # Errors
    /// Database failure.
    pub async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        dispatch!(self, s => s.token_by_hash(hash).await)
    }

    // === sessions ===

    /// # Errors
    /// Database failure.
    pub async fn create_session(&self, session: Session, audit: AuditEntry) -> Result<()> {
        dispatch!(self, s => s.create_session(session, audit).await)
    }

    /// # Errors
    /// Database failure.
    pub async fn session_by_hash(&self, hash: &[u8; 32]) -> Result<Option<SessionRecord>> {
        dispatch!(self, s => s.session_by_hash(hash).await)
    }

    /// Records activity on a session (for the idle timeout).
    ///
    /// # Errors
    /// Database failure.
    pub async fn touch_session(&self, hash: &[u8; 32], at: DateTime<Utc>) -> Result<()> {
        dispatch!(self, s => s.touch_session(hash, at).await)
    }

    /// Deletes a session; `audit` (e.g. `session.ended`) is written when it existed. Returns
    /// its user.
    ///
    /// # Errors
    /// Database failure.
    pub async fn delete_session(
        &self,
        hash: &[u8; 32],
        audit: Option<AuditEntry>,
    ) -> Result<Option<Uuid>> {
        dispatch!(self, s => s.delete_session(hash, audit).await)
    }

    // === provider keys ===

    /// # Errors
    /// Database failure.
    pub async fn insert_key(&self, key: ProviderKey, audit: AuditEntry) -> Result<()> {
        dispatch!(self, s => s.insert_key(key, audit).await)
    }

    /// The user's keys, newest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_keys(&self, user_id: Uuid) -> Result<Vec<ProviderKey>> {
        dispatch!(self, s => s.list_keys(user_id).await)
    }

    /// # Errors
    /// Database failure.
    pub async fn get_key(&self, user_id: Uuid, id: Uuid) -> Result<Option<ProviderKey>> {
        dispatch!(self, s => s.get_key(user_id, id).await)
    }

    /// # Errors
    /// Database failure.
    pub async fn update_key(
        &self,
        user_id: Uuid,
        id: Uuid,
        patch: KeyPatch,
        audit: AuditEntry,
    ) -> Result<Option<ProviderKey>> {
        dispatch!(self, s => s.update_key(user_id, id, patch, now(), audit).await)
    }

    /// `false` if the user has no such key.
    ///
    /// # Errors
    /// Database failure.
    pub async fn delete_key(&self, user_id: Uuid, id: Uuid, audit: AuditEntry) -> Result<bool> {
        dispatch!(self, s => s.delete_key(user_id, id, audit).await)
    }

    /// Up to `limit` keys not sealed under `current_version`, ordered by id.
    ///
    /// # Errors
    /// Database failure.
    pub async fn keys_to_rotate(
        &self,
        current_version: u32,
        limit: u32,
    ) -> Result<Vec<ProviderKey>> {
        dispatch!(self, s => s.keys_to_rotate(current_version, limit).await)
    }

    /// Writes a batch of re-sealed keys in one transaction; returns how many rows changed.
    ///
    /// # Errors
    /// Database failure (the whole batch is rolled back).
    pub async fn reseal_keys(&self, batch: Vec<Reseal>) -> Result<u64> {
        dispatch!(self, s => s.reseal_keys(batch, now()).await)
    }

    // === usage ===

    /// Writes a batch of usage records in one transaction and marks the keys of each
    /// (user, provider) that served a successful request as used.
    ///
    /// # Errors
    /// Database failure (the batch is rolled back).
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> Result<()> {
        // One key update per (user, provider) per batch, not one per record; the latest
        // outcome wins.
        let mut touches: Vec<KeyTouch> = Vec::new();
        for r in records.iter().filter(|r| r.status == "ok") {
            let (provider, failure) = match &r.system {
                Some(s) => (&s.provider, Some(s.last_error())),
                None => (r.served_by.as_ref().unwrap_or(&r.provider), None),
            };
            match touches
                .iter_mut()
                .find(|t| t.user_id == r.user_id && &t.provider == provider)
            {
                Some(t) if t.at <= r.created_at => {
                    t.at = r.created_at;
                    t.failure = failure;
                }
                Some(_) => {}
                None => touches.push(KeyTouch {
                    user_id: r.user_id,
                    provider: provider.clone(),
                    at: r.created_at,
                    failure,
                }),
            }
        }
        dispatch!(self, s => s.insert_usage(records, &touches).await)
    }

    /// The user's usage by day (UTC) and model, newest day first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn usage_summary(&self, user_id: Uuid, days: u32) -> Result<Vec<UsageRow>> {
        dispatch!(self, s => s.usage_summary(user_id, days).await)
    }

    // === audit ===

    /// # Errors
    /// Database failure.
    pub async fn append_audit(&self, entry: AuditEntry) -> Result<()> {
        dispatch!(self, s => s.append_audit(entry, now()).await)
    }

    /// Newest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditEvent>> {
        dispatch!(self, s => s.list_audit(filter).await)
    }
}

/// Current time truncated to microseconds, the precision both backends keep.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The `target` text of an audit event about a user.
pub fn user_target(id: Uuid) -> String {
    format!("user:{id}")
}
