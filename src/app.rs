//! `AppState` and the request pipeline. The steps, outermost first:
//!
//! 1. `server::run` accepts and hands each request to [`App::handle`].
//! 2. Request id: `x-request-id` is propagated (if sane) or minted, and echoed on the response;
//!    a tracing span carries it and the route label.
//! 3. Router -> [`Route`]; operations routes (`/healthz`, `/readyz`) answer without auth.
//! 4. Auth on every route outside the open allowlist: app token -> [`Caller`] (cached), or the
//!    admin token (constant-time) on `/admin`. Failed app-token attempts are audited off the
//!    request path.
//! 5. Handler: bodies are read through a size limit (413), JSON is checked into typed requests,
//!    and every error becomes the OpenAI envelope (Anthropic's on `/v1/messages*`).
//! 6. One access log line per request: id, route, status, duration, user.

use crate::auth::{AuthResult, Caller, TokenCache};
use crate::config::Config;
use crate::error::ProxyError;
use crate::http_util::{json_response, Body};
use crate::keys::crypto::{MasterKey, Vault};
use crate::keys::ring::KeyRing;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::proxy::models::Catalog;
use crate::router::{Access, Route};
use crate::store::{AuditEntry, Store};
use crate::upstream::Upstream;
use crate::usage::Recorder;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

/// Everything a request may need, shared by all connections.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub vault: Vault,
    /// Token hash -> caller, cached.
    pub tokens: TokenCache,
    /// User -> decrypted active credentials, cached.
    pub keyring: KeyRing,
    /// The pooled upstream client.
    pub upstream: Upstream,
    /// The cached upstream model catalog.
    pub catalog: Catalog,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Usage records to the batch writer.
    pub usage: Recorder,
    /// Per-provider health from upstream outcomes.
    pub health: crate::health::Health,
}

/// Per-request facts that handlers and audit events need.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub remote: SocketAddr,
    /// When the request arrived (for durations measured at the end of a stream).
    pub start: Instant,
}

/// Set in response extensions by handlers that write the access line themselves (proxied
/// requests log at the end of the body, with bytes and usage).
#[derive(Debug, Clone, Copy)]
pub struct LoggedAtEnd;

impl RequestCtx {
    /// An audit entry for `action` by `actor` in this request.
    pub fn audit(&self, action: &'static str, actor: Option<uuid::Uuid>) -> AuditEntry {
        AuditEntry {
            actor_user_id: actor,
            action,
            target: None,
            detail: serde_json::Value::Object(Default::default()),
            request_id: Some(self.request_id.clone()),
            remote_addr: Some(self.remote.ip().to_string()),
        }
    }
}

