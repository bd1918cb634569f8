//! The PostgreSQL backend: tokio-postgres through a deadpool pool, for several replicas
//! sharing one database.

use super::{
    AppToken, AuditEntry, AuditEvent, AuditFilter, Error, KeyPatch, NewToken, ProviderKey, Reseal,
    Result, Session, SessionRecord, TokenRecord, User, UserPatch, POSTGRES_MIGRATIONS,
};
use crate::auth::scopes::Scopes;
use crate::keys::crypto::Sealed;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{error::SqlState, NoTls, Row};
use uuid::Uuid;

/// Lock id for `pg_advisory_xact_lock` around migrations ("byokmigr").
const MIGRATION_LOCK: i64 = 0x6279_6f6b_6d69_6772;

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The connection URL, for the LISTEN connection (see `store::notify`).
    pub(crate) url: String,
}

/// The channel on which changes to users, tokens and keys are announced (payload: user id).
pub const INVALIDATE_CHANNEL: &str = "byok_invalidate";

/// Announces, inside the caller's transaction, that `user_id`'s cached data changed.
async fn notify_user(c: &impl GenericClient, user_id: Uuid) -> Result<()> {
    c.execute(
        "SELECT pg_notify($1, $2)",
        &[&INVALIDATE_CHANNEL, &user_id.to_string()],
    )
    .await
    .map_err(q)?;
    Ok(())
}

fn q(e: tokio_postgres::Error) -> Error {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => Error::Conflict(e.to_string()),
        Some(_) => Error::Query(e.to_string()),
        None => Error::Unavailable(e.to_string()),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::Unavailable(e.to_string())
}

fn user_row(r: &Row) -> Result<User> {
    Ok(User {
        id: r.try_get("id").map_err(q)?,
        name: r.try_get("name").map_err(q)?,
        email: r.try_get("email").map_err(q)?,
        disabled: r.try_get("disabled").map_err(q)?,
        requests_per_minute: r
            .try_get::<_, Option<i32>>("requests_per_minute")
            .map_err(q)?
            .map(|v| u32::try_from(v).unwrap_or(0)),
        created_at: r.try_get("created_at").map_err(q)?,
        is_admin: r.try_get("is_admin").map_err(q)?,
        oidc_issuer: r.try_get("oidc_issuer").map_err(q)?,
        oidc_subject: r.try_get("oidc_subject").map_err(q)?,
    })
}

fn token_row(r: &Row) -> Result<AppToken> {
    Ok(AppToken {
        id: r.try_get("id").map_err(q)?,
        user_id: r.try_get("user_id").map_err(q)?,
        name: r.try_get("name").map_err(q)?,
        prefix: r.try_get("prefix").map_err(q)?,
        created_at: r.try_get("created_at").map_err(q)?,
        expires_at: r.try_get("expires_at").map_err(q)?,
        last_used_at: r.try_get("last_used_at").map_err(q)?,
        revoked_at: r.try_get("revoked_at").map_err(q)?,
        scopes: scopes_row(r, "")?,
    })
}

/// The scope columns of a token row (`prefix`: the column alias prefix of a join).
fn scopes_row(r: &Row, prefix: &str) -> Result<Scopes> {
    Ok(Scopes {
        allowed_models: r
            .try_get(format!("{prefix}allowed_models").as_str())
            .map_err(q)?,
        allowed_routes: r
            .try_get(format!("{prefix}allowed_routes").as_str())
            .map_err(q)?,
        requests_per_minute: r
            .try_get::<_, Option<i32>>(format!("{prefix}requests_per_minute").as_str())
            .map_err(q)?
            .map(|v| u32::try_from(v).unwrap_or(1)),
    })
}

fn session_row(r: &Row) -> Result<Session> {
    let hash: Vec<u8> = r.try_get("id_hash").map_err(q)?;
    Ok(Session {
        id_hash: hash
            .try_into()
            .map_err(|_| Error::Corrupt("session id_hash is not 32 bytes".into()))?,
        user_id: r.try_get("user_id").map_err(q)?,
        created_at: r.try_get("created_at").map_err(q)?,
        last_seen_at: r.try_get("last_seen_at").map_err(q)?,
        expires_at: r.try_get("expires_at").map_err(q)?,
        user_agent: r.try_get("user_agent").map_err(q)?,
    })
}

