//! `run(listener, app, shutdown)`: accepts connections on a bound listener, serves HTTP/1.1
//! and HTTP/2 (hyper-util's auto builder), and on `shutdown` stops accepting and drains
//! in-flight connections for up to `drain` before returning.
//!
//! Tests bind `127.0.0.1:0` themselves and own the shutdown future.

use crate::app::AppState;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
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
    let mut builder = Builder::new(TokioExecutor::new());
    // HTTP/1.1 connections read through a buffer of at most 8 KiB (hyper's default lets it
    // grow to ~400 KiB, and keeps 16 KiB per connection): ~10 KiB less per open stream. A
    // request head must fit in it (larger heads get 431, as nginx's default 8k header
    // buffers refuse them); bodies of any allowed size stream through it.
    builder.http1().max_buf_size(8192);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // The request's future is boxed on its own: it is large (~8 KiB, the whole request
        // path's state), and hyper keeps the allocation that holds the service future for the
        // connection's lifetime. Boxed, that allocation is a pointer, and the 8 KiB are freed
        // when the response head leaves instead of staying with every open stream (and are
        // not copied into hyper's box on every request).
        let service = service_fn(move |req| {
            let handling = Box::pin(app.clone().handle(req, remote));
            async move { Ok::<_, Infallible>(handling.await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain deadline passed; closing"),
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
