//! The `/v1` handlers: OpenAI- and Anthropic-compatible routes. For each request:
//!
//! 1. Read the body once under `limits.max_body_bytes` (413) and parse its top level only
//!    ([`rewrite::parse`], 400 on a bad body).
//! 2. Resolve the model (aliases; a bare name on `/v1/messages*` means `anthropic/<name>`) and
//!    its provider; gather the providers needed: the model's, its fallbacks' (`models`,
//!    `providerOptions.gateway.models`), and their configured `serving_providers`.
//! 3. Look up the caller's credentials in the [`KeyRing`](crate::keys::ring::KeyRing) (no DB
//!    round-trip on a hit). Gateway mode splices `providerOptions.gateway.byok` with only those
//!    providers' active credentials; direct mode strips the provider prefix and sends the key
//!    as the provider expects.
//! 4. Send upstream (connect / first-byte timeouts: 502 / 504), filter the response headers,
//!    and return the upstream body wrapped in a [`PassthroughBody`].

pub mod rewrite;

use crate::auth::Caller;
use crate::config::UpstreamMode;
use crate::error::ProxyError;
use crate::http_util::{json_response, Body};
use crate::keys::providers;
use crate::keys::ring::UserCredentials;
use crate::request::{read_body, RequestCtx, UpstreamFacts, Upstreamed};
use crate::router::Route;
use crate::state::AppState;
use crate::stream::{End, PassthroughBody};
use crate::upstream::catalog as models;
use crate::upstream::headers::{filter_response_headers, upstream_request_headers};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// The upstream path (after the base URL's `/v1`) of each proxied POST route.
fn upstream_path(route: &Route) -> Option<&'static str> {
    match route {
        Route::ChatCompletions => Some("/chat/completions"),
        Route::Embeddings => Some("/embeddings"),
        Route::Responses => Some("/responses"),
        Route::Messages => Some("/messages"),
        Route::CountTokens => Some("/messages/count_tokens"),
        _ => None,
    }
}

pub async fn handle(
    app: &Arc<AppState>,
    route: Route,
    req: Request<Incoming>,
    ctx: &RequestCtx,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    match (&route, req.method()) {
        (Route::Models, &Method::GET) => list_models(app, &req, caller).await,
        (Route::Model(id), &Method::GET) => get_model(app, id, caller).await,
        (Route::Models | Route::Model(_), _) => Err(ProxyError::MethodNotAllowed),
        (_, &Method::POST) => match upstream_path(&route) {
            Some(path) => forward(app, &route, path, req, ctx, caller).await,
            None => Err(ProxyError::NotFound("Unknown route.".into())),
        },
        _ => Err(ProxyError::MethodNotAllowed),
    }
}

/// Resolves aliases and the provider of a model id.
fn resolve<'a>(
    app: &'a AppState,
    model: &'a str,
    anthropic_route: bool,
) -> Result<std::borrow::Cow<'a, str>, ProxyError> {
    if let Some(target) = app.config.models.aliases.get(model) {
        return Ok(target.as_str().into());
    }
    if model.contains('/') {
        return Ok(model.into());
    }
    let bare = &app.config.models.bare_names;
    let family = if anthropic_route {
        &bare.anthropic
    } else {
        &bare.openai
    };
    match family {
        Some(provider) if !model.is_empty() => Ok(format!("{provider}/{model}").into()),
        _ => Err(ProxyError::UnknownProvider(format!(
            "Model `{model}` has no provider prefix and is not a configured alias. Use `provider/model`, like \"openai/gpt-4o\"."
        ))),
    }
}

fn known_provider(app: &AppState, provider: &str) -> bool {
    providers::find(provider).is_some()
        || app.config.models.serving_providers.contains_key(provider)
}

/// Providers whose credentials a request may use, in order: the model's creator, the
/// fallbacks' creators, then their serving providers.
fn needed_providers<'a>(app: &'a AppState, models: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    let mut push = |p: &'a str| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for m in models {
        push(models::creator(m));
    }
    for m in models {
        if let Some(serving) = app.config.models.serving_providers.get(models::creator(m)) {
            for p in serving {
                push(p.as_str());
            }
        }
    }
    out
}

/// The BYOK object for `providers`: `{"<provider>": [cred, ...], ...}` with active credentials
/// only, newest first. `None` if the caller has none of them.
fn byok_json(creds: &UserCredentials, providers: &[&str]) -> Option<String> {
    let mut out = String::from("{");
    let mut any = false;
    for p in providers {
        let list = creds.for_provider(p);
        if list.is_empty() {
            continue;
        }
        if any {
            out.push(',');
        }
        any = true;
        out.push_str(&serde_json::to_string(p).unwrap_or_default());
        out.push_str(":[");
        for (i, c) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(c.json.expose());
        }
        out.push(']');
    }
    out.push('}');
    any.then_some(out)
}

