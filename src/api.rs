//! The self-service API under `/api`, authenticated by app token or web session: a user
//! manages their own provider keys and app tokens ([`tokens`]) and reads their own audit
//! trail. A key or token id of another user answers 404, never 403, so ids cannot be probed.

mod key_test;
pub mod tokens;

use crate::auth::{Caller, Via};
use crate::config::UpstreamMode;
use crate::error::ProxyError;
use crate::http_util::{double_option, empty, json_response, Body};
use crate::keys::{self, providers, KeyView};
use crate::request::{path_id, read_json, RequestCtx};
use crate::router::Route;
use crate::state::AppState;
use crate::store::{AuditFilter, KeyPatch};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Management bodies are small; this bounds them regardless of `limits.max_body_bytes`.
const API_BODY_LIMIT: usize = 256 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    provider: String,
    credentials: serde_json::Value,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchKey {
    #[serde(default, deserialize_with = "double_option")]
    label: Option<Option<String>>,
    #[serde(default)]
    is_active: Option<bool>,
}

pub(crate) fn key_not_found() -> ProxyError {
    ProxyError::NotFound("No such key. GET /api/keys lists yours.".into())
}

fn check_label(label: &Option<String>) -> Result<(), ProxyError> {
    match label {
        Some(l) if l.chars().count() > 100 => Err(ProxyError::InvalidRequest(
            "label must be at most 100 characters".into(),
        )),
        _ => Ok(()),
    }
}

fn limit_param(req: &Request<Incoming>) -> u32 {
    req.uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100u32)
        .clamp(1, 1000)
}

pub async fn handle(
    app: &Arc<AppState>,
    route: Route,
    req: Request<Incoming>,
    ctx: &RequestCtx,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    let method = req.method().clone();
    let body_limit = app.body_limits(API_BODY_LIMIT);
    match (route, method) {
        (Route::Me, Method::GET) => Ok(json_response(StatusCode::OK, &me(caller))),
        (Route::Tokens, Method::GET) => tokens::list(app, caller).await,
        (Route::Tokens, Method::POST) => tokens::create(app, req, ctx, caller).await,
        (Route::Token(id), Method::DELETE) => tokens::revoke(app, &id, ctx, caller).await,
        (Route::AuthLogout, Method::POST) => crate::signin::logout(app, caller, ctx).await,
        (Route::Providers, Method::GET) => Ok(json_response(
            StatusCode::OK,
            &json!({ "object": "list", "data": provider_list(&app.config.upstream) }),
        )),
        (Route::Keys, Method::GET) => {
            let keys = app.store.list_keys(caller.user_id).await?;
            let data: Vec<KeyView> = keys.iter().map(KeyView::from).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "object": "list", "data": data }),
            ))
        }
        (Route::Keys, Method::POST) => {
            let body: NewKey = read_json(req, body_limit).await?;
            check_label(&body.label)?;
            if app.config.upstream.mode == UpstreamMode::Direct
                && !crate::upstream::direct::supports(&body.provider)
            {
                return Err(ProxyError::InvalidRequest(format!(
                    "This byok-proxy runs in direct mode, where {} keys cannot be used: {}.",
                    body.provider,
                    crate::upstream::direct::unsupported_reason(&body.provider)
                )));
            }
            let key = keys::add_key(
                &app.store,
                &app.vault,
                caller.user_id,
                &body.provider,
                &body.credentials,
                body.label,
                ctx.audit("key.created", Some(caller.user_id)),
            )
            .await
            .map_err(key_error)?;
            app.keyring.invalidate(caller.user_id);
            Ok(json_response(StatusCode::CREATED, &KeyView::from(&key)))
        }
        (Route::Key(id), Method::PATCH) => {
            let id = path_id(&id, key_not_found)?;
            let body: PatchKey = read_json(req, body_limit).await?;
            if let Some(label) = &body.label {
                check_label(label)?;
            }
            let patch = KeyPatch {
                label: body.label,
                is_active: body.is_active,
            };
            let key = keys::update_key(
                &app.store,
                caller.user_id,
                id,
                patch,
                ctx.audit("key.updated", Some(caller.user_id)),
            )
            .await
            .map_err(key_error)?
            .ok_or_else(key_not_found)?;
            app.keyring.invalidate(caller.user_id);
            Ok(json_response(StatusCode::OK, &KeyView::from(&key)))
        }
        (Route::Key(id), Method::DELETE) => {
            let id = path_id(&id, key_not_found)?;
            let mut audit = ctx.audit("key.deleted", Some(caller.user_id));
            audit.target = Some(format!("key:{id}"));
            if !app.store.delete_key(caller.user_id, id, audit).await? {
                return Err(key_not_found());
            }
            app.keyring.invalidate(caller.user_id);
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        (Route::KeyTest(id), Method::POST) => {
            let id = path_id(&id, key_not_found)?;
            let row = app
                .store
                .get_key(caller.user_id, id)
                .await?
                .ok_or_else(key_not_found)?;
            let cred = keys::open(&app.vault, &row)
                .ok()
                .and_then(|plain| crate::keys::ring::Credential::from_plaintext(&row, plain))
                .ok_or_else(|| {
                    tracing::error!(key_id = %id, "stored credential does not open");
                    ProxyError::Internal
                })?;
            let outcome = key_test::run(app, &cred).await;
            let mut audit = ctx.audit("key.tested", Some(caller.user_id));
            audit.target = Some(format!("key:{id}"));
            audit.detail =
                json!({ "provider": row.provider, "ok": outcome.ok, "status": outcome.status });
            if let Err(e) = app.store.append_audit(audit).await {
                tracing::warn!(error = %e, "could not record key.tested");
            }
            Ok(json_response(StatusCode::OK, &outcome))
        }
        (Route::ProvidersHealth, Method::GET) => Ok(json_response(
            StatusCode::OK,
            &json!({ "object": "list", "data": app.health.all(std::time::Instant::now()) }),
        )),
        (Route::Usage, Method::GET) => {
            let days = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("days=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(30u32)
                .clamp(1, 366);
            let rows = app.store.usage_summary(caller.user_id, days).await?;
            let totals = rows.iter().fold((0u64, 0u64, 0f64, 0u64), |t, r| {
                (
                    t.0 + r.prompt_tokens,
                    t.1 + r.completion_tokens,
                    t.2 + r.cost,
                    t.3 + r.requests,
                )
            });
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "object": "list",
                    "days": days,
                    "data": rows,
                    "totals": {"prompt_tokens": totals.0, "completion_tokens": totals.1, "cost": totals.2, "requests": totals.3},
                }),
            ))
        }
        (Route::Audit, Method::GET) => {
            let limit = limit_param(&req);
            let events = app
                .store
                .list_audit(AuditFilter {
                    user: Some(caller.user_id),
                    limit,
                })
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "object": "list", "data": events }),
            ))
        }
        (
            Route::Me
            | Route::Providers
            | Route::Keys
            | Route::Key(_)
            | Route::Audit
            | Route::Tokens
            | Route::Token(_)
            | Route::AuthLogout,
            _,
        ) => Err(ProxyError::MethodNotAllowed),
        _ => Err(ProxyError::NotFound("Not available in this build.".into())),
    }
}

