//! What every handler knows about the request it serves: [`RequestCtx`] (request id, peer,
//! arrival time), and the one reader of request bodies.
//!
//! [`read_body`] is where a client's bytes are held in memory, so every limit on them lives
//! here: the size limit (`limits.max_body_bytes`, 413), the time limit
//! (`server.body_read_timeout`, 408), the global budget of buffered request bytes
//! (`limits.max_buffered_bytes`, 503) and the encoding (anything but identity is 415: the
//! proxy parses and rewrites the JSON it forwards). A body over the size limit is answered at
//! once, and what the client still sends is read and discarded for a bounded time in the
//! background, so the client reads the 413 instead of a connection reset.

use crate::error::ProxyError;
use crate::http_util::BoxError;
use crate::store::AuditEntry;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap};
use http_body::Body;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request facts that handlers, audit events and the access log need.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The client's `x-request-id` when it is sane, else a fresh UUID.
    pub request_id: String,
    pub remote: SocketAddr,
    /// When the request arrived (for durations measured at the end of a stream).
    pub start: Instant,
}

/// What a proxied request adds to its access line, filled in when its response body ends
/// (the proxy puts an `Arc<Upstreamed>` in the response's extensions; the spine writes the
/// line once the body is done).
#[derive(Debug, Default)]
pub struct Upstreamed(std::sync::OnceLock<UpstreamFacts>);

#[derive(Debug)]
pub struct UpstreamFacts {
    pub model: String,
    pub provider: String,
    pub ttfb: Duration,
    pub bytes: u64,
    /// How the body ended (`complete`, `aborted`, ...).
    pub end: &'static str,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Upstreamed {
    pub fn set(&self, facts: UpstreamFacts) {
        let _ = self.0.set(facts);
    }

    pub fn get(&self) -> Option<&UpstreamFacts> {
        self.0.get()
    }
}

/// The longest client-supplied request id kept; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 64;

/// Whether a client-supplied request id may be logged, stored and forwarded as is: at most
/// 64 characters of `[A-Za-z0-9._:-]`.
pub fn sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl RequestCtx {
    /// The context of a request that arrived now from `remote`.
    pub fn new(headers: &HeaderMap, remote: SocketAddr) -> RequestCtx {
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| sane_request_id(v))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        RequestCtx {
            request_id,
            remote,
            start: Instant::now(),
        }
    }

    /// An audit entry for `action` by `actor` in this request.
    pub fn audit(&self, action: &'static str, actor: Option<uuid::Uuid>) -> AuditEntry {
        AuditEntry {
            actor_user_id: actor,
            action,
            target: None,
            detail: serde_json::Value::Object(Default::default()),
            request_id: Some(self.request_id.clone()),
            remote_addr: Some(self.remote.ip().to_string()),
        }
    }
}

/// How much of an over-limit upload is read and discarded after the 413, and for how long.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request body in memory, with its share of the buffered-bytes budget (released when this
/// is dropped: after the upstream answered, or the handler is done with it).
#[derive(Debug)]
pub struct ReadBody {
    pub bytes: Bytes,
    pub permit: BufferPermit,
}

/// The limits a body is read under.
#[derive(Clone, Copy)]
pub struct BodyLimits<'a> {
    pub max_bytes: usize,
    pub timeout: Duration,
    pub budget: &'a Budget,
}

/// The global budget of request-body bytes held in memory (`limits.max_buffered_bytes`).
#[derive(Debug)]
pub struct Budget {
    used: Arc<AtomicUsize>,
    max: usize,
}

/// A share of the [`Budget`], returned when dropped.
#[derive(Debug)]
pub struct BufferPermit {
    used: Arc<AtomicUsize>,
    max: usize,
    bytes: usize,
}

/// Reservations grow in steps of this, so a chunked body costs few atomic operations.
const BUFFER_STEP: usize = 64 * 1024;

