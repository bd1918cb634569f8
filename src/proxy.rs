//! The `/v1` handlers: OpenAI- and Anthropic-compatible routes. A proxied POST runs
//! `forward`, a list of steps:
//!
//! 1. **read**: the body once, under its limits ([`read_body`]: 413, 415, 408, 503), its top
//!    level parsed only ([`rewrite::parse`], 400 on a bad body);
//! 2. **resolve**: the primary model and every fallback (`models`,
//!    `providerOptions.gateway.models`): aliases, bare names per route family;
//! 3. **credentials**: the caller's active credentials from the
//!    [`KeyRing`](crate::keys::ring::KeyRing) (no DB round-trip on a hit);
//! 4. **build**: gateway mode applies the billing rules of [`gateway::plan`] (BYOK object,
//!    `only` / `order` pinned, fallbacks checked; refusals send nothing) and splices them into
//!    the body; direct mode ([`direct`]) strips the provider prefix and sets the caller's key
//!    as the provider expects it. Headers and query parameters cross by allowlist;
//! 5. **send** with connect / first-byte timeouts (502 / 504);
//! 6. **wrap**: the upstream body in a [`PassthroughBody`] whose finish callback accounts
//!    usage, health, stream metrics and system-credential use once the body ends.

mod models;
pub mod rewrite;

use crate::auth::Caller;
use crate::config::{SystemCredentials, UpstreamMode};
use crate::error::ProxyError;
use crate::http_util::Body;
use crate::keys::ring::UserCredentials;
use crate::request::{read_body, RequestCtx, UpstreamFacts, Upstreamed};
use crate::router::Route;
use crate::state::AppState;
use crate::store::{SystemCredentialUse, UsageRecord};
use crate::stream::{End, PassthroughBody};
use crate::upstream::catalog::creator;
use crate::upstream::direct;
use crate::upstream::gateway::{self, ListPlan, Policy, Refusal, Routing};
use crate::upstream::headers::{filter_response_headers, upstream_request_headers};
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rewrite::{Edits, GatewayEdits, ListEdit, Parsed};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        (Route::Models, &Method::GET) => models::list(app, &req, caller).await,
        (Route::Model(id), &Method::GET) => models::get(app, id, caller).await,
        (Route::Models | Route::Model(_), _) => Err(ProxyError::MethodNotAllowed),
        (_, &Method::POST) => match upstream_path(&route) {
            Some(path) => forward(app, &route, path, req, ctx, caller).await,
            None => Err(ProxyError::NotFound("Unknown route.".into())),
        },
        _ => Err(ProxyError::MethodNotAllowed),
    }
}

/// read → resolve → credentials → build → send → wrap.
async fn forward(
    app: &Arc<AppState>,
    route: &Route,
    path: &str,
    req: Request<Incoming>,
    ctx: &RequestCtx,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    let (parts, body) = req.into_parts();
    let limits = app.body_limits(app.config.limits.max_body_bytes);
    let crate::request::ReadBody { bytes, permit } =
        read_body(&parts.headers, body, limits).await?;
    let parsed = rewrite::parse(&bytes).map_err(|e| ProxyError::InvalidRequest(e.to_string()))?;
    let models = Resolved::new(app, route, &parsed)?;
    caller.scopes().check_models(&models.all())?;
    let creds = credentials(app, caller).await?;
    let outgoing = build(app, route, path, &parts, &parsed, &models, &creds, ctx)?;
    // The rewritten body is the one held from here on; its budget share goes once it is sent.
    drop(parsed);
    drop(bytes);
    let sent = Instant::now();
    let resp = send(app, outgoing.request, &models.provider).await;
    drop(permit);
    let resp = resp?;
    for model in &outgoing.sponsored {
        app.metrics
            .system_fallback
            .with_label_values(&[provider_label(creator(model))])
            .inc();
    }
    Ok(wrap(app, ctx, caller, models, resp, sent.elapsed()))
}

// === resolve ===

/// The models a request can reach, aliases and bare names resolved.
struct Resolved {
    primary: String,
    /// The primary's creator (the provider label of metrics and usage).
    provider: String,
    primary_changed: bool,
    /// Top-level `models`, and `providerOptions.gateway.models`.
    fallbacks: Vec<String>,
    gateway_fallbacks: Vec<String>,
    fallbacks_changed: bool,
    gateway_fallbacks_changed: bool,
}

