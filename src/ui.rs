//! The web UI under `/ui/`: static assets embedded in the binary.

use crate::error::ProxyError;
use crate::http_util::{full, Body};
use http::{header, HeaderValue, Response, StatusCode};

/// Serves one UI asset (`path` is relative to `/ui/`).
///
/// # Errors
/// 404 for an unknown asset.
pub fn serve(path: &str) -> Result<Response<Body>, ProxyError> {
    let _ = path;
    let mut resp = Response::new(full("byok-proxy UI"));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(resp)
}
