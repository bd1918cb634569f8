//! A scriptable, in-process fake of the Vercel AI Gateway for integration tests.
//!
//! [`FakeUpstream::start`] binds `127.0.0.1:0` and serves HTTP/1.1 and cleartext HTTP/2
//! (prior knowledge, "h2c") on the same port. Every request is recorded (method, path with
//! query, headers, fully-read body) *before* it is answered, so tests can assert on exactly
//! what the proxy forwarded.
//!
//! How a request is answered is decided by a FIFO queue of [`Behavior`]s: each request pops
//! the front of the queue ([`FakeUpstream::push`]); when the queue is empty the default
//! behavior applies ([`FakeUpstream::set_default`], initially [`Behavior::Auto`]).
//! [`Behavior::Auto`] answers by route in the gateway's wire format (chat completions,
//! embeddings, responses, Anthropic messages, model catalog); the other behaviors script
//! errors, stalls, connection resets and slow or broken SSE streams.
//!
//! Every response carries `set-cookie: upstream=1` and `x-vercel-id: fake`, plus
//! `connection: keep-alive` on HTTP/1, so tests can check that the proxy strips
//! `set-cookie` and hop-by-hop headers.
//!
//! Streaming bodies are real: each chunk is its own body frame, produced only after its
//! delay has elapsed. When the client goes away before a streamed body has finished, hyper
//! drops the body and the drop is counted immediately (see
//! [`FakeUpstream::wait_for_disconnect`]) — no polling, no waiting for the next chunk.
//!
//! The server stops when the [`FakeUpstream`] is dropped: the accept loop is aborted, and
//! with it every connection it spawned.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, Sleep};

/// Usage reported by [`Behavior::Auto`] on `/v1/chat/completions` (non-stream, and on the
/// final stream chunk when `stream_options.include_usage` is true).
fn chat_usage() -> Value {
    json!({
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "total_tokens": 18,
        "cost": 0.00042,
        "is_byok": true
    })
}

/// Usage reported by [`Behavior::Auto`] on `/v1/responses`.
fn responses_usage() -> Value {
    json!({ "input_tokens": 9, "output_tokens": 4, "total_tokens": 13 })
}

/// The text every [`Behavior::Auto`] completion answers with.
const REPLY_TEXT: &str = "Hello from fake";

/// One request as received by the fake (body fully read).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Path plus query string, e.g. `/v1/models?limit=5`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// HTTP version the request arrived with (`HTTP_11` or `HTTP_2`).
    pub version: Version,
}

