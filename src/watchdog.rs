//! Time limits on what a client holds, so slow, idle or stalled clients cannot exhaust the
//! proxy:
//!
//! - [`WatchedIo`] wraps each accepted connection. A fresh connection (and an HTTP/1 request
//!   head once its first byte arrived) must deliver a complete request head within
//!   `server.header_read_timeout`; a connection with no request in flight is closed after
//!   `server.idle_timeout`; a pending write that makes no progress for `server.idle_timeout`
//!   (the client stopped reading) fails the connection. While a request is in flight, reading
//!   its body has its own deadline (`server.body_read_timeout`, in `request.rs`).
//! - [`Responses`] watches every response body: one the client does not read for
//!   `server.idle_timeout` — hyper holding a frame it cannot write, on HTTP/1 or on one
//!   HTTP/2 stream whose window stays closed — is ended by a sweeper task: the upstream body
//!   is dropped (closing the upstream request) and the caller's permit, the global slot and
//!   the access line are released at once.

use crate::http_util::{Body, BoxError};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::Response;
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the first call (0 is reserved for "never").
fn now_ms() -> u64 {
    start().elapsed().as_millis() as u64 + 1
}

/// The instant of a [`now_ms`] reading.
fn instant_of(ms: u64) -> Instant {
    start() + Duration::from_millis(ms.saturating_sub(1))
}

// === connections ===

/// What the requests of one connection tell its IO watchdog.
#[derive(Debug, Default)]
pub struct ConnActivity {
    /// Requests of this connection being served (until their response body ends).
    inflight: AtomicUsize,
    /// Requests started on this connection so far.
    started: AtomicU64,
    /// When the last in-flight request ended ([`now_ms`]), 0 if none has.
    idle_since: AtomicU64,
    /// The connection's reader, parked while a request was in flight: woken when the last
    /// one ends, so the idle deadline starts then.
    reader: AtomicWaker,
}

/// Held by a request for as long as it is in flight on its connection.
#[derive(Debug)]
pub struct InFlight(Arc<ConnActivity>);

impl ConnActivity {
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(now_ms(), Ordering::Release);
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// The connection deadlines (`server.*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub idle: Duration,
}

