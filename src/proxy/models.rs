//! `GET /v1/models` and `GET /v1/models/{id}`: the upstream catalog (cached), filtered to the
//! models the caller can use — a key for the model's creator or one of its serving providers,
//! and the token's model scopes — or all of it with `?all=true` and `"accessible"` on each.

use super::credentials;
use crate::auth::Caller;
use crate::error::ProxyError;
use crate::http_util::{json_response, Body};
use crate::keys::ring::UserCredentials;
use crate::state::AppState;
use crate::upstream::catalog as models;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;

/// Whether the caller can use models of `creator`: a key for it or for one of its serving
/// providers.
fn accessible(app: &AppState, creds: &UserCredentials, creator: &str) -> bool {
    creds.has(creator)
        || app
            .config
            .models
            .serving_providers
            .get(creator)
            .is_some_and(|s| s.iter().any(|p| creds.has(p)))
}

async fn catalog_and_creds(
    app: &Arc<AppState>,
    caller: &Caller,
) -> Result<(Arc<Vec<Value>>, Arc<UserCredentials>), ProxyError> {
    let entries = app.catalog.entries(&app.upstream).await.map_err(|e| {
        tracing::warn!(error = %e, "model catalog unavailable");
        ProxyError::UpstreamUnavailable
    })?;
    Ok((entries, credentials(app, caller).await?))
}

pub(super) async fn list(
    app: &Arc<AppState>,
    req: &Request<Incoming>,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    let all = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "all=true" || kv == "all=1"));
    let (entries, creds) = catalog_and_creds(app, caller).await?;
    let mut data = Vec::with_capacity(entries.len());
    let scopes = caller.scopes();
    for e in entries.iter() {
        let id = e.get("id").and_then(Value::as_str).unwrap_or_default();
        if !scopes.allows_model(id) {
            continue; // outside the token's allowed_models: not listed at all
        }
        let ok = accessible(app, &creds, models::creator(id));
        if all {
            let mut e = e.clone();
            if let Some(obj) = e.as_object_mut() {
                obj.insert("accessible".into(), json!(ok));
            }
            data.push(e);
        } else if ok {
            data.push(e.clone());
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "object": "list", "data": data }),
    ))
}

pub(super) async fn get(
    app: &Arc<AppState>,
    id: &str,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    let id = app.config.models.aliases.get(id).map_or(id, String::as_str);
    let (entries, creds) = catalog_and_creds(app, caller).await?;
    let entry = entries
        .iter()
        .find(|e| e.get("id").and_then(Value::as_str) == Some(id))
        .filter(|_| caller.scopes().allows_model(id))
        .ok_or_else(|| {
            ProxyError::NotFound(format!(
                "The model `{id}` does not exist. GET /v1/models?all=true lists the catalog."
            ))
        })?;
    let mut e = entry.clone();
    if let Some(obj) = e.as_object_mut() {
        obj.insert(
            "accessible".into(),
            json!(accessible(app, &creds, models::creator(id))),
        );
    }
    Ok(json_response(StatusCode::OK, &e))
}
