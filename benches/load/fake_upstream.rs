//! A fake Vercel AI Gateway for the load benchmarks (`benches/load/run.sh`, `memory.sh`,
//! `profile.sh`): `POST .../chat/completions` answered in the gateway's wire format, as fast
//! as it can, with the shape of the answer picked by the query string.
//!
//! It binds `127.0.0.1:0`, prints the port on stdout (one line, flushed), then serves
//! HTTP/1.1 and h2c until SIGTERM / SIGINT.
//!
//! - `"stream": false` (or absent): one `chat.completion` JSON object with `usage`.
//! - `"stream": true`: an SSE stream of `chunks` events (query `?chunks=N`, default 5, at
//!   least 3): a role delta, content deltas, a final chunk with `finish_reason` (and `usage`
//!   when `stream_options.include_usage` is set), then `data: [DONE]`. The options may also
//!   come as a header `x-title: bench chunks=N&delay_ms=D` (byok-proxy forwards only
//!   allowlisted query parameters, and `x-title` is one of its allowed headers). Each event is its own
//!   body frame; `?delay_ms=D` waits D ms before each one (default 0: all ready at once, so
//!   hyper writes them together, as a real upstream's socket would deliver a burst).
//!
//! The benchmark cares about what sits in front of this fake, so it does as little as it
//! can: no JSON parsing of the request (a byte search for `"stream":true`), answers built
//! from a template.
//!
//! ```sh
//! cargo build --release --example fake-upstream
//! target/release/examples/fake-upstream [--threads N]   # prints e.g. 40123
//! ```
//!
//! `--threads N` sets the tokio worker threads (default: one per CPU the process may use).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Sleep;

const MODEL: &str = "openai/gpt-4o-mini";
const ID: &str = "gen_FAKELOAD00000000000000001";

fn json_answer() -> Bytes {
    Bytes::from(format!(
        concat!(
            r#"{{"id":"{id}","object":"chat.completion","created":1700000000,"model":"{model}","#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello from fake","#,
            r#""provider_metadata":{{"gateway":{{"cost":"0.00042","generationId":"{id}"}}}}}},"#,
            r#""logprobs":null,"finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"cost":0.00042,"is_byok":true}},"#,
            r#""system_fingerprint":"fp_fake","generationId":"{id}"}}"#
        ),
        id = ID,
        model = MODEL
    ))
}

fn sse_event(delta: &str, finish: &str, usage: bool) -> Bytes {
    let usage = if usage {
        r#","usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"cost":0.00042,"is_byok":true},"generationId":""#.to_string()
            + ID
            + "\""
    } else {
        String::new()
    };
    Bytes::from(format!(
        concat!(
            r#"data: {{"id":"{id}","object":"chat.completion.chunk","created":1700000000,"model":"{model}","#,
            r#""choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}],"#,
            r#""system_fingerprint":"fp_fake"{usage}}}"#,
            "\n\n"
        ),
        id = ID,
        model = MODEL,
        delta = delta,
        finish = finish,
        usage = usage
    ))
}

/// The `n` events of one stream (n >= 3).
fn sse_events(n: usize, include_usage: bool) -> VecDeque<Bytes> {
    let n = n.max(3);
    let mut out = VecDeque::with_capacity(n);
    out.push_back(sse_event(
        r#"{"role":"assistant","content":"Hello"}"#,
        "null",
        false,
    ));
    for i in 0..n - 3 {
        let word = if i % 2 == 0 { " from" } else { " fake" };
        out.push_back(sse_event(
            &format!(r#"{{"content":"{word}"}}"#),
            "null",
            false,
        ));
    }
    out.push_back(sse_event("{}", r#""stop""#, include_usage));
    out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

/// Yields each event as its own frame, `delay` before each one.
struct Events {
    events: VecDeque<Bytes>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.events.is_empty() {
            return Poll::Ready(None);
        }
        if !this.delay.is_zero() {
            let delay = this.delay;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        Poll::Ready(this.events.pop_front().map(|e| Ok(Frame::data(e))))
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_empty()
    }
}

type FakeBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn query_param(query: &str, name: &str) -> Option<u64> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.parse().ok())?
    })
}

async fn handle(req: Request<Incoming>, json: Bytes) -> Result<Response<FakeBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if parts.method != http::Method::POST || !parts.uri.path().ends_with("/chat/completions") {
        let mut resp = Response::new(
            http_body_util::Full::new(Bytes::from_static(
                br#"{"error":{"message":"not found","type":"not_found"}}"#,
            ))
            .boxed_unsync(),
        );
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    let find = |needle: &[u8]| memchr::memmem::find(&body, needle).is_some();
    let stream = find(br#""stream":true"#);
    let mut resp = if stream {
        // byok-proxy forwards no query string it does not need (only allowlisted parameters
        // cross), so the load clients also send the options as `x-title: bench <query>`,
        // a header that crosses every path the same way.
        let from_header = parts
            .headers
            .get("x-title")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bench "));
        let query = parts.uri.query().or(from_header).unwrap_or("");
        let chunks = query_param(query, "chunks").unwrap_or(5) as usize;
        let delay = Duration::from_millis(query_param(query, "delay_ms").unwrap_or(0));
        let events = sse_events(chunks.min(100_000), find(br#""include_usage":true"#));
        let mut resp = Response::new(
            Events {
                events,
                delay,
                sleep: None,
            }
            .boxed_unsync(),
        );
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    } else {
        let mut resp = Response::new(http_body_util::Full::new(json).boxed_unsync());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    };
    resp.headers_mut()
        .insert("x-vercel-id", HeaderValue::from_static("fake"));
    Ok(resp)
}

fn main() {
    let mut threads: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => {
                let n = args.next().expect("--threads needs a value");
                threads = Some(n.parse().expect("--threads takes a positive integer"));
            }
            "-h" | "--help" => {
                println!("usage: fake-upstream [--threads N]  (prints the bound port, runs until killed)");
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    let runtime = builder.build().expect("tokio runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{port}").expect("write port");
        stdout.flush().expect("flush stdout");
        let json = json_answer();
        let serve = async move {
            let builder = Builder::new(TokioExecutor::new());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let json = json.clone();
                let conn = builder
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| handle(req, json.clone())),
                    )
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            () = serve => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
}