/// An accepted connection with its deadlines enforced on reads and writes.
pub struct WatchedIo<T> {
    inner: T,
    activity: Arc<ConnActivity>,
    limits: Limits,
    accepted: Instant,
    /// First byte of a request head that has not been handed to the service yet.
    head_started: Option<Instant>,
    /// `started` of the activity when `head_started` was set.
    seen_started: u64,
    /// HTTP/2 (prior knowledge or after the preface): no request-head deadline of its own.
    h2: Option<bool>,
    write_blocked_since: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
    armed: Option<tokio::time::Instant>,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<T> WatchedIo<T> {
    pub fn new(inner: T, activity: Arc<ConnActivity>, limits: Limits) -> WatchedIo<T> {
        WatchedIo {
            inner,
            activity,
            limits,
            accepted: Instant::now(),
            head_started: None,
            seen_started: 0,
            h2: None,
            write_blocked_since: None,
            sleep: Box::pin(tokio::time::sleep(limits.header_read)),
            armed: None,
        }
    }

    /// When reading must have made progress by, if anything is due.
    fn read_deadline(&mut self) -> Option<Instant> {
        let started = self.activity.started.load(Ordering::Acquire);
        if started != self.seen_started {
            // A request head was handed to the service since: that head is done.
            self.head_started = None;
        }
        if self.activity.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if let Some(at) = self.head_started.filter(|_| self.h2 != Some(true)) {
            return Some(at + self.limits.header_read);
        }
        match self.activity.idle_since.load(Ordering::Acquire) {
            // No request yet: the first head is due soon after accept.
            0 => Some(self.accepted + self.limits.header_read),
            since => Some(instant_of(since) + self.limits.idle),
        }
    }

    /// Polls the one timer at `deadline`; `true` when it has passed.
    fn expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        let at = tokio::time::Instant::from_std(deadline);
        if self.armed != Some(at) {
            self.sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }

    fn deadline(&mut self, read_pending: bool) -> Option<Instant> {
        let read = if read_pending {
            self.read_deadline()
        } else {
            None
        };
        let write = self.write_blocked_since.map(|t| t + self.limits.idle);
        match (read, write) {
            (Some(r), Some(w)) => Some(r.min(w)),
            (r, w) => r.or(w),
        }
    }
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string())
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    if this.h2.is_none() {
                        this.h2 = Some(read.starts_with(H2_PREFACE));
                    }
                    if this.head_started.is_none()
                        && this.activity.inflight.load(Ordering::Acquire) == 0
                    {
                        this.head_started = Some(Instant::now());
                        this.seen_started = this.activity.started.load(Ordering::Acquire);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.activity.inflight.load(Ordering::Acquire) > 0 {
                    this.activity.reader.register(cx.waker());
                }
                match this.deadline(true) {
                    Some(d) if this.expired(cx, d) => Poll::Ready(Err(timed_out(
                        "client sent no complete request in time, or stayed idle",
                    ))),
                    _ => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Pending => this.write_pending(cx),
            ready => {
                this.write_blocked_since = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.write_pending(cx),
            ready => {
                this.write_blocked_since = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T> WatchedIo<T> {
    fn write_pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        let since = *self.write_blocked_since.get_or_insert_with(Instant::now);
        if self.expired(cx, since + self.limits.idle) {
            return Poll::Ready(Err(timed_out("client stopped reading")));
        }
        Poll::Pending
    }
}

// === responses ===

enum State<G> {
    Live(Body, G),
    Ended,
    Stalled,
}

struct Cell<G> {
    state: Mutex<State<G>>,
    /// Since when ([`now_ms`]) a frame was handed out and the body not polled again; 0 while
    /// it is being polled (waiting on the upstream is not the client's stall).
    waiting: AtomicU64,
}

trait Stall: Send + Sync {
    /// Ends the body if the client has not taken a frame for `limit_ms`; `false` once the body
    /// is over (the registry forgets it).
    fn sweep(&self, now: u64, limit_ms: u64) -> bool;
}

impl<G: Send> Stall for Cell<G> {
    fn sweep(&self, now: u64, limit_ms: u64) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if !matches!(*state, State::Live(..)) {
            return false;
        }
        let since = self.waiting.load(Ordering::Acquire);
        if since != 0 && now.saturating_sub(since) >= limit_ms {
            // Drops the upstream body and the guard (permit, slot, access line).
            *state = State::Stalled;
            tracing::debug!(
                "client stopped reading a response: ended it and released its upstream"
            );
            return false;
        }
        true
    }
}

/// A response body watched for a client that stopped reading it.
struct Watched<G> {
    cell: Arc<Cell<G>>,
}

/// The client did not read the response in time.
#[derive(Debug, thiserror::Error)]
#[error("the client stopped reading the response")]
pub struct Stalled;

impl<G: Send + 'static> http_body::Body for Watched<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let cell = &self.cell;
        let Ok(mut state) = cell.state.lock() else {
            return Poll::Ready(None);
        };
        cell.waiting.store(0, Ordering::Release);
        let inner = match &mut *state {
            State::Live(inner, _) => inner,
            State::Ended => return Poll::Ready(None),
            State::Stalled => return Poll::Ready(Some(Err(Box::new(Stalled)))),
        };
        let poll = Pin::new(&mut *inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(_))) if !inner.is_end_stream() => {
                cell.waiting.store(now_ms(), Ordering::Release);
            }
            Poll::Ready(_) => *state = State::Ended,
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.cell.state.lock().map_or(true, |s| match &*s {
            State::Live(inner, _) => inner.is_end_stream(),
            State::Ended | State::Stalled => true,
        })
    }