impl Recorded {
    /// The body parsed as JSON. Panics (with the body in the message) if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "recorded {} {} body is not JSON ({e}): {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// First value of header `name` (case-insensitive), if present and valid UTF-8/ASCII.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// How the fake answers one request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer by route in the gateway's wire format (the initial default). The `/v1`
    /// prefix is optional on every route (direct-mode providers may use `origin()`):
    /// - `POST /v1/chat/completions`: `chat.completion` ("Hello from fake", usage 11/7/18,
    ///   cost 0.00042, is_byok true), or with `"stream": true` the SSE of
    ///   [`chat_stream_chunks`] (usage only if `stream_options.include_usage`).
    /// - `POST /v1/embeddings`: one 3-float embedding per input, usage 5/5.
    /// - `POST /v1/responses`: `response` object (usage 9/4/13), or SSE
    ///   `response.created`, 2× `response.output_text.delta`, `response.completed`.
    /// - `POST /v1/messages`: Anthropic `message` (usage 12/6), or Anthropic SSE;
    ///   `POST /v1/messages/count_tokens`: `{"input_tokens":12}`.
    /// - `GET /v1/models`: [`catalog_json`]; `GET /v1/models/{creator}/{model}`: one entry
    ///   or 404 `model_not_found`.
    /// - POST bodies that are not a JSON object: 400 `invalid_request_error`; anything else:
    ///   404 `{"error":{"message":"not found","type":"not_found"}}`.
    Auto,
    /// [`Behavior::Auto`], except that a streamed `/v1/responses` carries every event the
    /// Responses API sends around the text, as strict clients (the Codex CLI) need:
    /// `response.created`, `response.output_item.added`, `response.content_part.added`, 2×
    /// `response.output_text.delta`, `response.output_text.done`, `response.content_part.done`,
    /// `response.output_item.done`, `response.completed`.
    AutoFullEvents,
    /// Answer `status` with `body` and the given content type, as-is.
    Status {
        status: u16,
        body: String,
        content_type: &'static str,
    },
    /// Read the request, then never send response headers. The request future is dropped
    /// when the client closes the connection (or resets the HTTP/2 stream).
    Stall,
    /// `200 text/event-stream`; each chunk is sent as its own body frame, `delay` after the
    /// previous one (the first one `delay` after the headers).
    Stream {
        chunks: Vec<String>,
        delay: Duration,
    },
    /// Like [`Behavior::Stream`], but ~50 ms after the last chunk the body fails with an
    /// error, so hyper aborts the response (HTTP/1: connection closed without the
    /// terminating chunk; HTTP/2: stream reset) instead of ending it cleanly. All chunks
    /// reach the client before the abort.
    DropMidStream {
        chunks: Vec<String>,
        delay: Duration,
    },
    /// Read the request, then close the connection without any response.
    Reset,
    /// Answer `status` with a JSON body (`content-type: application/json`).
    Json { status: u16, body: String },
    /// Answer `status` with `body` and extra response headers (e.g. `retry-after`).
    /// `content-type` defaults to `application/json` unless given in `headers`.
    Custom {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Behavior {
    /// An error in the gateway's OpenAI-route shape:
    /// `{"error":{"message":..,"type":..}}` with `content-type: application/json`.
    pub fn gateway_error(status: u16, error_type: &str, message: &str) -> Behavior {
        Behavior::Status {
            status,
            body: json!({ "error": { "message": message, "type": error_type } }).to_string(),
            content_type: "application/json",
        }
    }

    /// An error in the Anthropic-route shape:
    /// `{"type":"error","error":{"type":..,"message":..}}`.
    pub fn anthropic_error(status: u16, error_type: &str, message: &str) -> Behavior {
        Behavior::Status {
            status,
            body: json!({ "type": "error", "error": { "type": error_type, "message": message } })
                .to_string(),
            content_type: "application/json",
        }
    }
}

/// State shared between the handle, the accept loop and every connection.
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Whether requests are stored in `requests` (see [`FakeUpstream::set_recording`]).
    recording: AtomicBool,
    /// Requests received while recording was off (not stored).
    unrecorded: AtomicUsize,
    queue: Mutex<VecDeque<Behavior>>,
    default_behavior: Mutex<Behavior>,
    /// Sequence number for generated ids (`gen_FAKE…`).
    next_id: AtomicU64,
    connections_closed: AtomicUsize,
    /// Streamed response bodies dropped before they finished.
    disconnects: AtomicUsize,
    /// Woken (`notify_waiters`) whenever a request is recorded or a counter changes.
    changed: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Records the request and picks the behavior that answers it, atomically with respect
    /// to other requests, so recorded order equals behavior order.
    fn record(&self, recorded: Recorded) -> Behavior {
        let behavior = {
            let mut requests = lock(&self.requests);
            if self.recording.load(Ordering::SeqCst) {
                requests.push(recorded);
            } else {
                self.unrecorded.fetch_add(1, Ordering::SeqCst);
            }
            let queued = lock(&self.queue).pop_front();
            queued.unwrap_or_else(|| lock(&self.default_behavior).clone())
        };
        self.changed.notify_waiters();
        behavior
    }

    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn generation_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        format!("gen_FAKE{n:022}")
    }

    /// Waits until `cond` holds or `timeout` passes; returns the final value of `cond`.
    /// Uses `Notify` with `enable()` before checking, so no wake-up can be missed.
    async fn wait_until(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond();
            }
        }
    }
}

