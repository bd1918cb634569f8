//! Self-service app tokens (`/api/tokens`): a signed-in user (or an unscoped token) lists,
//! creates and revokes their own tokens. A new token is shown once, in the 201 answer. Scopes
//! only ever narrow: a scoped token cannot get here for a change (`Caller::authorize` answers
//! 403 `insufficient_scope`), and requested scopes are checked against the caller's anyway.
//! Another user's token id answers 404.

use crate::accounts;
use crate::admin::accounts_error;
use crate::auth::scopes::Scopes;
use crate::auth::Caller;
use crate::error::ProxyError;
use crate::http_util::{empty, json_response, Body};
use crate::request::path_id;
use crate::request::{read_json, RequestCtx};
use crate::state::AppState;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

const BODY_LIMIT: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    /// A duration like `90d`.
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    scopes: Option<Scopes>,
}

fn token_not_found() -> ProxyError {
    ProxyError::NotFound("No such token. GET /api/tokens lists yours.".into())
}

/// `GET /api/tokens`: the caller's tokens, newest first, never the tokens themselves.
///
/// # Errors
/// Store failure.
pub async fn list(app: &AppState, caller: &Caller) -> Result<Response<Body>, ProxyError> {
    let tokens = app.store.list_tokens(caller.user_id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "object": "list", "data": tokens }),
    ))
}

/// `POST /api/tokens`: 201 with the record and `token`, shown this once.
///
/// # Errors
/// 400 for a bad name, expiry or scope, or scopes wider than the caller's.
pub async fn create(
    app: &AppState,
    req: Request<Incoming>,
    ctx: &RequestCtx,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    let body: NewToken = read_json(req, app.body_limits(BODY_LIMIT)).await?;
    let name = body.name.trim().to_string();
    if name.is_empty() {
        return Err(ProxyError::InvalidRequest(
            "name must not be empty: say where the token will be used (\"laptop IDE\")".into(),
        ));
    }
    let expires_at = body
        .expires_in
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .map(accounts::expiry)
        .transpose()
        .map_err(accounts_error)?;
    let invalid = |e: crate::auth::scopes::Invalid| ProxyError::InvalidRequest(e.to_string());
    let scopes = body.scopes.unwrap_or_default().checked().map_err(invalid)?;
    scopes.within(caller.scopes()).map_err(invalid)?;
    let user = app
        .store
        .find_user(&caller.user_id.to_string())
        .await?
        .ok_or(ProxyError::InvalidApiKey)?;
    let minted = accounts::create_token(
        &app.store,
        &user,
        Some(name),
        expires_at,
        scopes,
        ctx.audit("token.created", Some(caller.user_id)),
    )
    .await
    .map_err(accounts_error)?;
    let mut view = serde_json::to_value(&minted.record).map_err(|_| ProxyError::Internal)?;
    if let Some(obj) = view.as_object_mut() {
        // The one place a self-service token is ever returned: at creation, to its owner.
        obj.insert("token".into(), json!(minted.token.expose()));
    }
    Ok(json_response(StatusCode::CREATED, &view))
}

/// `DELETE /api/tokens/{id}`: revokes one of the caller's tokens (204), effective on the next
/// request on every replica.
///
/// # Errors
/// 404 for an unknown id or another user's token.
pub async fn revoke(
    app: &AppState,
    id: &str,
    ctx: &RequestCtx,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    let id = path_id(id, token_not_found)?;
    let owned = app
        .store
        .list_tokens(caller.user_id)
        .await?
        .iter()
        .any(|t| t.id == id);
    if !owned {
        return Err(token_not_found());
    }
    let mut audit = ctx.audit("token.revoked", Some(caller.user_id));
    audit.detail = json!({ "by": "self", "token_id": id });
    app.store
        .revoke_token(id, audit)
        .await?
        .ok_or_else(token_not_found)?;
    app.invalidate_user(caller.user_id);
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}