impl Resolved {
    fn new(app: &AppState, route: &Route, parsed: &Parsed<'_>) -> Result<Resolved, ProxyError> {
        let anthropic = route.anthropic_errors();
        let one = |m: &str| resolve(app, m, anthropic).map(Cow::into_owned);
        let list = |ms: &[String]| -> Result<(Vec<String>, bool), ProxyError> {
            let out: Vec<String> = ms.iter().map(|m| one(m)).collect::<Result<_, _>>()?;
            let changed = out != ms;
            Ok((out, changed))
        };
        let primary = one(&parsed.model)?;
        let (fallbacks, fallbacks_changed) = list(&parsed.models)?;
        let (gateway_fallbacks, gateway_fallbacks_changed) = list(&parsed.gateway_models)?;
        Ok(Resolved {
            provider: creator(&primary).to_string(),
            primary_changed: primary != parsed.model,
            primary,
            fallbacks,
            gateway_fallbacks,
            fallbacks_changed,
            gateway_fallbacks_changed,
        })
    }

    /// The primary, then every fallback.
    fn all(&self) -> Vec<&str> {
        std::iter::once(self.primary.as_str())
            .chain(self.fallbacks.iter().map(String::as_str))
            .chain(self.gateway_fallbacks.iter().map(String::as_str))
            .collect()
    }

    fn has_fallbacks(&self) -> bool {
        !self.fallbacks.is_empty() || !self.gateway_fallbacks.is_empty()
    }
}

/// Resolves an alias, or a bare name by its route family (`models.bare_names`).
fn resolve<'a>(
    app: &'a AppState,
    model: &'a str,
    anthropic_route: bool,
) -> Result<Cow<'a, str>, ProxyError> {
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

// === credentials ===

/// The caller's credentials from the key ring, counted as a cache hit or miss.
pub(crate) async fn credentials(
    app: &AppState,
    caller: &Caller,
) -> Result<Arc<UserCredentials>, ProxyError> {
    let (creds, result) = app.keyring.get(caller.user_id).await?;
    app.metrics
        .credential_cache
        .with_label_values(&[result.label()])
        .inc();
    Ok(creds)
}

