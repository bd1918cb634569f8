//! `run(listener, app, shutdown)`: accepts connections on a bound listener, serves HTTP/1.1
//! and HTTP/2 (hyper-util's auto builder), and on `shutdown` stops accepting and drains
//! in-flight connections for up to `drain` before returning.
//!
//! What a client connection may hold is bounded here: at most `server.max_connections` are
//! open (beyond that a new connection is closed at once and counted in
//! `byok_connections_refused_total`, the others undisturbed); each one runs under the
//! deadlines of [`WatchedIo`] (request head, idle keep-alive, stalled writes); HTTP/2
//! connections are pinged and closed when pings go unanswered. Accept errors (out of file
//! descriptors) are logged at most once a second, with a count.
//!
//! Tests bind `127.0.0.1:0` themselves and own the shutdown future.

use crate::state::AppState;
use crate::watchdog::{self, ConnActivity, WatchedIo};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves until `shutdown` resolves, then drains for at most `drain`.
pub async fn run(
    listener: TcpListener,
    app: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let limits = watchdog::Limits {
        header_read: app.config.server.header_read_timeout,
        idle: app.config.server.idle_timeout,
    };
    let max_connections = app.config.server.max_connections;
    let mut builder = Builder::new(TokioExecutor::new());
    // Request-head and keep-alive deadlines are WatchedIo's (hyper's own header timer would
    // also cut idle keep-alive connections at the header deadline).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // HTTP/1.1 connections read through a buffer of at most 8 KiB (hyper's default lets
        // it grow to ~400 KiB, and keeps 16 KiB per connection): ~10 KiB less per open
        // stream. A request head must fit in it (larger heads get 431, as nginx's default 8k
        // header buffers refuse them); bodies of any allowed size stream through it.
        .max_buf_size(8192);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_EVERY))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicUsize::new(0));
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    accept_errors.log(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if open.load(Ordering::Acquire) >= max_connections {
            app.metrics.connections_refused.inc();
            drop(stream);
            continue;
        }
        let counted = OpenConnection::new(&open, &app.metrics.connections_open);
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(ConnActivity::default());
        let io = WatchedIo::new(stream, activity.clone(), limits);
        let app = app.clone();
        // The request's future is boxed on its own: it is large (~8 KiB, the whole request
        // path's state), and hyper keeps the allocation that holds the service future for the
        // connection's lifetime. Boxed, that allocation is a pointer, and the 8 KiB are freed
        // when the response head leaves instead of staying with every open stream (and are
        // not copied into hyper's box on every request).
        let service = service_fn(move |req| {
            let handling = Box::pin(crate::app::handle(
                app.clone(),
                req,
                remote,
                Some(activity.start()),
            ));
            async move { Ok::<_, Infallible>(handling.await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(counted);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain deadline passed; closing"),
    }
}

/// HTTP/2 keep-alive: ping an idle peer this often, close when a ping goes unanswered.
const H2_PING_EVERY: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// One open client connection, counted until dropped.
struct OpenConnection {
    open: Arc<AtomicUsize>,
    gauge: prometheus::IntGauge,
}

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>, gauge: &prometheus::IntGauge) -> OpenConnection {
        open.fetch_add(1, Ordering::AcqRel);
        gauge.inc();
        OpenConnection {
            open: open.clone(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// Accept errors come in bursts (a full file-descriptor table): one line a second at most.
#[derive(Default)]
struct AcceptErrors {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn log(&mut self, e: &std::io::Error) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
