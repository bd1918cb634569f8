//! Failed authentications, aggregated for the audit log: one `auth.failed` row per source
//! address (and user, when the token belonged to one) per window, with a count and the
//! reasons — never one row per failed request, so a flood of bad tokens costs a map update
//! each, not a database write each.
//!
//! The map is bounded: beyond [`MAX_SOURCES`] distinct sources in a window, further failures
//! are counted in one overflow row (address `*`). A writer task drains finished windows every
//! second.

use crate::store::{AuditEntry, Store};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Distinct (address, user) sources tracked per window before the overflow row takes over.
pub const MAX_SOURCES: usize = 10_000;

/// `None` address: the overflow row.
type Source = (Option<IpAddr>, Option<Uuid>);

struct Pending {
    since: Instant,
    count: u64,
    reasons: BTreeMap<&'static str, u64>,
    /// The first failed request's id, to find it in the access log.
    first_request_id: String,
}

pub struct FailureLog {
    window: Duration,
    pending: Mutex<HashMap<Source, Pending>>,
    /// Windows that ended while more failures came in, waiting for the writer.
    ready: Mutex<Vec<(Source, Pending)>>,
}

impl FailureLog {
    pub fn new(window: Duration) -> FailureLog {
        FailureLog {
            window,
            pending: Mutex::new(HashMap::new()),
            ready: Mutex::new(Vec::new()),
        }
    }

    /// Counts one failure from `ip` (for `actor`, when the token was a real user's).
    pub fn record(
        &self,
        ip: IpAddr,
        actor: Option<Uuid>,
        reason: &'static str,
        request_id: &str,
        now: Instant,
    ) {
        let Ok(mut map) = self.pending.lock() else {
            return;
        };
        let mut source = (Some(ip), actor);
        if !map.contains_key(&source) && map.len() >= MAX_SOURCES {
            source = (None, None);
        }
        if let Some(p) = map.get(&source) {
            if now.duration_since(p.since) >= self.window {
                if let (Some(old), Ok(mut ready)) = (map.remove(&source), self.ready.lock()) {
                    ready.push((source, old));
                }
            }
        }
        let p = map.entry(source).or_insert_with(|| Pending {
            since: now,
            count: 0,
            reasons: BTreeMap::new(),
            first_request_id: request_id.to_string(),
        });
        p.count += 1;
        *p.reasons.entry(reason).or_insert(0) += 1;
    }

    /// The audit rows of every window that has ended by `now` (all of them with `all`).
    pub fn drain(&self, now: Instant, all: bool) -> Vec<AuditEntry> {
        let mut done: Vec<(Source, Pending)> = self
            .ready
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if let Ok(mut map) = self.pending.lock() {
            let ended: Vec<Source> = map
                .iter()
                .filter(|(_, p)| all || now.duration_since(p.since) >= self.window)
                .map(|(s, _)| *s)
                .collect();
            for s in ended {
                if let Some(p) = map.remove(&s) {
                    done.push((s, p));
                }
            }
        }
        done.into_iter()
            .map(|((ip, actor), p)| AuditEntry {
                actor_user_id: actor,
                action: "auth.failed",
                target: None,
                detail: serde_json::json!({
                    "count": p.count,
                    "reasons": p.reasons,
                    "window_seconds": self.window.as_secs_f64(),
                }),
                request_id: Some(p.first_request_id),
                remote_addr: Some(ip.map_or_else(|| "*".to_string(), |ip| ip.to_string())),
            })
            .collect()
    }
}

/// Appends `rows` (failures are logged, not retried: the counter metric still has them).
pub async fn write(store: &Store, rows: Vec<AuditEntry>) {
    for row in rows {
        if let Err(e) = store.append_audit(row).await {
            tracing::warn!(error = %e, "could not record auth.failed");
        }
    }
}

/// Drains finished windows every second until `log` is dropped, then writes what is left.
pub fn spawn_writer(log: &Arc<FailureLog>, store: Store) {
    let log: Weak<FailureLog> = Arc::downgrade(log);
    let tick = Duration::from_secs(1).min(
        log.upgrade()
            .map_or(Duration::from_secs(1), |l| l.window / 2),
    );
    tokio::spawn(async move {
        let mut every = tokio::time::interval(tick.max(Duration::from_millis(10)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(l) = log.upgrade() else { return };
            let rows = l.drain(Instant::now(), false);
            drop(l);
            write(&store, rows).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_source_and_window_with_counts() {
        let log = FailureLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let user = Uuid::from_u128(1);
        for i in 0..600 {
            log.record(a, None, "malformed", &format!("r{i}"), t0);
        }
        log.record(a, None, "unknown_token", "x", t0 + Duration::from_secs(1));
        log.record(b, Some(user), "token_revoked", "y", t0);
        assert!(log.drain(t0 + Duration::from_secs(59), false).is_empty());
        let mut rows = log.drain(t0 + Duration::from_secs(60), false);
        rows.sort_by(|x, y| x.remote_addr.cmp(&y.remote_addr));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].remote_addr.as_deref(), Some("10.0.0.1"));
        assert_eq!(rows[0].detail["count"], 601);
        assert_eq!(rows[0].detail["reasons"]["malformed"], 600);
        assert_eq!(rows[0].request_id.as_deref(), Some("r0"));
        assert_eq!(rows[1].actor_user_id, Some(user));
        // The next window starts a new row.
        log.record(a, None, "malformed", "z", t0 + Duration::from_secs(61));
        log.record(a, None, "malformed", "z", t0 + Duration::from_secs(125));
        let rows = log.drain(t0 + Duration::from_secs(125), true);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn sources_beyond_the_cap_share_one_overflow_row() {
        let log = FailureLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 50) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            log.record(ip, None, "malformed", "r", t0);
        }
        let rows = log.drain(t0, true);
        assert_eq!(rows.len(), MAX_SOURCES + 1);
        let overflow: Vec<_> = rows
            .iter()
            .filter(|r| r.remote_addr.as_deref() == Some("*"))
            .collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].detail["count"], 50);
    }
}
