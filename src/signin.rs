//! Web sign-in routes (SPEC §4, only with `auth.oidc` configured): the HTTP half of
//! [`auth::oidc`](crate::auth::oidc) and of [`auth::sessions`](crate::auth::sessions).
//!
//! - `GET /auth/config` (open): what the login page needs — `public_base_url` (for the
//!   ready-to-paste client setup) and, with `auth.oidc`, the issuer's display name.
//! - `GET /auth/login`: 302 to the issuer, with the sealed pending-login cookie
//!   (`byok_login`, `Path=/auth`, ten minutes).
//! - `GET /auth/callback`: finishes the login, finds or creates the user (by issuer and
//!   subject), stores a new session (SHA-256 of the cookie only), sets `byok_session` and
//!   302s to `/ui/`. Any failure 302s to `/ui/?login_error=<code>` with no session and no user.
//! - `POST /auth/logout` (a session caller, CSRF-checked by auth): deletes the row, clears
//!   the cookie.

use crate::auth::oidc::{LoginError, LOGIN_COOKIE, LOGIN_TTL};
use crate::auth::sessions::{self, COOKIE};
use crate::auth::{Caller, Via};
use crate::error::ProxyError;
use crate::http_util::{empty, Body};
use crate::request::RequestCtx;
use crate::state::AppState;
use crate::store::{AuditEntry, Session};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode, Uri};
use serde_json::json;

fn not_configured() -> ProxyError {
    ProxyError::NotFound(
        "Web sign-in is not configured (auth.oidc). Sign in to the web UI with an app token."
            .into(),
    )
}

fn secure(app: &AppState) -> bool {
    app.config.public_base_url.starts_with("https://")
}

fn redirect(to: &str, cookies: &[String]) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The pending-login cookie (scoped to `/auth`, so no other route ever sees it).
fn login_cookie(value: &str, max_age: Option<std::time::Duration>, secure: bool) -> String {
    let age = max_age.map_or(0, |d| d.as_secs());
    let mut c =
        format!("{LOGIN_COOKIE}={value}; Path=/auth; HttpOnly; SameSite=Lax; Max-Age={age}");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// `GET /auth/config`: `{public_base_url, sign_in: {name, login_url} | null}`.
pub fn config(app: &AppState) -> Response<Body> {
    let sign_in = app
        .oidc
        .as_ref()
        .map(|o| json!({ "name": o.config.name, "login_url": "/auth/login" }));
    crate::http_util::json_response(
        StatusCode::OK,
        &json!({
            "public_base_url": app.config.public_base_url.trim_end_matches('/'),
            "sign_in": sign_in,
        }),
    )
}

/// `GET /auth/login`.
///
/// # Errors
/// 404 without `auth.oidc`.
pub async fn login(app: &AppState) -> Result<Response<Body>, ProxyError> {
    let oidc = app.oidc.as_ref().ok_or_else(not_configured)?;
    let now = app.auth.sessions.clock.now().timestamp();
    match oidc.begin(now).await {
        Ok(started) => Ok(redirect(
            &started.redirect,
            &[login_cookie(
                started.cookie.expose(),
                Some(LOGIN_TTL),
                secure(app),
            )],
        )),
        Err(e) => Ok(failed(app, e)),
    }
}

/// The browser goes back to the UI with the reason; the login cookie is cleared.
fn failed(app: &AppState, e: LoginError) -> Response<Body> {
    app.metrics
        .auth_failures
        .with_label_values(&[e.code()])
        .inc();
    redirect(
        &format!("/ui/?login_error={}", e.code()),
        &[login_cookie("", None, secure(app))],
    )
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

/// A query value: `+` is a space, then `%XX` escapes.
fn percent_decode(s: &str) -> String {
    crate::router::percent_decode(&s.replace('+', " "))
}

/// `GET /auth/callback`.
///
/// # Errors
/// 404 without `auth.oidc`; every sign-in failure is a redirect, not an error.
pub async fn callback(
    app: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    ctx: &RequestCtx,
) -> Result<Response<Body>, ProxyError> {
    let oidc = app.oidc.as_ref().ok_or_else(not_configured)?;
    if let Some(error) = query_param(uri, "error") {
        tracing::info!(%error, "the issuer refused the sign-in");
        return Ok(failed(app, LoginError::Denied));
    }
    let (Some(code), Some(state)) = (query_param(uri, "code"), query_param(uri, "state")) else {
        return Ok(failed(app, LoginError::BadState));
    };
    let clock = &app.auth.sessions.clock;
    let cookie = sessions::cookie(headers, LOGIN_COOKIE);
    let identity = match oidc
        .finish(&code, &state, cookie, clock.now().timestamp())
        .await
    {
        Ok(i) => i,
        Err(e) => return Ok(failed(app, e)),
    };
    let mut audit = ctx.audit("user.created", None);
    audit.detail = json!({ "by": "oidc", "issuer": identity.issuer });
    let user = match app.store.upsert_oidc_user(&identity, audit).await {
        Ok((user, _created)) => user,
        Err(e) => {
            tracing::error!(error = %e, "could not find or create the signed-in user");
            return Ok(failed(app, LoginError::Internal));
        }
    };
    if user.disabled {
        return Ok(failed(app, LoginError::UserDisabled));
    }
    let value = sessions::new_cookie_value();
    let now = clock.now();
    let ttl = app.auth.sessions.ttl;
    let session = Session {
        id_hash: sessions::hash_cookie(value.expose()),
        user_id: user.id,
        created_at: now,
        last_seen_at: now,
        expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1)),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect()),
    };
    let mut audit = ctx.audit("session.created", Some(user.id));
    audit.target = Some(crate::store::user_target(user.id));
    audit.detail = json!({ "issuer": identity.issuer, "is_admin": user.is_admin });
    if let Err(e) = app.store.create_session(session, audit).await {
        tracing::error!(error = %e, "could not store the session");
        return Ok(failed(app, LoginError::Internal));
    }
    Ok(redirect(
        "/ui/",
        &[
            sessions::set_cookie(COOKIE, value.expose(), Some(ttl), secure(app)),
            login_cookie("", None, secure(app)),
        ],
    ))
}

/// `POST /auth/logout` (the CSRF header was checked by auth).
///
/// # Errors
/// 400 when the caller used an app token (there is no session to end).
pub async fn logout(
    app: &AppState,
    caller: &Caller,
    ctx: &RequestCtx,
) -> Result<Response<Body>, ProxyError> {
    let Via::Session { id_hash, .. } = &caller.via else {
        return Err(ProxyError::InvalidRequest(
            "POST /auth/logout ends a web session; this request used an app token. Revoke a token with DELETE /api/tokens/{id}.".into(),
        ));
    };
    let mut audit: AuditEntry = ctx.audit("session.ended", Some(caller.user_id));
    audit.target = Some(crate::store::user_target(caller.user_id));
    audit.detail = json!({ "reason": "logout" });
    app.store.delete_session(id_hash, Some(audit)).await?;
    app.auth.sessions.forget(id_hash);
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    if let Ok(v) = HeaderValue::from_str(&sessions::set_cookie(COOKIE, "", None, secure(app))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}
