//! Limits, checked before any upstream work. Each check *returns* what the rest of the request
//! holds, so the spine (`app.rs`) keeps it until the response body ends:
//!
//! - [`Limits::enter`]: a global in-flight [`Slot`] (`max_in_flight`); when none is left the
//!   request is shed with 503 `overloaded`, before auth. The slot is counted in
//!   `byok_in_flight_requests` from here to the end of the response body.
//! - [`Limits::admit`]: per-user requests per minute with a burst — GCRA (governor) in memory,
//!   or in Redis when `limits.redis_url` is set (shared by all replicas) — then, for a token
//!   with a `requests_per_minute` scope, that token's own rate (GCRA keyed by token id, burst
//!   at most its rate), and a per-user concurrency permit; the result is an [`Admitted`]
//!   caller with its permit and the rate state for the `x-ratelimit-*` headers (the tighter
//!   of the two rates).
//! - [`Limits::budget`]: the global budget of buffered request bytes (`max_buffered_bytes`),
//!   drawn on by the body reader while a request body is in memory.
//!
//! Redis is never waited for on the request path when it is down: a background task connects
//! and watches it; while it is unreachable the local limiter answers at once (logged once,
//! counted in `byok_redis_fallback_total`).
//!
//! The limiter is generic over governor's clock so tests drive time with
//! `FakeRelativeClock` instead of sleeping.

use crate::auth::Caller;
use crate::config::LimitsConfig;
use crate::error::ProxyError;
use crate::http_util::RateHeaders;
use crate::metrics::Metrics;
use crate::request::Budget;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

struct UserLimiter<C: Clock> {
    rpm: u32,
    rate: Gcra<C>,
    concurrency: Arc<Semaphore>,
}

/// The rate of one scoped token (`scopes.requests_per_minute`).
struct TokenLimiter<C: Clock> {
    rpm: u32,
    rate: Gcra<C>,
}

