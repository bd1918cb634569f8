//! What crosses the proxy in headers, by allowlist in both directions.
//!
//! Upstream gets only the request headers a route needs; the proxy itself sets
//! `content-type: application/json` (it parsed and rewrote the body), the upstream's
//! authentication and `x-request-id`. Clients get only the response headers that belong to
//! the answer; the proxy's own `x-ratelimit-*-requests` are written after these and win.
//! Anything not listed — the caller's app token, cookies, forwarding and client-IP headers,
//! gateway team or reporting headers, hop-by-hop headers, the upstream's `server`, `alt-svc`,
//! `strict-transport-security`, CORS and `set-cookie` — does not cross.

use crate::http_util::names;
use http::header::{self, HeaderMap, HeaderName};
use http::HeaderValue;

/// Request headers forwarded upstream, and why:
const REQUEST_ALLOW: [HeaderName; 8] = [
    // content negotiation (JSON or an SSE stream)
    header::ACCEPT,
    // clients identify themselves; providers and the gateway key analytics and quirks on it
    header::USER_AGENT,
    // Anthropic Messages API version and feature flags (Claude Code sends both)
    names::ANTHROPIC_VERSION,
    names::ANTHROPIC_BETA,
    // OpenAI beta features (Assistants/Responses)
    names::OPENAI_BETA,
    // safe retries of the same request
    names::IDEMPOTENCY_KEY,
    // app attribution, documented by the gateway
    names::HTTP_REFERER,
    names::X_TITLE,
];

/// Response headers returned to the client (exact names) ...
const RESPONSE_ALLOW: &[&str] = &[
    "content-type",
    "content-encoding",
    "cache-control",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    // request ids: the gateway's, OpenAI's, Anthropic's
    "x-vercel-id",
    "x-request-id",
    "request-id",
];
/// ... and by prefix: providers' processing and rate headers.
const RESPONSE_ALLOW_PREFIX: &[&str] = &["openai-", "anthropic-", "x-ratelimit-"];

/// The client's headers that may go upstream, plus `content-type: application/json`.
pub fn upstream_request_headers(client: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(REQUEST_ALLOW.len() + 4);
    // One pass over the client's few headers (not one hashed lookup per allowed name).
    for (name, value) in client {
        if REQUEST_ALLOW.contains(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

fn response_allowed(name: &HeaderName) -> bool {
    let n = name.as_str();
    RESPONSE_ALLOW.contains(&n) || RESPONSE_ALLOW_PREFIX.iter().any(|p| n.starts_with(p))
}

/// Keeps only the upstream response headers that belong to the answer, in place.
pub fn filter_response_headers(headers: &mut HeaderMap) {
    if headers.keys().all(response_allowed) {
        return;
    }
    let mut out = HeaderMap::with_capacity(headers.len());
    // `drain` names only the first value of each header; the rest follow it with `None`.
    let mut current: Option<HeaderName> = None;
    for (name, value) in headers.drain() {
        if let Some(name) = name {
            current = Some(name);
        }
        if let Some(name) = current.as_ref().filter(|n| response_allowed(n)) {
            out.append(name.clone(), value);
        }
    }
    *headers = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn request_headers_by_allowlist() {
        let h = map(&[
            ("authorization", "Bearer bkp_x"),
            ("x-api-key", "bkp_x"),
            ("api-key", "bkp_x"),
            ("cookie", "a=b"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("content-encoding", "gzip"),
            ("content-type", "text/plain"),
            ("x-real-ip", "1.2.3.4"),
            ("true-client-ip", "1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-vercel-ai-gateway-team", "team"),
            ("ai-reporting-user", "u"),
            ("x-stainless-os", "Linux"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "a"),
            ("anthropic-beta", "b"),
            ("user-agent", "OpenAI/Python"),
            ("accept", "text/event-stream"),
            ("idempotency-key", "k1"),
        ]);
        let out = upstream_request_headers(&h);
        assert_eq!(
            names(&out),
            vec![
                "accept",
                "anthropic-beta",
                "anthropic-version",
                "content-type",
                "idempotency-key",
                "user-agent"
            ]
        );
        assert_eq!(out["content-type"], "application/json");
        assert_eq!(out.get_all("anthropic-beta").iter().count(), 2);
    }

    #[test]
    fn response_headers_by_allowlist() {
        let mut resp = map(&[
            ("set-cookie", "s=1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/event-stream"),
            ("www-authenticate", "Bearer"),
            ("x-vercel-id", "abc"),
            ("access-control-allow-origin", "*"),
            ("alt-svc", "h3=\":443\""),
            ("strict-transport-security", "max-age=1"),
            ("server", "Vercel"),
            ("openai-processing-ms", "12"),
            ("anthropic-ratelimit-requests-remaining", "9"),
            ("x-ratelimit-remaining-tokens", "100"),
            ("retry-after", "2"),
            ("request-id", "req_1"),
            ("x-ratelimit-remaining-tokens", "99"),
        ]);
        filter_response_headers(&mut resp);
        assert_eq!(
            names(&resp),
            vec![
                "anthropic-ratelimit-requests-remaining",
                "content-type",
                "openai-processing-ms",
                "request-id",
                "retry-after",
                "x-ratelimit-remaining-tokens",
                "x-vercel-id"
            ]
        );
        assert_eq!(
            resp.get_all("x-ratelimit-remaining-tokens").iter().count(),
            2
        );
    }
}
