//! Cross-replica cache invalidation on PostgreSQL: every change to a user, token or key runs
//! `pg_notify('byok_invalidate', user_id)` in its transaction; each replica LISTENs on a
//! dedicated connection and drops that user's cached tokens and credentials as soon as the
//! notification arrives.
//!
//! If the listening connection is lost, the replica reconnects (with backoff) and clears all
//! its caches once it is back, since notifications sent meanwhile were missed. While the
//! database itself is down nothing can change, so cached entries keep serving.
//!
//! On SQLite (one node) the other writer is the CLI run beside `serve` (`token revoke`,
//! `user disable`): [`watch_sqlite`] polls `PRAGMA data_version`, which changes only when
//! another connection commits, and then clears the caches.

use super::postgres::INVALIDATE_CHANNEL;
use futures_util::StreamExt;
use std::sync::Weak;
use std::time::Duration;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

/// What a notification does: drop one user's cached data, or everything.
pub trait Invalidate: Send + Sync + 'static {
    fn invalidate_user(&self, user_id: Uuid);
    fn invalidate_all(&self);
}

/// Runs until `target` is dropped.
pub async fn listen<T: Invalidate>(url: String, target: Weak<T>) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        if target.strong_count() == 0 {
            return;
        }
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let pump = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "invalidation listener connection failed");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client
                    .batch_execute(&format!("LISTEN {INVALIDATE_CHANNEL}"))
                    .await
                {
                    tracing::warn!(error = %e, "LISTEN failed");
                    pump.abort();
                } else {
                    backoff = Duration::from_millis(100);
                    if !first {
                        tracing::info!("invalidation listener reconnected; clearing caches");
                        if let Some(t) = target.upgrade() {
                            t.invalidate_all();
                        }
                    }
                    first = false;
                    while let Some(payload) = rx.recv().await {
                        let Some(t) = target.upgrade() else { return };
                        match Uuid::parse_str(&payload) {
                            Ok(user) => t.invalidate_user(user),
                            Err(_) => t.invalidate_all(),
                        }
                    }
                    tracing::warn!("invalidation listener lost its connection; reconnecting");
                }
                drop(client);
            }
            Err(e) => {
                if first {
                    tracing::warn!(error = %e, "invalidation listener cannot connect yet");
                }
                first = false;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How often the SQLite watcher looks for writes by other processes.
pub const SQLITE_POLL: Duration = Duration::from_millis(500);

/// Runs until `target` is dropped: clears every cache when another process wrote to the
/// SQLite database.
pub async fn watch_sqlite<T: Invalidate>(store: super::sqlite::SqliteStore, target: Weak<T>) {
    let mut last = store.data_version().await.ok();
    loop {
        tokio::time::sleep(SQLITE_POLL).await;
        let Some(t) = target.upgrade() else { return };
        match store.data_version().await {
            Ok(v) if last != Some(v) => {
                if last.is_some() {
                    tracing::info!("the database was changed by another process; clearing caches");
                    t.invalidate_all();
                }
                last = Some(v);
            }
            _ => {}
        }
    }
}
