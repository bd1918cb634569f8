//! `PassthroughBody`: the upstream body, out unchanged, observed on the way.
//!
//! Each frame is forwarded as received (`Bytes` is reference-counted: no copy, no per-chunk
//! allocation). On the way it counts bytes, resets the idle timer, and scans the frame for
//! usage and routing objects ([`AnswerScan`]: a substring search each; only the few bytes of a usage object are
//! copied, and no frame is kept, since a kept frame would pin the whole read buffer it was cut
//! from — ~8 KiB per chunk of a slow stream). Its finish callback runs
//! exactly once: when the body ends, fails, times out, or is dropped because the client went
//! away — dropping it drops the upstream response, which closes the upstream request.

use crate::http_util::BoxError;
use crate::usage::AnswerScan;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

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
    /// The first usage object of the body, `"usage":{...}` (where an Anthropic stream reports
    /// its input tokens).
    pub head: Option<Bytes>,
    /// The last usage object of the body (a final usage chunk, a JSON body's top level).
    pub tail: Option<Bytes>,
    /// The last routing object of the body, `"routing":{...}` (the gateway's routing metadata,
    /// where a fallback to system credentials shows).
    pub routing: Option<Bytes>,
}

impl Summary {
    /// The last usage object's bytes (empty if there was none; no copy).
    pub fn tail_bytes(&self) -> Bytes {
        self.tail.clone().unwrap_or_default()
    }
}

pub type OnFinish = Box<dyn FnOnce(Summary) + Send>;

/// The idle timeout fired between two frames.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub struct IdleTimeout(pub Duration);

pub struct PassthroughBody<B> {
    inner: B,
    /// Armed the first time the upstream makes us wait (a body that is all there never needs
    /// it), re-armed on a wait that follows frames: one clock read and timer update per burst
    /// of frames, not per frame.
    idle: Option<Pin<Box<Sleep>>>,
    idle_timeout: Duration,
    /// Frames came since the idle timer was last armed.
    active: bool,
    bytes: u64,
    scan: AnswerScan,
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
            idle: None,
            idle_timeout,
            active: false,
            bytes: 0,
            scan: AnswerScan::default(),
            on_finish,
        }
    }

    fn finish(&mut self, end: End) {
        finish(&mut self.on_finish, &mut self.scan, self.bytes, end);
    }

    fn observe(&mut self, data: &Bytes) {
        self.bytes += data.len() as u64;
        if self.on_finish.is_some() {
            self.scan.feed(data);
        }
    }
}

/// Runs the finish callback if it has not run yet.
fn finish(on_finish: &mut Option<OnFinish>, scan: &mut AnswerScan, bytes: u64, end: End) {
    if let Some(f) = on_finish.take() {
        let kept = scan.take();
        f(Summary {
            end,
            bytes,
            head: kept.first_usage,
            tail: kept.last_usage,
            routing: kept.routing,
        });
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
                this.active = true;
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
                let timeout = this.idle_timeout;
                let idle = match &mut this.idle {
                    Some(idle) => {
                        if this.active {
                            idle.as_mut().reset(Instant::now() + timeout);
                        }
                        idle
                    }
                    None => this.idle.insert(Box::pin(tokio::time::sleep(timeout))),
                };
                this.active = false;
                if idle.as_mut().poll(cx).is_ready() {
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
        finish(
            &mut self.on_finish,
            &mut self.scan,
            self.bytes,
            End::Cancelled,
        );
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
        let mut data: Vec<Bytes> = (0..40)
            .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; 1000]))
            .collect();
        data.push(Bytes::from_static(b"\"usage\":{\"prompt_tokens\""));
        data.push(Bytes::from_static(b":3}"));
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
        assert_eq!(seen[0].1, 40_000 + 27);
        assert_eq!(seen[0].2, 27, "only the usage object is kept");
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

    /// Frames `gap` apart, then the end.
    struct Spaced {
        left: usize,
        gap: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    }
    impl futures_util::Stream for Spaced {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let gap = self.gap;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
            std::task::ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test]
    async fn idle_timeout_counts_from_the_last_frame() {
        let ends = Arc::new(Mutex::new(Vec::new()));
        let run = |gap_ms: u64| {
            let e = ends.clone();
            let inner = http_body_util::StreamBody::new(Spaced {
                left: 5,
                gap: Duration::from_millis(gap_ms),
                sleep: None,
            });
            PassthroughBody::new(
                inner,
                Duration::from_millis(100),
                Some(Box::new(move |sum: Summary| {
                    e.lock().unwrap().push((sum.end, sum.bytes))
                })),
            )
            .collect()
        };
        // Five frames 40 ms apart: 200 ms in all, never 100 ms without one.
        assert!(run(40).await.is_ok());
        // A 250 ms gap: cut after the idle timeout.
        let err = run(250).await.unwrap_err();
        assert!(err.is::<IdleTimeout>(), "{err}");
        assert_eq!(
            *ends.lock().unwrap(),
            vec![(End::Complete, 5), (End::IdleTimeout, 0)]
        );
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
