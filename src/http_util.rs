//! Small HTTP helpers shared by the handlers: the boxed body type, JSON responses and reading
//! a request body under the size limit.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};

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

/// Why a body could not be read.
#[derive(Debug)]
pub enum ReadError {
    TooLarge,
    Io,
}

/// Reads the whole request body, refusing more than `limit` bytes (checked against
/// `content-length` first, then while reading).
///
/// # Errors
/// `TooLarge` over the limit, `Io` if the client's body fails.
pub async fn read_body<B>(
    headers: &http::HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, ReadError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(ReadError::TooLarge);
        }
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge),
        Err(_) => Err(ReadError::Io),
    }
}

/// Reads a request body under `limit` and parses it as `T`. Errors never echo the body's
/// values (a credential typed into the wrong field must not come back in the message).
///
/// # Errors
/// 413 over the limit; 400 `invalid_request` naming the field that is missing or mistyped.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: http::Request<hyper::body::Incoming>,
    limit: usize,
) -> Result<T, crate::error::ProxyError> {
    let (parts, body) = req.into_parts();
    parse_json(&read_limited(&parts.headers, body, limit).await?)
}

/// [`read_body`] with its failures as the edge errors (413, or 400 if the client's body broke).
///
/// # Errors
/// 413 `request_too_large`, 400 `invalid_request`.
pub async fn read_limited(
    headers: &http::HeaderMap,
    body: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, crate::error::ProxyError> {
    use crate::error::ProxyError;
    read_body(headers, body, limit).await.map_err(|e| match e {
        ReadError::TooLarge => ProxyError::RequestTooLarge { limit },
        ReadError::Io => ProxyError::InvalidRequest("The request body could not be read.".into()),
    })
}

/// Parses JSON into `T` with errors that name the field but never echo a value.
///
/// # Errors
/// 400 `invalid_request`.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, crate::error::ProxyError> {
    use crate::error::ProxyError;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = match inner.classify() {
            serde_json::error::Category::Data => {
                let text = inner.to_string();
                if text.starts_with("missing field") || text.starts_with("unknown field") {
                    format!(
                        "Request body: {}.",
                        text.split(" at line").next().unwrap_or(&text)
                    )
                } else if path == "." {
                    "Request body must be a JSON object.".to_string()
                } else {
                    format!("Request body: field `{path}` has the wrong type or value.")
                }
            }
            _ => "Request body is not valid JSON.".to_string(),
        };
        ProxyError::InvalidRequest(msg)
    })
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

/// A body that holds `guard` (permits, counters) until the inner body ends or is dropped.
struct GuardedBody<G> {
    inner: Body,
    guard: Option<G>,
}

impl<G: Send + Unpin + 'static> http_body::Body for GuardedBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let poll = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(
            poll,
            std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_)))
        ) || this.inner.is_end_stream()
        {
            this.guard.take();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Makes `guard` live as long as the response body (a stream holds it until its end).
pub fn guard_body<G: Send + Unpin + 'static>(resp: Response<Body>, guard: G) -> Response<Body> {
    let (parts, inner) = resp.into_parts();
    Response::from_parts(
        parts,
        GuardedBody {
            inner,
            guard: Some(guard),
        }
        .boxed_unsync(),
    )
}
