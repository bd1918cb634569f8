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
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from(self.limit));
        headers.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from(self.remaining),
        );
        match self.reset {
            Some(reset) => {
                if let Ok(v) = HeaderValue::from_str(&format!("{}ms", reset.as_millis())) {
                    headers.insert("x-ratelimit-reset-requests", v);
                }
            }
            None => {
                headers.remove("x-ratelimit-reset-requests");
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