/// A global in-flight slot, counted in `byok_in_flight_requests` while held.
pub struct Slot {
    gauge: prometheus::IntGauge,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A caller that passed the rate and concurrency limits, with what it holds.
pub struct Admitted {
    pub caller: Caller,
    /// The caller's concurrency permit: lives as long as the response body.
    pub permit: OwnedSemaphorePermit,
    /// For the `x-ratelimit-*` headers.
    pub rate: RateHeaders,
}

pub struct Limits<C: Clock = DefaultClock> {
    config: LimitsConfig,
    clock: C,
    users: DashMap<Uuid, Arc<UserLimiter<C>>>,
    tokens: DashMap<Uuid, Arc<TokenLimiter<C>>>,
    global: Arc<Semaphore>,
    /// The global budget of buffered request bytes (`limits.max_buffered_bytes`).
    pub budget: Budget,
    redis: Option<redis_gcra::RedisGcra>,
}

fn quota(rpm: u32, burst: u32) -> Quota {
    let rpm = NonZeroU32::new(rpm.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rpm).allow_burst(burst)
}

impl Limits<DefaultClock> {
    /// Limits on the real clock; with `limits.redis_url` set, starts the Redis watcher (so this
    /// must run inside the tokio runtime).
    ///
    /// # Errors
    /// A malformed `limits.redis_url`.
    pub fn new(config: &LimitsConfig) -> Result<Limits, redis::RedisError> {
        let redis = match &config.redis_url {
            Some(url) => Some(redis_gcra::RedisGcra::start(url)?),
            None => None,
        };
        let mut limits = Limits::with_clock(config, DefaultClock::default());
        limits.redis = redis;
        Ok(limits)
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// Local limits on `clock` (no Redis).
    pub fn with_clock(config: &LimitsConfig, clock: C) -> Limits<C> {
        Limits {
            global: Arc::new(Semaphore::new(config.max_in_flight)),
            budget: Budget::new(config.max_buffered_bytes),
            config: config.clone(),
            clock,
            users: DashMap::new(),
            tokens: DashMap::new(),
            redis: None,
        }
    }

    /// Takes a global in-flight slot, or sheds the request.
    ///
    /// # Errors
    /// 503 `overloaded`.
    pub fn enter(&self, metrics: &Metrics) -> Result<Slot, ProxyError> {
        let permit = self.global.clone().try_acquire_owned().map_err(|_| {
            metrics.rate_limited.with_label_values(&["global"]).inc();
            ProxyError::Overloaded
        })?;
        metrics.in_flight.inc();
        Ok(Slot {
            gauge: metrics.in_flight.clone(),
            _permit: permit,
        })
    }

    fn user(&self, caller: &Caller) -> Arc<UserLimiter<C>> {
        let rpm = caller
            .requests_per_minute
            .unwrap_or(self.config.requests_per_minute);
        if let Some(u) = self.users.get(&caller.user_id) {
            if u.rpm == rpm {
                return u.clone();
            }
        }
        let build = |concurrency: Option<Arc<Semaphore>>| {
            Arc::new(UserLimiter {
                rpm,
                rate: RateLimiter::direct_with_clock(
                    quota(rpm, self.config.burst),
                    self.clock.clone(),
                )
                .with_middleware::<StateInformationMiddleware>(),
                concurrency: concurrency.unwrap_or_else(|| {
                    Arc::new(Semaphore::new(self.config.max_concurrent_requests as usize))
                }),
            })
        };
        let mut entry = self
            .users
            .entry(caller.user_id)
            .or_insert_with(|| build(None));
        if entry.rpm != rpm {
            // A changed override: new rate state, same concurrency permits (some are in flight).
            *entry = build(Some(entry.concurrency.clone()));
        }
        entry.clone()
    }

    /// The limiter of a scoped token with its own rate (`None` otherwise).
    fn token(&self, caller: &Caller) -> Option<(Uuid, Arc<TokenLimiter<C>>)> {
        let id = caller.token_id()?;
        let rpm = caller.scopes().requests_per_minute?;
        if let Some(t) = self.tokens.get(&id) {
            if t.rpm == rpm {
                return Some((id, t.clone()));
            }
        }
        let limiter = Arc::new(TokenLimiter {
            rpm,
            rate: RateLimiter::direct_with_clock(
                quota(rpm, self.config.burst.min(rpm)),
                self.clock.clone(),
            )
            .with_middleware::<StateInformationMiddleware>(),
        });
        self.tokens.insert(id, limiter.clone());
        Some((id, limiter))
    }

    /// Checks the caller's rate (and its token's, when scoped) and concurrency limits.
    ///
    /// # Errors
    /// 429 `rate_limit_exceeded` with the limit, what remains and when to retry.
    pub async fn admit(&self, caller: Caller, metrics: &Metrics) -> Result<Admitted, ProxyError> {
        let token = match self.token(&caller) {
            None => None,
            Some((id, t)) => {
                let burst = self.config.burst.min(t.rpm).max(1);
                match self.check(id, t.rpm, &t.rate, burst, metrics).await {
                    Ok(remaining) => Some((t.rpm, remaining)),
                    Err(retry_after) => {
                        metrics.rate_limited.with_label_values(&["token"]).inc();
                        return Err(ProxyError::RateLimited {
                            per: "requests per minute for this token",
                            rate: RateHeaders {
                                limit: t.rpm,
                                remaining: 0,
                                reset: Some(retry_after),
                            },
                            retry_after,
                        });
                    }
                }
            }
        };
        let user = self.user(&caller);
        let burst = self.config.burst.max(1);
        let remaining = match self.check_rate(caller.user_id, &user, burst, metrics).await {
            Ok(remaining) => remaining,
            Err(retry_after) => {
                metrics.rate_limited.with_label_values(&["requests"]).inc();
                return Err(ProxyError::RateLimited {
                    per: "requests per minute",
                    rate: RateHeaders {
                        limit: user.rpm,
                        remaining: 0,
                        reset: Some(retry_after),
                    },
                    retry_after,
                });
            }
        };
        let permit = user.concurrency.clone().try_acquire_owned().map_err(|_| {
            metrics
                .rate_limited
                .with_label_values(&["concurrency"])
                .inc();
            ProxyError::RateLimited {
                per: "concurrent requests",
                rate: RateHeaders {
                    limit: self.config.max_concurrent_requests,
                    remaining: 0,
                    reset: None,
                },
                retry_after: Duration::from_secs(1),
            }
        })?;
        let (limit, remaining) = match token {
            Some((rpm, left)) if left < remaining => (rpm, left),
            _ => (user.rpm, remaining),
        };
        Ok(Admitted {
            caller,
            permit,
            rate: RateHeaders {
                limit,
                remaining,
                reset: None,
            },
        })
    }

    /// `Ok(remaining)` or `Err(retry after)`.
    async fn check_rate(
        &self,
        user_id: Uuid,
        user: &UserLimiter<C>,
        burst: u32,
        metrics: &Metrics,
    ) -> Result<u32, Duration> {
        self.check(user_id, user.rpm, &user.rate, burst, metrics)
            .await
    }

    /// One GCRA check of `key` (a user or token id): in Redis when it is up, else locally.
    async fn check(
        &self,
        key: Uuid,
        rpm: u32,
        rate: &Gcra<C>,
        burst: u32,
        metrics: &Metrics,
    ) -> Result<u32, Duration> {
        if let Some(redis) = &self.redis {
            match redis.check(key, rpm, burst).await {
                Some(r) => return r,
                None => metrics.redis_fallback.inc(),
            }
        }
        match rate.check() {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }
}

/// GCRA in Redis: one atomic script per check, time from the Redis server. A watcher task
/// owns the connection: it connects, pings, and flags Redis up or down; the request path only
/// ever uses a connection that is up, with a short timeout, and answers locally otherwise.
mod redis_gcra {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, RwLock};
    use std::time::Duration;
    use tokio::sync::Notify;
    use uuid::Uuid;

    const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((burst * interval + interval) / 1000))
return {1, math.floor((now - allow_at) / interval)}
";

