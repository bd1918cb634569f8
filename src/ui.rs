//! The web UI under `/ui/` (SPEC §4 "Web UI"): plain HTML, CSS and ES modules from `ui/`,
//! embedded in the binary at build time, so the UI needs no Node.js, no CDN and no files next to
//! the binary at run time. The page talks only to the proxy's own `/api` and `/v1` routes.
//!
//! Routing in the page is by URL fragment (`/ui/#/chat`), so the server only ever serves the
//! files below. A path without an extension that is not one of them (e.g. a bookmarked
//! `/ui/chat`) gets `index.html` too, which then shows its default page; an unknown file is a
//! 404.
//!
//! Every UI response carries a strict Content-Security-Policy (no inline script or style, no
//! third-party origin, no framing), `nosniff`, `no-referrer`, and `cache-control: no-cache`
//! (file names are not content-hashed, so the browser revalidates instead of running a stale
//! module next to a fresh one after an upgrade).

use crate::error::ProxyError;
use crate::http_util::{full, Body};
use http::{header, HeaderValue, Response, StatusCode};

/// The Content-Security-Policy of every UI response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

struct Asset {
    /// Path relative to `/ui/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $ct:expr) => {
        Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!("../ui/", $path)),
        }
    };
}

/// Every file of the UI. Adding a file to `ui/` means adding it here.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("format.js", JS),
    asset!("sse.js", JS),
    asset!("login.js", JS),
    asset!("providers.js", JS),
    asset!("chat.js", JS),
    asset!("models.js", JS),
    asset!("usage.js", JS),
    asset!("tokens.js", JS),
    asset!("snippets.js", JS),
    asset!("admin.js", JS),
];

/// The paths (relative to `/ui/`) of every embedded asset.
pub fn asset_paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path)
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Serves one UI asset (`path` is relative to `/ui/`; `""` is the app itself).
///
/// # Errors
/// 404 for an unknown asset.
pub fn serve(path: &str) -> Result<Response<Body>, ProxyError> {
    let path = path.trim_matches('/');
    let asset = match find(path) {
        Some(a) => a,
        // The app itself, for "" and for client-side paths such as `chat` or `providers/x`.
        None if !path.rsplit('/').next().unwrap_or_default().contains('.') => {
            find("index.html").ok_or(ProxyError::Internal)?
        }
        None => {
            return Err(ProxyError::NotFound(
                "No such file in the web UI. Open /ui/ in a browser.".into(),
            ))
        }
    };
    let mut resp = Response::new(full(asset.body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_for_root_and_client_paths() {
        for p in ["", "/", "index.html", "chat", "providers/openai"] {
            let r = serve(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(r.headers()[header::CONTENT_TYPE], HTML, "{p}");
        }
    }

    #[test]
    fn assets_have_their_types_and_the_csp() {
        for (p, ct) in [("app.js", JS), ("style.css", CSS), ("favicon.svg", SVG)] {
            let r = serve(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(r.headers()[header::CONTENT_TYPE], ct);
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }

    #[test]
    fn unknown_files_are_not_found() {
        for p in ["nope.js", "../Cargo.toml", "x/app.js.map"] {
            assert!(matches!(serve(p), Err(ProxyError::NotFound(_))), "{p}");
        }
    }
}
