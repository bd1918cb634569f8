//! Prometheus metrics: one `Registry` owned by the app (no global macros, so parallel tests
//! never share counters). Labels are low-cardinality: route template, status code, provider,
//! error kind, limit name, cache result — never a user id.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub upstream_ttfb: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub streams_active: IntGauge,
    pub stream_bytes: IntCounter,
    pub rate_limited: IntCounterVec,
    pub tokens: IntCounterVec,
    pub credential_cache: IntCounterVec,
    pub system_fallback: IntCounterVec,
    pub usage_dropped: IntCounter,
    pub redis_fallback: IntCounter,
    pub provider_health: IntGaugeVec,
    pub in_flight: IntGauge,
    pub upstream_request_duration: Histogram,
    pub auth_failures: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_refused: IntCounter,
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

impl Metrics {
    /// Builds and registers every family.
    ///
    /// # Errors
    /// Only on a programming error (duplicate registration).
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "byok_http_request_duration_seconds",
                "Time to response headers, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        r.register(Box::new(http_duration.clone()))?;
        let upstream_ttfb = HistogramVec::new(
            HistogramOpts::new(
                "byok_upstream_ttfb_seconds",
                "Upstream time to response headers, by provider.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider"],
        )?;
        r.register(Box::new(upstream_ttfb.clone()))?;
        let upstream_request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "byok_upstream_body_duration_seconds",
                "Time from request to the end of the upstream body.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        r.register(Box::new(upstream_request_duration.clone()))?;
        let streams_active = IntGauge::new(
            "byok_streams_active",
            "Upstream response bodies being streamed now.",
        )?;
        r.register(Box::new(streams_active.clone()))?;
        let in_flight = IntGauge::new(
            "byok_in_flight_requests",
            "Requests in flight (global overload limit).",
        )?;
        r.register(Box::new(in_flight.clone()))?;
        let stream_bytes = IntCounter::new(
            "byok_stream_bytes_total",
            "Response body bytes passed through from upstream.",
        )?;
        r.register(Box::new(stream_bytes.clone()))?;
        let usage_dropped = IntCounter::new(
            "byok_usage_dropped_total",
            "Usage records dropped because the recorder queue was full.",
        )?;
        r.register(Box::new(usage_dropped.clone()))?;
        let redis_fallback = IntCounter::new(
            "byok_redis_fallback_total",
            "Rate-limit checks served by the local limiter because Redis failed.",
        )?;
        r.register(Box::new(redis_fallback.clone()))?;
        let provider_health = IntGaugeVec::new(
            Opts::new(
                "byok_provider_health",
                "1 for the current health status of each provider.",
            ),
            &["provider", "status"],
        )?;
        r.register(Box::new(provider_health.clone()))?;
        let connections_open = IntGauge::new(
            "byok_connections_open",
            "Client connections open now (server.max_connections caps them).",
        )?;
        r.register(Box::new(connections_open.clone()))?;
        let connections_refused = IntCounter::new(
            "byok_connections_refused_total",
            "Client connections closed at accept because server.max_connections were open.",
        )?;
        r.register(Box::new(connections_refused.clone()))?;
        let m = Metrics {
            http_requests: counter(&r, "byok_http_requests_total", "HTTP requests by route and status.", &["route", "status"])?,
            upstream_errors: counter(&r, "byok_upstream_errors_total", "Upstream failures by provider and kind.", &["provider", "kind"])?,
            rate_limited: counter(&r, "byok_rate_limited_total", "Requests refused by a limit.", &["limit"])?,
            tokens: counter(&r, "byok_tokens_total", "Tokens accounted, by provider and kind (prompt, completion).", &["provider", "kind"])?,
            credential_cache: counter(&r, "byok_credential_cache_total", "Credential cache lookups by result.", &["result"])?,
            system_fallback: counter(
                &r,
                "byok_system_credential_fallback_total",
                "Requests the gateway served with the operator's credentials instead of the caller's (usage.is_byok false).",
                &["provider"],
            )?,
            auth_failures: counter(
                &r,
                "byok_auth_failures_total",
                "Failed authentications by reason (malformed, unknown_token, token_revoked, token_expired, user_disabled, admin_token).",
                &["reason"],
            )?,
            connections_open,
            connections_refused,
            registry: r,
            http_duration,
            upstream_ttfb,
            streams_active,
            stream_bytes,
            usage_dropped,
            redis_fallback,
            provider_health,
            in_flight,
            upstream_request_duration,
        };
        // Series that exist from the start, so dashboards and alerts see zeros, not gaps.
        for limit in ["requests", "token", "concurrency", "global"] {
            m.rate_limited.with_label_values(&[limit]);
        }
        for result in ["hit", "miss"] {
            m.credential_cache.with_label_values(&[result]);
        }
        for p in crate::keys::providers::PROVIDERS {
            m.system_fallback.with_label_values(&[p.id]);
        }
        for reason in [
            "missing",
            "malformed",
            "unknown_token",
            "token_revoked",
            "token_expired",
            "user_disabled",
            "admin_token",
        ] {
            m.auth_failures.with_label_values(&[reason]);
        }
        Ok(m)
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}
