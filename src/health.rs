//! Provider health from the proxy's own upstream traffic.
//!
//! Per provider, a rolling window of fixed buckets (bounded memory: `window / bucket` buckets
//! of counters and a small TTFB histogram each) records every upstream outcome when it is
//! known — at the end of the body, or when the request failed before headers. Upstream 5xx,
//! timeouts, resets and connection failures are failures; a provider 429 is counted apart;
//! other 4xx are the caller's doing and count as answered requests.
//!
//! Status: `unknown` without traffic in the window; `down` after N consecutive failures, or
//! when the window holds failures and no success; `degraded` when the error ratio or the
//! TTFB p95 passes its threshold; `healthy` otherwise. Time is passed in, so tests use their
//! own instants.

use crate::config::HealthConfig;
use dashmap::DashMap;
use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds (ms) of the TTFB histogram buckets; the last one is open.
const TTFB_BOUNDS_MS: [u64; 16] = [
    25,
    50,
    100,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    10_000,
    20_000,
    60_000,
    u64::MAX,
];

/// What happened to one upstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (2xx, 3xx, or a 4xx the caller caused), with its TTFB.
    Answered(Duration),
    /// The provider rate-limited us (429).
    RateLimited(Duration),
    /// 5xx, timeout, reset, connection failure, stream cut: with the error kind.
    Failed(&'static str),
}

#[derive(Default, Clone)]
struct Bucket {
    /// Which bucket period this is (instant / bucket length), to detect stale slots.
    epoch: u64,
    answered: u64,
    failed: u64,
    rate_limited: u64,
    ttfb: [u64; TTFB_BOUNDS_MS.len()],
}

struct Window {
    buckets: Vec<Bucket>,
    consecutive_failures: u32,
    last_error: Option<(&'static str, chrono::DateTime<chrono::Utc>)>,
}

/// One provider's health, as `GET /api/providers/health` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProviderHealth {
    pub provider: String,
    pub status: &'static str,
    pub requests: u64,
    pub failures: u64,
    pub rate_limited: u64,
    pub success_ratio: Option<f64>,
    pub ttfb_p50_ms: Option<u64>,
    pub ttfb_p95_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error_kind: Option<&'static str>,
    pub last_error_at: Option<chrono::DateTime<chrono::Utc>>,
    pub window_seconds: u64,
}

pub const STATUSES: [&str; 4] = ["healthy", "degraded", "down", "unknown"];

pub struct Health {
    config: HealthConfig,
    origin: Instant,
    providers: DashMap<String, Mutex<Window>>,
}

impl Health {
    pub fn new(config: HealthConfig) -> Health {
        Health {
            config,
            origin: Instant::now(),
            providers: DashMap::new(),
        }
    }

    fn slots(&self) -> usize {
        let n = self.config.window.as_millis() / self.config.bucket.as_millis().max(1);
        usize::try_from(n).unwrap_or(1).max(1)
    }

    fn epoch(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_millis();
        u64::try_from(since / self.config.bucket.as_millis().max(1)).unwrap_or(u64::MAX)
    }

    /// Records one outcome at `at`.
    pub fn record(&self, provider: &str, outcome: Outcome, at: Instant) {
        let epoch = self.epoch(at);
        let slots = self.slots();
        let entry = self
            .providers
            .entry(provider.to_string())
            .or_insert_with(|| {
                Mutex::new(Window {
                    buckets: vec![Bucket::default(); slots],
                    consecutive_failures: 0,
                    last_error: None,
                })
            });
        let Ok(mut w) = entry.lock() else { return };
        let idx = (epoch % slots as u64) as usize;
        let b = &mut w.buckets[idx];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        let ttfb_slot = |d: Duration| {
            let ms = d.as_millis() as u64;
            TTFB_BOUNDS_MS
                .iter()
                .position(|&hi| ms <= hi)
                .unwrap_or(TTFB_BOUNDS_MS.len() - 1)
        };
        match outcome {
            Outcome::Answered(ttfb) => {
                b.answered += 1;
                b.ttfb[ttfb_slot(ttfb)] += 1;
                w.consecutive_failures = 0;
            }
            Outcome::RateLimited(ttfb) => {
                b.rate_limited += 1;
                b.ttfb[ttfb_slot(ttfb)] += 1;
            }
            Outcome::Failed(kind) => {
                b.failed += 1;
                w.consecutive_failures = w.consecutive_failures.saturating_add(1);
                w.last_error = Some((kind, chrono::Utc::now()));
            }
        }
    }

