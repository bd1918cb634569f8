//! Authentication, the spine's "authenticate" stage: who is calling, as a [`Principal`].
//!
//! - Open routes (health, metrics, UI assets, the sign-in redirects): nobody needs to be
//!   anyone.
//! - `/v1/*`: an app token (`Authorization: Bearer`, `x-api-key` or `api-key`) -> shape check
//!   (a string that cannot be a token costs no hash and no lookup) -> SHA-256 -> cached
//!   lookup -> [`Caller`]. Never a session cookie.
//! - `/api/*` (and `POST /auth/logout`): an app token when one is sent, else the web session
//!   cookie ([`sessions`]); a session request that changes state must pass the CSRF check.
//! - `/admin/*`: the operator's admin token, compared in constant time, or the web session
//!   of a user who is an admin (same CSRF rule).
//!
//! The [`Caller`] knows how it authenticated ([`Via`]): a token carries its [`Scopes`], which
//! [`Caller::authorize`] checks once the route is known, before any handler runs.
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
pub mod oidc;
pub mod scopes;
pub mod sessions;

use crate::accounts::{hash_token, looks_like_token};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::request::RequestCtx;
use crate::router::{Access, Route};
use crate::secret::Secret;
use crate::store::{Store, TokenRecord};
use chrono::Utc;
use dashmap::DashMap;
use http::HeaderMap;
use http::Method;
use scopes::Scopes;
use sessions::{SessionResult, Sessions};
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
    pub email: Option<String>,
    pub is_admin: bool,
    /// Per-user override of the configured requests-per-minute limit.
    pub requests_per_minute: Option<u32>,
    /// How this caller authenticated.
    pub via: Via,
}

/// The credential a [`Caller`] presented.
#[derive(Clone)]
pub enum Via {
    /// An app token, with what it may do.
    Token { id: Uuid, scopes: Arc<Scopes> },
    /// A web session (never on `/v1`); `csrf` is what its state-changing calls must send.
    Session { id_hash: [u8; 32], csrf: String },
}

/// Session hash and CSRF value are credentials of a sort: never printed.
impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Token { id, scopes } => f
                .debug_struct("Token")
                .field("id", id)
                .field("scopes", scopes)
                .finish(),
            Via::Session { .. } => f.write_str("Session { [redacted] }"),
        }
    }
}

static UNSCOPED: Scopes = Scopes {
    allowed_models: None,
    allowed_routes: None,
    requests_per_minute: None,
};

impl Caller {
    /// The scopes this caller is held to (a session has its user's full rights).
    pub fn scopes(&self) -> &Scopes {
        match &self.via {
            Via::Token { scopes, .. } => scopes,
            Via::Session { .. } => &UNSCOPED,
        }
    }

    /// The app token used, if any.
    pub fn token_id(&self) -> Option<Uuid> {
        match &self.via {
            Via::Token { id, .. } => Some(*id),
            Via::Session { .. } => None,
        }
    }

    /// What the token's scopes allow on `route`, checked before the handler: a scoped token
    /// calls only its `allowed_routes` and never manages tokens.
    ///
    /// # Errors
    /// 403 `route_not_allowed`, 403 `insufficient_scope`.
    pub fn authorize(&self, route: &Route, method: &Method) -> Result<(), ProxyError> {
        let scopes = self.scopes();
        scopes.check_route(route)?;
        // A scoped token (an IDE plugin's, say) uses models; it does not change the account:
        // no token or provider-key changes (reading, and testing a key, stay allowed).
        let manages = method != Method::GET
            && matches!(
                route,
                Route::Tokens | Route::Token(_) | Route::Keys | Route::Key(_)
            );
        if manages && scopes.is_scoped() {
            return Err(ProxyError::InsufficientScope);
        }
        Ok(())
    }
}

/// Who is calling, as authentication found it.
#[derive(Debug)]
pub enum Principal {
    /// An open route: no credentials were looked at.
    Anonymous,
    /// The operator: by admin token (`None`), or an admin user's web session.
    Admin(Option<Caller>),
    /// A user, by app token or (outside `/v1`) web session.
    User(Caller),
}

/// The authenticate stage: token cache, admin token, failure accounting.
pub struct Authenticator {
    pub tokens: TokenCache,
    /// Web sessions (cookie hash -> session and user), with their clock.
    pub sessions: Sessions,
    store: Store,
    admin_token: Option<Secret<String>>,
    /// `scheme://host[:port]` of `public_base_url`, for the CSRF `Origin` check.
    public_origin: String,
    failures: Arc<failures::FailureLog>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// Starts the failure log's writer (inside the runtime).
    pub fn new(
        store: Store,
        config: &crate::config::Config,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        let failures = Arc::new(failures::FailureLog::new(config.auth_failure_window));
        failures::spawn_writer(&failures, store.clone());
        Authenticator {
            tokens: TokenCache::default(),
            sessions: Sessions::new(config.auth.session_ttl, config.auth.session_idle_timeout),
            store,
            admin_token: config.admin_token.clone(),
            public_origin: sessions::origin_of(&config.public_base_url),
            failures,
            metrics,
        }
    }

