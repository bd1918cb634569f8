//! Two proxy instances on one PostgreSQL: changes made on one are enforced by the other within
//! a second (LISTEN/NOTIFY). And a database outage through a TCP relay the test cuts: cached
//! callers keep working, others get 503, `/readyz` says not ready, and all recovers unaided.

use crate::common::fake_upstream::FakeUpstream;
use crate::common::{assert_error, pg_base_url, within, Backend, TestDb, TestProxy};
use crate::proxy::{add_key, GATEWAY_KEY};
use byok_proxy::config::DatabaseUrl;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn gateway(fake: &FakeUpstream) -> impl Fn(&mut byok_proxy::config::EnvMap) + '_ {
    move |env| {
        env.insert("BYOK_UPSTREAM__GATEWAY__BASE_URL".into(), fake.base_url());
        env.insert("AI_GATEWAY_API_KEY".into(), GATEWAY_KEY.into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_holds_on_the_other_within_a_second() {
    let fake = FakeUpstream::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let shared = db.share();
    let master = byok_proxy::keys::crypto::MasterKey::generate();
    let a = TestProxy::start_with_key(db, master.clone(), gateway(&fake)).await;
    let b = TestProxy::start_with_key(shared, master, gateway(&fake)).await;
    let (uid, token) = a.user("alice").await;
    let key = add_key(
        &a,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-first-000000001"}),
    )
    .await;
    add_key(
        &a,
        &token,
        "openai",
        json!({"apiKey": "sk-openai-second-00000002"}),
    )
    .await;
    let chat = json!({"model": "openai/gpt-4o", "messages": []});
    // B caches the token and both keys.
    assert_eq!(
        b.post("/v1/chat/completions", &token, chat.clone()).await.0,
        200
    );
    assert_eq!(
        fake.requests()[0].json()["providerOptions"]["gateway"]["byok"]["openai"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A key deleted on A is no longer injected by B.
    let (s, _) = a
        .call(
            reqwest::Method::DELETE,
            &format!("/api/keys/{key}"),
            &token,
            None,
        )
        .await;
    assert_eq!(s, 204);
    let took = within(Duration::from_secs(1), async || {
        assert_eq!(
            b.post("/v1/chat/completions", &token, chat.clone()).await.0,
            200
        );
        let last = fake.requests().pop().unwrap().json();
        last["providerOptions"]["gateway"]["byok"]["openai"]
            == json!([{"apiKey": "sk-openai-second-00000002"}])
    })
    .await;
    println!("key deletion reached replica B in {took:?}");

    // A token revoked on A is refused by B.
    let (_, tokens) = a
        .admin(
            reqwest::Method::GET,
            &format!("/admin/users/{uid}/tokens"),
            None,
        )
        .await;
    let tid = tokens["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        a.admin(
            reqwest::Method::DELETE,
            &format!("/admin/tokens/{tid}"),
            None
        )
        .await
        .0,
        204
    );
    let took = within(Duration::from_secs(1), async || {
        b.get("/api/keys", &token).await.0 == 401
    })
    .await;
    println!("token revocation reached replica B in {took:?}");
}

/// A TCP relay to PostgreSQL that the test can cut and restore.
struct Relay {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(h.abort_handle());
            }
        });
        Relay { addr, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_serves_cached_callers_and_recovers() {
    let fake = FakeUpstream::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    // Point the proxy at the relay instead of PostgreSQL itself.
    let base = pg_base_url();
    let at = base.find('@').unwrap() + 1;
    let slash = base[at..].find('/').map_or(base.len(), |i| at + i);
    let target = base[at..slash].to_string();
    let relay = Relay::start(target).await;
    let DatabaseUrl::Postgres(url) = &db.url else {
        unreachable!()
    };
    let relayed = format!("{}{}{}", &url[..at], relay.addr, &url[slash..]);
    let mut via_relay = db.share();
    via_relay.url = DatabaseUrl::Postgres(relayed);
    let p = TestProxy::start_with(via_relay, gateway(&fake)).await;
    let _keep_schema = db;
    let (alice, cached) = p.user("alice").await;
    let alice = uuid::Uuid::parse_str(&alice).unwrap();
    let (_, uncached) = p.user("bob").await;
    add_key(
        &p,
        &cached,
        "openai",
        json!({"apiKey": "sk-openai-alice-00000001"}),
    )
    .await;
    add_key(
        &p,
        &uncached,
        "openai",
        json!({"apiKey": "sk-openai-bob-0000000002"}),
    )
    .await;
    let chat = json!({"model": "openai/gpt-4o", "messages": []});
    // The NOTIFY of a key insert may arrive after a fill and drop it again: warm the caches
    // until they stay warm.
    within(Duration::from_secs(10), async || {
        let status = p
            .post("/v1/chat/completions", &cached, chat.clone())
            .await
            .0;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.app.keyring.is_cached(alice) && p.app.auth.tokens.has_user(alice)
    })
    .await;

    relay.cut();
    let (s, b) = p.post("/v1/chat/completions", &cached, chat.clone()).await;
    assert_eq!(s, 200, "a cached caller keeps working: {b}");
    let (s, b) = p
        .post("/v1/chat/completions", &uncached, chat.clone())
        .await;
    assert_error(s, &b, 503, "store_unavailable");
    let ready = p.http.get(p.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        p.http.get(p.url("/healthz")).send().await.unwrap().status(),
        200
    );

    relay.restore();
    within(Duration::from_secs(10), async || {
        p.http.get(p.url("/readyz")).send().await.unwrap().status() == 200
    })
    .await;
    within(Duration::from_secs(10), async || {
        p.post("/v1/chat/completions", &uncached, chat.clone())
            .await
            .0
            == 200
    })
    .await;
    assert_eq!(
        p.post("/v1/chat/completions", &cached, chat.clone())
            .await
            .0,
        200
    );
}
