//! The embedded SQLite backend (the default, `sqlite://./data/byok.db`).
//!
//! rusqlite is blocking, so every call runs on tokio's blocking pool through `SqliteStore::call`
//! and never on a runtime worker. One connection in WAL mode behind a mutex: writes to SQLite are
//! serialized anyway, and this store is meant for a single node.

use super::{
    AppToken, AuditEntry, AuditEvent, AuditFilter, Error, KeyPatch, NewToken, ProviderKey, Reseal,
    Result, Session, SessionRecord, TokenRecord, User, UserPatch, SQLITE_MIGRATIONS,
};
use crate::auth::scopes::Scopes;
use crate::keys::crypto::Sealed;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn q(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Error::Conflict(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Error::Unavailable(e.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            Error::Corrupt(e.to_string())
        }
        _ => Error::Query(e.to_string()),
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: String) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn opt_ts(s: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    s.map(parse_ts).transpose()
}

fn uuid(s: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

const USER_COLS: &str = "id, name, email, disabled, requests_per_minute, created_at, is_admin, \
                         oidc_issuer, oidc_subject";

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: uuid(r.get(0)?)?,
        name: r.get(1)?,
        email: r.get(2)?,
        disabled: r.get(3)?,
        requests_per_minute: r.get(4)?,
        created_at: parse_ts(r.get(5)?)?,
        is_admin: r.get(6)?,
        oidc_issuer: r.get(7)?,
        oidc_subject: r.get(8)?,
    })
}

const TOKEN_COLS: &str = "id, user_id, name, prefix, created_at, expires_at, last_used_at, \
                          revoked_at, allowed_models, allowed_routes, requests_per_minute";

/// A scope list as stored: a JSON array of text, or NULL.
fn list_json(list: &Option<Vec<String>>) -> Option<String> {
    list.as_ref()
        .map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".into()))
}

fn parse_list(i: usize, s: Option<String>) -> rusqlite::Result<Option<Vec<String>>> {
    s.map(|s| {
        serde_json::from_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<AppToken> {
    Ok(AppToken {
        id: uuid(r.get(0)?)?,
        user_id: uuid(r.get(1)?)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        created_at: parse_ts(r.get(4)?)?,
        expires_at: opt_ts(r.get(5)?)?,
        last_used_at: opt_ts(r.get(6)?)?,
        revoked_at: opt_ts(r.get(7)?)?,
        scopes: Scopes {
            allowed_models: parse_list(8, r.get(8)?)?,
            allowed_routes: parse_list(9, r.get(9)?)?,
            requests_per_minute: r.get(10)?,
        },
    })
}

const SESSION_COLS: &str = "id_hash, user_id, created_at, last_seen_at, expires_at, user_agent";

fn session_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    let hash: Vec<u8> = r.get(0)?;
    Ok(Session {
        id_hash: hash.try_into().map_err(|_| {
            rusqlite::Error::InvalidColumnType(0, "id_hash".into(), rusqlite::types::Type::Blob)
        })?,
        user_id: uuid(r.get(1)?)?,
        created_at: parse_ts(r.get(2)?)?,
        last_seen_at: parse_ts(r.get(3)?)?,
        expires_at: parse_ts(r.get(4)?)?,
        user_agent: r.get(5)?,
    })
}

const KEY_COLS: &str = "id, user_id, provider, encrypted_key, iv, key_version, label, is_active, \
                        masked_hint, created_at, updated_at, last_used_at, last_error, \
                        failing_since";

fn key_row(r: &Row<'_>) -> rusqlite::Result<ProviderKey> {
    let version: i64 = r.get(5)?;
    Ok(ProviderKey {
        id: uuid(r.get(0)?)?,
        user_id: uuid(r.get(1)?)?,
        provider: r.get(2)?,
        sealed: Sealed {
            ciphertext: r.get(3)?,
            nonce: r.get(4)?,
            key_version: u32::try_from(version).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    5,
                    rusqlite::types::Type::Integer,
                    Box::new(e),
                )
            })?,
        },
        label: r.get(6)?,
        is_active: r.get(7)?,
        masked_hint: r.get(8)?,
        created_at: parse_ts(r.get(9)?)?,
        updated_at: parse_ts(r.get(10)?)?,
        last_used_at: opt_ts(r.get(11)?)?,
        last_error: r.get(12)?,
        failing_since: opt_ts(r.get(13)?)?,
    })
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    let detail: String = r.get(5)?;
    Ok(AuditEvent {
        id: r.get(0)?,
        at: parse_ts(r.get(1)?)?,
        actor_user_id: r.get::<_, Option<String>>(2)?.map(uuid).transpose()?,
        action: r.get(3)?,
        target: r.get(4)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        request_id: r.get(6)?,
        remote_addr: r.get(7)?,
    })
}

