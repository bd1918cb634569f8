//! Header filtering in both directions. Never forwarded upstream: the caller's app token
//! (`authorization`, `x-api-key`, `api-key`), cookies, hop-by-hop headers. Never returned to
//! the client: hop-by-hop headers, `set-cookie`, upstream auth challenges.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy ones proxies drop.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn is_hop_by_hop(name: &HeaderName, connection_listed: &[String]) -> bool {
    HOP_BY_HOP.contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
        || connection_listed.iter().any(|c| c == name.as_str())
}

/// Names listed in the `Connection` header: hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The client's headers that may go upstream. Auth, cookies, host, length, encoding
/// negotiation and the request id are set by the proxy itself.
pub fn upstream_request_headers(client: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(client);
    let mut out = HeaderMap::with_capacity(client.len());
    for (name, value) in client {
        let drop = is_hop_by_hop(name, &listed)
            || matches!(
                name.as_str(),
                "authorization"
                    | "x-api-key"
                    | "api-key"
                    | "cookie"
                    | "host"
                    | "content-length"
                    | "accept-encoding"
                    | "x-request-id"
                    | "forwarded"
                    | "x-forwarded-for"
                    | "x-forwarded-host"
                    | "x-forwarded-proto"
            );
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Removes what must not reach the client from an upstream response's headers, in place.
pub fn filter_response_headers(headers: &mut HeaderMap) {
    let listed = connection_listed(headers);
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            is_hop_by_hop(n, &listed)
                || matches!(
                    n.as_str(),
                    "set-cookie" | "www-authenticate" | "authorization" | "x-api-key" | "api-key"
                )
        })
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_secrets_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer bkp_x"),
            ("x-api-key", "bkp_x"),
            ("api-key", "bkp_x"),
            ("cookie", "a=b"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("anthropic-version", "2023-06-01"),
            ("user-agent", "OpenAI/Python"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = upstream_request_headers(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["anthropic-version", "user-agent"]);

        let mut resp = HeaderMap::new();
        for (k, v) in [
            ("set-cookie", "s=1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/event-stream"),
            ("www-authenticate", "Bearer"),
            ("x-vercel-id", "abc"),
        ] {
            resp.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        filter_response_headers(&mut resp);
        let mut names: Vec<&str> = resp.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-type", "x-vercel-id"]);
    }
}