impl Budget {
    pub fn new(max: usize) -> Budget {
        Budget {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Reserves `bytes`; `None` when the budget is spent.
    pub fn reserve(&self, bytes: usize) -> Option<BufferPermit> {
        let mut permit = BufferPermit {
            used: self.used.clone(),
            max: self.max,
            bytes: 0,
        };
        (bytes == 0 || permit.grow(bytes)).then_some(permit)
    }

    /// Bytes of request bodies held right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl BufferPermit {
    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reserves up to at least `total` bytes; `false` (nothing changed) if the budget is spent.
    pub fn grow(&mut self, total: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        let want = total.div_ceil(BUFFER_STEP) * BUFFER_STEP - self.bytes;
        let ok = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(want).filter(|t| *t <= self.max)
            })
            .is_ok();
        if ok {
            self.bytes += want;
        }
        ok
    }
}

impl Drop for BufferPermit {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Reads a whole request body under `limits`.
///
/// # Errors
/// 415 for a `content-encoding` other than identity; 413 over the size limit (checked against
/// `content-length` first, then while reading); 503 when the global budget of buffered bytes
/// is spent; 408 when the body does not arrive in time; 400 when the client's body breaks.
pub async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limits: BodyLimits<'_>,
) -> Result<ReadBody, ProxyError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let identity = enc
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"));
        if !identity {
            return Err(ProxyError::UnsupportedMediaType);
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = ProxyError::RequestTooLarge {
        limit: limits.max_bytes,
    };
    if declared.is_some_and(|len| len > limits.max_bytes as u64) {
        drain(body);
        return Err(too_large);
    }
    // A declared length is reserved up front; a chunked body as it arrives.
    let mut permit = limits
        .budget
        .reserve(declared.unwrap_or(0) as usize)
        .ok_or(ProxyError::Overloaded)?;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = body;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                ProxyError::InvalidRequest("The request body could not be read.".into())
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing we forward
            };
            if buf.len() + data.len() > limits.max_bytes {
                return Err(too_large);
            }
            if buf.len() + data.len() > permit.bytes() && !permit.grow(buf.len() + data.len()) {
                return Err(ProxyError::Overloaded);
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(limits.timeout, read).await {
        Err(_) => Err(ProxyError::RequestTimeout(limits.timeout)),
        Ok(Err(e @ ProxyError::RequestTooLarge { .. })) => {
            drain(body);
            Err(e)
        }
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(ReadBody {
            bytes: buf.freeze(),
            permit,
        }),
    }
}

/// Reads (and discards) what the client still sends, for a bounded time and size, so that a
/// client busy uploading reads the answer instead of a reset.
fn drain<B>(body: B)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0u64;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

/// Parses an id from the request path; a malformed id is simply not found.
///
/// # Errors
/// `not_found()`.
pub fn path_id(id: &str, not_found: fn() -> ProxyError) -> Result<uuid::Uuid, ProxyError> {
    uuid::Uuid::parse_str(id).map_err(|_| not_found())
}

/// Reads a management body (small, bounded by `limit` as well) and parses it as `T`. Errors
/// never echo the body's values (a credential typed into the wrong field must not come back in
/// the message).
///
/// # Errors
/// As [`read_body`]; 400 `invalid_request` naming the field that is missing or mistyped.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: http::Request<hyper::body::Incoming>,
    limits: BodyLimits<'_>,
) -> Result<T, ProxyError> {
    let (parts, body) = req.into_parts();
    parse_json(&read_body(&parts.headers, body, limits).await?.bytes)
}

/// Parses JSON into `T` with errors that name the field but never echo a value.
///
/// # Errors
/// 400 `invalid_request`.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProxyError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_budget_is_shared_and_returned() {
        let budget = Budget::new(200 * 1024);
        let mut a = budget.reserve(100 * 1024).unwrap();
        assert_eq!(a.bytes(), 128 * 1024);
        assert!(budget.reserve(100 * 1024).is_none());
        let b = budget.reserve(64 * 1024).unwrap();
        assert!(!a.grow(150 * 1024));
        assert_eq!(budget.used(), 192 * 1024);
        drop(b);
        assert!(a.grow(150 * 1024));
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn request_ids_are_bounded_and_plain() {
        assert!(sane_request_id("req-abc-123"));
        assert!(sane_request_id("01J2:trace.span_1"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id(&"a".repeat(65)));
        assert!(!sane_request_id("a b"));
        assert!(!sane_request_id("x\u{1b}[31m"));
        assert!(!sane_request_id("<script>"));
    }
}
