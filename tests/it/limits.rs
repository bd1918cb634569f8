//! Limits through HTTP: exact per-user counts under concurrency with the 429 headers, the
//! concurrency permit held for a whole stream, global overload (503), and Redis-backed limits
//! shared by two instances with a fallback when Redis dies.

use crate::common::fake_upstream::{chat_stream_chunks, Behavior, FakeUpstream};
use crate::common::{assert_error, within, Backend, TestDb, TestProxy};
use crate::proxy::{alice_with_openai_key, proxy_for};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counts_under_64_concurrent_clients() {
    let p = Arc::new(
        TestProxy::start_with(TestDb::new(Backend::Sqlite).await, |env| {
            env.insert("BYOK_LIMITS__REQUESTS_PER_MINUTE".into(), "1".into());
            env.insert("BYOK_LIMITS__BURST".into(), "10".into());
        })
        .await,
    );
    let (uid, token) = p.user("alice").await;
    // A per-user override above the burst: the burst (10) still bounds a burst of calls.
    p.admin(
        reqwest::Method::PATCH,
        &format!("/admin/users/{uid}"),
        Some(json!({"requests_per_minute": 20})),
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (p, token) = (p.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let resp = p
                .http
                .get(p.url("/api/keys"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let h = resp.headers().clone();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (status, h, body)
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let (status, h, body) = t.await.unwrap();
        match status {
            200 => {
                ok += 1;
                assert_eq!(h["x-ratelimit-limit-requests"], "20");
            }
            429 => {
                limited += 1;
                assert_error(429, &body, 429, "rate_limit_exceeded");
                let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=4).contains(&retry), "retry-after {retry}");
                assert_eq!(h["x-ratelimit-limit-requests"], "20");
                assert_eq!(h["x-ratelimit-remaining-requests"], "0");
                assert!(h["x-ratelimit-reset-requests"]
                    .to_str()
                    .unwrap()
                    .ends_with("ms"));
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, limited), (10, 54));
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("byok_rate_limited_total{limit=\"requests\"} 54"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_permit_lives_as_long_as_the_stream() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_LIMITS__MAX_CONCURRENT_REQUESTS".into(), "1".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    fake.push(Behavior::Stream {
        chunks: chat_stream_chunks("openai/gpt-4o", true),
        delay: Duration::from_millis(150),
    });
    let mut stream = p.open_stream(&token).await;
    // Headers are sent, the body is still streaming: the permit is still held.
    let (s, b) = p
        .post(
            "/v1/chat/completions",
            &token,
            json!({"model": "openai/gpt-4o"}),
        )
        .await;
    assert_error(s, &b, 429, "rate_limit_exceeded");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("concurrent"));
    while stream.chunk().await.unwrap().is_some() {}
    drop(stream);
    // Released at the end of the body.
    within(Duration::from_secs(1), async || {
        let chat = json!({"model": "openai/gpt-4o"});
        p.post("/v1/chat/completions", &token, chat).await.0 == 200
    })
    .await;
    assert_eq!(
        fake.request_count(),
        2,
        "the refused request must not reach upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_overload_sheds_with_503() {
    let fake = FakeUpstream::start().await;
    let p = proxy_for(&fake, |env| {
        env.insert("BYOK_LIMITS__MAX_IN_FLIGHT".into(), "1".into());
    })
    .await;
    let token = alice_with_openai_key(&p).await;
    fake.push(Behavior::Stream {
        chunks: chat_stream_chunks("openai/gpt-4o", true),
        delay: Duration::from_millis(150),
    });
    let mut stream = p.open_stream(&token).await;
    let resp = p
        .http
        .get(p.url("/api/keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let b: serde_json::Value = resp.json().await.unwrap();
    assert_error(503, &b, 503, "overloaded");
    while stream.chunk().await.unwrap().is_some() {}
    drop(stream);
    within(Duration::from_secs(1), async || {
        p.get("/api/keys", &token).await.0 == 200
    })
    .await;
}

/// A Redis server of the test's own, on its own port.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the Redis limit tests");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limits_are_shared_and_fall_back_when_redis_dies() {
    let mut redis = OwnRedis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let db = TestDb::new(Backend::Postgres).await;
    let shared = db.share();
    let master = byok_proxy::keys::crypto::MasterKey::generate();
    let limits = |env: &mut byok_proxy::config::EnvMap| {
        env.insert("BYOK_LIMITS__REDIS_URL".into(), url.clone());
        env.insert("BYOK_LIMITS__REQUESTS_PER_MINUTE".into(), "1".into());
        env.insert("BYOK_LIMITS__BURST".into(), "5".into());
    };
    let a = TestProxy::start_with_key(db, master.clone(), limits).await;
    let b = TestProxy::start_with_key(shared, master, limits).await;
    let (_, token) = a.user("alice").await;
    let mut ok = 0;
    for i in 0..12 {
        let p = if i % 2 == 0 { &a } else { &b };
        let (s, body) = p.get("/api/keys", &token).await;
        match s {
            200 => ok += 1,
            429 => assert_error(s, &body, 429, "rate_limit_exceeded"),
            _ => panic!("{s} {body}"),
        }
    }
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("byok_redis_fallback_total 0"),
        "Redis was not used: {metrics}"
    );
    assert_eq!(ok, 5, "the burst is shared across both instances");

    // Redis goes away: both instances keep serving from their local limiters.
    redis.stop();
    for p in [&a, &b] {
        for _ in 0..3 {
            let (s, body) = p.get("/api/keys", &token).await;
            assert_eq!(s, 200, "{body}");
        }
        let metrics = p.metrics().await;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("byok_redis_fallback_total "))
            .unwrap();
        assert!(
            line.split(' ').nth(1).unwrap().parse::<f64>().unwrap() >= 1.0,
            "{line}"
        );
    }
}