    /// The health of `provider` as of `at`.
    pub fn status(&self, provider: &str, at: Instant) -> ProviderHealth {
        let now_epoch = self.epoch(at);
        let slots = self.slots() as u64;
        let mut h = ProviderHealth {
            provider: provider.to_string(),
            status: "unknown",
            requests: 0,
            failures: 0,
            rate_limited: 0,
            success_ratio: None,
            ttfb_p50_ms: None,
            ttfb_p95_ms: None,
            consecutive_failures: 0,
            last_error_kind: None,
            last_error_at: None,
            window_seconds: self.config.window.as_secs(),
        };
        let Some(entry) = self.providers.get(provider) else {
            return h;
        };
        let Ok(w) = entry.lock() else { return h };
        let mut answered = 0;
        let mut ttfb = [0u64; TTFB_BOUNDS_MS.len()];
        for b in w
            .buckets
            .iter()
            .filter(|b| b.epoch + slots > now_epoch && b.epoch <= now_epoch)
        {
            answered += b.answered;
            h.failures += b.failed;
            h.rate_limited += b.rate_limited;
            for (t, n) in ttfb.iter_mut().zip(b.ttfb.iter()) {
                *t += n;
            }
        }
        h.requests = answered + h.failures + h.rate_limited;
        h.consecutive_failures = w.consecutive_failures;
        if let Some((kind, at)) = w.last_error {
            h.last_error_kind = Some(kind);
            h.last_error_at = Some(at);
        }
        if h.requests == 0 {
            return h;
        }
        let judged = answered + h.failures;
        h.success_ratio = (judged > 0).then(|| answered as f64 / judged as f64);
        h.ttfb_p50_ms = percentile(&ttfb, 0.50);
        h.ttfb_p95_ms = percentile(&ttfb, 0.95);
        let error_ratio = 1.0 - h.success_ratio.unwrap_or(1.0);
        h.status = if w.consecutive_failures >= self.config.down_consecutive_failures
            || (h.failures > 0 && answered == 0)
        {
            "down"
        } else if (judged >= self.config.min_requests
            && error_ratio >= self.config.degraded_error_ratio)
            || h.ttfb_p95_ms
                .is_some_and(|p| p >= self.config.degraded_ttfb_p95.as_millis() as u64)
        {
            "degraded"
        } else {
            "healthy"
        };
        h
    }

    /// Every provider known to byok-proxy plus any other seen in traffic.
    pub fn all(&self, at: Instant) -> Vec<ProviderHealth> {
        let mut names: Vec<String> = crate::keys::providers::PROVIDERS
            .iter()
            .map(|p| p.id.to_string())
            .collect();
        for e in self.providers.iter() {
            if !names.contains(e.key()) {
                names.push(e.key().clone());
            }
        }
        names.iter().map(|p| self.status(p, at)).collect()
    }
}

/// The upper bound (ms) of the bucket holding quantile `q`; `None` without samples. The open
/// last bucket reports its lower bound.
fn percentile(hist: &[u64; TTFB_BOUNDS_MS.len()], q: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(if i + 1 == hist.len() {
                TTFB_BOUNDS_MS[i - 1]
            } else {
                TTFB_BOUNDS_MS[i]
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(HealthConfig {
            window: Duration::from_secs(300),
            bucket: Duration::from_secs(10),
            degraded_error_ratio: 0.2,
            degraded_ttfb_p95: Duration::from_secs(10),
            down_consecutive_failures: 5,
            min_requests: 5,
        })
    }

    const OK: Outcome = Outcome::Answered(Duration::from_millis(120));

    #[test]
    fn statuses_move_and_the_window_forgets() {
        let h = health();
        let t0 = h.origin;
        assert_eq!(h.status("openai", t0).status, "unknown");
        for _ in 0..10 {
            h.record("openai", OK, t0);
        }
        assert_eq!(h.status("openai", t0).status, "healthy");
        assert_eq!(h.status("openai", t0).ttfb_p50_ms, Some(200));
        for _ in 0..3 {
            h.record("openai", Outcome::Failed("status_5xx"), t0);
        }
        let s = h.status("openai", t0);
        assert_eq!(s.status, "degraded", "{s:?}");
        assert_eq!(s.last_error_kind, Some("status_5xx"));
        for _ in 0..2 {
            h.record("openai", Outcome::Failed("timeout"), t0);
        }
        assert_eq!(h.status("openai", t0).status, "down");
        // Another provider is unaffected.
        h.record("anthropic", OK, t0);
        assert_eq!(h.status("anthropic", t0).status, "healthy");
        // Recovery: a success resets the failure run; the old failures leave the window.
        let later = t0 + Duration::from_secs(301);
        h.record("openai", OK, later);
        let s = h.status("openai", later);
        assert_eq!(
            (s.status, s.requests, s.failures),
            ("healthy", 1, 0),
            "{s:?}"
        );
        // With no traffic for a whole window: unknown.
        assert_eq!(h.status("anthropic", later).status, "unknown");
    }

    #[test]
    fn rate_limits_and_slow_answers() {
        let h = health();
        let t0 = h.origin;
        for _ in 0..10 {
            h.record("xai", Outcome::RateLimited(Duration::from_millis(30)), t0);
        }
        let s = h.status("xai", t0);
        assert_eq!((s.status, s.rate_limited, s.failures), ("healthy", 10, 0));
        for _ in 0..10 {
            h.record("groq", Outcome::Answered(Duration::from_secs(12)), t0);
        }
        assert_eq!(h.status("groq", t0).status, "degraded");
        // Failures with no success at all in the window: down, even before N in a row.
        h.record("mistral", Outcome::Failed("connect"), t0);
        assert_eq!(h.status("mistral", t0).status, "down");
    }
}
