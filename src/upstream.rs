//! The upstream client, connect and first-byte timeouts from config. `send` answers the
//! upstream's response or an error that says which failure happened, so the edge can pick 502
//! or 504.
//!
//! Two paths:
//! - `http://` upstreams (HTTP/1.1): our own small keep-alive pool of hyper connections that
//!   are *driven by the task that uses them*. The connection future travels with the response
//!   body ([`UpstreamBody`]) and is polled by the body before each frame, so reading the
//!   upstream socket, decoding a chunk and writing it to the client all happen in the client
//!   connection's task: no hand-over between tasks per frame, and every frame the upstream has
//!   already sent is handed to hyper's server in one go, which writes them together (one
//!   `writev` for a burst instead of one per frame).
//! - `https://` upstreams: the shared hyper-util client (rustls, HTTP/2 by ALPN, whose
//!   connections run as their own tasks).

pub mod catalog;
pub mod direct;
pub mod gateway;
pub mod headers;

use crate::config::UpstreamConfig;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No response started within the first-byte timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset or closed before response headers.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// Label for `byok_upstream_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Timeout(_) => "timeout",
            Error::Unavailable(_) => "connect",
        }
    }
}

#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    http: HttpConnector,
    pool: Arc<Pool>,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
}

/// How long an idle connection is kept, and how many: the shared client (https) keeps up to
/// 256 per host; the plain-HTTP pool 64 in all (like the nginx config of the load bench), so a
/// burst of thousands of streams does not leave thousands of idle connections behind.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const SHARED_MAX_IDLE: usize = 256;
const POOL_MAX_IDLE: usize = 64;

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http.clone());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(SHARED_MAX_IDLE)
            .build(https);
        Upstream {
            client,
            http,
            pool: Arc::new(Pool::default()),
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
        }
    }

    /// Sends `req`, waiting at most the first-byte timeout for the response head.
    ///
    /// # Errors
    /// `Timeout` or `Unavailable`; the detail is for logs, not for clients.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<UpstreamBody>, Error> {
        self.send_within(req, self.first_byte_timeout).await
    }

    /// Like [`Upstream::send`] with an explicit timeout.
    ///
    /// # Errors
    /// `Timeout` or `Unavailable`.
    pub async fn send_within(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, Error> {
        if req.uri().scheme() == Some(&Scheme::HTTP) {
            if let Some(key) = req.uri().authority().cloned() {
                return match tokio::time::timeout(timeout, self.send_pooled(key, req)).await {
                    Err(_) => Err(Error::Timeout(timeout)),
                    Ok(r) => r,
                };
            }
        }
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Err(e)) => Err(Error::Unavailable(describe(&e))),
            Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::Shared)),
        }
    }

    /// HTTP/1.1 on a pooled connection (a new one if none is idle). A request that never
    /// left because a reused connection had been closed meanwhile is sent again on a new one.
    async fn send_pooled(
        &self,
        key: Authority,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, Error> {
        origin_form(&mut req, &key)?;
        loop {
            let (mut live, reused) = match self.pool.checkout(&key) {
                Some(live) => (live, true),
                None => (self.connect(&key).await?, false),
            };
            let sent = live.sender.try_send_request(req);
            match drive(&mut live.conn, sent).await {
                Ok(resp) => {
                    return Ok(resp.map(|body| {
                        UpstreamBody::Pooled(PooledBody {
                            body,
                            primed: false,
                            live: Some(live),
                            pool: self.pool.clone(),
                            key,
                        })
                    }))
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(Error::Unavailable(describe(e.error()))),
                },
            }
        }
    }

    async fn connect(&self, key: &Authority) -> Result<Live, Error> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(key.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let io = tower::ServiceExt::oneshot(self.http.clone(), uri)
            .await
            .map_err(|e| Error::Unavailable(describe(&e)))?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<TokioIo<TcpStream>, Full<Bytes>>(io)
            .await
            .map_err(|e| Error::Unavailable(describe(&e)))?;
        Ok(Live {
            sender,
            conn: Some(Box::new(conn)),
        })
    }
}

/// An error and its sources, for logs.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