/// A global in-flight slot, counted in the `byok_in_flight_requests` gauge while held.
/// Everything a response holds until its body ends: the global slot and the caller's
/// concurrency permit (one wrapper, so a stream pays for one extra layer only).
struct InFlight {
    gauge: prometheus::IntGauge,
    _slot: OwnedSemaphorePermit,
    _user: Option<OwnedSemaphorePermit>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
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
    /// Connects the store, applies migrations and opens the vault.
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
        let listen_url = store.listen_url();
        let app = Arc::new(AppState {
            health: crate::health::Health::new(config.health.clone()),
            metrics,
            limits,
            usage,
            keyring: KeyRing::new(store.clone(), vault.clone()),
            config: Arc::new(config),
            store,
            vault,
            tokens: TokenCache::default(),
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

    /// Serves one request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        let start = Instant::now();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let route = Route::parse(req.uri().path());
        let label = route.label();
        let anthropic = route.anthropic_errors();
        let method = req.method().clone();
        let ctx = RequestCtx {
            request_id: request_id.clone(),
            remote,
            start,
        };
        let span = tracing::info_span!("request", id = %request_id, route = label);
        let mut user_permit = None;
        let (result, user, slot) = match self.limits.enter(&self.metrics) {
            Ok(slot) => {
                let (result, user) = self
                    .dispatch(route, req, ctx, &mut user_permit)
                    .instrument(span)
                    .await;
                (result, user, Some(slot))
            }
            Err(e) => (Err(e), None, None),
        };
        let mut resp = result.unwrap_or_else(|e| e.to_response(anthropic));
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        let status = resp.status();
        self.metrics
            .http_requests
            .with_label_values(&[label, status.as_str()])
            .inc();
        self.metrics
            .http_duration
            .with_label_values(&[label])
            .observe(start.elapsed().as_secs_f64());
        if let Some(slot) = slot {
            self.metrics.in_flight.inc();
            let in_flight = InFlight {
                gauge: self.metrics.in_flight.clone(),
                _slot: slot,
                _user: user_permit,
            };
            resp = crate::http_util::guard_body(resp, in_flight);
        }
        if resp.extensions().get::<LoggedAtEnd>().is_some() {
            return resp;
        }
        let error = resp
            .extensions()
            .get::<crate::error::ErrorKind>()
            .map(|k| k.0);
        tracing::info!(
            target: "byok_proxy::access",
            request_id = %request_id,
            %method,
            route = label,
            status = resp.status().as_u16(),
            user = user.map(|u| u.to_string()).unwrap_or_default(),
            error = error.unwrap_or(""),
            duration_ms = start.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        resp
    }

    async fn dispatch(
        self: &Arc<Self>,
        route: Route,
        req: Request<Incoming>,
        ctx: RequestCtx,
        user_permit: &mut Option<OwnedSemaphorePermit>,
    ) -> (Result<Response<Body>, ProxyError>, Option<uuid::Uuid>) {
        match route.access() {
            Access::Open => (self.open_route(route).await, None),
            Access::Admin => {
                let ok = self
                    .config
                    .admin_token
                    .as_ref()
                    .is_some_and(|t| crate::auth::admin_token_matches(req.headers(), t));
                if !ok {
                    return (Err(ProxyError::InvalidAdminToken), None);
                }
                (crate::admin::handle(self, route, req, &ctx).await, None)
            }
            Access::App => match self.authenticate(&req, &ctx).await {
                Ok(caller) => {
                    let user = caller.user_id;
                    let result = self.app_route(route, req, &ctx, caller, user_permit).await;
                    (result, Some(user))
                }
                Err(e) => (Err(e), None),
            },
        }
    }

    async fn open_route(&self, route: Route) -> Result<Response<Body>, ProxyError> {
        match route {
            Route::Healthz => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            )),
            Route::Readyz => match self.store.ping().await {
                Ok(()) => Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ready", "store": self.store.backend()}),
                )),
                Err(e) => {
                    tracing::warn!(error = %e, "readiness check failed");
                    Ok(json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({"status": "not ready", "store": "unreachable"}),
                    ))
                }
            },
            Route::Ui(path) if self.config.ui_enabled => crate::ui::serve(&path),
            Route::OpenApi => {
                let mut resp = Response::new(crate::http_util::full(crate::api::OPENAPI));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(resp)
            }
            Route::Metrics if self.config.metrics_enabled => {
                self.update_health_gauge();
                let mut resp = Response::new(crate::http_util::full(self.metrics.render()));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(resp)
            }
            Route::NotFound => Err(ProxyError::NotFound(
                "Unknown route. The API lives under /v1, /api and /admin.".into(),
            )),
            _ => Err(ProxyError::NotFound("Not available in this build.".into())),
        }
    }

    /// Resolves the app token into a [`Caller`].
    async fn authenticate(
        &self,
        req: &Request<Incoming>,
        ctx: &RequestCtx,
    ) -> Result<Caller, ProxyError> {
        let Some(token) = crate::auth::extract_token(req.headers()) else {
            return Err(ProxyError::InvalidApiKey);
        };
        let result = self.tokens.authenticate(&self.store, &token).await?;
        match result {
            AuthResult::Valid(caller) => Ok(caller),
            other => {
                let actor = match &other {
                    AuthResult::Disabled(u) | AuthResult::Revoked(u) | AuthResult::Expired(u) => {
                        Some(*u)
                    }
                    _ => None,
                };
                let mut entry = ctx.audit("auth.failed", actor);
                entry.detail = serde_json::json!({ "reason": other.reason() });
                let store = self.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.append_audit(entry).await {
                        tracing::warn!(error = %e, "could not record auth.failed");
                    }
                });
                Err(match other {
                    AuthResult::Disabled(_) => ProxyError::UserDisabled,
                    _ => ProxyError::InvalidApiKey,
                })
            }
        }
    }

    async fn app_route(
        self: &Arc<Self>,
        route: Route,
        req: Request<Incoming>,
        ctx: &RequestCtx,
        caller: Caller,
        user_permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<Response<Body>, ProxyError> {
        let admission = self.limits.admit(&caller, &self.metrics).await?;
        // Held by the response body, with the global slot (see `handle`).
        *user_permit = Some(admission.permit);
        let resp = match route {
            Route::ChatCompletions
            | Route::Embeddings
            | Route::Responses
            | Route::Messages
            | Route::CountTokens
            | Route::Models
            | Route::Model(_) => crate::proxy::handle(self, route, req, ctx, &caller).await,
            _ => crate::api::handle(self, route, req, ctx, &caller).await,
        }?;
        let mut resp = resp;
        let h = resp.headers_mut();
        h.insert(
            "x-ratelimit-limit-requests",
            HeaderValue::from(admission.info.limit),
        );
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from(admission.info.remaining),
        );
        Ok(resp)
    }

    /// Sets `byok_provider_health{provider,status}` to 1 for each provider's current status.
    fn update_health_gauge(&self) {
        for h in self.health.all(Instant::now()) {
            for status in crate::health::STATUSES {
                self.metrics
                    .provider_health
                    .with_label_values(&[h.provider.as_str(), status])
                    .set(i64::from(status == h.status));
            }
        }
    }

    /// Drops everything cached about `user_id` (tokens and credentials) after a change.
    pub fn invalidate_user(&self, user_id: uuid::Uuid) {
        self.tokens.invalidate_user(user_id);
        self.keyring.invalidate(user_id);
    }
}

impl crate::store::notify::Invalidate for AppState {
    fn invalidate_user(&self, user_id: uuid::Uuid) {
        AppState::invalidate_user(self, user_id);
    }

    fn invalidate_all(&self) {
        self.tokens.clear();
        self.keyring.clear();
    }
}
