//! Streams through the pooled upstream path, whose connection is driven by the client's
//! connection task and whose ready frames leave together: nothing lost, reordered or held
//! back, and connections that broke are not reused.

use crate::common::fake_upstream::{chat_stream_chunks, Behavior};
use crate::proxy::{alice_with_openai_key, proxy_for};
use serde_json::json;
use std::time::{Duration, Instant};

async fn stream_request(p: &crate::common::TestProxy, token: &str) -> reqwest::Response {
    let resp = p
        .http
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({"model": "openai/gpt-4o", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tiny_chunks_arrive_complete_and_in_order() {
    let fake = crate::common::fake_upstream::FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    let chunks: Vec<String> = (0..1000).map(|i| format!("data: {i}\n\n")).collect();
    let want: Vec<u8> = chunks.concat().into_bytes();
    // Twice: the second stream rides the pooled connection the first one gave back.
    for _ in 0..2 {
        fake.push(Behavior::Stream {
            chunks: chunks.clone(),
            delay: Duration::ZERO,
        });
        let got = stream_request(&p, &token).await.bytes().await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes lost or reordered");
    }
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_arrives_chunk_by_chunk() {
    let fake = crate::common::fake_upstream::FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    let chunks = chat_stream_chunks("openai/gpt-4o", true);
    let gap = Duration::from_millis(150);
    fake.push(Behavior::Stream {
        chunks: chunks.clone(),
        delay: gap,
    });
    let start = Instant::now();
    let mut resp = stream_request(&p, &token).await;
    let mut arrivals = Vec::new();
    let mut got = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        arrivals.push(start.elapsed());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, chunks.concat().into_bytes());
    let (first, last) = (arrivals[0], arrivals[arrivals.len() - 1]);
    // Each chunk leaves when it comes: the first long before the last, none held for a batch.
    assert!(arrivals.len() >= chunks.len(), "{arrivals:?}");
    assert!(first < gap * 3, "first chunk after {first:?}");
    assert!(
        last - first >= gap * (chunks.len() as u32 - 2),
        "first {first:?} last {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_stream_is_not_reused() {
    let fake = crate::common::fake_upstream::FakeUpstream::start().await;
    let p = proxy_for(&fake, |_| {}).await;
    let token = alice_with_openai_key(&p).await;
    let chunks = chat_stream_chunks("openai/gpt-4o", true);
    fake.push(Behavior::DropMidStream {
        chunks: chunks[..2].to_vec(),
        delay: Duration::from_millis(10),
    });
    assert!(stream_request(&p, &token).await.text().await.is_err());
    // The client went away mid-stream: that connection is closed, not pooled either.
    fake.push(Behavior::Stream {
        chunks: chunks.clone(),
        delay: Duration::from_millis(200),
    });
    let mut resp = stream_request(&p, &token).await;
    assert!(resp.chunk().await.unwrap().is_some());
    drop(resp);
    assert!(fake.wait_for_disconnect(Duration::from_secs(1)).await);
    // The next requests get whole answers on fresh or healthy connections.
    for _ in 0..3 {
        let text = stream_request(&p, &token).await.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
}