/// HTTP/1.1 wants the path in the request line and the authority in `Host`.
fn origin_form(req: &mut Request<Full<Bytes>>, key: &Authority) -> Result<(), Error> {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    if !req.headers().contains_key(http::header::HOST) {
        let host = key.as_str().rsplit('@').next().unwrap_or_default();
        let host = http::HeaderValue::from_str(host)
            .map_err(|_| Error::Unavailable("bad upstream host".into()))?;
        req.headers_mut().insert(http::header::HOST, host);
    }
    Ok(())
}

/// Boxed: the connection's state is ~700 bytes, and it moves (into the response body, the
/// pool, out again) several times per request; a box moves as a pointer, and is allocated
/// once per connection, not per request.
type Conn = Box<hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>;

/// A pooled connection: the handle that sends requests and the connection future itself,
/// which whoever waits on it polls (`None` once it has finished).
struct Live {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: Option<Conn>,
}

/// Polls `fut` while driving the connection it depends on.
async fn drive<F: Future>(conn: &mut Option<Conn>, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        poll_conn(conn, cx);
        fut.as_mut().poll(cx)
    })
    .await
}

/// Lets the connection read and write what it can; forgets it once it has finished.
fn poll_conn(conn: &mut Option<Conn>, cx: &mut Context<'_>) {
    if let Some(c) = conn {
        if Pin::new(c).poll(cx).is_ready() {
            *conn = None;
        }
    }
}

struct Idle {
    key: Authority,
    live: Live,
    since: Instant,
}

/// Idle keep-alive connections, newest last. A list, not a map: there is one upstream host
/// (the gateway) or a few, so the match is found at the end, without hashing.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The newest idle connection to `key` still open (a closed one reads its EOF here and
    /// goes).
    fn checkout(&self, key: &Authority) -> Option<Live> {
        loop {
            let mut idle = {
                let mut list = self.lock();
                let at = list.iter().rposition(|i| i.key == *key)?;
                list.remove(at)
            };
            if idle.since.elapsed() >= POOL_IDLE_TIMEOUT {
                continue;
            }
            let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
            poll_conn(&mut idle.live.conn, &mut cx);
            if idle.live.conn.is_some() && idle.live.sender.is_ready() {
                return Some(idle.live);
            }
        }
    }

    fn checkin(&self, key: Authority, live: Live) {
        let now = Instant::now();
        let mut list = self.lock();
        while list
            .first()
            .is_some_and(|i| now.duration_since(i.since) >= POOL_IDLE_TIMEOUT)
        {
            list.remove(0);
        }
        if list.len() < POOL_MAX_IDLE {
            list.push(Idle {
                key,
                live,
                since: now,
            });
        }
    }
}

/// A pooled upstream response body: polls its connection before each frame (see the module
/// docs), and gives the connection back to the pool when the body has been read to its end.
/// Dropped before that, it closes the connection.
pub struct PooledBody {
    body: Incoming,
    /// The body has been polled once (see `poll_frame`).
    primed: bool,
    live: Option<Live>,
    pool: Arc<Pool>,
    key: Authority,
}

impl PooledBody {
    fn release(&mut self) {
        let Some(mut live) = self.live.take() else {
            return;
        };
        // One more turn lets the connection see the end of the response and go idle.
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        poll_conn(&mut live.conn, &mut cx);
        if live.conn.is_some() && live.sender.is_ready() {
            self.pool.checkin(self.key.clone(), live);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut polled;
        loop {
            if let Some(live) = &mut this.live {
                poll_conn(&mut live.conn, cx);
            }
            polled = Pin::new(&mut this.body).poll_frame(cx);
            // The first poll of the body is what tells the connection it may read the body:
            // poll the connection once more right away, so frames it already holds leave with
            // the response head instead of after a trip through the scheduler.
            if polled.is_ready() || this.primed {
                break;
            }
            this.primed = true;
        }
        this.primed = true;
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.live = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An upstream response body, from either path.
pub enum UpstreamBody {
    Pooled(PooledBody),
    Shared(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Shared(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Shared(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(b) => b.size_hint(),
            UpstreamBody::Shared(b) => b.size_hint(),
        }
    }
}