async fn forward(
    app: &Arc<AppState>,
    route: &Route,
    path: &str,
    req: Request<Incoming>,
    ctx: &RequestCtx,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    let (parts, body) = req.into_parts();
    let body = read_body(
        &parts.headers,
        body,
        app.body_limits(app.config.limits.max_body_bytes),
    )
    .await?;
    let parsed =
        rewrite::parse(&body.bytes).map_err(|e| ProxyError::InvalidRequest(e.to_string()))?;
    let anthropic = route.anthropic_errors();
    let model = resolve(app, &parsed.model, anthropic)?;
    let provider = models::creator(&model);
    if !known_provider(app, provider) {
        return Err(ProxyError::UnknownProvider(format!(
            "Unknown provider `{provider}` in model `{model}`. GET /api/providers lists the supported ones."
        )));
    }
    let fallbacks: Vec<std::borrow::Cow<'_, str>> = parsed
        .models
        .iter()
        .chain(parsed.gateway_models.iter())
        .map(|m| resolve(app, m, anthropic))
        .collect::<Result<_, _>>()?;
    let mut all: Vec<&str> = vec![&model];
    all.extend(fallbacks.iter().map(|m| m.as_ref()));
    let creds = credentials(app, caller).await?;
    let no_key = || ProxyError::NoProviderKey {
        provider: provider.to_string(),
    };
    let include_usage = matches!(route, Route::ChatCompletions) && parsed.stream;
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut headers = upstream_request_headers(&parts.headers);
    let (uri, new_body) = match app.config.upstream.mode {
        UpstreamMode::Gateway => {
            let byok = byok_json(&creds, &needed_providers(app, &all)).ok_or_else(no_key)?;
            let changed_model = (model.as_ref() != parsed.model).then_some(model.as_ref());
            let out = parsed.rewrite(&rewrite::Edits {
                model: changed_model,
                byok: Some(&byok),
                include_usage,
            });
            let key = app
                .config
                .upstream
                .gateway_api_key
                .as_ref()
                .ok_or(ProxyError::UpstreamNotConfigured)?;
            let v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .map_err(|_| ProxyError::Internal)?;
            headers.insert(http::header::AUTHORIZATION, v);
            (
                format!("{}{path}{query}", app.config.upstream.gateway_base_url),
                out,
            )
        }
        UpstreamMode::Direct => {
            let base = app.config.upstream.direct.get(provider).ok_or_else(|| {
                ProxyError::UnknownProvider(format!(
                    "Provider `{provider}` has no direct endpoint (upstream.direct.{provider}.base_url)."
                ))
            })?;
            if anthropic && provider != "anthropic" {
                return Err(ProxyError::InvalidRequest(
                    "In direct mode /v1/messages serves anthropic/* models only.".into(),
                ));
            }
            let cred = creds
                .for_provider(provider)
                .iter()
                .find_map(|c| c.api_key.as_ref())
                .ok_or_else(no_key)?;
            let bare = model.split_once('/').map_or(model.as_ref(), |(_, m)| m);
            let out = parsed.rewrite(&rewrite::Edits {
                model: Some(bare),
                byok: None,
                include_usage,
            });
            set_provider_auth(&mut headers, provider, cred.expose())?;
            (format!("{base}{path}{query}"), out)
        }
    };
    headers.insert(
        http::header::CONTENT_TYPE,
        parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert("x-request-id", v);
    }
    let mut upstream_req = Request::post(uri)
        .body(Full::new(Bytes::from(new_body)))
        .map_err(|e| {
            tracing::error!(error = %e, "bad upstream request");
            ProxyError::Internal
        })?;
    *upstream_req.headers_mut() = headers;
    let sent = Instant::now();
    let resp = app.upstream.send(upstream_req).await.map_err(|e| {
        tracing::warn!(error = %e, provider, "upstream request failed");
        app.metrics
            .upstream_errors
            .with_label_values(&[provider, e.kind()])
            .inc();
        app.health.record(
            provider,
            crate::health::Outcome::Failed(e.kind()),
            Instant::now(),
        );
        match e {
            crate::upstream::Error::Timeout(d) => ProxyError::UpstreamTimeout(d),
            crate::upstream::Error::Unavailable(_) => ProxyError::UpstreamUnavailable,
        }
    })?;
    drop(body);
    let ttfb = sent.elapsed();
    // The gateway authenticates byok-proxy, not the caller: its 401 is the operator's to fix
    // (a caller's rejected provider key shows up as a failed BYOK attempt, not as a 401).
    if app.config.upstream.mode == UpstreamMode::Gateway
        && resp.status() == StatusCode::UNAUTHORIZED
    {
        tracing::error!(status = %resp.status(), "the gateway refused the operator's gateway key");
        return Err(ProxyError::UpstreamAuthFailed(resp.status().as_u16()));
    }
    app.metrics
        .upstream_ttfb
        .with_label_values(&[provider])
        .observe(ttfb.as_secs_f64());
    let (mut head, body) = resp.into_parts();
    if head.status.is_server_error() {
        app.metrics
            .upstream_errors
            .with_label_values(&[provider, "status_5xx"])
            .inc();
    }
    filter_response_headers(&mut head.headers);
    let upstreamed = Arc::new(Upstreamed::default());
    let done = Finished {
        upstreamed: upstreamed.clone(),
        app: app.clone(),
        request_id: ctx.request_id.clone(),
        user_id: caller.user_id,
        provider: provider.to_string(),
        model: model.to_string(),
        status: head.status,
        start: ctx.start,
        ttfb,
    };
    app.metrics.streams_active.inc();
    let on_finish: crate::stream::OnFinish = Box::new(move |summary| done.run(summary));
    let body =
        PassthroughBody::new(body, app.upstream.idle_timeout, Some(on_finish)).boxed_unsync();
    let mut resp = Response::from_parts(head, body);
    resp.extensions_mut().insert(upstreamed);
    Ok(resp)
}