/// A running fake gateway. Stops serving when dropped.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl FakeUpstream {
    /// Binds `127.0.0.1:0` and starts serving HTTP/1.1 and h2c in the background.
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap_or_else(|e| panic!("fake upstream: bind 127.0.0.1:0 failed: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake upstream: local_addr failed: {e}"));
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            recording: AtomicBool::new(true),
            unrecorded: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
            default_behavior: Mutex::new(Behavior::Auto),
            next_id: AtomicU64::new(0),
            connections_closed: AtomicUsize::new(0),
            disconnects: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        FakeUpstream {
            addr,
            shared,
            accept_task,
        }
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1` — the OpenAI-compatible base URL.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.origin())
    }

    /// `http://127.0.0.1:PORT` — the bare origin (Anthropic-style base URL).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Waits until at least `n` requests have been recorded or `timeout` passes, and returns
    /// all requests recorded so far (possibly fewer than `n` on timeout — assert on the
    /// length).
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.shared
            .wait_until(timeout, || self.request_count() >= n)
            .await;
        self.requests()
    }

    /// Turns recording on (the default) or off. While off, requests are answered as usual
    /// but not stored (so memory stays flat under load): [`FakeUpstream::requests`] and
    /// [`FakeUpstream::request_count`] only see requests received while recording was on;
    /// [`FakeUpstream::unrecorded_count`] counts the others.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// Number of requests received while recording was off.
    pub fn unrecorded_count(&self) -> usize {
        self.shared.unrecorded.load(Ordering::SeqCst)
    }

    /// Queues `behavior` for the next request that has no queued behavior yet (FIFO).
    pub fn push(&self, behavior: Behavior) {
        lock(&self.shared.queue).push_back(behavior);
    }

    /// Sets the behavior used when the queue is empty (initially [`Behavior::Auto`]).
    pub fn set_default(&self, behavior: Behavior) {
        *lock(&self.shared.default_behavior) = behavior;
    }

    /// Number of client connections (TCP) that have ended, for any reason.
    pub fn connections_closed(&self) -> usize {
        self.shared.connections_closed.load(Ordering::SeqCst)
    }

    /// Number of streamed response bodies ([`Behavior::Stream`], [`Behavior::DropMidStream`]
    /// and streaming [`Behavior::Auto`] answers) dropped before they finished, i.e. the
    /// client went away mid-stream.
    pub fn disconnects(&self) -> usize {
        self.shared.disconnects.load(Ordering::SeqCst)
    }

    /// Returns `true` as soon as at least one streamed response body has been dropped before
    /// it finished (immediately if that already happened), `false` after `timeout`.
    pub async fn wait_for_disconnect(&self, timeout: Duration) -> bool {
        self.shared
            .wait_until(timeout, || self.disconnects() > 0)
            .await
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        // Dropping the accept loop drops the listener and its JoinSet, which aborts every
        // connection task.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // E.g. EMFILE: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Best effort: flush each small SSE frame immediately.
    let _ = stream.set_nodelay(true);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let service_shared = Arc::clone(&shared);
    let service = service_fn(move |req| handle(Arc::clone(&service_shared), req));
    // Errors are expected here (client went away, Behavior::Reset, aborted bodies).
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
    shared.bump(&shared.connections_closed);
}

type FakeBody = BoxBody<Bytes, io::Error>;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> io::Result<Response<FakeBody>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let recorded = Recorded {
        method: parts.method,
        path,
        headers: parts.headers,
        body,
        version: parts.version,
    };
    let behavior = shared.record(recorded.clone());

    let mut response = match behavior {
        Behavior::Auto => auto_response(&shared, &recorded, false),
        Behavior::AutoFullEvents => auto_response(&shared, &recorded, true),
        Behavior::Status {
            status,
            body,
            content_type,
        } => full(status, content_type, body),
        Behavior::Json { status, body } => full(status, "application/json", body),
        Behavior::Custom {
            status,
            headers,
            body,
        } => {
            let mut response = full(status, "application/json", body);
            for (name, value) in headers {
                let name = HeaderName::try_from(name.as_str())
                    .unwrap_or_else(|e| panic!("fake upstream: bad header name {name:?}: {e}"));
                let value = HeaderValue::try_from(value.as_str())
                    .unwrap_or_else(|e| panic!("fake upstream: bad header value {value:?}: {e}"));
                if name == CONTENT_TYPE {
                    response.headers_mut().insert(name, value);
                } else {
                    response.headers_mut().append(name, value);
                }
            }
            response
        }
        Behavior::Stall => std::future::pending().await,
        Behavior::Reset => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "fake upstream: Behavior::Reset",
            ))
        }
        Behavior::Stream { chunks, delay } => sse(&shared, chunks, delay, false),
        Behavior::DropMidStream { chunks, delay } => sse(&shared, chunks, delay, true),
    };

    let headers = response.headers_mut();
    headers.append(SET_COOKIE, HeaderValue::from_static("upstream=1"));
    headers.insert("x-vercel-id", HeaderValue::from_static("fake"));
    if recorded.version < Version::HTTP_2 {
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    Ok(response)
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status)
        .unwrap_or_else(|e| panic!("fake upstream: bad status code {status}: {e}"))
}