/// The BYOK object for `providers`: `{"<provider>": [cred, ...], ...}`, active credentials
/// newest first.
fn byok_json(creds: &UserCredentials, providers: &[String]) -> String {
    let size: usize = providers
        .iter()
        .flat_map(|p| creds.for_provider(p))
        .map(|c| c.json.expose().len() + 1)
        .sum();
    let mut out = String::with_capacity(size + 16 * providers.len() + 2);
    out.push('{');
    for p in providers {
        let list = creds.for_provider(p);
        if list.is_empty() {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
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
    out
}

// === build ===

/// The upstream request, and the models the operator pays for (`allow` mode).
struct Outgoing {
    request: Request<Full<Bytes>>,
    sponsored: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn build(
    app: &AppState,
    route: &Route,
    path: &str,
    parts: &http::request::Parts,
    parsed: &Parsed<'_>,
    models: &Resolved,
    creds: &UserCredentials,
    ctx: &RequestCtx,
) -> Result<Outgoing, ProxyError> {
    let include_usage = matches!(route, Route::ChatCompletions) && parsed.stream;
    let mut headers = upstream_request_headers(&parts.headers);
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(crate::http_util::names::X_REQUEST_ID, v);
    }
    let upstream = &app.config.upstream;
    let (uri, body, sponsored) = match upstream.mode {
        UpstreamMode::Gateway => {
            let auth = app
                .gateway
                .auth
                .clone()
                .ok_or(ProxyError::UpstreamNotConfigured)?;
            let policy = Policy {
                serving_providers: &app.config.models.serving_providers,
                system_credentials: upstream.system_credentials,
            };
            if parsed.zero_data_retention && upstream.system_credentials == SystemCredentials::Deny
            {
                // The gateway skips request-scoped BYOK credentials under zero data retention
                // and serves with its own: the operator would pay.
                return Err(ProxyError::InvalidRequest(
                    "providerOptions.gateway.zeroDataRetention makes the gateway skip your own \
                     keys and use the operator's; this proxy only serves requests with your keys. \
                     Remove it (your provider's own data-retention terms apply to your key)."
                        .into(),
                ));
            }
            let reach = models.all();
            let plan = gateway::plan(
                &policy,
                &Routing {
                    models: &reach,
                    only: parsed.gateway_only.as_deref(),
                    order: parsed.gateway_order.as_deref(),
                },
                |p| creds.has(p),
            )
            .map_err(|r| refusal(&policy, r))?;
            let byok = byok_json(creds, &plan.byok);
            let body = parsed.rewrite(&Edits {
                model: models.primary_changed.then_some(models.primary.as_str()),
                models: models.fallbacks_changed.then_some(&models.fallbacks),
                gateway: Some(GatewayEdits {
                    byok: (!plan.byok.is_empty()).then_some(byok.as_str()),
                    only: list_edit(&plan.only),
                    order: list_edit(&plan.order),
                    models: models
                        .gateway_fallbacks_changed
                        .then_some(&models.gateway_fallbacks),
                }),
                drop_provider_options: false,
                include_usage,
            });
            headers.insert(http::header::AUTHORIZATION, auth);
            let query = upstream_query(parts.uri.query(), |name| {
                matches!(route, Route::Messages | Route::CountTokens) && name == "beta"
            });
            let uri = app.gateway.uri(path, &query).map_err(|e| {
                tracing::error!(error = %e, "bad upstream URI");
                ProxyError::Internal
            })?;
            (uri, body, plan.sponsored)
        }
        UpstreamMode::Direct => {
            let provider = models.provider.as_str();
            if models.has_fallbacks() {
                return Err(ProxyError::InvalidRequest(
                    "Fallback models (`models`, `providerOptions.gateway.models`) need the \
                     gateway: direct mode calls one provider, so no fallback could happen. \
                     Remove them, or ask your operator for gateway mode."
                        .into(),
                ));
            }
            let base = upstream.direct.get(provider).ok_or_else(|| {
                ProxyError::UnknownProvider(format!(
                    "Provider `{provider}` has no direct endpoint (upstream.direct.{provider}.base_url)."
                ))
            })?;
            if route.anthropic_errors() && provider != "anthropic" {
                return Err(ProxyError::InvalidRequest(
                    "In direct mode /v1/messages serves anthropic/* models only.".into(),
                ));
            }
            let key = creds
                .for_provider(provider)
                .iter()
                .find_map(|c| c.api_key.as_ref())
                .ok_or_else(|| {
                    ProxyError::NoProviderKey(format!(
                        "You have no active {provider} key for `{}` (direct mode sends each \
                         request to the model's own provider). Add one with POST /api/keys or \
                         in the web UI under Providers.",
                        models.primary
                    ))
                })?;
            let bare = models
                .primary
                .split_once('/')
                .map_or(models.primary.as_str(), |(_, m)| m);
            let body = parsed.rewrite(&Edits {
                model: Some(bare),
                drop_provider_options: true,
                include_usage,
                ..Edits::default()
            });
            direct::set_auth(&mut headers, provider, key.expose()).map_err(|_| {
                ProxyError::InvalidRequest(format!(
                    "The stored {provider} key is not a valid header value."
                ))
            })?;
            let query = upstream_query(parts.uri.query(), |name| {
                direct::allowed_query(provider, name)
                    || (provider == "anthropic"
                        && matches!(route, Route::Messages | Route::CountTokens)
                        && name == "beta")
            });
            let uri = format!("{base}{path}{query}")
                .parse::<http::Uri>()
                .map_err(|e| {
                    tracing::error!(error = %e, "bad upstream URI");
                    ProxyError::Internal
                })?;
            (uri, body, Vec::new())
        }
    };
    let mut request = Request::post(uri)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| {
            tracing::error!(error = %e, "bad upstream request");
            ProxyError::Internal
        })?;
    *request.headers_mut() = headers;
    Ok(Outgoing { request, sponsored })
}

fn list_edit(l: &ListPlan) -> ListEdit<'_> {
    match l {
        ListPlan::Keep => ListEdit::Keep,
        ListPlan::Set(v) => ListEdit::Set(v),
        ListPlan::Remove => ListEdit::Remove,
    }
}

/// The client's query string, keeping only the parameters `allowed` names (`?` included).
fn upstream_query(query: Option<&str>, allowed: impl Fn(&str) -> bool) -> String {
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !pair.is_empty() && allowed(name)
        })
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

/// A refusal of the billing rules as the client's error.
fn refusal(policy: &Policy<'_>, r: Refusal) -> ProxyError {
    match r {
        Refusal::UnknownProvider { model } => ProxyError::UnknownProvider(format!(
            "Unknown provider `{}` in model `{model}`. GET /api/providers lists the supported ones.",
            creator(&model)
        )),
        Refusal::NoKey {
            model,
            allowed,
            narrowed_by_only,
        } => {
            let within = if narrowed_by_only {
                " among the providers your request's providerOptions.gateway.only allows"
            } else {
                ""
            };
            let _ = policy;
            ProxyError::NoProviderKey(format!(
                "No active key of yours can serve `{model}`{within}: it needs a key for {}. \
                 Add one with POST /api/keys or in the web UI under Providers, or remove \
                 `{model}` from the request.",
                allowed.join(", ")
            ))
        }
    }
}

// === send ===

