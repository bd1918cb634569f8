//! Small HTTP helpers shared by the handlers: the boxed body type, JSON responses and the
//! `x-ratelimit-*` header writer.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of every route: a boxed body, so upstream bodies pass through
/// without being collected.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body from bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A JSON response; serialization of our own types cannot fail, but if it did the client gets
/// an empty 500 rather than a panic.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec(value) {
        Ok(b) => (status, b),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, b"{}".to_vec()),
    };
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Header names the proxy writes on every request, built once (a `&str` name is parsed and
/// hashed on each use).
pub mod names {
    use http::HeaderName;
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
    pub const X_TITLE: HeaderName = HeaderName::from_static("x-title");
    pub const HTTP_REFERER: HeaderName = HeaderName::from_static("http-referer");
    pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
    pub const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
    pub const OPENAI_BETA: HeaderName = HeaderName::from_static("openai-beta");
    pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
    pub const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
    pub const REMAINING_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-remaining-requests");
    pub const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
}

/// The `x-ratelimit-*` headers: written by [`RateHeaders::apply`] only, on successful
/// answers and on 429s alike, replacing any the upstream sent for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    /// When the next request fits, if the caller is out of requests.
    pub reset: Option<std::time::Duration>,
}

impl RateHeaders {
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        headers.insert(names::LIMIT_REQUESTS, HeaderValue::from(self.limit));
        headers.insert(names::REMAINING_REQUESTS, HeaderValue::from(self.remaining));
        match self.reset {
            Some(reset) => {
                if let Ok(v) = HeaderValue::from_str(&format!("{}ms", reset.as_millis())) {
                    headers.insert(names::RESET_REQUESTS, v);
                }
            }
            None => {
                headers.remove(names::RESET_REQUESTS);
            }
        }
    }
}

/// Deserializes a present-but-null field as `Some(None)` (clear) and an absent one as `None`
/// (leave as is); use with `#[serde(default, deserialize_with = "double_option")]`.
///
/// # Errors
/// The inner value does not deserialize.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}