fn key_row(r: &Row) -> Result<ProviderKey> {
    let version: i64 = r.try_get("key_version").map_err(q)?;
    Ok(ProviderKey {
        id: r.try_get("id").map_err(q)?,
        user_id: r.try_get("user_id").map_err(q)?,
        provider: r.try_get("provider").map_err(q)?,
        sealed: Sealed {
            ciphertext: r.try_get("encrypted_key").map_err(q)?,
            nonce: r.try_get("iv").map_err(q)?,
            key_version: u32::try_from(version)
                .map_err(|_| Error::Corrupt(format!("key_version {version} out of range")))?,
        },
        label: r.try_get("label").map_err(q)?,
        is_active: r.try_get("is_active").map_err(q)?,
        masked_hint: r.try_get("masked_hint").map_err(q)?,
        created_at: r.try_get("created_at").map_err(q)?,
        updated_at: r.try_get("updated_at").map_err(q)?,
        last_used_at: r.try_get("last_used_at").map_err(q)?,
        last_error: r.try_get("last_error").map_err(q)?,
        failing_since: r.try_get("failing_since").map_err(q)?,
    })
}

fn audit_row(r: &Row) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.try_get("id").map_err(q)?,
        at: r.try_get("at").map_err(q)?,
        actor_user_id: r.try_get("actor_user_id").map_err(q)?,
        action: r.try_get("action").map_err(q)?,
        target: r.try_get("target").map_err(q)?,
        detail: r.try_get("detail").map_err(q)?,
        request_id: r.try_get("request_id").map_err(q)?,
        remote_addr: r.try_get("remote_addr").map_err(q)?,
    })
}

async fn insert_audit(c: &impl GenericClient, e: &AuditEntry, at: DateTime<Utc>) -> Result<()> {
    c.execute(
        "INSERT INTO audit_log (at, actor_user_id, action, target, detail, request_id, remote_addr) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&at, &e.actor_user_id, &e.action, &e.target, &e.detail, &e.request_id, &e.remote_addr],
    )
    .await
    .map_err(q)?;
    Ok(())
}

const USER_COLS: &str = "id, name, email, disabled, requests_per_minute, created_at, is_admin, \
                         oidc_issuer, oidc_subject";
const TOKEN_COLS: &str = "id, user_id, name, prefix, created_at, expires_at, last_used_at, \
                          revoked_at, allowed_models, allowed_routes, requests_per_minute";
const SESSION_COLS: &str = "id_hash, user_id, created_at, last_seen_at, expires_at, user_agent";
const KEY_COLS: &str = "id, user_id, provider, encrypted_key, iv, key_version, label, is_active, \
                        masked_hint, created_at, updated_at, last_used_at, last_error, \
                        failing_since";