async fn send(
    app: &AppState,
    request: Request<Full<Bytes>>,
    provider: &str,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let resp = app.upstream.send(request).await.map_err(|e| {
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
    // The gateway authenticates byok-proxy, not the caller: its 401 is the operator's to fix
    // (a caller's rejected provider key shows up as a failed BYOK attempt, not as a 401).
    if app.config.upstream.mode == UpstreamMode::Gateway
        && resp.status() == StatusCode::UNAUTHORIZED
    {
        tracing::error!("the gateway refused the operator's gateway key (401)");
        return Err(ProxyError::UpstreamAuthFailed(401));
    }
    Ok(resp)
}

// === wrap ===

fn wrap(
    app: &Arc<AppState>,
    ctx: &RequestCtx,
    caller: &Caller,
    models: Resolved,
    resp: Response<UpstreamBody>,
    ttfb: Duration,
) -> Response<Body> {
    let provider = models.provider;
    app.metrics
        .upstream_ttfb
        .with_label_values(&[provider.as_str()])
        .observe(ttfb.as_secs_f64());
    let (mut head, body) = resp.into_parts();
    if head.status.is_server_error() {
        app.metrics
            .upstream_errors
            .with_label_values(&[provider.as_str(), "status_5xx"])
            .inc();
    }
    filter_response_headers(&mut head.headers);
    let upstreamed = Arc::new(Upstreamed::default());
    let done = Finished {
        upstreamed: upstreamed.clone(),
        app: app.clone(),
        request_id: ctx.request_id.clone(),
        user_id: caller.user_id,
        provider,
        model: models.primary,
        status: head.status,
        start: ctx.start,
        ttfb,
        gateway: app.config.upstream.mode == UpstreamMode::Gateway,
    };
    app.metrics.streams_active.inc();
    let on_finish: crate::stream::OnFinish = Box::new(move |summary| done.run(summary));
    let body =
        PassthroughBody::new(body, app.upstream.idle_timeout, Some(on_finish)).boxed_unsync();
    let mut resp = Response::from_parts(head, body);
    resp.extensions_mut().insert(upstreamed);
    resp
}

/// A metric label for a provider named by the upstream: known providers as themselves, the
/// rest as `other` (labels stay low-cardinality whatever the upstream says).
fn provider_label(p: &str) -> &str {
    crate::keys::providers::find(p).map_or("other", |p| p.id)
}

/// What the end of a proxied body needs: usage, stream metrics, system-credential detection,
/// the access line's facts.
struct Finished {
    upstreamed: Arc<Upstreamed>,
    app: Arc<AppState>,
    request_id: String,
    user_id: uuid::Uuid,
    provider: String,
    model: String,
    status: StatusCode,
    start: Instant,
    ttfb: Duration,
    /// Gateway mode: look for system-credential use in the answer.
    gateway: bool,
}

impl Finished {
    fn run(self, summary: crate::stream::Summary) {
        let m = &self.app.metrics;
        m.streams_active.dec();
        m.stream_bytes.inc_by(summary.bytes);
        let duration = self.start.elapsed();
        m.upstream_request_duration.observe(duration.as_secs_f64());
        let head = summary.head.as_deref().unwrap_or(&[]);
        let tail = summary.tail.as_deref().unwrap_or(&[]);
        let routing = summary.routing.as_deref().unwrap_or(&[]);
        let usage = if self.status.is_success() {
            crate::usage::extract(head, tail)
        } else {
            None
        };
        let system = if self.gateway && self.status.is_success() {
            gateway::system_credentials_used(routing, usage.and_then(|u| u.is_byok))
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
        let system = system.map(|s| {
            let provider = s
                .provider
                .as_deref()
                .map(provider_label)
                .filter(|p| *p != "other")
                .unwrap_or(self.provider.as_str())
                .to_string();
            m.system_fallback
                .with_label_values(&[provider_label(&provider)])
                .inc();
            tracing::warn!(
                request_id = %self.request_id,
                provider = %provider,
                model = %self.model,
                "the gateway served this request with the operator's credentials, not the caller's key"
            );
            SystemCredentialUse {
                provider,
                byok_status: s.byok_status,
            }
        });
        let served_by = if self.gateway && system.is_none() {
            gateway::final_provider(routing).filter(|p| crate::keys::providers::find(p).is_some())
        } else {
            None
        };
        self.upstreamed.set(UpstreamFacts {
            model: self.model.clone(),
            provider: self.provider.clone(),
            ttfb: self.ttfb,
            bytes: summary.bytes,
            end: summary.end.label(),
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
        self.app.usage.record(UsageRecord {
            request_id: self.request_id,
            user_id: self.user_id,
            provider: self.provider,
            model: self.model,
            usage: u,
            status,
            latency_ms: duration.as_millis() as u64,
            created_at: crate::store::now(),
            system,
            served_by,
        });
    }
}