fn content_type(value: &str) -> HeaderValue {
    HeaderValue::try_from(value)
        .unwrap_or_else(|e| panic!("fake upstream: bad content type {value:?}: {e}"))
}

/// A complete (non-streamed) response.
fn full(status: u16, ct: &str, body: impl Into<Bytes>) -> Response<FakeBody> {
    let body = Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status_code(status);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, content_type(ct));
    response
}

fn json_response(status: u16, value: &Value) -> Response<FakeBody> {
    full(status, "application/json", value.to_string())
}

/// A `200 text/event-stream` response whose chunks are sent as separate frames.
fn sse(
    shared: &Arc<Shared>,
    chunks: Vec<String>,
    delay: Duration,
    fail_at_end: bool,
) -> Response<FakeBody> {
    let body = ScriptedBody {
        chunks: chunks.into_iter().map(Bytes::from).collect(),
        delay,
        sleep: None,
        fail_at_end,
        finished: false,
        shared: Arc::clone(shared),
    };
    let mut response = Response::new(body.boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// How long [`Behavior::DropMidStream`] waits after its last chunk before failing the body.
const ABORT_GRACE: Duration = Duration::from_millis(50);

/// A response body that yields each chunk as its own frame after `delay`, then ends
/// (or fails, if `fail_at_end`). Dropping it before it finished counts as a client
/// disconnect.
struct ScriptedBody {
    chunks: VecDeque<Bytes>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    fail_at_end: bool,
    finished: bool,
    shared: Arc<Shared>,
}

impl Body for ScriptedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if this.chunks.is_empty() {
            if this.fail_at_end {
                // Give hyper time to flush the chunks already handed over: an error frame
                // makes it discard whatever is still buffered for this response.
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(ABORT_GRACE)));
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
                this.finished = true;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "fake upstream: Behavior::DropMidStream",
                ))));
            }
            this.finished = true;
            return Poll::Ready(None);
        }
        if !this.delay.is_zero() {
            let delay = this.delay;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        match this.chunks.pop_front() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for ScriptedBody {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.bump(&self.shared.disconnects);
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `data: {json}\n\n`
fn sse_data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// `event: {name}\ndata: {json}\n\n`
fn sse_event(name: &str, value: &Value) -> String {
    format!("event: {name}\ndata: {value}\n\n")
}

fn not_found() -> Response<FakeBody> {
    json_response(
        404,
        &json!({ "error": { "message": "not found", "type": "not_found" } }),
    )
}

/// [`Behavior::Auto`]: answer by route. A leading `/v1` is optional on every route, so
/// direct-mode providers may use either `origin()` or `base_url()` as their base URL.
/// `full_events`: [`Behavior::AutoFullEvents`].
fn auto_response(shared: &Arc<Shared>, req: &Recorded, full_events: bool) -> Response<FakeBody> {
    let path = req.path.split('?').next().unwrap_or_default();
    let route = match path.strip_prefix("/v1") {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    };

    if req.method == Method::GET {
        if route == "/models" {
            return json_response(200, &catalog_json());
        }
        if let Some(id) = route.strip_prefix("/models/") {
            return match find_model(id) {
                Some(model) => json_response(200, &model),
                None => json_response(
                    404,
                    &json!({ "error": {
                        "message": format!("Model '{id}' not found"),
                        "type": "model_not_found",
                        "param": { "modelId": id }
                    } }),
                ),
            };
        }
        return not_found();
    }
    if req.method != Method::POST {
        return not_found();
    }

    let known = matches!(
        route,
        "/chat/completions" | "/embeddings" | "/responses" | "/messages" | "/messages/count_tokens"
    );
    if !known {
        return not_found();
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            let message = "Invalid request: body must be a JSON object";
            let error = if route.starts_with("/messages") {
                json!({ "type": "error", "error": { "type": "invalid_request_error", "message": message } })
            } else {
                json!({ "error": { "message": message, "type": "invalid_request_error" } })
            };
            return json_response(400, &error);
        }
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let id = shared.generation_id();

    match route {
        "/chat/completions" if stream => {
            let include_usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true);
            sse(
                shared,
                chat_chunks(&id, model, include_usage),
                Duration::ZERO,
                false,
            )
        }
        "/chat/completions" => json_response(200, &chat_completion(&id, model)),
        "/embeddings" => json_response(200, &embeddings(&id, model, &body)),
        "/responses" if stream && full_events => sse(
            shared,
            responses_full_events(&id, model),
            Duration::ZERO,
            false,
        ),
        "/responses" if stream => sse(shared, responses_events(&id, model), Duration::ZERO, false),
        "/responses" => json_response(200, &response_object(&id, model, true)),
        "/messages" if stream => sse(shared, messages_events(&id, model), Duration::ZERO, false),
        "/messages" => json_response(200, &message_object(&id, model)),
        "/messages/count_tokens" => json_response(200, &json!({ "input_tokens": 12 })),
        _ => not_found(),
    }
}

fn chat_completion(id: &str, model: &str) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now_unix(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": REPLY_TEXT,
                "provider_metadata": {
                    "gateway": { "cost": "0.00042", "generationId": id }
                }
            },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": chat_usage(),
        "system_fingerprint": "fp_fake",
        "generationId": id
    })
}

