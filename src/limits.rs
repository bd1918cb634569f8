//! Limits, checked before any upstream work:
//!
//! - global `max_in_flight`: a semaphore; when it is exhausted the request is shed with 503
//!   `overloaded` (checked first, before auth);
//! - per-user requests per minute with a burst: GCRA (governor) in memory, or in Redis when
//!   `limits.redis_url` is set (shared by all replicas; if Redis fails the replica falls back
//!   to its local limiter, logs once and counts it);
//! - per-user concurrent requests: a semaphore whose permit lives in the response body, so a
//!   stream holds it until it ends.

use crate::auth::Caller;
use crate::config::LimitsConfig;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct UserLimiter {
    rpm: u32,
    rate: Gcra,
    concurrency: Arc<Semaphore>,
}

/// The rate-limit state reported in `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
}

/// Permits that must live as long as the response (its body included).
pub struct Admission {
    pub info: RateInfo,
    pub permit: OwnedSemaphorePermit,
}

pub struct Limits {
    config: LimitsConfig,
    users: DashMap<Uuid, Arc<UserLimiter>>,
    global: Arc<Semaphore>,
    redis: Option<redis_gcra::RedisGcra>,
    redis_down_logged: AtomicBool,
    /// While set and in the future, Redis is skipped (it failed recently).
    redis_retry_at: std::sync::Mutex<Option<Instant>>,
}

/// After a Redis failure, how long the local limiter answers before Redis is tried again.
const REDIS_RETRY_AFTER: Duration = Duration::from_millis(500);

fn quota(rpm: u32, burst: u32) -> Quota {
    let rpm = NonZeroU32::new(rpm.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rpm).allow_burst(burst)
}

impl Limits {
    /// # Errors
    /// A malformed `limits.redis_url`.
    pub fn new(config: &LimitsConfig) -> Result<Limits, redis::RedisError> {
        let redis = match &config.redis_url {
            Some(url) => Some(redis_gcra::RedisGcra::new(url)?),
            None => None,
        };
        Ok(Limits {
            global: Arc::new(Semaphore::new(config.max_in_flight)),
            config: config.clone(),
            users: DashMap::new(),
            redis,
            redis_down_logged: AtomicBool::new(false),
            redis_retry_at: std::sync::Mutex::new(None),
        })
    }

    /// Takes a global in-flight slot, or sheds the request.
    ///
    /// # Errors
    /// 503 `overloaded`.
    pub fn enter(&self, metrics: &Metrics) -> Result<OwnedSemaphorePermit, ProxyError> {
        self.global.clone().try_acquire_owned().map_err(|_| {
            metrics.rate_limited.with_label_values(&["global"]).inc();
            ProxyError::Overloaded
        })
    }

    fn user(&self, caller: &Caller) -> Arc<UserLimiter> {
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
                rate: RateLimiter::direct(quota(rpm, self.config.burst))
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

    /// Checks the caller's rate and concurrency limits.
    ///
    /// # Errors
    /// 429 `rate_limit_exceeded` with the limit, what remains and when to retry.
    pub async fn admit(&self, caller: &Caller, metrics: &Metrics) -> Result<Admission, ProxyError> {
        let user = self.user(caller);
        let burst = self.config.burst.max(1);
        let info = match self.check_rate(caller.user_id, &user, burst, metrics).await {
            Ok(remaining) => RateInfo {
                limit: user.rpm,
                remaining,
            },
            Err(retry_after) => {
                metrics.rate_limited.with_label_values(&["requests"]).inc();
                return Err(ProxyError::RateLimited {
                    per: "requests per minute",
                    limit: user.rpm,
                    remaining: 0,
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
                limit: self.config.max_concurrent_requests,
                remaining: 0,
                retry_after: Duration::from_secs(1),
            }
        })?;
        Ok(Admission { info, permit })
    }

    /// `Ok(remaining)` or `Err(retry after)`.
    async fn check_rate(
        &self,
        user_id: Uuid,
        user: &UserLimiter,
        burst: u32,
        metrics: &Metrics,
    ) -> Result<u32, Duration> {
        if let Some(redis) = &self.redis {
            let skip = self
                .redis_retry_at
                .lock()
                .map(|t| t.is_some_and(|t| Instant::now() < t))
                .unwrap_or(false);
            if skip {
                metrics.redis_fallback.inc();
            } else {
                match redis.check(user_id, user.rpm, burst).await {
                    Ok(r) => {
                        if self.redis_down_logged.swap(false, Ordering::Relaxed) {
                            tracing::info!("Redis rate limiter is back");
                        }
                        return r;
                    }
                    Err(e) => {
                        metrics.redis_fallback.inc();
                        // Don't make every request wait for a dead Redis: retry after a pause.
                        if let Ok(mut t) = self.redis_retry_at.lock() {
                            *t = Some(Instant::now() + REDIS_RETRY_AFTER);
                        }
                        if !self.redis_down_logged.swap(true, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "Redis rate limiter unavailable; using the local limiter");
                        }
                    }
                }
            }
        }
        match user.rate.check() {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }
}

/// GCRA in Redis: one atomic script per check, time from the Redis server.
mod redis_gcra {
    use std::time::Duration;
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

    /// How long a Redis check may take before the local limiter answers instead.
    const TIMEOUT: Duration = Duration::from_millis(250);

    pub struct RedisGcra {
        client: redis::Client,
        conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
        script: redis::Script,
    }

    impl RedisGcra {
        pub fn new(url: &str) -> Result<RedisGcra, redis::RedisError> {
            Ok(RedisGcra {
                client: redis::Client::open(url)?,
                conn: tokio::sync::OnceCell::new(),
                script: redis::Script::new(SCRIPT),
            })
        }

        /// `Ok(Ok(remaining))`, `Ok(Err(retry_after))`, or `Err` if Redis did not answer.
        pub async fn check(
            &self,
            user: Uuid,
            rpm: u32,
            burst: u32,
        ) -> Result<Result<u32, Duration>, String> {
            let fut = async {
                let conn = self
                    .conn
                    .get_or_try_init(|| async {
                        let cfg = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(TIMEOUT)
                            .set_response_timeout(TIMEOUT)
                            .set_number_of_retries(1);
                        redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg)
                            .await
                    })
                    .await?;
                let mut conn = conn.clone();
                let interval_us = 60_000_000u64 / u64::from(rpm.max(1));
                let (allowed, value): (i64, i64) = self
                    .script
                    .key(format!("byok:rl:{user}"))
                    .arg(interval_us)
                    .arg(burst)
                    .invoke_async(&mut conn)
                    .await?;
                Ok::<_, redis::RedisError>((allowed, value))
            };
            match tokio::time::timeout(TIMEOUT, fut).await {
                Err(_) => Err("timed out".into()),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok((1, remaining))) => Ok(Ok(u32::try_from(remaining).unwrap_or(0))),
                Ok(Ok((_, wait_us))) => Ok(Err(Duration::from_micros(
                    u64::try_from(wait_us).unwrap_or(0),
                ))),
            }
        }
    }
}
