//! `PassthroughBody`: the upstream body, out unchanged, observed on the way.
//!
//! Each frame is forwarded as received (`Bytes` is reference-counted: no copy, no per-chunk
//! allocation). On the way it counts bytes, resets the idle timer, and keeps references to the
//! last few frames (the tail, where a final usage chunk lives). Its finish callback runs
//! exactly once: when the body ends, fails, times out, or is dropped because the client went
//! away — dropping it drops the upstream response, which closes the upstream request.

use crate::http_util::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How much of the end of a body is kept for usage extraction.
pub const TAIL_BYTES: usize = 16 * 1024;

/// Why a body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Complete,
    UpstreamError,
    IdleTimeout,
    /// The client went away (the body was dropped before its end).
    Cancelled,
}

impl End {
    pub fn label(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::UpstreamError => "upstream_error",
            End::IdleTimeout => "idle_timeout",
            End::Cancelled => "aborted",
        }
    }
}

/// What the finish callback learns.
#[derive(Debug)]
pub struct Summary {
    pub end: End,
    pub bytes: u64,
    /// The first data frame (where an Anthropic stream reports its input tokens).
    pub head: Option<Bytes>,
    /// The last frames (at least [`TAIL_BYTES`] of them when the body was longer).
    pub tail: VecDeque<Bytes>,
}

impl Summary {
    /// The tail as one buffer (one copy, at the end of the stream, off the per-chunk path).
    pub fn tail_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.tail.iter().map(Bytes::len).sum());
        for b in &self.tail {
            v.extend_from_slice(b);
        }
        v
    }
}

pub type OnFinish = Box<dyn FnOnce(Summary) + Send>;

/// The idle timeout fired between two frames.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub struct IdleTimeout(pub Duration);

pub struct PassthroughBody<B> {
    inner: B,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    bytes: u64,
    head: Option<Bytes>,
    tail: VecDeque<Bytes>,
    tail_len: usize,
    on_finish: Option<OnFinish>,
}

impl<B> PassthroughBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub fn new(inner: B, idle_timeout: Duration, on_finish: Option<OnFinish>) -> Self {
        PassthroughBody {
            inner,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            bytes: 0,
            head: None,
            tail: VecDeque::with_capacity(8),
            tail_len: 0,
            on_finish,
        }
    }

    fn finish(&mut self, end: End) {
        if let Some(f) = self.on_finish.take() {
            f(Summary {
                end,
                bytes: self.bytes,
                head: self.head.take(),
                tail: std::mem::take(&mut self.tail),
            });
        }
    }

    fn observe(&mut self, data: &Bytes) {
        self.bytes += data.len() as u64;
        if self.on_finish.is_none() || data.is_empty() {
            return;
        }
        if self.head.is_none() {
            self.head = Some(data.clone());
        }
        self.tail.push_back(data.clone());
        self.tail_len += data.len();
        while self.tail.len() > 1
            && self.tail_len - self.tail.front().map_or(0, Bytes::len) >= TAIL_BYTES
        {
            if let Some(old) = self.tail.pop_front() {
                self.tail_len -= old.len();
            }
        }
    }
}

impl<B> Body for PassthroughBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.observe(data);
                }
                let deadline = Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                if this.inner.is_end_stream() {
                    this.finish(End::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(End::UpstreamError);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish(End::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    this.finish(End::IdleTimeout);
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(this.idle_timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for PassthroughBody<B> {
    fn drop(&mut self) {
        if let Some(f) = self.on_finish.take() {
            f(Summary {
                end: End::Cancelled,
                bytes: self.bytes,
                head: self.head.take(),
                tail: std::mem::take(&mut self.tail),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn forwards_everything_and_finishes_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let data: Vec<Bytes> = (0..40)
            .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; 1000]))
            .collect();
        let inner = http_body_util::StreamBody::new(tokio_stream_iter(data.clone()));
        let body = PassthroughBody::new(
            inner,
            Duration::from_secs(5),
            Some(Box::new(move |sum: Summary| {
                s.lock()
                    .unwrap()
                    .push((sum.end, sum.bytes, sum.tail_bytes().len()))
            })),
        );
        let out = body.collect().await.unwrap().to_bytes();
        let want: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(out.as_ref(), want.as_slice());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, End::Complete);
        assert_eq!(seen[0].1, 40_000);
        assert!(seen[0].2 >= TAIL_BYTES && seen[0].2 < TAIL_BYTES + 1000);
    }

    #[tokio::test]
    async fn drop_is_cancelled() {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let inner =
            http_body_util::StreamBody::new(tokio_stream_iter(vec![Bytes::from_static(b"x"); 3]));
        let mut body = PassthroughBody::new(
            inner,
            Duration::from_secs(5),
            Some(Box::new(move |sum: Summary| {
                *s.lock().unwrap() = Some(sum.end)
            })),
        );
        let _ = body.frame().await;
        drop(body);
        assert_eq!(*seen.lock().unwrap(), Some(End::Cancelled));
    }

    fn tokio_stream_iter(v: Vec<Bytes>) -> IterStream {
        IterStream(v.into_iter())
    }

    struct IterStream(std::vec::IntoIter<Bytes>);
    impl futures_util::Stream for IterStream {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
        }
    }
}