/// The SSE events [`Behavior::Auto`] streams for a chat completion with this `model`:
/// three `chat.completion.chunk` content deltas (`"Hello"`, `" from"`, `" fake"`), a final
/// chunk with `finish_reason: "stop"` (carrying `usage` — prompt 11, completion 7, total 18,
/// cost 0.00042, is_byok true — only if `include_usage`), then `data: [DONE]`.
/// Handy as `chunks` for [`Behavior::Stream`] / [`Behavior::DropMidStream`].
pub fn chat_stream_chunks(model: &str, include_usage: bool) -> Vec<String> {
    chat_chunks("gen_FAKESTREAM000000000000001", model, include_usage)
}

fn chat_chunks(id: &str, model: &str, include_usage: bool) -> Vec<String> {
    let created = now_unix();
    let chunk = |delta: Value, finish_reason: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason
            }],
            "system_fingerprint": "fp_fake"
        })
    };
    let mut events = vec![
        sse_data(&chunk(
            json!({ "role": "assistant", "content": "Hello" }),
            Value::Null,
        )),
        sse_data(&chunk(json!({ "content": " from" }), Value::Null)),
        sse_data(&chunk(json!({ "content": " fake" }), Value::Null)),
    ];
    let mut last = chunk(json!({}), json!("stop"));
    if include_usage {
        // The gateway puts usage on the finish_reason chunk (not a separate `choices: []`
        // chunk as OpenAI does).
        last["usage"] = chat_usage();
        last["generationId"] = json!(id);
    }
    events.push(sse_data(&last));
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn embeddings(id: &str, model: &str, body: &Value) -> Value {
    let inputs = match body.get("input") {
        // A single pre-tokenised input: `[1, 2, 3]`.
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_number) => 1,
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|index| json!({ "object": "embedding", "index": index, "embedding": [0.1, 0.2, 0.3] }))
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": 5, "total_tokens": 5 },
        "providerMetadata": {
            "gateway": { "routing": {}, "cost": "0.0000001", "generationId": id }
        }
    })
}