    fn size_hint(&self) -> SizeHint {
        self.cell
            .state
            .lock()
            .ok()
            .and_then(|s| match &*s {
                State::Live(inner, _) => Some(inner.size_hint()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// Every live response body, swept for stalled clients.
pub struct Responses {
    shards: Vec<Mutex<Vec<Weak<dyn Stall>>>>,
    next: AtomicUsize,
    limit: Duration,
}

const SHARDS: usize = 16;

impl Responses {
    /// Starts the sweeper (inside the runtime); it stops when the registry is dropped.
    pub fn start(limit: Duration) -> Arc<Responses> {
        let r = Arc::new(Responses {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            next: AtomicUsize::new(0),
            limit,
        });
        let weak = Arc::downgrade(&r);
        let every = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { return };
                r.sweep();
            }
        });
        r
    }

    /// `resp` with `guard` held until its body ends, fails, is dropped, or is ended because
    /// the client stopped reading it.
    pub fn watch<G: Send + 'static>(&self, resp: Response<Body>, guard: G) -> Response<Body> {
        let (parts, inner) = resp.into_parts();
        let cell = Arc::new(Cell {
            state: Mutex::new(State::Live(inner, guard)),
            waiting: AtomicU64::new(0),
        });
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % SHARDS;
        if let Ok(mut list) = self.shards[shard].lock() {
            let weak: Weak<dyn Stall> = Arc::downgrade(&(cell.clone() as Arc<dyn Stall>));
            list.push(weak);
        }
        Response::from_parts(
            parts,
            http_body_util::BodyExt::boxed_unsync(Watched { cell }),
        )
    }

    fn sweep(&self) {
        let now = now_ms();
        let limit = self.limit.as_millis() as u64;
        for shard in &self.shards {
            let cells: Vec<Arc<dyn Stall>> = match shard.lock() {
                Ok(mut list) => {
                    let live: Vec<Arc<dyn Stall>> = list.iter().filter_map(Weak::upgrade).collect();
                    list.clear();
                    live
                }
                Err(_) => continue,
            };
            // Sweep outside the shard lock; keep what is still live.
            let keep: Vec<Weak<dyn Stall>> = cells
                .iter()
                .filter(|c| c.sweep(now, limit))
                .map(Arc::downgrade)
                .collect();
            if let Ok(mut list) = shard.lock() {
                list.extend(keep);
            }
        }
    }

    /// Bodies being watched (for tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |l| l.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicBool;

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn stream_body(chunks: usize) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = (0..chunks)
            .map(|i| Ok(Frame::data(Bytes::from(format!("chunk {i}\n")))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn a_body_read_to_the_end_releases_its_guard_once() {
        let r = Responses::start(Duration::from_secs(60));
        let released = Arc::new(AtomicBool::new(false));
        let resp = r.watch(Response::new(stream_body(3)), Flag(released.clone()));
        let out = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"chunk 0\nchunk 1\nchunk 2\n");
        assert!(released.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_body_nobody_reads_is_ended_by_the_sweeper() {
        let r = Responses::start(Duration::from_millis(40));
        let released = Arc::new(AtomicBool::new(false));
        let resp = r.watch(Response::new(stream_body(5)), Flag(released.clone()));
        let mut body = resp.into_body();
        // The client takes one frame, then stops reading.
        assert!(body.frame().await.is_some());
        let start = Instant::now();
        while !released.load(Ordering::SeqCst) {
            assert!(start.elapsed() < Duration::from_secs(5), "never swept");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The next poll reports the stall; the registry forgot the body.
        let next = body.frame().await.unwrap();
        assert!(next.unwrap_err().is::<Stalled>());
        r.sweep();
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn waiting_on_the_upstream_is_not_a_stall() {
        let r = Responses::start(Duration::from_millis(30));
        let released = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let inner = http_body_util::StreamBody::new(tokio_stream_from(rx)).boxed_unsync();
        let resp = r.watch(Response::new(inner), Flag(released.clone()));
        let mut body = resp.into_body();
        let reader = tokio::spawn(async move { body.frame().await.map(|f| f.is_ok()) });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            !released.load(Ordering::SeqCst),
            "a slow upstream is not the client's stall"
        );
        tx.send(Ok(Frame::data(Bytes::from_static(b"late"))))
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap(), Some(true));
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