fn rpm(v: Option<u32>) -> Option<i32> {
    v.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

impl PgStore {
    /// Builds the pool; the first connection is made by the first query.
    ///
    /// # Errors
    /// The URL does not parse.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PgStore> {
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            Error::Unavailable(format!("bad database URL: {e}"))
        })?;
        let mut cfg = config;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(std::time::Duration::from_secs(5));
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(pool_size)
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(PgStore {
            pool,
            url: url.to_string(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        // Serializes concurrent migrators (two replicas starting together); released at commit.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(q)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(q)?;
        let mut applied = Vec::new();
        for (version, sql) in POSTGRES_MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(q)?
                .is_some();
            if !done {
                tx.batch_execute(sql).await.map_err(q)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(q)?;
                applied.push(*version);
            }
        }
        tx.commit().await.map_err(q)?;
        Ok(applied)
    }

    pub async fn ping(&self) -> Result<()> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(q)
            .map(|_| ())
    }

    pub async fn create_user(&self, user: User, audit: AuditEntry) -> Result<User> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        tx.execute(
            &format!("INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
            &[
                &user.id,
                &user.name,
                &user.email,
                &user.disabled,
                &rpm(user.requests_per_minute),
                &user.created_at,
                &user.is_admin,
                &user.oidc_issuer,
                &user.oidc_subject,
            ],
        )
        .await
        .map_err(|e| match q(e) {
            Error::Conflict(_) => Error::Conflict(format!("a user named `{}` exists", user.name)),
            other => other,
        })?;
        let audit = AuditEntry {
            target: Some(super::user_target(user.id)),
            ..audit
        };
        insert_audit(&tx, &audit, user.created_at).await?;
        tx.commit().await.map_err(q)?;
        Ok(user)
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let c = self.client().await?;
        c.query(
            &format!("SELECT {USER_COLS} FROM users ORDER BY created_at, name"),
            &[],
        )
        .await
        .map_err(q)?
        .iter()
        .map(user_row)
        .collect()
    }

    pub async fn find_user(&self, id_or_name: &str) -> Result<Option<User>> {
        let c = self.client().await?;
        let id = Uuid::parse_str(id_or_name).ok();
        c.query_opt(
            &format!(
                "SELECT {USER_COLS} FROM users WHERE id = $1 OR name = $2 \
                 ORDER BY (id = $1) DESC NULLS LAST LIMIT 1"
            ),
            &[&id, &id_or_name],
        )
        .await
        .map_err(q)?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    pub async fn update_user(
        &self,
        id: Uuid,
        patch: UserPatch,
        audit: Option<AuditEntry>,
    ) -> Result<Option<User>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE users SET disabled = COALESCE($2, disabled), \
                     requests_per_minute = CASE WHEN $3 THEN $4 ELSE requests_per_minute END \
                     WHERE id = $1 RETURNING {USER_COLS}"
                ),
                &[
                    &id,
                    &patch.disabled,
                    &patch.requests_per_minute.is_some(),
                    &rpm(patch.requests_per_minute.flatten()),
                ],
            )
            .await
            .map_err(q)?;
        let Some(row) = row else { return Ok(None) };
        if patch.disabled == Some(true) {
            // A disabled user's web sessions end with it.
            tx.execute("DELETE FROM sessions WHERE user_id = $1", &[&id])
                .await
                .map_err(q)?;
        }
        if let Some(a) = audit {
            insert_audit(&tx, &a, super::now()).await?;
        }
        notify_user(&tx, id).await?;
        tx.commit().await.map_err(q)?;
        user_row(&row).map(Some)
    }

    pub async fn create_token(
        &self,
        t: NewToken,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<AppToken> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO app_tokens (id, user_id, name, prefix, token_hash, created_at, expires_at, \
                     allowed_models, allowed_routes, requests_per_minute) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {TOKEN_COLS}"
                ),
                &[
                    &t.id,
                    &t.user_id,
                    &t.name,
                    &t.prefix,
                    &&t.hash[..],
                    &now,
                    &t.expires_at,
                    &t.scopes.allowed_models,
                    &t.scopes.allowed_routes,
                    &rpm(t.scopes.requests_per_minute),
                ],
            )
            .await
            .map_err(q)?;
        insert_audit(&tx, &audit, now).await?;
        tx.commit().await.map_err(q)?;
        token_row(&row)
    }

    pub async fn list_tokens(&self, user_id: Uuid) -> Result<Vec<AppToken>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {TOKEN_COLS} FROM app_tokens WHERE user_id = $1 ORDER BY created_at DESC"
            ),
            &[&user_id],
        )
        .await
        .map_err(q)?
        .iter()
        .map(token_row)
        .collect()
    }

    pub async fn revoke_token(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<Option<AppToken>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE app_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                     RETURNING {TOKEN_COLS}"
                ),
                &[&id, &now],
            )
            .await
            .map_err(q)?;
        let Some(row) = row else { return Ok(None) };
        let token = token_row(&row)?;
        let audit = AuditEntry {
            target: Some(super::user_target(token.user_id)),
            ..audit
        };
        insert_audit(&tx, &audit, now).await?;
        notify_user(&tx, token.user_id).await?;
        tx.commit().await.map_err(q)?;
        Ok(Some(token))
    }

    pub async fn touch_token(&self, id: Uuid, at: DateTime<Utc>) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE app_tokens SET last_used_at = $2 \
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            &[&id, &at],
        )
        .await
        .map_err(q)
        .map(|_| ())
    }

    pub async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT t.id, t.user_id, t.name AS token_name, t.prefix, t.created_at, t.expires_at, \
                        t.last_used_at, t.revoked_at, t.allowed_models AS t_allowed_models, \
                        t.allowed_routes AS t_allowed_routes, \
                        t.requests_per_minute AS t_requests_per_minute, \
                        u.name, u.email, u.disabled, u.requests_per_minute, \
                        u.created_at AS user_created_at, u.is_admin, u.oidc_issuer, u.oidc_subject \
                 FROM app_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
                &[&&hash[..]],
            )
            .await
            .map_err(q)?;
        let Some(r) = row else { return Ok(None) };
        let token = AppToken {
            id: r.try_get("id").map_err(q)?,
            user_id: r.try_get("user_id").map_err(q)?,
            name: r.try_get("token_name").map_err(q)?,
            prefix: r.try_get("prefix").map_err(q)?,
            created_at: r.try_get("created_at").map_err(q)?,
            expires_at: r.try_get("expires_at").map_err(q)?,
            last_used_at: r.try_get("last_used_at").map_err(q)?,
            revoked_at: r.try_get("revoked_at").map_err(q)?,
            scopes: scopes_row(&r, "t_")?,
        };
        let user = User {
            id: token.user_id,
            name: r.try_get("name").map_err(q)?,
            email: r.try_get("email").map_err(q)?,
            disabled: r.try_get("disabled").map_err(q)?,
            requests_per_minute: r
                .try_get::<_, Option<i32>>("requests_per_minute")
                .map_err(q)?
                .map(|v| u32::try_from(v).unwrap_or(0)),
            created_at: r.try_get("user_created_at").map_err(q)?,
            is_admin: r.try_get("is_admin").map_err(q)?,
            oidc_issuer: r.try_get("oidc_issuer").map_err(q)?,
            oidc_subject: r.try_get("oidc_subject").map_err(q)?,
        };
        Ok(Some(TokenRecord { token, user }))
    }

    pub async fn user_by_subject(&self, issuer: &str, subject: &str) -> Result<Option<User>> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {USER_COLS} FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2"),
            &[&issuer, &subject],
        )
        .await
        .map_err(q)?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    pub async fn set_oidc_profile(
        &self,
        id: Uuid,
        email: Option<String>,
        is_admin: bool,
    ) -> Result<Option<User>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE users SET email = $2, is_admin = $3 WHERE id = $1 RETURNING {USER_COLS}"
                ),
                &[&id, &email, &is_admin],
            )
            .await
            .map_err(q)?;
        notify_user(&tx, id).await?;
        tx.commit().await.map_err(q)?;
        row.as_ref().map(user_row).transpose()
    }

    pub async fn create_session(&self, sn: Session, audit: AuditEntry) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        tx.execute(
            &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[
                &&sn.id_hash[..],
                &sn.user_id,
                &sn.created_at,
                &sn.last_seen_at,
                &sn.expires_at,
                &sn.user_agent,
            ],
        )
        .await
        .map_err(q)?;
        insert_audit(&tx, &audit, sn.created_at).await?;
        tx.commit().await.map_err(q)
    }

    pub async fn session_by_hash(&self, hash: &[u8; 32]) -> Result<Option<SessionRecord>> {
        let c = self.client().await?;
        let Some(row) = c
            .query_opt(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE id_hash = $1"),
                &[&&hash[..]],
            )
            .await
            .map_err(q)?
        else {
            return Ok(None);
        };
        let session = session_row(&row)?;
        let user = c
            .query_opt(
                &format!("SELECT {USER_COLS} FROM users WHERE id = $1"),
                &[&session.user_id],
            )
            .await
            .map_err(q)?;
        user.as_ref()
            .map(user_row)
            .transpose()
            .map(|u| u.map(|user| SessionRecord { session, user }))
    }

    pub async fn touch_session(&self, hash: &[u8; 32], at: DateTime<Utc>) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2 AND last_seen_at < $1",
            &[&at, &&hash[..]],
        )
        .await
        .map_err(q)
        .map(|_| ())
    }

    pub async fn delete_session(
        &self,
        hash: &[u8; 32],
        audit: Option<AuditEntry>,
    ) -> Result<Option<Uuid>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        let user: Option<Uuid> = tx
            .query_opt(
                "DELETE FROM sessions WHERE id_hash = $1 RETURNING user_id",
                &[&&hash[..]],
            )
            .await
            .map_err(q)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(q)?;
        if let Some(u) = user {
            if let Some(a) = audit {
                let a = AuditEntry {
                    actor_user_id: Some(u),
                    ..a
                };
                insert_audit(&tx, &a, super::now()).await?;
            }
            // Other replicas drop the session from their caches.
            notify_user(&tx, u).await?;
        }
        tx.commit().await.map_err(q)?;
        Ok(user)
    }

    pub async fn insert_key(&self, k: ProviderKey, audit: AuditEntry) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        tx.execute(
            &format!(
                "INSERT INTO ai_provider_keys ({KEY_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            &[
                &k.id,
                &k.user_id,
                &k.provider,
                &k.sealed.ciphertext,
                &k.sealed.nonce,
                &i64::from(k.sealed.key_version),
                &k.label,
                &k.is_active,
                &k.masked_hint,
                &k.created_at,
                &k.updated_at,
                &k.last_used_at,
                &k.last_error,
                &k.failing_since,
            ],
        )
        .await
        .map_err(q)?;
        insert_audit(&tx, &audit, k.created_at).await?;
        notify_user(&tx, k.user_id).await?;
        tx.commit().await.map_err(q)
    }

    pub async fn list_keys(&self, user_id: Uuid) -> Result<Vec<ProviderKey>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {KEY_COLS} FROM ai_provider_keys WHERE user_id = $1 ORDER BY created_at DESC, id"
            ),
            &[&user_id],
        )
        .await
        .map_err(q)?
        .iter()
        .map(key_row)
        .collect()
    }

    pub async fn get_key(&self, user_id: Uuid, id: Uuid) -> Result<Option<ProviderKey>> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {KEY_COLS} FROM ai_provider_keys WHERE id = $1 AND user_id = $2"),
            &[&id, &user_id],
        )
        .await
        .map_err(q)?
        .as_ref()
        .map(key_row)
        .transpose()
    }

    pub async fn update_key(
        &self,
        user_id: Uuid,
        id: Uuid,
        patch: KeyPatch,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<Option<ProviderKey>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE ai_provider_keys SET \
                       label = CASE WHEN $3 THEN $4 ELSE label END, \
                       is_active = COALESCE($5, is_active), updated_at = $6 \
                     WHERE id = $1 AND user_id = $2 RETURNING {KEY_COLS}"
                ),
                &[
                    &id,
                    &user_id,
                    &patch.label.is_some(),
                    &patch.label.clone().flatten(),
                    &patch.is_active,
                    &now,
                ],
            )
            .await
            .map_err(q)?;
        let Some(row) = row else { return Ok(None) };
        insert_audit(&tx, &audit, now).await?;
        notify_user(&tx, user_id).await?;
        tx.commit().await.map_err(q)?;
        key_row(&row).map(Some)
    }

    pub async fn delete_key(&self, user_id: Uuid, id: Uuid, audit: AuditEntry) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        let n = tx
            .execute(
                "DELETE FROM ai_provider_keys WHERE id = $1 AND user_id = $2",
                &[&id, &user_id],
            )
            .await
            .map_err(q)?;
        if n == 0 {
            return Ok(false);
        }
        insert_audit(&tx, &audit, super::now()).await?;
        notify_user(&tx, user_id).await?;
        tx.commit().await.map_err(q)?;
        Ok(true)
    }

    pub async fn keys_to_rotate(&self, current: u32, limit: u32) -> Result<Vec<ProviderKey>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {KEY_COLS} FROM ai_provider_keys WHERE key_version <> $1 ORDER BY id LIMIT $2"
            ),
            &[&i64::from(current), &i64::from(limit)],
        )
        .await
        .map_err(q)?
        .iter()
        .map(key_row)
        .collect()
    }

    pub async fn reseal_keys(&self, batch: Vec<Reseal>, now: DateTime<Utc>) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        let mut changed = 0;
        for r in &batch {
            changed += tx
                .execute(
                    "UPDATE ai_provider_keys SET encrypted_key = $1, iv = $2, key_version = $3, \
                     updated_at = $4 WHERE id = $5 AND key_version = $6",
                    &[
                        &r.sealed.ciphertext,
                        &r.sealed.nonce,
                        &i64::from(r.sealed.key_version),
                        &now,
                        &r.id,
                        &i64::from(r.old_version),
                    ],
                )
                .await
                .map_err(q)?;
        }
        tx.commit().await.map_err(q)?;
        Ok(changed)
    }

    pub async fn insert_usage(
        &self,
        records: &[super::UsageRecord],
        touches: &[super::KeyTouch],
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        let ins = tx
            .prepare_cached(
                "INSERT INTO usage_events (request_id, user_id, provider, model, prompt_tokens, \
                 completion_tokens, status, latency_ms, created_at, cost, is_byok) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .await
            .map_err(q)?;
        let worked = tx
            .prepare_cached(
                "UPDATE ai_provider_keys SET last_used_at = $1, last_error = NULL, \
                 failing_since = NULL WHERE user_id = $2 AND provider = $3 AND is_active",
            )
            .await
            .map_err(q)?;
        let failed = tx
            .prepare_cached(
                "UPDATE ai_provider_keys SET last_error = $1, \
                 failing_since = COALESCE(failing_since, $2) \
                 WHERE user_id = $3 AND provider = $4 AND is_active",
            )
            .await
            .map_err(q)?;
        for r in records {
            tx.execute(
                &ins,
                &[
                    &r.request_id,
                    &r.user_id,
                    &r.provider,
                    &r.model,
                    &(r.usage.prompt_tokens as i64),
                    &(r.usage.completion_tokens as i64),
                    &r.status,
                    &(r.latency_ms as i64),
                    &r.created_at,
                    &r.usage.cost,
                    &r.usage.is_byok,
                ],
            )
            .await
            .map_err(q)?;
        }
        for t in touches {
            match &t.failure {
                None => tx.execute(&worked, &[&t.at, &t.user_id, &t.provider]).await,
                Some(e) => {
                    tx.execute(&failed, &[e, &t.at, &t.user_id, &t.provider])
                        .await
                }
            }
            .map_err(q)?;
        }
        tx.commit().await.map_err(q)
    }

    pub async fn usage_summary(&self, user_id: Uuid, days: u32) -> Result<Vec<super::UsageRow>> {
        let c = self.client().await?;
        let since = Utc::now() - chrono::Duration::days(i64::from(days));
        let rows = c
            .query(
                "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, model, COUNT(*)::BIGINT, \
                 SUM(prompt_tokens)::BIGINT, SUM(completion_tokens)::BIGINT, COALESCE(SUM(cost), 0)::DOUBLE PRECISION \
                 FROM usage_events WHERE user_id = $1 AND created_at >= $2 \
                 GROUP BY day, model ORDER BY day DESC, model",
                &[&user_id, &since],
            )
            .await
            .map_err(q)?;
        rows.iter()
            .map(|r| {
                Ok(super::UsageRow {
                    day: r.try_get(0).map_err(q)?,
                    model: r.try_get(1).map_err(q)?,
                    requests: r.try_get::<_, i64>(2).map_err(q)? as u64,
                    prompt_tokens: r.try_get::<_, i64>(3).map_err(q)? as u64,
                    completion_tokens: r.try_get::<_, i64>(4).map_err(q)? as u64,
                    cost: r.try_get(5).map_err(q)?,
                })
            })
            .collect()
    }

    pub async fn append_audit(&self, entry: AuditEntry, at: DateTime<Utc>) -> Result<()> {
        let c = self.client().await?;
        insert_audit(&c, &entry, at).await
    }

    pub async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditEvent>> {
        let c = self.client().await?;
        let cols = "id, at, actor_user_id, action, target, detail, request_id, remote_addr";
        let limit = i64::from(filter.limit);
        let rows = match filter.user {
            Some(u) => {
                c.query(
                    &format!(
                        "SELECT {cols} FROM audit_log WHERE actor_user_id = $1 OR target = $2 \
                         ORDER BY id DESC LIMIT $3"
                    ),
                    &[&u, &super::user_target(u), &limit],
                )
                .await
            }
            None => {
                c.query(
                    &format!("SELECT {cols} FROM audit_log ORDER BY id DESC LIMIT $1"),
                    &[&limit],
                )
                .await
            }
        }
        .map_err(q)?;
        rows.iter().map(audit_row).collect()
    }
}