fn response_object(id: &str, model: &str, completed: bool) -> Value {
    if !completed {
        return json!({
            "id": id,
            "object": "response",
            "created_at": now_unix(),
            "status": "in_progress",
            "model": model,
            "output": [],
            "usage": null,
            "error": null
        });
    }
    json!({
        "id": id,
        "object": "response",
        "created_at": now_unix(),
        "status": "completed",
        "model": model,
        "output": [{
            "type": "message",
            "id": "msg_fake_1",
            "status": "completed",
            "role": "assistant",
            "content": [{
                "type": "output_text",
                "text": REPLY_TEXT,
                "annotations": [],
                "logprobs": []
            }]
        }],
        "usage": responses_usage(),
        "error": null
    })
}

fn responses_events(id: &str, model: &str) -> Vec<String> {
    let delta = |seq: u64, text: &str| {
        sse_event(
            "response.output_text.delta",
            &json!({
                "type": "response.output_text.delta",
                "sequence_number": seq,
                "item_id": "msg_fake_1",
                "output_index": 0,
                "content_index": 0,
                "delta": text
            }),
        )
    };
    vec![
        sse_event(
            "response.created",
            &json!({
                "type": "response.created",
                "sequence_number": 0,
                "response": response_object(id, model, false)
            }),
        ),
        delta(1, "Hello"),
        delta(2, " from fake"),
        sse_event(
            "response.completed",
            &json!({
                "type": "response.completed",
                "sequence_number": 3,
                "response": response_object(id, model, true)
            }),
        ),
    ]
}

/// The Responses API's full event sequence for one text answer ([`Behavior::AutoFullEvents`]).
fn responses_full_events(id: &str, model: &str) -> Vec<String> {
    let completed = response_object(id, model, true);
    let item = completed["output"][0].clone();
    let part = item["content"][0].clone();
    let mut seq = 0u64;
    let mut event = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        sse_event(name, &data)
    };
    let at = |mut v: Value| {
        v["item_id"] = item["id"].clone();
        v["output_index"] = json!(0);
        v["content_index"] = json!(0);
        v
    };
    let mut in_progress = item.clone();
    in_progress["status"] = json!("in_progress");
    in_progress["content"] = json!([]);
    let mut empty_part = part.clone();
    empty_part["text"] = json!("");
    vec![
        event(
            "response.created",
            json!({ "response": response_object(id, model, false) }),
        ),
        event(
            "response.output_item.added",
            json!({ "output_index": 0, "item": in_progress }),
        ),
        event(
            "response.content_part.added",
            at(json!({ "part": empty_part })),
        ),
        event(
            "response.output_text.delta",
            at(json!({ "delta": "Hello" })),
        ),
        event(
            "response.output_text.delta",
            at(json!({ "delta": " from fake" })),
        ),
        event(
            "response.output_text.done",
            at(json!({ "text": REPLY_TEXT, "logprobs": [] })),
        ),
        event("response.content_part.done", at(json!({ "part": part }))),
        event(
            "response.output_item.done",
            json!({ "output_index": 0, "item": item }),
        ),
        event("response.completed", json!({ "response": completed })),
    ]
}

fn message_object(id: &str, model: &str) -> Value {
    json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "content": [{ "type": "text", "text": REPLY_TEXT }],
        "model": model,
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": { "input_tokens": 12, "output_tokens": 6 }
    })
}

/// Anthropic Messages SSE. Like the real API, `message_start` reports `output_tokens: 1`
/// and `message_delta` reports the cumulative final `output_tokens: 6`.
fn messages_events(id: &str, model: &str) -> Vec<String> {
    let text_delta = |text: &str| {
        sse_event(
            "content_block_delta",
            &json!({
                "type": "content_block_delta",
                "index": 0,
                "delta": { "type": "text_delta", "text": text }
            }),
        )
    };
    vec![
        sse_event(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": format!("msg_{id}"),
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": model,
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": { "input_tokens": 12, "output_tokens": 1 }
                }
            }),
        ),
        sse_event(
            "content_block_start",
            &json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": { "type": "text", "text": "" }
            }),
        ),
        text_delta("Hello"),
        text_delta(" from fake"),
        sse_event(
            "content_block_stop",
            &json!({ "type": "content_block_stop", "index": 0 }),
        ),
        sse_event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": { "stop_reason": "end_turn", "stop_sequence": null },
                "usage": { "output_tokens": 6 }
            }),
        ),
        sse_event("message_stop", &json!({ "type": "message_stop" })),
    ]
}

