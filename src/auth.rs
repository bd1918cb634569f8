//! Authentication, the spine's "authenticate" stage: who is calling, as a [`Principal`].
//!
//! - Open routes (health, metrics, UI assets): nobody needs to be anyone.
//! - `/admin/*`: the operator's admin token, compared in constant time.
//! - Everything else: an app token (`Authorization: Bearer`, `x-api-key` or `api-key`) ->
//!   shape check (a string that cannot be a token costs no hash and no lookup) -> SHA-256 ->
//!   cached lookup -> [`Caller`].
//!
//! The token cache is keyed by the token's hash (never the token) and holds the token's user
//! and validity. Any change to a token or user drops the affected entries
//! ([`TokenCache::invalidate_user`]), so a revocation is refused on the very next request.
//! Entries also expire after a short TTL as a backstop.
//!
//! Failures are counted (`byok_auth_failures_total{reason}`) and audited through
//! [`failures::FailureLog`]: one `auth.failed` row per source address per window with a count,
//! written off the request path, never one row per failed request.

pub mod failures;

use crate::accounts::{hash_token, looks_like_token};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::request::RequestCtx;
use crate::router::Access;
use crate::secret::Secret;
use crate::store::{Store, TokenRecord};
use chrono::Utc;
use dashmap::DashMap;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The authenticated caller, inserted by auth and read by every later step.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub user_name: String,
    pub token_id: Uuid,
    /// Per-user override of the configured requests-per-minute limit.
    pub requests_per_minute: Option<u32>,
}

/// Who is calling, as authentication found it.
#[derive(Debug)]
pub enum Principal {
    /// An open route: no credentials were looked at.
    Anonymous,
    /// The operator, by admin token.
    Admin,
    /// A user, by app token.
    User(Caller),
}

/// The authenticate stage: token cache, admin token, failure accounting.
pub struct Authenticator {
    pub tokens: TokenCache,
    store: Store,
    admin_token: Option<Secret<String>>,
    failures: Arc<failures::FailureLog>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// Starts the failure log's writer (inside the runtime).
    pub fn new(
        store: Store,
        admin_token: Option<Secret<String>>,
        failure_window: Duration,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        let failures = Arc::new(failures::FailureLog::new(failure_window));
        failures::spawn_writer(&failures, store.clone());
        Authenticator {
            tokens: TokenCache::default(),
            store,
            admin_token,
            failures,
            metrics,
        }
    }

    /// Authenticates a request to a route with `access`.
    ///
    /// # Errors
    /// 401 `invalid_api_key` (missing, unknown, expired or revoked token; wrong admin token),
    /// 403 `user_disabled`, 503 if the store is down on a cache miss.
    pub async fn authenticate(
        &self,
        access: Access,
        headers: &HeaderMap,
        ctx: &RequestCtx,
    ) -> Result<Principal, ProxyError> {
        match access {
            Access::Open => Ok(Principal::Anonymous),
            Access::Admin => {
                let ok = self
                    .admin_token
                    .as_ref()
                    .is_some_and(|t| admin_token_matches(headers, t));
                if ok {
                    Ok(Principal::Admin)
                } else {
                    self.failed(ctx, "admin_token", None);
                    Err(ProxyError::InvalidAdminToken)
                }
            }
            Access::App => {
                let Some(token) = extract_token(headers) else {
                    self.failed(ctx, "missing", None);
                    return Err(ProxyError::InvalidApiKey);
                };
                match self.tokens.authenticate(&self.store, &token).await? {
                    AuthResult::Valid(caller) => Ok(Principal::User(caller)),
                    other => {
                        let actor = match &other {
                            AuthResult::Disabled(u)
                            | AuthResult::Revoked(u)
                            | AuthResult::Expired(u) => Some(*u),
                            AuthResult::Valid(_) | AuthResult::Malformed | AuthResult::Unknown => {
                                None
                            }
                        };
                        self.failed(ctx, other.reason(), actor);
                        Err(match other {
                            AuthResult::Disabled(_) => ProxyError::UserDisabled,
                            _ => ProxyError::InvalidApiKey,
                        })
                    }
                }
            }
        }
    }

    fn failed(&self, ctx: &RequestCtx, reason: &'static str, actor: Option<Uuid>) {
        self.metrics
            .auth_failures
            .with_label_values(&[reason])
            .inc();
        self.failures.record(
            ctx.remote.ip(),
            actor,
            reason,
            &ctx.request_id,
            Instant::now(),
        );
    }

    /// Writes every pending failure row now (shutdown, tests).
    pub async fn flush_failures(&self) {
        failures::write(&self.store, self.failures.drain(Instant::now(), true)).await;
    }
}

/// What a token lookup found.
#[derive(Debug, Clone)]
pub enum AuthResult {
    Valid(Caller),
    Disabled(Uuid),
    Revoked(Uuid),
    Expired(Uuid),
    /// Not shaped like an app token at all (no hash computed, nothing looked up).
    Malformed,
    Unknown,
}