/// `GET /api/providers`: every provider with its credential fields, and whether this proxy
/// can use its keys (direct mode: only API-key providers with a configured endpoint).
fn provider_list(upstream: &crate::config::UpstreamConfig) -> Vec<serde_json::Value> {
    providers::PROVIDERS
        .iter()
        .map(|p| {
            let (available, reason) = match upstream.mode {
                UpstreamMode::Gateway => (true, None),
                UpstreamMode::Direct if !crate::upstream::direct::supports(p.id) => (
                    false,
                    Some(crate::upstream::direct::unsupported_reason(p.id)),
                ),
                UpstreamMode::Direct if !upstream.direct.contains_key(p.id) => (
                    false,
                    Some(format!(
                        "no direct endpoint is configured for {} (upstream.direct.{}.base_url)",
                        p.id, p.id
                    )),
                ),
                UpstreamMode::Direct => (true, None),
            };
            let mut v = json!(p);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("available".into(), json!(available));
                if let Some(r) = reason {
                    obj.insert("unavailable_reason".into(), json!(r));
                }
            }
            v
        })
        .collect()
}

/// `GET /api/me`: who is calling and how; with a session, the CSRF value its state-changing
/// calls must send. (`id`, `name` and `token_id` at the top level are kept for older clients.)
fn me(caller: &Caller) -> serde_json::Value {
    let user = json!({
        "id": caller.user_id,
        "name": caller.user_name,
        "email": caller.email,
        "is_admin": caller.is_admin,
    });
    match &caller.via {
        Via::Token { id, scopes } => json!({
            "user": user,
            "auth": "token",
            "token_id": id,
            "scopes": **scopes,
            "id": caller.user_id,
            "name": caller.user_name,
        }),
        Via::Session { csrf, .. } => json!({
            "user": user,
            "auth": "session",
            "csrf": csrf,
            "id": caller.user_id,
            "name": caller.user_name,
        }),
    }
}

pub(crate) fn key_error(e: keys::Error) -> ProxyError {
    match e {
        keys::Error::Invalid(providers::Invalid::UnknownProvider(p)) => {
            ProxyError::UnknownProvider(format!(
                "Unknown provider `{p}`. GET /api/providers lists the supported ones."
            ))
        }
        keys::Error::Invalid(other) => ProxyError::InvalidRequest(other.to_string()),
        keys::Error::Crypto(e) => {
            tracing::error!(error = %e, "credential crypto failed");
            ProxyError::Internal
        }
        keys::Error::Store(e) => e.into(),
    }
}