    /// How long a check on a live Redis may take before the local limiter answers instead.
    const TIMEOUT: Duration = Duration::from_millis(250);
    /// How often the watcher pings a live Redis, and retries a dead one (at most).
    const WATCH_EVERY: Duration = Duration::from_millis(500);
    const RETRY_MAX: Duration = Duration::from_secs(5);

    struct Shared {
        conn: RwLock<Option<redis::aio::MultiplexedConnection>>,
        up: AtomicBool,
        /// Woken by the request path when a live connection failed.
        failed: Notify,
    }

    pub struct RedisGcra {
        shared: Arc<Shared>,
        script: redis::Script,
    }

    impl RedisGcra {
        /// Starts the watcher task (which stops when this is dropped).
        pub fn start(url: &str) -> Result<RedisGcra, redis::RedisError> {
            let client = redis::Client::open(url)?;
            let shared = Arc::new(Shared {
                conn: RwLock::new(None),
                up: AtomicBool::new(false),
                failed: Notify::new(),
            });
            tokio::spawn(watch(client, Arc::downgrade(&shared)));
            Ok(RedisGcra {
                shared,
                script: redis::Script::new(SCRIPT),
            })
        }

        /// `Some(Ok(remaining))`, `Some(Err(retry_after))`, or `None` when Redis is down or
        /// did not answer in time (the caller answers locally).
        pub async fn check(
            &self,
            user: Uuid,
            rpm: u32,
            burst: u32,
        ) -> Option<Result<u32, Duration>> {
            if !self.shared.up.load(Ordering::Acquire) {
                return None;
            }
            let mut conn = self.shared.conn.read().ok()?.clone()?;
            let interval_us = 60_000_000u64 / u64::from(rpm.max(1));
            let mut invocation = self.script.key(format!("byok:rl:{user}"));
            invocation.arg(interval_us).arg(burst);
            let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
            match tokio::time::timeout(TIMEOUT, call).await {
                Ok(Ok((1, remaining))) => Some(Ok(u32::try_from(remaining).unwrap_or(0))),
                Ok(Ok((_, wait_us))) => Some(Err(Duration::from_micros(
                    u64::try_from(wait_us).unwrap_or(0),
                ))),
                Err(_) | Ok(Err(_)) => {
                    self.shared.up.store(false, Ordering::Release);
                    self.shared.failed.notify_one();
                    None
                }
            }
        }
    }

    /// Connects, then pings every [`WATCH_EVERY`]; marks Redis down on any failure and
    /// reconnects with backoff. Logs each transition once.
    async fn watch(client: redis::Client, shared: std::sync::Weak<Shared>) {
        let mut backoff = WATCH_EVERY;
        let mut logged_down = false;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT);
        loop {
            let Some(s) = shared.upgrade() else { return };
            let live = s.conn.read().ok().and_then(|c| c.clone());
            let ok = match live {
                Some(mut conn) => tokio::time::timeout(
                    TIMEOUT,
                    redis::cmd("PING").query_async::<String>(&mut conn),
                )
                .await
                .is_ok_and(|r| r.is_ok()),
                None => match client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    Ok(conn) => {
                        if let Ok(mut c) = s.conn.write() {
                            *c = Some(conn);
                        }
                        true
                    }
                    Err(e) => {
                        if !logged_down {
                            tracing::warn!(error = %e, "Redis rate limiter unavailable; using the local limiter");
                        }
                        false
                    }
                },
            };
            if ok {
                if !s.up.swap(true, Ordering::AcqRel) && logged_down {
                    tracing::info!("Redis rate limiter is back");
                }
                logged_down = false;
                backoff = WATCH_EVERY;
            } else {
                if s.up.swap(false, Ordering::AcqRel) && !logged_down {
                    tracing::warn!("Redis rate limiter stopped answering; using the local limiter");
                }
                logged_down = true;
                if let Ok(mut c) = s.conn.write() {
                    *c = None;
                }
            }
            let wait = if ok { WATCH_EVERY } else { backoff };
            if !ok {
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            let failed = Arc::clone(&s);
            drop(s);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = failed.failed.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn config(rpm: u32, burst: u32, concurrent: u32) -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: 1024,
            requests_per_minute: rpm,
            burst,
            max_concurrent_requests: concurrent,
            max_in_flight: 2,
            max_buffered_bytes: 200 * 1024,
            redis_url: None,
        }
    }

