//! The request spine. Every request runs these stages, in this order, all written in
//! [`handle`]:
//!
//! 1. **Context**: the request id (the client's `x-request-id` when it is short and plain,
//!    else a fresh UUID), the peer and the arrival time ([`RequestCtx`]); the [`Route`].
//! 2. **Overload**: a global in-flight [`Slot`] (`limits.max_in_flight`,
//!    else 503 `overloaded`), counted in `byok_in_flight_requests` until the response body
//!    ends.
//! 3. **Authenticate** ([`Authenticator`](crate::auth::Authenticator)): open routes answer here
//!    ([`ops`], which also serves the sign-in redirects); `/admin` needs the admin token or an
//!    admin's web session ([`admin`]); `/v1` an app token; `/api` an app token or a web
//!    session (CSRF-checked when it changes state). Yields the [`Caller`], which is then
//!    **authorized** ([`Caller::authorize`]): a scoped token calls only its routes (403
//!    `route_not_allowed`) and never manages tokens or provider keys (403
//!    `insufficient_scope`).
//! 4. **Admit** ([`Limits::admit`](crate::limits::Limits::admit)): the caller's rate
//!    (GCRA, local or Redis), its token's own rate when scoped, and concurrency limits;
//!    returns [`Admitted`] `{ caller, permit, rate }`.
//! 5. **Dispatch**: the route's handler — [`proxy`] for `/v1` (read the body under its
//!    limits, resolve models, credentials, build, send, wrap the upstream body), [`api`] for
//!    the self-service API.
//! 6. **Respond** (`Exchange::respond`): an error becomes the OpenAI envelope (Anthropic's
//!    on `/v1/messages*`); the response gets `x-request-id` and the `x-ratelimit-*` headers
//!    (one writer: [`RateHeaders::apply`](crate::http_util::RateHeaders::apply)); request
//!    metrics are counted.
//! 7. **Account**: the slot, the caller's permit and the access-log line ride in the
//!    response body and are released / written exactly once when it ends, fails, is
//!    dropped, or is ended because the client stopped reading it
//!    ([`Responses`](crate::watchdog::Responses); `log_access` is the only writer of access
//!    lines). Usage and stream metrics are recorded by the proxied body's own finish
//!    callback, off the hot path.

use crate::admin;
use crate::api;
use crate::auth::{Caller, Principal};
use crate::error::{ErrorKind, ProxyError};
use crate::http_util::Body;
use crate::limits::{Admitted, Slot};
use crate::ops;
use crate::proxy;
use crate::request::{RequestCtx, Upstreamed};
use crate::router::Route;
use crate::state::AppState;
use crate::watchdog::InFlight;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    app: Arc<AppState>,
    req: Request<Incoming>,
    remote: SocketAddr,
    conn: Option<InFlight>,
) -> Response<Body> {
    // 1. Context and route.
    let ctx = RequestCtx::new(req.headers(), remote);
    let route = Route::parse(req.uri().path());
    let mut exchange = Exchange::new(&ctx, &route, req.method());
    exchange.conn = conn;
    let span = tracing::info_span!("request", id = %ctx.request_id, route = exchange.route);
    let result = async {
        // 2. Overload.
        exchange.slot = Some(app.limits.enter(&app.metrics)?);
        // 3. Authenticate.
        let principal = app
            .auth
            .authenticate(route.access(), req.method(), req.headers(), &ctx)
            .await?;
        let caller = match principal {
            Principal::Anonymous => return ops::serve(&app, &route, &req, &ctx).await,
            Principal::Admin(by) => return admin::handle(&app, route, req, &ctx, by).await,
            Principal::User(caller) => caller,
        };
        exchange.user = Some(caller.user_id);
        caller.authorize(&route, req.method())?;
        // 4. Admit.
        let admitted = app.limits.admit(caller, &app.metrics).await?;
        // 5. Dispatch.
        let response = dispatch(&app, route, req, &ctx, &admitted.caller).await;
        exchange.admitted = Some(admitted);
        response
    }
    .instrument(span)
    .await;
    // 6. Respond, 7. account.
    exchange.respond(&app, result)
}

/// The route's handler for an admitted caller.
async fn dispatch(
    app: &Arc<AppState>,
    route: Route,
    req: Request<Incoming>,
    ctx: &RequestCtx,
    caller: &Caller,
) -> Result<Response<Body>, ProxyError> {
    match route {
        Route::ChatCompletions
        | Route::Embeddings
        | Route::Responses
        | Route::Messages
        | Route::CountTokens
        | Route::Models
        | Route::Model(_) => proxy::handle(app, route, req, ctx, caller).await,
        _ => api::handle(app, route, req, ctx, caller).await,
    }
}

/// What the stages found out about one request, turned into the response and its
/// accounting by [`Exchange::respond`].
struct Exchange {
    request_id: String,
    method: Method,
    route: &'static str,
    anthropic: bool,
    start: Instant,
    slot: Option<Slot>,
    user: Option<uuid::Uuid>,
    admitted: Option<Admitted>,
    /// The request's place on its connection (the connection's idle deadline waits for it).
    conn: Option<InFlight>,
}

impl Exchange {
    fn new(ctx: &RequestCtx, route: &Route, method: &Method) -> Exchange {
        Exchange {
            request_id: ctx.request_id.clone(),
            method: method.clone(),
            route: route.label(),
            anthropic: route.anthropic_errors(),
            start: ctx.start,
            slot: None,
            user: None,
            admitted: None,
            conn: None,
        }
    }