/// The caller's credentials from the key ring, counted as a cache hit or miss.
async fn credentials(app: &AppState, caller: &Caller) -> Result<Arc<UserCredentials>, ProxyError> {
    let (creds, result) = app.keyring.get(caller.user_id).await?;
    app.metrics
        .credential_cache
        .with_label_values(&[result.label()])
        .inc();
    Ok(creds)
}

/// What the end of a proxied body needs: usage, stream metrics, the access line.
struct Finished {
    upstreamed: Arc<Upstreamed>,
    app: Arc<AppState>,
    request_id: String,
    user_id: uuid::Uuid,
    provider: String,
    model: String,
    status: StatusCode,
    start: Instant,
    ttfb: std::time::Duration,
}

impl Finished {
    fn run(self, summary: crate::stream::Summary) {
        let m = &self.app.metrics;
        m.streams_active.dec();
        m.stream_bytes.inc_by(summary.bytes);
        let duration = self.start.elapsed();
        m.upstream_request_duration.observe(duration.as_secs_f64());
        let usage = if self.status.is_success() {
            crate::usage::extract(
                summary.head.as_deref().unwrap_or(&[]),
                &summary.tail_bytes(),
            )
        } else {
            None
        };
        let status = match (self.status.is_success(), summary.end) {
            (false, _) => "error",
            (true, End::Complete) => "ok",
            (true, End::IdleTimeout) => "timeout",
            (true, End::Cancelled | End::UpstreamError) => "aborted",
        };
        if summary.end == End::IdleTimeout {
            m.upstream_errors
                .with_label_values(&[self.provider.as_str(), "idle_timeout"])
                .inc();
        }
        let outcome = if self.status.is_server_error() {
            crate::health::Outcome::Failed("status_5xx")
        } else if self.status == StatusCode::TOO_MANY_REQUESTS {
            crate::health::Outcome::RateLimited(self.ttfb)
        } else {
            match summary.end {
                End::UpstreamError => crate::health::Outcome::Failed("stream_cut"),
                End::IdleTimeout => crate::health::Outcome::Failed("idle_timeout"),
                End::Complete | End::Cancelled => crate::health::Outcome::Answered(self.ttfb),
            }
        };
        self.app
            .health
            .record(&self.provider, outcome, Instant::now());
        let u = usage.unwrap_or_default();
        m.tokens
            .with_label_values(&[self.provider.as_str(), "prompt"])
            .inc_by(u.prompt_tokens);
        m.tokens
            .with_label_values(&[self.provider.as_str(), "completion"])
            .inc_by(u.completion_tokens);
        self.upstreamed.set(UpstreamFacts {
            model: self.model.clone(),
            provider: self.provider.clone(),
            ttfb: self.ttfb,
            bytes: summary.bytes,
            end: summary.end.label(),
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
        self.app.usage.record(crate::usage::UsageRecord {
            request_id: self.request_id,
            user_id: self.user_id,
            provider: self.provider,
            model: self.model,
            usage: u,
            status,
            latency_ms: duration.as_millis() as u64,
            created_at: crate::store::now(),
        });
    }
}

/// Direct mode: the key as the provider expects it.
fn set_provider_auth(
    headers: &mut http::HeaderMap,
    provider: &str,
    key: &str,
) -> Result<(), ProxyError> {
    let bad = |_| {
        ProxyError::InvalidRequest(format!(
            "The stored {provider} key is not a valid header value."
        ))
    };
    if provider == "anthropic" {
        headers.insert("x-api-key", HeaderValue::from_str(key).map_err(bad)?);
        if !headers.contains_key("anthropic-version") {
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
    } else {
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).map_err(bad)?,
        );
    }
    Ok(())
}

// === /v1/models ===

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

async fn list_models(
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
    for e in entries.iter() {
        let id = e.get("id").and_then(Value::as_str).unwrap_or_default();
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

async fn get_model(
    app: &Arc<AppState>,
    id: &str,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    let id = app.config.models.aliases.get(id).map_or(id, String::as_str);
    let (entries, creds) = catalog_and_creds(app, caller).await?;
    let entry = entries
        .iter()
        .find(|e| e.get("id").and_then(Value::as_str) == Some(id))
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
