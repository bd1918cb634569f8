//! The front door from outside the process, as hostile or broken clients would try it (raw
//! sockets where needed, short limits set through the environment): slow and idle
//! connections are closed, a capped number of connections keeps the proxy answering, slow
//! bodies get 408, a client that stops reading releases everything it held, buffered bodies
//! share a budget, failed authentication floods write a few aggregated audit rows, only
//! allowlisted query parameters and headers cross, compressed bodies are refused, over-limit
//! uploads read their 413, and a dead Redis adds no latency.

use crate::common::fake_upstream::{Behavior, FakeUpstream};
use crate::common::{assert_error, within, Backend, TestDb, TestProxy};
use crate::proxy::{alice_with_openai_key, proxy_for, GATEWAY_KEY};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or `limit` passes); returns what was read and whether the
/// connection was closed by the peer.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn metric(m: &str, name: &str) -> f64 {
    m.lines()
        .find_map(|l| l.strip_prefix(name).filter(|r| r.starts_with(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed() {
    let p = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.insert("BYOK_SERVER__HEADER_READ_TIMEOUT".into(), "400ms".into());
        env.insert("BYOK_SERVER__IDLE_TIMEOUT".into(), "1500ms".into());
    })
    .await;
    // Headers one byte at a time: closed at the header deadline, long before they end.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let start = Instant::now();
    let mut closed_after = None;
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
        {
            closed_after = Some(start.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a slow-header client must be closed");
    assert!(closed_after < Duration::from_secs(3), "{closed_after:?}");

    // A connection that never sends anything: closed at the header deadline.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(closed && got.is_empty(), "idle new connection stays open");

    // Keep-alive: still open after the header deadline, closed after the idle timeout.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.write_all(req).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "closed before the idle timeout"
    );
    let start = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "idle keep-alive connection stays open");
    let idle = start.elapsed();
    assert!(idle >= Duration::from_millis(1200), "{idle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_is_408_and_nothing_goes_upstream() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_SERVER__BODY_READ_TIMEOUT".into(), "500ms".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // While the body trickles in, the request counts as in flight.
    within(Duration::from_secs(2), async || {
        metric(&p.metrics().await, "byok_in_flight_requests") >= 1.0
    })
    .await;
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_refuses_extras_and_keeps_the_rest_answering() {
    let p = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.insert("BYOK_SERVER__MAX_CONNECTIONS".into(), "8".into());
        env.insert("BYOK_SERVER__HEADER_READ_TIMEOUT".into(), "30s".into());
    })
    .await;
    // A health checker's keep-alive connection, opened first.
    let checker = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let health = p.url("/healthz");
    // Bodies are read to the end, so the one connection goes back to the pool each time.
    let check = async || {
        let r = checker.get(&health).send().await.unwrap();
        let status = r.status();
        r.bytes().await.unwrap();
        status
    };
    assert_eq!(check().await, 200);
    // Hostile idle connections up to the cap, and beyond it.
    let mut idle = Vec::new();
    for _ in 0..7 {
        idle.push(TcpStream::connect(p.addr).await.unwrap());
    }
    let metrics = p.url("/metrics");
    let scrape = async || {
        checker
            .get(&metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    within(Duration::from_secs(2), async || {
        metric(&scrape().await, "byok_connections_open") >= 8.0
    })
    .await;
    let mut refused = 0;
    for _ in 0..20 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let (_, closed) = read_until_closed(&mut s, Duration::from_millis(300)).await;
        if closed {
            refused += 1;
        }
    }
    assert!(
        refused >= 20,
        "extra connections must be closed at once ({refused})"
    );
    assert!(metric(&scrape().await, "byok_connections_refused_total") >= 20.0);
    // The health checker's connection still answers.
    for _ in 0..3 {
        assert_eq!(check().await, 200);
    }
    // Once the idle ones go, new connections are served again.
    drop(idle);
    within(Duration::from_secs(3), async || {
        reqwest::get(p.url("/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// A proxy whose user may run one request at a time, with a short idle timeout, in front of
/// a fake that streams far more than socket buffers hold.
async fn stalled_reader_setup() -> (FakeUpstream, TestProxy, String, String) {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_SERVER__IDLE_TIMEOUT".into(), "600ms".into());
        env.insert("BYOK_LIMITS__MAX_CONCURRENT_REQUESTS".into(), "1".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    let chunk = format!("data: {}\n\n", "x".repeat(256 * 1024));
    fake.push(Behavior::Stream {
        chunks: vec![chunk; 200],
        delay: Duration::ZERO,
    });
    let body = json!({"model": "openai/gpt-4o", "stream": true, "messages": []}).to_string();
    (fake, p, token, body)
}

async fn assert_everything_released(fake: &FakeUpstream, p: &TestProxy, token: &str) {
    assert!(
        fake.wait_for_disconnect(Duration::from_secs(10)).await,
        "the upstream request was not dropped"
    );
    // Only the /metrics request itself is in flight.
    within(Duration::from_secs(5), async || {
        metric(&p.metrics().await, "byok_in_flight_requests") == 1.0
    })
    .await;
    // The user's only concurrency permit is free again.
    let (s, b) = p
        .post(
            "/v1/chat/completions",
            token,
            json!({"model": "openai/gpt-4o", "messages": []}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_releases_everything_http1() {
    let (fake, p, token, body) = stalled_reader_setup().await;
    // A tiny receive buffer, and the client never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(p.addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    assert_everything_released(&fake, &p, &token).await;
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_releases_everything_http2() {
    let (fake, p, token, body) = stalled_reader_setup().await;
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(16 * 1024)
            .initial_connection_window_size(1024 * 1024)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/v1/chat/completions", p.addr))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    // The response head arrives; its body is never read, so the stream window stays shut.
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_everything_released(&fake, &p, &token).await;
    drop(resp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_share_a_budget() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_LIMITS__MAX_BODY_BYTES".into(), "400000".into());
        env.insert("BYOK_LIMITS__MAX_BUFFERED_BYTES".into(), "1000000".into());
        env.insert("BYOK_SERVER__BODY_READ_TIMEOUT".into(), "20s".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    // Two uploads of 390 kB announced and started, not finished: 780 kB of the 1 MB budget.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 390000\r\n\r\n{{\"model\":\"openai/gpt-4o\","
        );
        s.write_all(head.as_bytes()).await.unwrap();
        held.push(s);
    }
    within(Duration::from_secs(2), async || {
        metric(&p.metrics().await, "byok_in_flight_requests") >= 2.0
    })
    .await;
    // A third one does not fit: 503 overloaded with retry-after, nothing upstream.
    let big = format!(
        r#"{{"model":"openai/gpt-4o","pad":"{}"}}"#,
        "p".repeat(300_000)
    );
    let resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let b: Value = resp.json().await.unwrap();
    assert_error(503, &b, 503, "overloaded");
    assert_eq!(fake.request_count(), 0);
    // When the held uploads go away, the budget is back.
    drop(held);
    within(Duration::from_secs(5), async || {
        p.http
            .post(p.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_auth_flood_writes_a_few_aggregated_rows() {
    let p = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.insert("BYOK_AUDIT__AUTH_FAILURE_WINDOW".into(), "60s".into());
    })
    .await;
    let long_id = "r".repeat(128);
    let mut tasks = Vec::new();
    for i in 0..600 {
        let (http, url, id) = (p.http.clone(), p.url("/v1/models"), long_id.clone());
        tasks.push(tokio::spawn(async move {
            let bad = if i % 2 == 0 {
                "x".to_string()
            } else {
                format!("bkp_{}", "A".repeat(43))
            };
            let r = http
                .get(url)
                .bearer_auth(bad)
                .header("x-request-id", id)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            assert_eq!(r.headers()["x-should-retry"], "false");
            // An over-long client request id is replaced, not echoed.
            assert_ne!(r.headers()["x-request-id"].len(), 128);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    p.app.auth.flush_failures().await;
    let (_, audit) = p
        .admin(reqwest::Method::GET, "/admin/audit?limit=1000", None)
        .await;
    let rows: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "auth.failed")
        .collect();
    assert!(!rows.is_empty() && rows.len() <= 10, "{} rows", rows.len());
    let total: u64 = rows
        .iter()
        .map(|e| e["detail"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 600);
    assert!(!audit.to_string().contains(&long_id));
    let m = p.metrics().await;
    assert_eq!(
        metric(&m, "byok_auth_failures_total{reason=\"malformed\"}"),
        300.0
    );
    assert_eq!(
        metric(&m, "byok_auth_failures_total{reason=\"unknown_token\"}"),
        300.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowlisted_query_and_headers_cross_and_compressed_bodies_are_refused() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    // The app token in the query string never reaches the gateway; `beta` only on messages.
    let body = json!({"model": "openai/gpt-4o", "messages": []});
    for (path, want) in [
        (
            format!("/v1/chat/completions?api_key={token}&beta=true"),
            "/v1/chat/completions",
        ),
        (
            format!("/v1/messages?beta=true&api_key={token}&x=1"),
            "/v1/messages?beta=true",
        ),
    ] {
        let (s, b) = p.post(&path, &token, body.clone()).await;
        assert_eq!(s, 200, "{b}");
        let r = fake.requests().pop().unwrap();
        assert_eq!(r.path, want);
        let everything = format!("{:?}{}", r.headers, String::from_utf8_lossy(&r.body));
        assert!(!everything.contains(&token) && !r.path.contains(&token));
    }
    // A gzip body (the proxy parses JSON): 415, nothing upstream.
    let before = fake.request_count();
    let resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 8, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let b: Value = resp.json().await.unwrap();
    assert_error(415, &b, 415, "unsupported_media_type");
    assert_eq!(fake.request_count(), before);
    // Upstream response headers that are not the answer's stay at the proxy; ours win.
    fake.push(Behavior::Custom {
        status: 200,
        headers: [
            ("access-control-allow-origin", "*"),
            ("alt-svc", "h3=\":443\""),
            ("strict-transport-security", "max-age=63072000"),
            ("server", "Vercel"),
            ("x-ratelimit-remaining-requests", "999999"),
            ("x-ratelimit-limit-tokens", "5000"),
            ("openai-processing-ms", "7"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        body: r#"{"choices":[]}"#.into(),
    });
    let resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let h = resp.headers();
    for gone in [
        "access-control-allow-origin",
        "alt-svc",
        "strict-transport-security",
        "set-cookie",
    ] {
        assert!(!h.contains_key(gone), "{gone} leaked");
    }
    assert_ne!(h.get("server").map(|v| v.to_str().unwrap()), Some("Vercel"));
    assert_ne!(h["x-ratelimit-remaining-requests"], "999999");
    assert_eq!(h["x-ratelimit-limit-tokens"], "5000");
    assert_eq!(h["openai-processing-ms"], "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_test_messages_never_carry_a_secret_or_a_piece_of_one() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let (_, token) = p.user("alice").await;
    let key = "sk-proj-TESTkey0123456789abcdefXYZ";
    let bedrock_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let key_id = "AKIAIOSFODNN7EXAMPLE";
    // An upstream that echoes everything it was sent, in every shape: whole, upper-cased,
    // its last 10 characters, a piece from the middle.
    let echo = |secrets: &[&str]| {
        let mut m = format!("bad request: Authorization: Bearer {GATEWAY_KEY};");
        for s in secrets {
            m.push_str(&format!(
                " {s} / {} / ...{} / {} /",
                s.to_uppercase(),
                &s[s.len() - 10..],
                &s[3..12]
            ));
        }
        m
    };
    let cases = [
        ("openai", json!({"apiKey": key}), echo(&[key])),
        (
            "bedrock",
            json!({"accessKeyId": key_id, "secretAccessKey": bedrock_secret}),
            echo(&[key_id, bedrock_secret]),
        ),
    ];
    for (provider, creds, echo) in cases {
        let id = crate::proxy::add_key(&p, &token, provider, creds).await;
        fake.push(Behavior::gateway_error(400, "invalid_request_error", &echo));
        let (s, out) = p
            .post(&format!("/api/keys/{id}/test"), &token, json!({}))
            .await;
        assert_eq!(s, 200, "{out}");
        assert_eq!(out["ok"], false);
        let msg = out["message"].as_str().unwrap().to_lowercase();
        for secret in [key, bedrock_secret, GATEWAY_KEY, key_id] {
            for w in secret.to_lowercase().as_bytes().windows(6) {
                let w = std::str::from_utf8(w).unwrap();
                assert!(!msg.contains(w), "{w} in {msg}");
            }
        }
        assert!(msg.contains("[redacted]"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_over_limit_upload_reads_its_413() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_LIMITS__MAX_BODY_BYTES".into(), "1000000".into());
        env.insert("BYOK_LIMITS__MAX_BUFFERED_BYTES".into(), "100000000".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    for attempt in 0..20 {
        let s = TcpStream::connect(p.addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        // Keep uploading 8 MB in 64 KiB chunks, like a client that does not look at the
        // answer until it has sent everything.
        let writer = tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await?;
            let chunk = format!("{:x}\r\n{}\r\n", 65536, "a".repeat(65536));
            for _ in 0..128 {
                wr.write_all(chunk.as_bytes()).await?;
            }
            wr.write_all(b"0\r\n\r\n").await?;
            Ok::<_, std::io::Error>(())
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                other => panic!("attempt {attempt}: no answer: {other:?} {got:?}"),
            }
        }
        assert!(
            got.starts_with(b"HTTP/1.1 413"),
            "attempt {attempt}: {}",
            String::from_utf8_lossy(&got)
        );
        let _ = writer.await;
    }
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_adds_no_latency() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
        env.insert("BYOK_LIMITS__REDIS_URL".into(), format!("redis://{closed}"));
    })
    .await;
    let (_, token) = p.user("alice").await;
    let mut worst = Duration::ZERO;
    for _ in 0..25 {
        let start = Instant::now();
        let (s, _) = p.get("/api/keys", &token).await;
        assert_eq!(s, 200);
        worst = worst.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Redis's 250 ms check timeout never lands on a request while Redis is down.
    assert!(
        worst < Duration::from_millis(200),
        "worst request took {worst:?}"
    );
    assert!(metric(&p.metrics().await, "byok_redis_fallback_total") >= 25.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_admin_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_byok-proxy"))
        .arg("check-config")
        .current_dir(dir.path())
        .env_clear()
        .env("BYOK_ADMIN_TOKEN", "short-admin-secret")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.token") && err.contains("32"), "{err}");
    assert!(!err.contains("short-admin-secret"), "{err}");
}