    /// The final response: error envelope, `x-request-id`, rate headers, request metrics; the
    /// slot, permit and access line ride in its body until it ends.
    fn respond(self, app: &AppState, result: Result<Response<Body>, ProxyError>) -> Response<Body> {
        let mut resp = result.unwrap_or_else(|e| e.to_response(self.anthropic));
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            headers.insert(crate::http_util::names::X_REQUEST_ID, v);
        }
        let (permit, rate) = match self.admitted {
            Some(a) => (Some(a.permit), Some(a.rate)),
            None => (None, None),
        };
        if let Some(rate) = rate {
            rate.apply(headers);
        }
        let status = resp.status();
        app.metrics
            .http_requests
            .with_label_values(&[self.route, status.as_str()])
            .inc();
        app.metrics
            .http_duration
            .with_label_values(&[self.route])
            .observe(self.start.elapsed().as_secs_f64());
        let line = AccessLine {
            request_id: self.request_id,
            method: self.method,
            route: self.route,
            status: status.as_u16(),
            user: self.user,
            error: resp.extensions().get::<ErrorKind>().map(|k| k.0),
            start: self.start,
            upstream: resp.extensions_mut().remove::<Arc<Upstreamed>>(),
        };
        app.responses.watch(
            resp,
            Held {
                line,
                _permit: permit,
                _slot: self.slot,
                _conn: self.conn,
            },
        )
    }
}

/// Everything a response holds until its body ends (or the client stopped reading it: see
/// [`crate::watchdog`]). Dropping it writes the access line, then releases the caller's
/// permit, the global slot and the request's place on its connection.
struct Held {
    line: AccessLine,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _slot: Option<Slot>,
    _conn: Option<InFlight>,
}

impl Drop for Held {
    fn drop(&mut self) {
        log_access(&self.line);
    }
}

/// The fields of one access-log line.
struct AccessLine {
    request_id: String,
    method: Method,
    route: &'static str,
    status: u16,
    user: Option<uuid::Uuid>,
    error: Option<&'static str>,
    start: Instant,
    /// Set by the proxy; filled in when the upstream body ended.
    upstream: Option<Arc<Upstreamed>>,
}

/// Writes the access line of one request (target `byok_proxy::access`, level info): the only
/// place access lines are written. Never holds a secret: ids, route template, status, sizes.
fn log_access(line: &AccessLine) {
    if !tracing::enabled!(target: "byok_proxy::access", tracing::Level::INFO) {
        return;
    }
    let user = line.user.map(|u| u.to_string()).unwrap_or_default();
    let duration_ms = line.start.elapsed().as_secs_f64() * 1000.0;
    match line.upstream.as_deref().and_then(Upstreamed::get) {
        Some(u) => tracing::info!(
            target: "byok_proxy::access",
            request_id = %line.request_id,
            method = %line.method,
            route = line.route,
            status = line.status,
            user = %user,
            error = line.error.unwrap_or(""),
            model = %u.model,
            provider = %u.provider,
            ttfb_ms = u.ttfb.as_secs_f64() * 1000.0,
            duration_ms,
            bytes = u.bytes,
            end = u.end,
            prompt_tokens = u.prompt_tokens,
            completion_tokens = u.completion_tokens,
            "request"
        ),
        None => tracing::info!(
            target: "byok_proxy::access",
            request_id = %line.request_id,
            method = %line.method,
            route = line.route,
            status = line.status,
            user = %user,
            error = line.error.unwrap_or(""),
            duration_ms,
            "request"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::UpstreamFacts;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Collects what a tracing subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(line: &AccessLine) -> serde_json::Value {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || log_access(line));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        serde_json::from_str(text.trim()).unwrap()
    }

    #[test]
    fn access_line_fields() {
        let user = uuid::Uuid::from_u128(9);
        let mut line = AccessLine {
            request_id: "req-1".into(),
            method: Method::GET,
            route: "/api/keys",
            status: 401,
            user: None,
            error: Some("invalid_api_key"),
            start: Instant::now() - Duration::from_millis(5),
            upstream: None,
        };
        let v = logged(&line);
        assert_eq!(v["target"], "byok_proxy::access");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["route"], "/api/keys");
        assert_eq!(v["status"], 401);
        assert_eq!(v["user"], "");
        assert_eq!(v["error"], "invalid_api_key");
        assert!(v["duration_ms"].as_f64().unwrap() >= 5.0);
        assert!(v.get("model").is_none());

        // A proxied request adds what its body's end found out.
        let facts = Arc::new(Upstreamed::default());
        facts.set(UpstreamFacts {
            model: "openai/gpt-4o".into(),
            provider: "openai".into(),
            ttfb: Duration::from_millis(3),
            bytes: 1234,
            end: "complete",
            prompt_tokens: 11,
            completion_tokens: 7,
        });
        line.method = Method::POST;
        line.route = "/v1/chat/completions";
        line.status = 200;
        line.user = Some(user);
        line.error = None;
        line.upstream = Some(facts);
        let v = logged(&line);
        assert_eq!(v["user"], user.to_string());
        assert_eq!(v["model"], "openai/gpt-4o");
        assert_eq!(v["provider"], "openai");
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["end"], "complete");
        assert_eq!(
            (v["prompt_tokens"].as_u64(), v["completion_tokens"].as_u64()),
            (Some(11), Some(7))
        );
        assert!(v["ttfb_ms"].as_f64().unwrap() >= 3.0);
    }
}
