//! The open routes (no credentials): `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, the
//! web UI's static files, and web sign-in (`/auth/config`, `/auth/login`, `/auth/callback`).

use crate::config::UpstreamMode;
use crate::error::ProxyError;
use crate::http_util::{full, json_response, Body};
use crate::router::Route;
use crate::state::AppState;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;
use std::time::Instant;

/// The OpenAPI 3 description of `/api` and `/admin`, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("api/openapi.json");

pub async fn serve<B>(
    app: &AppState,
    route: &Route,
    req: &http::Request<B>,
    ctx: &crate::request::RequestCtx,
) -> Result<Response<Body>, ProxyError> {
    match route {
        Route::AuthConfig => Ok(crate::signin::config(app)),
        Route::AuthLogin => crate::signin::login(app).await,
        Route::AuthCallback => crate::signin::callback(app, req.uri(), req.headers(), ctx).await,
        Route::Healthz => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        Route::Readyz => Ok(readyz(app).await),
        Route::Ui(path) if app.config.ui_enabled => crate::ui::serve(path),
        Route::OpenApi => Ok(typed(full(OPENAPI), "application/json")),
        Route::Metrics if app.config.metrics_enabled => {
            update_health_gauge(app);
            Ok(typed(
                full(app.metrics.render()),
                "text/plain; version=0.0.4; charset=utf-8",
            ))
        }
        Route::NotFound => Err(ProxyError::NotFound(
            "Unknown route. The API lives under /v1, /api and /admin.".into(),
        )),
        _ => Err(ProxyError::NotFound("Not available in this build.".into())),
    }
}

fn typed(body: Body, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Ready when the store answers. The upstream's state is reported beside it (a missing
/// gateway key is the operator's to fix, but the proxy can still serve its own routes).
async fn readyz(app: &AppState) -> Response<Body> {
    let upstream = match app.config.upstream.mode {
        UpstreamMode::Gateway if app.config.upstream.gateway_api_key.is_none() => json!({
            "mode": "gateway",
            "configured": false,
            "problem": "no gateway key: set AI_GATEWAY_API_KEY (upstream.gateway.api_key)",
        }),
        UpstreamMode::Gateway => json!({"mode": "gateway", "configured": true}),
        UpstreamMode::Direct => json!({
            "mode": "direct",
            "configured": !app.config.upstream.direct.is_empty(),
            "providers": app.config.upstream.direct.keys().collect::<Vec<_>>(),
        }),
    };
    match app.store.ping().await {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({"status": "ready", "store": app.store.backend(), "upstream": upstream}),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not ready", "store": "unreachable", "upstream": upstream}),
            )
        }
    }
}

/// Sets `byok_provider_health{provider,status}` to 1 for each provider's current status.
fn update_health_gauge(app: &AppState) {
    for h in app.health.all(Instant::now()) {
        for status in crate::health::STATUSES {
            app.metrics
                .provider_health
                .with_label_values(&[h.provider.as_str(), status])
                .set(i64::from(status == h.status));
        }
    }
}