fn insert_audit(conn: &Connection, e: &AuditEntry, at: DateTime<Utc>) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_log (at, actor_user_id, action, target, detail, request_id, remote_addr) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            ts(at),
            e.actor_user_id.map(|u| u.to_string()),
            e.action,
            e.target,
            e.detail.to_string(),
            e.request_id,
            e.remote_addr
        ],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its parent folder.
    ///
    /// # Errors
    /// The folder or file cannot be created or opened.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Some(dir) = path.parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::Unavailable(format!("{}: {e}", dir.display())))?;
                }
            }
            let conn = Connection::open(&path).map_err(q)?;
            conn.busy_timeout(Duration::from_secs(10)).map_err(q)?;
            conn.pragma_update(None, "journal_mode", "WAL").map_err(q)?;
            conn.pragma_update(None, "foreign_keys", "ON").map_err(q)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(q)?;
            Ok(conn)
        })
        .await
        .map_err(|e| Error::Query(e.to_string()))??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| Error::Query("sqlite connection mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| Error::Query(e.to_string()))?
    }

    pub async fn migrate(&self) -> Result<Vec<i64>> {
        self.call(|conn| {
            // IMMEDIATE takes the write lock up front: a second process waits (busy_timeout)
            // and then sees the migrations as applied.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(q)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .map_err(q)?;
            let mut applied = Vec::new();
            for (version, sql) in SQLITE_MIGRATIONS {
                let done: bool = tx
                    .query_row(
                        "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
                        [version],
                        |r| r.get(0),
                    )
                    .map_err(q)?;
                if !done {
                    tx.execute_batch(sql).map_err(q)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                        params![version, ts(Utc::now())],
                    )
                    .map_err(q)?;
                    applied.push(*version);
                }
            }
            tx.commit().map_err(q)?;
            Ok(applied)
        })
        .await
    }

    /// SQLite's `data_version`: it changes when another connection (another process, such
    /// as the CLI) commits to the database, and not for this connection's own writes.
    pub async fn data_version(&self) -> Result<i64> {
        self.call(|conn| {
            conn.query_row("PRAGMA data_version", [], |r| r.get(0))
                .map_err(q)
        })
        .await
    }

    pub async fn ping(&self) -> Result<()> {
        self.call(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(q))
            .await
    }

    pub async fn create_user(&self, user: User, audit: AuditEntry) -> Result<User> {
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            tx.execute(
                &format!(
                    "INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    user.id.to_string(),
                    user.name,
                    user.email,
                    user.disabled,
                    user.requests_per_minute,
                    ts(user.created_at),
                    user.is_admin,
                    user.oidc_issuer,
                    user.oidc_subject
                ],
            )
            .map_err(|e| match q(e) {
                Error::Conflict(_) if user.oidc_subject.is_some() => Error::Conflict(format!(
                    "a user named `{}` or with this sign-in exists",
                    user.name
                )),
                Error::Conflict(_) => {
                    Error::Conflict(format!("a user named `{}` exists", user.name))
                }
                other => other,
            })?;
            let audit = AuditEntry {
                target: Some(super::user_target(user.id)),
                ..audit
            };
            insert_audit(&tx, &audit, user.created_at).map_err(q)?;
            tx.commit().map_err(q)?;
            Ok(user)
        })
        .await
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.call(|conn| {
            let mut st = conn
                .prepare(&format!(
                    "SELECT {USER_COLS} FROM users ORDER BY created_at, name"
                ))
                .map_err(q)?;
            let rows = st.query_map([], user_row).map_err(q)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(q)
        })
        .await
    }

    pub async fn find_user(&self, id_or_name: &str) -> Result<Option<User>> {
        let key = id_or_name.to_string();
        self.call(move |conn| {
            let by_id = Uuid::parse_str(&key).ok().map(|u| u.to_string());
            conn.query_row(
                &format!(
                    "SELECT {USER_COLS} FROM users WHERE id = ?1 OR name = ?2 \
                     ORDER BY (id = ?1) DESC LIMIT 1"
                ),
                params![by_id, key],
                user_row,
            )
            .optional()
            .map_err(q)
        })
        .await
    }

    pub async fn update_user(
        &self,
        id: Uuid,
        patch: UserPatch,
        audit: Option<AuditEntry>,
    ) -> Result<Option<User>> {
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            let sid = id.to_string();
            if let Some(d) = patch.disabled {
                tx.execute(
                    "UPDATE users SET disabled = ?1 WHERE id = ?2",
                    params![d, sid],
                )
                .map_err(q)?;
                if d {
                    // A disabled user's web sessions end with it.
                    tx.execute("DELETE FROM sessions WHERE user_id = ?1", [&sid])
                        .map_err(q)?;
                }
            }
            if let Some(rpm) = patch.requests_per_minute {
                tx.execute(
                    "UPDATE users SET requests_per_minute = ?1 WHERE id = ?2",
                    params![rpm, sid],
                )
                .map_err(q)?;
            }
            let user = tx
                .query_row(
                    &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                    [&sid],
                    user_row,
                )
                .optional()
                .map_err(q)?;
            if user.is_some() {
                if let Some(a) = audit {
                    insert_audit(&tx, &a, super::now()).map_err(q)?;
                }
                tx.commit().map_err(q)?;
            }
            Ok(user)
        })
        .await
    }

    pub async fn create_token(
        &self,
        t: NewToken,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<AppToken> {
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            tx.execute(
                "INSERT INTO app_tokens (id, user_id, name, prefix, token_hash, created_at, expires_at, \
                 allowed_models, allowed_routes, requests_per_minute) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    t.id.to_string(),
                    t.user_id.to_string(),
                    t.name,
                    t.prefix,
                    &t.hash[..],
                    ts(now),
                    t.expires_at.map(ts),
                    list_json(&t.scopes.allowed_models),
                    list_json(&t.scopes.allowed_routes),
                    t.scopes.requests_per_minute
                ],
            )
            .map_err(q)?;
            insert_audit(&tx, &audit, now).map_err(q)?;
            tx.commit().map_err(q)?;
            Ok(AppToken {
                id: t.id,
                user_id: t.user_id,
                name: t.name,
                prefix: t.prefix,
                created_at: now,
                expires_at: t.expires_at,
                last_used_at: None,
                revoked_at: None,
                scopes: t.scopes,
            })
        })
        .await
    }

    pub async fn list_tokens(&self, user_id: Uuid) -> Result<Vec<AppToken>> {
        self.call(move |conn| {
            let mut st = conn
                .prepare(&format!(
                    "SELECT {TOKEN_COLS} FROM app_tokens WHERE user_id = ?1 ORDER BY created_at DESC"
                ))
                .map_err(q)?;
            let rows = st.query_map([user_id.to_string()], token_row).map_err(q)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(q)
        })
        .await
    }

    pub async fn revoke_token(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<Option<AppToken>> {
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            tx.execute(
                "UPDATE app_tokens SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2",
                params![ts(now), id.to_string()],
            )
            .map_err(q)?;
            let token = tx
                .query_row(
                    &format!("SELECT {TOKEN_COLS} FROM app_tokens WHERE id = ?1"),
                    [id.to_string()],
                    token_row,
                )
                .optional()
                .map_err(q)?;
            if let Some(t) = &token {
                let audit = AuditEntry {
                    target: Some(super::user_target(t.user_id)),
                    ..audit
                };
                insert_audit(&tx, &audit, now).map_err(q)?;
                tx.commit().map_err(q)?;
            }
            Ok(token)
        })
        .await
    }

    pub async fn touch_token(&self, id: Uuid, at: DateTime<Utc>) -> Result<()> {
        self.call(move |conn| {
            conn.execute(
                "UPDATE app_tokens SET last_used_at = ?1 \
                 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
                params![ts(at), id.to_string()],
            )
            .map_err(q)
            .map(|_| ())
        })
        .await
    }

    pub async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        let hash = *hash;
        self.call(move |conn| {
            let token = conn
                .query_row(
                    &format!("SELECT {TOKEN_COLS} FROM app_tokens WHERE token_hash = ?1"),
                    [&hash[..]],
                    token_row,
                )
                .optional()
                .map_err(q)?;
            let Some(token) = token else { return Ok(None) };
            let user = conn
                .query_row(
                    &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                    [token.user_id.to_string()],
                    user_row,
                )
                .optional()
                .map_err(q)?;
            Ok(user.map(|user| TokenRecord { token, user }))
        })
        .await
    }

    pub async fn user_by_subject(&self, issuer: &str, subject: &str) -> Result<Option<User>> {
        let (issuer, subject) = (issuer.to_string(), subject.to_string());
        self.call(move |conn| {
            conn.query_row(
                &format!(
                    "SELECT {USER_COLS} FROM users WHERE oidc_issuer = ?1 AND oidc_subject = ?2"
                ),
                params![issuer, subject],
                user_row,
            )
            .optional()
            .map_err(q)
        })
        .await
    }

    pub async fn set_oidc_profile(
        &self,
        id: Uuid,
        email: Option<String>,
        is_admin: bool,
    ) -> Result<Option<User>> {
        self.call(move |conn| {
            conn.execute(
                "UPDATE users SET email = ?1, is_admin = ?2 WHERE id = ?3",
                params![email, is_admin, id.to_string()],
            )
            .map_err(q)?;
            conn.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id.to_string()],
                user_row,
            )
            .optional()
            .map_err(q)
        })
        .await
    }

    pub async fn create_session(&self, sn: Session, audit: AuditEntry) -> Result<()> {
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            tx.execute(
                &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    &sn.id_hash[..],
                    sn.user_id.to_string(),
                    ts(sn.created_at),
                    ts(sn.last_seen_at),
                    ts(sn.expires_at),
                    sn.user_agent
                ],
            )
            .map_err(q)?;
            insert_audit(&tx, &audit, sn.created_at).map_err(q)?;
            tx.commit().map_err(q)
        })
        .await
    }

    pub async fn session_by_hash(&self, hash: &[u8; 32]) -> Result<Option<SessionRecord>> {
        let hash = *hash;
        self.call(move |conn| {
            let session = conn
                .query_row(
                    &format!("SELECT {SESSION_COLS} FROM sessions WHERE id_hash = ?1"),
                    [&hash[..]],
                    session_row,
                )
                .optional()
                .map_err(q)?;
            let Some(session) = session else {
                return Ok(None);
            };
            let user = conn
                .query_row(
                    &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                    [session.user_id.to_string()],
                    user_row,
                )
                .optional()
                .map_err(q)?;
            Ok(user.map(|user| SessionRecord { session, user }))
        })
        .await
    }

    pub async fn touch_session(&self, hash: &[u8; 32], at: DateTime<Utc>) -> Result<()> {
        let hash = *hash;
        self.call(move |conn| {
            conn.execute(
                "UPDATE sessions SET last_seen_at = ?1 WHERE id_hash = ?2 AND last_seen_at < ?1",
                params![ts(at), &hash[..]],
            )
            .map_err(q)
            .map(|_| ())
        })
        .await
    }

    pub async fn delete_session(
        &self,
        hash: &[u8; 32],
        audit: Option<AuditEntry>,
    ) -> Result<Option<Uuid>> {
        let hash = *hash;
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            let user: Option<String> = tx
                .query_row(
                    "DELETE FROM sessions WHERE id_hash = ?1 RETURNING user_id",
                    [&hash[..]],
                    |r| r.get(0),
                )
                .optional()
                .map_err(q)?;
            let user = user.map(uuid).transpose().map_err(q)?;
            if let (Some(u), Some(a)) = (user, audit) {
                let a = AuditEntry {
                    actor_user_id: Some(u),
                    ..a
                };
                insert_audit(&tx, &a, super::now()).map_err(q)?;
            }
            tx.commit().map_err(q)?;
            Ok(user)
        })
        .await
    }

    pub async fn insert_key(&self, k: ProviderKey, audit: AuditEntry) -> Result<()> {
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            tx.execute(
                &format!(
                    "INSERT INTO ai_provider_keys ({KEY_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                params![
                    k.id.to_string(),
                    k.user_id.to_string(),
                    k.provider,
                    k.sealed.ciphertext,
                    k.sealed.nonce,
                    i64::from(k.sealed.key_version),
                    k.label,
                    k.is_active,
                    k.masked_hint,
                    ts(k.created_at),
                    ts(k.updated_at),
                    k.last_used_at.map(ts),
                    k.last_error,
                    k.failing_since.map(ts)
                ],
            )
            .map_err(q)?;
            insert_audit(&tx, &audit, k.created_at).map_err(q)?;
            tx.commit().map_err(q)
        })
        .await
    }

    pub async fn list_keys(&self, user_id: Uuid) -> Result<Vec<ProviderKey>> {
        self.call(move |conn| {
            let mut st = conn
                .prepare(&format!(
                    "SELECT {KEY_COLS} FROM ai_provider_keys WHERE user_id = ?1 \
                     ORDER BY created_at DESC, id"
                ))
                .map_err(q)?;
            let rows = st.query_map([user_id.to_string()], key_row).map_err(q)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(q)
        })
        .await
    }

    pub async fn get_key(&self, user_id: Uuid, id: Uuid) -> Result<Option<ProviderKey>> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {KEY_COLS} FROM ai_provider_keys WHERE id = ?1 AND user_id = ?2"),
                params![id.to_string(), user_id.to_string()],
                key_row,
            )
            .optional()
            .map_err(q)
        })
        .await
    }

    pub async fn update_key(
        &self,
        user_id: Uuid,
        id: Uuid,
        patch: KeyPatch,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<Option<ProviderKey>> {
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            let (sid, suser) = (id.to_string(), user_id.to_string());
            let n = tx
                .execute(
                    "UPDATE ai_provider_keys SET \
                       label = CASE WHEN ?1 THEN ?2 ELSE label END, \
                       is_active = COALESCE(?3, is_active), updated_at = ?4 \
                     WHERE id = ?5 AND user_id = ?6",
                    params![
                        patch.label.is_some(),
                        patch.label.clone().flatten(),
                        patch.is_active,
                        ts(now),
                        sid,
                        suser
                    ],
                )
                .map_err(q)?;
            if n == 0 {
                return Ok(None);
            }
            let key = tx
                .query_row(
                    &format!("SELECT {KEY_COLS} FROM ai_provider_keys WHERE id = ?1"),
                    [&sid],
                    key_row,
                )
                .map_err(q)?;
            insert_audit(&tx, &audit, now).map_err(q)?;
            tx.commit().map_err(q)?;
            Ok(Some(key))
        })
        .await
    }

    pub async fn delete_key(&self, user_id: Uuid, id: Uuid, audit: AuditEntry) -> Result<bool> {
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            let n = tx
                .execute(
                    "DELETE FROM ai_provider_keys WHERE id = ?1 AND user_id = ?2",
                    params![id.to_string(), user_id.to_string()],
                )
                .map_err(q)?;
            if n == 0 {
                return Ok(false);
            }
            insert_audit(&tx, &audit, super::now()).map_err(q)?;
            tx.commit().map_err(q)?;
            Ok(true)
        })
        .await
    }

    pub async fn keys_to_rotate(&self, current: u32, limit: u32) -> Result<Vec<ProviderKey>> {
        self.call(move |conn| {
            let mut st = conn
                .prepare(&format!(
                    "SELECT {KEY_COLS} FROM ai_provider_keys WHERE key_version <> ?1 \
                     ORDER BY id LIMIT ?2"
                ))
                .map_err(q)?;
            let rows = st
                .query_map(params![i64::from(current), limit], key_row)
                .map_err(q)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(q)
        })
        .await
    }

    pub async fn reseal_keys(&self, batch: Vec<Reseal>, now: DateTime<Utc>) -> Result<u64> {
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(q)?;
            let mut changed = 0u64;
            for r in &batch {
                changed += tx
                    .execute(
                        "UPDATE ai_provider_keys SET encrypted_key = ?1, iv = ?2, key_version = ?3, \
                         updated_at = ?4 WHERE id = ?5 AND key_version = ?6",
                        params![
                            r.sealed.ciphertext,
                            r.sealed.nonce,
                            i64::from(r.sealed.key_version),
                            ts(now),
                            r.id.to_string(),
                            i64::from(r.old_version)
                        ],
                    )
                    .map_err(q)? as u64;
            }
            tx.commit().map_err(q)?;
            Ok(changed)
        })
        .await
    }

    pub async fn insert_usage(
        &self,
        records: &[super::UsageRecord],
        touches: &[super::KeyTouch],
    ) -> Result<()> {
        let records = records.to_vec();
        let touches = touches.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT INTO usage_events (request_id, user_id, provider, model, prompt_tokens, \
                         completion_tokens, status, latency_ms, created_at, cost, is_byok) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )
                    .map_err(q)?;
                let mut worked = tx
                    .prepare_cached(
                        "UPDATE ai_provider_keys SET last_used_at = ?1, last_error = NULL, \
                         failing_since = NULL \
                         WHERE user_id = ?2 AND provider = ?3 AND is_active = 1",
                    )
                    .map_err(q)?;
                let mut failed = tx
                    .prepare_cached(
                        "UPDATE ai_provider_keys SET last_error = ?1, \
                         failing_since = COALESCE(failing_since, ?2) \
                         WHERE user_id = ?3 AND provider = ?4 AND is_active = 1",
                    )
                    .map_err(q)?;
                for r in &records {
                    ins.execute(params![
                        r.request_id,
                        r.user_id.to_string(),
                        r.provider,
                        r.model,
                        r.usage.prompt_tokens as i64,
                        r.usage.completion_tokens as i64,
                        r.status,
                        r.latency_ms as i64,
                        ts(r.created_at),
                        r.usage.cost,
                        r.usage.is_byok
                    ])
                    .map_err(q)?;
                }
                for t in &touches {
                    match &t.failure {
                        None => worked.execute(params![
                            ts(t.at),
                            t.user_id.to_string(),
                            t.provider
                        ]),
                        Some(e) => failed.execute(params![
                            e,
                            ts(t.at),
                            t.user_id.to_string(),
                            t.provider
                        ]),
                    }
                    .map_err(q)?;
                }
            }
            tx.commit().map_err(q)
        })
        .await
    }

    pub async fn usage_summary(&self, user_id: Uuid, days: u32) -> Result<Vec<super::UsageRow>> {
        let since = ts(Utc::now() - chrono::Duration::days(i64::from(days)));
        self.call(move |conn| {
            let mut st = conn
                .prepare(
                    "SELECT substr(created_at, 1, 10) AS day, model, COUNT(*), SUM(prompt_tokens), \
                     SUM(completion_tokens), COALESCE(SUM(cost), 0) FROM usage_events \
                     WHERE user_id = ?1 AND created_at >= ?2 GROUP BY day, model ORDER BY day DESC, model",
                )
                .map_err(q)?;
            let rows = st
                .query_map(params![user_id.to_string(), since], |r| {
                    Ok(super::UsageRow {
                        day: r.get(0)?,
                        model: r.get(1)?,
                        requests: r.get::<_, i64>(2)? as u64,
                        prompt_tokens: r.get::<_, i64>(3)? as u64,
                        completion_tokens: r.get::<_, i64>(4)? as u64,
                        cost: r.get(5)?,
                    })
                })
                .map_err(q)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(q)
        })
        .await
    }

    pub async fn append_audit(&self, entry: AuditEntry, at: DateTime<Utc>) -> Result<()> {
        self.call(move |conn| insert_audit(conn, &entry, at).map_err(q))
            .await
    }

    pub async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditEvent>> {
        self.call(move |conn| {
            let cols = "id, at, actor_user_id, action, target, detail, request_id, remote_addr";
            let rows = match filter.user {
                Some(u) => {
                    let mut st = conn
                        .prepare(&format!(
                            "SELECT {cols} FROM audit_log WHERE actor_user_id = ?1 OR target = ?2 \
                             ORDER BY id DESC LIMIT ?3"
                        ))
                        .map_err(q)?;
                    let rows = st
                        .query_map(
                            params![u.to_string(), super::user_target(u), filter.limit],
                            audit_row,
                        )
                        .map_err(q)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                }
                None => {
                    let mut st = conn
                        .prepare(&format!(
                            "SELECT {cols} FROM audit_log ORDER BY id DESC LIMIT ?1"
                        ))
                        .map_err(q)?;
                    let rows = st.query_map([filter.limit], audit_row).map_err(q)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                }
            };
            rows.map_err(q)
        })
        .await
    }
}