impl AuthResult {
    /// The reason recorded in `auth.failed` audit events.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthResult::Valid(_) => "ok",
            AuthResult::Disabled(_) => "user_disabled",
            AuthResult::Revoked(_) => "token_revoked",
            AuthResult::Expired(_) => "token_expired",
            AuthResult::Malformed => "malformed",
            AuthResult::Unknown => "unknown_token",
        }
    }
}

/// Pulls the app token out of the headers, in SPEC order. The value is wrapped at once so it
/// cannot be logged by accident.
pub fn extract_token(headers: &HeaderMap) -> Option<Secret<String>> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
        .map(|t| Secret::new(t.trim().to_string()))
}

const TTL: Duration = Duration::from_secs(30);

struct Entry {
    record: Arc<TokenRecord>,
    at: Instant,
    /// Set while one request re-reads an expired entry; the others keep using it meanwhile,
    /// so an expiry costs one database lookup, not one per request in flight.
    refreshing: std::sync::atomic::AtomicBool,
}

/// Token hash -> token and user, filled on first use.
#[derive(Default, Clone)]
pub struct TokenCache {
    map: Arc<DashMap<[u8; 32], Entry>>,
}

impl TokenCache {
    /// Resolves a token; a cache hit costs no database round-trip.
    ///
    /// # Errors
    /// The store failed on a cache miss.
    pub async fn authenticate(
        &self,
        store: &Store,
        token: &Secret<String>,
    ) -> Result<AuthResult, crate::store::Error> {
        if !looks_like_token(token.expose()) {
            return Ok(AuthResult::Malformed);
        }
        let hash = hash_token(token.expose());
        let cached = self.map.get(&hash).map(|e| {
            let fresh = e.at.elapsed() < TTL
                || e.refreshing.swap(true, std::sync::atomic::Ordering::AcqRel);
            (e.record.clone(), fresh)
        });
        let record = match cached {
            Some((r, true)) => r,
            stale => match store.token_by_hash(&hash).await {
                Ok(Some(r)) => {
                    let r = Arc::new(r);
                    let entry = Entry {
                        record: r.clone(),
                        at: Instant::now(),
                        refreshing: false.into(),
                    };
                    self.map.insert(hash, entry);
                    r
                }
                Ok(None) => {
                    self.map.remove(&hash);
                    return Ok(AuthResult::Unknown);
                }
                Err(e) => {
                    if let Some(entry) = self.map.get(&hash) {
                        entry
                            .refreshing
                            .store(false, std::sync::atomic::Ordering::Release);
                    }
                    match (e, stale) {
                        // The database is down: nothing can have changed since this entry was
                        // read, so it keeps serving until the database is back.
                        (crate::store::Error::Unavailable(_), Some((r, _))) => r,
                        (e, _) => return Err(e),
                    }
                }
            },
        };
        Ok(classify(&record))
    }

    /// Drops every cached token of `user_id` (after a token or user change).
    pub fn invalidate_user(&self, user_id: Uuid) {
        self.map.retain(|_, e| e.record.user.id != user_id);
    }

    /// Whether any token of `user_id` is in memory.
    pub fn has_user(&self, user_id: Uuid) -> bool {
        self.map.iter().any(|e| e.record.user.id == user_id)
    }

    /// Drops everything (e.g. when cross-replica notifications were interrupted).
    pub fn clear(&self) {
        self.map.clear();
    }
}

fn classify(r: &TokenRecord) -> AuthResult {
    if r.token.revoked_at.is_some() {
        AuthResult::Revoked(r.user.id)
    } else if r.token.expires_at.is_some_and(|t| t <= Utc::now()) {
        AuthResult::Expired(r.user.id)
    } else if r.user.disabled {
        AuthResult::Disabled(r.user.id)
    } else {
        AuthResult::Valid(Caller {
            user_id: r.user.id,
            user_name: r.user.name.clone(),
            token_id: r.token.id,
            requests_per_minute: r.user.requests_per_minute,
        })
    }
}