/// One catalog entry (the fields the fake varies per model).
struct ModelSpec {
    id: &'static str,
    name: &'static str,
    model_type: &'static str,
    context_window: u64,
    max_tokens: u64,
    tags: &'static [&'static str],
    /// USD per input token, as the gateway's decimal string.
    input: &'static str,
    /// USD per output token, as the gateway's decimal string.
    output: &'static str,
}

const CATALOG: &[ModelSpec] = &[
    ModelSpec {
        id: "openai/gpt-4o",
        name: "GPT-4o",
        model_type: "language",
        context_window: 128_000,
        max_tokens: 16_384,
        tags: &["tool-use", "vision", "file-input"],
        input: "0.0000025",
        output: "0.00001",
    },
    ModelSpec {
        id: "openai/gpt-4o-mini",
        name: "GPT-4o mini",
        model_type: "language",
        context_window: 128_000,
        max_tokens: 16_384,
        tags: &["tool-use", "vision", "file-input"],
        input: "0.00000015",
        output: "0.0000006",
    },
    ModelSpec {
        id: "openai/text-embedding-3-small",
        name: "text-embedding-3-small",
        model_type: "embedding",
        context_window: 8_192,
        max_tokens: 8_192,
        tags: &[],
        input: "0.00000002",
        output: "0",
    },
    ModelSpec {
        id: "anthropic/claude-sonnet-4.5",
        name: "Claude Sonnet 4.5",
        model_type: "language",
        context_window: 200_000,
        max_tokens: 64_000,
        tags: &["tool-use", "vision", "reasoning", "explicit-caching"],
        input: "0.000003",
        output: "0.000015",
    },
    ModelSpec {
        id: "anthropic/claude-3-haiku",
        name: "Claude 3 Haiku",
        model_type: "language",
        context_window: 200_000,
        max_tokens: 4_096,
        tags: &["tool-use", "vision"],
        input: "0.00000025",
        output: "0.00000125",
    },
    ModelSpec {
        id: "google/gemini-2.5-flash",
        name: "Gemini 2.5 Flash",
        model_type: "language",
        context_window: 1_000_000,
        max_tokens: 65_536,
        tags: &["tool-use", "vision", "reasoning", "implicit-caching"],
        input: "0.0000003",
        output: "0.0000025",
    },
    ModelSpec {
        id: "xai/grok-3",
        name: "Grok 3",
        model_type: "language",
        context_window: 131_072,
        max_tokens: 131_072,
        tags: &["tool-use"],
        input: "0.000003",
        output: "0.000015",
    },
    ModelSpec {
        id: "mistral/mistral-large",
        name: "Mistral Large",
        model_type: "language",
        context_window: 128_000,
        max_tokens: 32_000,
        tags: &["tool-use"],
        input: "0.000002",
        output: "0.000006",
    },
];

impl ModelSpec {
    fn to_json(&self) -> Value {
        let owned_by = self.id.split('/').next().unwrap_or_default();
        json!({
            "id": self.id,
            "object": "model",
            "created": 1_755_815_280u64,
            "owned_by": owned_by,
            "name": self.name,
            "description": format!("{} (fake catalog entry)", self.name),
            "context_window": self.context_window,
            "max_tokens": self.max_tokens,
            "type": self.model_type,
            "tags": self.tags,
            "pricing": { "input": self.input, "output": self.output }
        })
    }
}

/// The model catalog served by `GET /v1/models`, in the gateway's shape
/// (`{"object":"list","data":[...]}`, prices as decimal strings in USD per token):
/// openai/gpt-4o, openai/gpt-4o-mini, openai/text-embedding-3-small (type `embedding`),
/// anthropic/claude-sonnet-4.5, anthropic/claude-3-haiku, google/gemini-2.5-flash,
/// xai/grok-3, mistral/mistral-large.
pub fn catalog_json() -> Value {
    let data: Vec<Value> = CATALOG.iter().map(ModelSpec::to_json).collect();
    json!({ "object": "list", "data": data })
}

fn find_model(id: &str) -> Option<Value> {
    CATALOG
        .iter()
        .find(|spec| spec.id == id)
        .map(ModelSpec::to_json)
}