    fn caller(rpm: Option<u32>) -> Caller {
        scoped(rpm, crate::auth::scopes::Scopes::default())
    }

    fn scoped(rpm: Option<u32>, scopes: crate::auth::scopes::Scopes) -> Caller {
        Caller {
            user_id: Uuid::from_u128(7),
            user_name: "u".into(),
            email: None,
            is_admin: false,
            requests_per_minute: rpm,
            via: crate::auth::Via::Token {
                id: Uuid::from_u128(8),
                scopes: Arc::new(scopes),
            },
        }
    }

    #[tokio::test]
    async fn a_scoped_token_has_its_own_rate_under_the_users() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(&config(60, 30, 100), clock.clone());
        let m = Metrics::new().unwrap();
        let scopes = crate::auth::scopes::Scopes {
            requests_per_minute: Some(2),
            ..Default::default()
        };
        for want in [1, 0] {
            let a = limits
                .admit(scoped(None, scopes.clone()), &m)
                .await
                .unwrap();
            assert_eq!((a.rate.limit, a.rate.remaining), (2, want));
        }
        let Err(ProxyError::RateLimited { per, rate, .. }) =
            limits.admit(scoped(None, scopes.clone()), &m).await
        else {
            panic!("the token's third request in its minute must be limited")
        };
        assert_eq!(per, "requests per minute for this token");
        assert_eq!(rate.limit, 2);
        // The user's other (unscoped) token is not held to it.
        assert!(limits.admit(caller(None), &m).await.is_ok());
        clock.advance(Duration::from_secs(30));
        assert!(limits.admit(scoped(None, scopes), &m).await.is_ok());
    }

    #[tokio::test]
    async fn rate_burst_then_refill_on_a_fake_clock() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(&config(60, 3, 100), clock.clone());
        let m = Metrics::new().unwrap();
        for want in [2, 1, 0] {
            let a = limits.admit(caller(None), &m).await.unwrap();
            assert_eq!((a.rate.limit, a.rate.remaining), (60, want));
        }
        let Err(ProxyError::RateLimited {
            retry_after, rate, ..
        }) = limits.admit(caller(None), &m).await
        else {
            panic!("fourth request in the burst must be limited")
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        assert_eq!((rate.limit, rate.remaining), (60, 0));
        // One interval later exactly one more request fits.
        clock.advance(Duration::from_secs(1));
        assert!(limits.admit(caller(None), &m).await.is_ok());
        assert!(limits.admit(caller(None), &m).await.is_err());
        // A per-user override takes effect at once.
        clock.advance(Duration::from_secs(60));
        let a = limits.admit(caller(Some(6)), &m).await.unwrap();
        assert_eq!(a.rate.limit, 6);
    }

    #[tokio::test]
    async fn concurrency_permit_is_released_on_drop() {
        let limits = Limits::with_clock(&config(1000, 1000, 1), FakeRelativeClock::default());
        let m = Metrics::new().unwrap();
        let held = limits.admit(caller(None), &m).await.unwrap();
        let Err(ProxyError::RateLimited { per, .. }) = limits.admit(caller(None), &m).await else {
            panic!("second concurrent request must be refused")
        };
        assert_eq!(per, "concurrent requests");
        drop(held);
        assert!(limits.admit(caller(None), &m).await.is_ok());
    }

    #[test]
    fn global_slots_and_gauge() {
        let limits = Limits::with_clock(&config(1, 1, 1), FakeRelativeClock::default());
        let m = Metrics::new().unwrap();
        let a = limits.enter(&m).unwrap();
        let b = limits.enter(&m).unwrap();
        assert_eq!(m.in_flight.get(), 2);
        assert!(matches!(limits.enter(&m), Err(ProxyError::Overloaded)));
        drop(a);
        assert_eq!(m.in_flight.get(), 1);
        drop(b);
        assert_eq!(m.in_flight.get(), 0);
    }
}