/// Compares a presented admin token with the configured one in constant time (hashing both
/// first, so lengths leak nothing either).
pub fn admin_token_matches(headers: &HeaderMap, configured: &Secret<String>) -> bool {
    let Some(presented) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let a = Sha256::digest(presented.trim().as_bytes());
    let b = Sha256::digest(configured.expose().as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEntry, UserPatch};
    use http::HeaderValue;
    use proptest::prelude::*;

    fn audit() -> AuditEntry {
        AuditEntry {
            actor_user_id: None,
            action: "test",
            target: None,
            detail: serde_json::json!({}),
            request_id: None,
            remote_addr: None,
        }
    }

    fn ctx() -> RequestCtx {
        RequestCtx::new(&HeaderMap::new(), "127.0.0.1:1".parse().unwrap())
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    /// Every outcome of the authenticate stage, against a real (SQLite) store.
    #[tokio::test]
    async fn outcomes_of_the_authenticate_stage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(
            &crate::config::DatabaseUrl::Sqlite(dir.path().join("a.db")),
            1,
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let admin = Secret::new("a".repeat(32));
        let auth = Authenticator::new(
            store.clone(),
            Some(admin.clone()),
            Duration::from_secs(60),
            metrics.clone(),
        );
        let user = store.create_user("u", None, audit()).await.unwrap();
        let good = crate::accounts::create_token(&store, &user, None, None, audit())
            .await
            .unwrap();
        let ctx = ctx();
        // Open routes look at nothing.
        assert!(matches!(
            auth.authenticate(Access::Open, &HeaderMap::new(), &ctx)
                .await,
            Ok(Principal::Anonymous)
        ));
        // The admin token on /admin only.
        assert!(matches!(
            auth.authenticate(Access::Admin, &bearer(admin.expose()), &ctx)
                .await,
            Ok(Principal::Admin)
        ));
        assert!(matches!(
            auth.authenticate(Access::App, &bearer(admin.expose()), &ctx)
                .await,
            Err(ProxyError::InvalidApiKey)
        ));
        assert!(matches!(
            auth.authenticate(Access::Admin, &bearer(good.token.expose()), &ctx)
                .await,
            Err(ProxyError::InvalidAdminToken)
        ));
        // A valid app token, by each header.
        for (name, value) in [
            ("authorization", format!("Bearer {}", good.token.expose())),
            ("x-api-key", good.token.expose().clone()),
            ("api-key", good.token.expose().clone()),
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::HeaderName::from_static(name),
                HeaderValue::from_str(&value).unwrap(),
            );
            match auth.authenticate(Access::App, &h, &ctx).await {
                Ok(Principal::User(c)) => assert_eq!(c.user_id, user.id),
                other => panic!("{name}: {other:?}"),
            }
        }
        // Missing, malformed, unknown.
        for h in [
            HeaderMap::new(),
            bearer("x"),
            bearer(&format!("bkp_{}", "A".repeat(43))),
        ] {
            assert!(matches!(
                auth.authenticate(Access::App, &h, &ctx).await,
                Err(ProxyError::InvalidApiKey)
            ));
        }
        // A disabled user: 403; then revoked: 401.
        store
            .update_user(
                user.id,
                UserPatch {
                    disabled: Some(true),
                    ..UserPatch::default()
                },
                None,
            )
            .await
            .unwrap();
        auth.tokens.invalidate_user(user.id);
        assert!(matches!(
            auth.authenticate(Access::App, &bearer(good.token.expose()), &ctx)
                .await,
            Err(ProxyError::UserDisabled)
        ));
        store.revoke_token(good.record.id, audit()).await.unwrap();
        auth.tokens.invalidate_user(user.id);
        assert!(matches!(
            auth.authenticate(Access::App, &bearer(good.token.expose()), &ctx)
                .await,
            Err(ProxyError::InvalidApiKey)
        ));
        // Each failure was counted by reason and lands in one aggregated audit row.
        let count = |r: &str| metrics.auth_failures.with_label_values(&[r]).get();
        // (The admin token sent as an app token is not token-shaped: malformed.)
        assert_eq!(
            (count("admin_token"), count("missing"), count("malformed")),
            (1, 1, 2)
        );
        assert_eq!((count("unknown_token"), count("user_disabled")), (1, 1));
        assert_eq!(count("token_revoked"), 1);
        auth.flush_failures().await;
        let rows = store
            .list_audit(crate::store::AuditFilter {
                user: None,
                limit: 100,
            })
            .await
            .unwrap();
        let total: u64 = rows
            .iter()
            .filter(|r| r.action == "auth.failed")
            .map(|r| r.detail["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 7);
    }

    proptest! {
        /// Any header bytes: extraction never panics, and what it returns is trimmed text
        /// taken from one of the three headers.
        #[test]
        fn token_extraction_never_panics(
            auth in proptest::collection::vec(any::<u8>(), 0..80),
            key in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&auth) {
                h.insert(http::header::AUTHORIZATION, v);
            }
            if let Ok(v) = HeaderValue::from_bytes(&key) {
                h.insert("x-api-key", v);
            }
            if let Some(t) = extract_token(&h) {
                let t = t.expose();
                prop_assert_eq!(t.trim(), t.as_str());
                let a = String::from_utf8_lossy(&auth);
                let k = String::from_utf8_lossy(&key);
                prop_assert!(a.contains(t.as_str()) || k.contains(t.as_str()));
                // Only token-shaped strings ever reach a hash and a lookup.
                if looks_like_token(t) {
                    prop_assert!(t.len() == 47 && t.starts_with("bkp_"));
                }
            }
        }
    }
}
