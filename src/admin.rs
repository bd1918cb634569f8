//! The operator API under `/admin`, behind the admin token or an admin's web session: users
//! (create, list, disable, rate-limit override), their tokens (create with scopes: shown once;
//! list), token revocation, and the whole audit log. Every change drops the affected cached
//! tokens and sessions at once. Audit rows name the admin user when a session made the change.

use crate::accounts;
use crate::auth::scopes::Scopes;
use crate::auth::Caller;
use crate::error::ProxyError;
use crate::http_util::{double_option, empty, json_response, Body};
use crate::request::path_id;
use crate::request::{read_json, RequestCtx};
use crate::router::Route;
use crate::state::AppState;
use crate::store::{AuditFilter, User, UserPatch};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

const ADMIN_BODY_LIMIT: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    requests_per_minute: Option<Option<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    name: Option<String>,
    /// A duration like `90d`.
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    scopes: Option<Scopes>,
}

fn user_not_found() -> ProxyError {
    ProxyError::NotFound("No such user. GET /admin/users lists them.".into())
}

fn token_not_found() -> ProxyError {
    ProxyError::NotFound("No such token.".into())
}

pub(crate) fn accounts_error(e: accounts::Error) -> ProxyError {
    match e {
        accounts::Error::NoSuchUser(_) => user_not_found(),
        accounts::Error::Invalid(m) => ProxyError::InvalidRequest(m),
        accounts::Error::Store(e) => e.into(),
    }
}

async fn user(app: &AppState, id: &str) -> Result<User, ProxyError> {
    let id = path_id(id, user_not_found)?;
    app.store
        .find_user(&id.to_string())
        .await?
        .ok_or_else(user_not_found)
}

pub async fn handle(
    app: &Arc<AppState>,
    route: Route,
    req: Request<Incoming>,
    ctx: &RequestCtx,
    by: Option<Caller>,
) -> Result<Response<Body>, ProxyError> {
    let actor = by.as_ref().map(|c| c.user_id);
    let method = req.method().clone();
    let body_limit = app.body_limits(ADMIN_BODY_LIMIT);
    match (route, method) {
        (Route::AdminUsers, Method::GET) => {
            let users = app.store.list_users().await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "object": "list", "data": users }),
            ))
        }
        (Route::AdminUsers, Method::POST) => {
            let body: NewUser = read_json(req, body_limit).await?;
            let mut audit = ctx.audit("user.created", actor);
            audit.detail = json!({ "by": "admin", "name": body.name });
            let user = accounts::create_user(&app.store, &body.name, body.email.as_deref(), audit)
                .await
                .map_err(accounts_error)?;
            Ok(json_response(StatusCode::CREATED, &user))
        }
        (Route::AdminUser(id), Method::GET) => {
            Ok(json_response(StatusCode::OK, &user(app, &id).await?))
        }
        (Route::AdminUser(id), Method::PATCH) => {
            let target = user(app, &id).await?;
            let body: PatchUser = read_json(req, body_limit).await?;
            let action = match body.disabled {
                Some(true) => "user.disabled",
                Some(false) => "user.enabled",
                None => "user.updated",
            };
            let mut audit = ctx.audit(action, actor);
            audit.target = Some(crate::store::user_target(target.id));
            audit.detail = json!({
                "by": "admin",
                "disabled": body.disabled,
                "requests_per_minute": body.requests_per_minute,
            });
            let patch = UserPatch {
                disabled: body.disabled,
                requests_per_minute: body.requests_per_minute,
            };
            let updated = app
                .store
                .update_user(target.id, patch, Some(audit))
                .await?
                .ok_or_else(user_not_found)?;
            app.invalidate_user(target.id);
            Ok(json_response(StatusCode::OK, &updated))
        }
        (Route::AdminUserTokens(id), Method::GET) => {
            let target = user(app, &id).await?;
            let tokens = app.store.list_tokens(target.id).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "object": "list", "data": tokens }),
            ))
        }
        (Route::AdminUserTokens(id), Method::POST) => {
            let target = user(app, &id).await?;
            let body: NewToken = read_json(req, body_limit).await?;
            let expires_at = body
                .expires_in
                .as_deref()
                .map(accounts::expiry)
                .transpose()
                .map_err(accounts_error)?;
            let scopes = body
                .scopes
                .unwrap_or_default()
                .checked()
                .map_err(|e| ProxyError::InvalidRequest(e.to_string()))?;
            let minted = accounts::create_token(
                &app.store,
                &target,
                body.name,
                expires_at,
                scopes,
                ctx.audit("token.created", actor),
            )
            .await
            .map_err(accounts_error)?;
            let mut view =
                serde_json::to_value(&minted.record).map_err(|_| ProxyError::Internal)?;
            if let Some(obj) = view.as_object_mut() {
                // The one place a token is ever returned: at creation, to the operator.
                obj.insert("token".into(), json!(minted.token.expose()));
            }
            Ok(json_response(StatusCode::CREATED, &view))
        }
        (Route::AdminToken(id), Method::DELETE) => {
            let id = path_id(&id, token_not_found)?;
            let mut audit = ctx.audit("token.revoked", actor);
            audit.detail = json!({ "by": "admin", "token_id": id });
            let token = app
                .store
                .revoke_token(id, audit)
                .await?
                .ok_or_else(token_not_found)?;
            app.invalidate_user(token.user_id);
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        (Route::AdminAudit, Method::GET) => {
            let query = req.uri().query().unwrap_or("");
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            };
            let limit = param("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100u32)
                .clamp(1, 1000);
            let user = match param("user") {
                Some(u) => Some(path_id(u, user_not_found)?),
                None => None,
            };
            let events = app.store.list_audit(AuditFilter { user, limit }).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "object": "list", "data": events }),
            ))
        }
        _ => Err(ProxyError::MethodNotAllowed),
    }
}