    /// Authenticates a request to a route with `access`.
    ///
    /// # Errors
    /// 401 `invalid_api_key` (missing, unknown, expired or revoked token or session; wrong
    /// admin token), 403 `user_disabled`, 403 `csrf_failed` (a session request that changes
    /// state without the CSRF header), 503 if the store is down on a cache miss.
    pub async fn authenticate(
        &self,
        access: Access,
        method: &Method,
        headers: &HeaderMap,
        ctx: &RequestCtx,
    ) -> Result<Principal, ProxyError> {
        match access {
            Access::Open => Ok(Principal::Anonymous),
            Access::Admin if headers.contains_key(http::header::AUTHORIZATION) => {
                let ok = self
                    .admin_token
                    .as_ref()
                    .is_some_and(|t| admin_token_matches(headers, t));
                if ok {
                    Ok(Principal::Admin(None))
                } else {
                    self.failed(ctx, "admin_token", None);
                    Err(ProxyError::InvalidAdminToken)
                }
            }
            Access::Admin => match self.session(method, headers, ctx).await? {
                Some(caller) if caller.is_admin => Ok(Principal::Admin(Some(caller))),
                _ => {
                    self.failed(ctx, "admin_token", None);
                    Err(ProxyError::InvalidAdminToken)
                }
            },
            Access::User if extract_token(headers).is_none() => {
                match self.session(method, headers, ctx).await? {
                    Some(caller) => Ok(Principal::User(caller)),
                    None => {
                        self.failed(ctx, "missing", None);
                        Err(ProxyError::InvalidApiKey)
                    }
                }
            }
            Access::App | Access::User => self.token(headers, ctx).await.map(Principal::User),
        }
    }

    /// An app token from the headers.
    async fn token(&self, headers: &HeaderMap, ctx: &RequestCtx) -> Result<Caller, ProxyError> {
        let Some(token) = extract_token(headers) else {
            self.failed(ctx, "missing", None);
            return Err(ProxyError::InvalidApiKey);
        };
        match self.tokens.authenticate(&self.store, &token).await? {
            AuthResult::Valid(caller) => Ok(caller),
            other => {
                let actor = match &other {
                    AuthResult::Disabled(u) | AuthResult::Revoked(u) | AuthResult::Expired(u) => {
                        Some(*u)
                    }
                    AuthResult::Valid(_) | AuthResult::Malformed | AuthResult::Unknown => None,
                };
                self.failed(ctx, other.reason(), actor);
                Err(match other {
                    AuthResult::Disabled(_) => ProxyError::UserDisabled,
                    _ => ProxyError::InvalidApiKey,
                })
            }
        }
    }

    /// The web session of the request's cookie (`None` without a cookie), CSRF-checked when
    /// the method changes state.
    async fn session(
        &self,
        method: &Method,
        headers: &HeaderMap,
        ctx: &RequestCtx,
    ) -> Result<Option<Caller>, ProxyError> {
        let Some(value) = sessions::cookie(headers, sessions::COOKIE) else {
            return Ok(None);
        };
        let record = match self.sessions.authenticate(&self.store, value).await? {
            SessionResult::Valid(r) => r,
            SessionResult::Disabled(u) => {
                self.failed(ctx, "user_disabled", Some(u));
                return Err(ProxyError::UserDisabled);
            }
            SessionResult::Expired(u) => {
                self.failed(ctx, "session_expired", Some(u));
                return Err(ProxyError::InvalidApiKey);
            }
            SessionResult::Unknown => {
                self.failed(ctx, "unknown_session", None);
                return Err(ProxyError::InvalidApiKey);
            }
        };
        let csrf = sessions::csrf_for(value);
        if sessions::changes_state(method)
            && !sessions::check_csrf(headers, &csrf, &self.public_origin)
        {
            return Err(ProxyError::CsrfFailed);
        }
        let user = &record.user;
        Ok(Some(Caller {
            user_id: user.id,
            user_name: user.name.clone(),
            email: user.email.clone(),
            is_admin: user.is_admin,
            requests_per_minute: user.requests_per_minute,
            via: Via::Session {
                id_hash: record.session.id_hash,
                csrf,
            },
        }))
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
    /// The token's scopes, shared by every caller built from this entry.
    scopes: Arc<Scopes>,
    at: Instant,
    /// Set while one request re-reads an expired entry; the others keep using it meanwhile,
    /// so an expiry costs one database lookup, not one per request in flight.
    refreshing: std::sync::atomic::AtomicBool,
}

/// How often a token's `last_used_at` is written (the first use always is).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Token hash -> token and user, filled on first use.
#[derive(Default, Clone)]
pub struct TokenCache {
    map: Arc<DashMap<[u8; 32], Entry>>,
    /// Token id -> when its `last_used_at` was last written by this replica.
    touched: Arc<DashMap<Uuid, Instant>>,
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
            ((e.record.clone(), e.scopes.clone()), fresh)
        });
        let (record, scopes) = match cached {
            Some((r, true)) => r,
            stale => match store.token_by_hash(&hash).await {
                Ok(Some(r)) => {
                    let scopes = Arc::new(r.token.scopes.clone());
                    let r = Arc::new(r);
                    let entry = Entry {
                        record: r.clone(),
                        scopes: scopes.clone(),
                        at: Instant::now(),
                        refreshing: false.into(),
                    };
                    self.map.insert(hash, entry);
                    (r, scopes)
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
        let result = classify(&record, scopes);
        if matches!(result, AuthResult::Valid(_)) {
            self.touch(store, record.token.id);
        }
        Ok(result)
    }

    /// Writes `last_used_at` off the request path, at most once per [`TOUCH_EVERY`].
    fn touch(&self, store: &Store, id: Uuid) {
        let now = Instant::now();
        let due = match self.touched.get(&id) {
            Some(at) => now.duration_since(*at) >= TOUCH_EVERY,
            None => true,
        };
        if !due {
            return;
        }
        self.touched.insert(id, now);
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(id, crate::store::now()).await {
                tracing::debug!(error = %e, "could not record token use");
            }
        });
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

fn classify(r: &TokenRecord, scopes: Arc<Scopes>) -> AuthResult {
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
            email: r.user.email.clone(),
            is_admin: r.user.is_admin,
            requests_per_minute: r.user.requests_per_minute,
            via: Via::Token {
                id: r.token.id,
                scopes,
            },
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
mod tests;
