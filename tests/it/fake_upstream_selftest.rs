//! Self-tests for the fake Vercel AI Gateway in `common::fake_upstream`, driven directly
//! with hyper-util's legacy client (no proxy involved).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::common::fake_upstream::*;

type TestClient = Client<HttpConnector, Full<Bytes>>;

const T: Duration = Duration::from_secs(5);

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn request(method: Method, url: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

async fn send(client: &TestClient, method: Method, url: &str, body: &str) -> Response<Incoming> {
    tokio::time::timeout(T, client.request(request(method, url, body)))
        .await
        .expect("request timed out")
        .expect("request failed")
}

async fn post_json(client: &TestClient, url: &str, body: Value) -> Response<Incoming> {
    send(client, Method::POST, url, &body.to_string()).await
}

async fn body_string(response: Response<Incoming>) -> String {
    let bytes = tokio::time::timeout(T, response.into_body().collect())
        .await
        .expect("body timed out")
        .expect("body failed")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn body_json(response: Response<Incoming>) -> Value {
    serde_json::from_str(&body_string(response).await).unwrap()
}

fn header(response: &Response<Incoming>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .collect()
}

/// The `event:` names of an SSE body, in order.
fn sse_events(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn auto_chat_non_stream_and_recording() {
    let fake = FakeUpstream::start().await;
    assert_eq!(fake.base_url(), format!("http://{}/v1", fake.addr()));
    assert_eq!(fake.origin(), format!("http://{}", fake.addr()));

    let body = json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/chat/completions?trace=1", fake.base_url()))
        .header("content-type", "application/json")
        .header("authorization", "Bearer upstream-key")
        .header("x-test", "yes")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client().request(req).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type").unwrap(),
        "application/json"
    );
    assert_eq!(header(&response, "set-cookie").unwrap(), "upstream=1");
    assert_eq!(header(&response, "x-vercel-id").unwrap(), "fake");
    assert_eq!(header(&response, "connection").unwrap(), "keep-alive");
    let v = body_json(response).await;
    assert!(v["id"].as_str().unwrap().starts_with("gen_"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "openai/gpt-4o");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from fake");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18, "cost": 0.00042, "is_byok": true})
    );

    assert_eq!(fake.request_count(), 1);
    let recorded = fake.requests().remove(0);
    assert_eq!(recorded.method, Method::POST);
    assert_eq!(recorded.path, "/v1/chat/completions?trace=1");
    assert_eq!(recorded.version, Version::HTTP_11);
    assert_eq!(
        recorded.header("authorization").unwrap(),
        "Bearer upstream-key"
    );
    assert_eq!(recorded.header("X-Test").unwrap(), "yes");
    assert!(recorded.header("x-missing").is_none());
    assert_eq!(recorded.headers.get("x-test").unwrap(), "yes");
    assert_eq!(recorded.body, Bytes::from(body.to_string()));
    assert_eq!(recorded.json(), body);
}

#[tokio::test]
async fn auto_chat_stream_usage_only_when_requested() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/chat/completions", fake.base_url());

    for include_usage in [true, false] {
        let mut body =
            json!({"model": "anthropic/claude-sonnet-4.5", "stream": true, "messages": []});
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let response = post_json(&client(), &url, body).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "content-type").unwrap(),
            "text/event-stream"
        );
        assert_eq!(header(&response, "set-cookie").unwrap(), "upstream=1");
        let text = body_string(response).await;
        let data = sse_data(&text);
        assert_eq!(data.last().unwrap(), "[DONE]", "{text}");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks.len(), 4);
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hello from fake");
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "anthropic/claude-sonnet-4.5");
            assert!(c["id"].as_str().unwrap().starts_with("gen_"));
        }
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        if include_usage {
            assert_eq!(last["usage"]["total_tokens"], 18);
            assert_eq!(last["usage"]["cost"], 0.00042);
            assert_eq!(last["usage"]["is_byok"], true);
        } else {
            assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        }
    }
    // A completed stream is not a disconnect.
    assert_eq!(fake.disconnects(), 0);
    assert!(!fake.wait_for_disconnect(Duration::from_millis(50)).await);

    // The exported helper produces the same events.
    let helper = chat_stream_chunks("openai/gpt-4o", true);
    assert_eq!(helper.len(), 5);
    assert_eq!(helper[4], "data: [DONE]\n\n");
    assert!(helper[3].contains("\"usage\""));
    assert!(!chat_stream_chunks("openai/gpt-4o", false)[3].contains("\"usage\""));
}

#[tokio::test]
async fn stream_chunks_arrive_as_separate_timed_frames() {
    let fake = FakeUpstream::start().await;
    let chunks = vec![
        "data: 1\n\n".to_owned(),
        "data: 2\n\n".to_owned(),
        "data: 3\n\n".to_owned(),
    ];
    fake.push(Behavior::Stream {
        chunks: chunks.clone(),
        delay: Duration::from_millis(200),
    });

    let start = Instant::now();
    let response = send(
        &client(),
        Method::POST,
        &format!("{}/chat/completions", fake.base_url()),
        "{}",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type").unwrap(),
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut received = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push(start.elapsed());
            received.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    assert_eq!(received, chunks.concat());
    assert_eq!(arrivals.len(), 3, "{arrivals:?}");
    let (first, last) = (arrivals[0], arrivals[2]);
    assert!(first >= Duration::from_millis(150), "{arrivals:?}");
    assert!(last >= first + Duration::from_millis(300), "{arrivals:?}");
    assert_eq!(fake.disconnects(), 0);
}

#[tokio::test]
async fn status_json_and_custom_behaviors() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/chat/completions", fake.base_url());
    let rate_limited =
        r#"{"error":{"message":"Rate limit exceeded","type":"rate_limit_exceeded"}}"#;
    fake.push(Behavior::Status {
        status: 429,
        body: rate_limited.to_owned(),
        content_type: "application/json",
    });
    fake.push(Behavior::gateway_error(
        500,
        "internal_server_error",
        "boom",
    ));
    fake.push(Behavior::anthropic_error(
        400,
        "invalid_request_error",
        "bad",
    ));
    fake.push(Behavior::Json {
        status: 201,
        body: r#"{"ok":true}"#.to_owned(),
    });
    fake.push(Behavior::Custom {
        status: 503,
        headers: vec![("retry-after".to_owned(), "2".to_owned())],
        body: "down".to_owned(),
    });
    fake.push(Behavior::Status {
        status: 502,
        body: "<html>bad gateway</html>".to_owned(),
        content_type: "text/html",
    });

    let c = client();
    let r = send(&c, Method::POST, &url, "{}").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "set-cookie").unwrap(), "upstream=1");
    assert_eq!(body_string(r).await, rate_limited);

    let r = send(&c, Method::POST, &url, "{}").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body_json(r).await["error"]["type"], "internal_server_error");

    let r = send(&c, Method::POST, &url, "{}").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v = body_json(r).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["message"], "bad");

    let r = send(&c, Method::POST, &url, "{}").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "content-type").unwrap(), "application/json");
    assert_eq!(body_json(r).await, json!({"ok": true}));

    let r = send(&c, Method::POST, &url, "{}").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "retry-after").unwrap(), "2");
    assert_eq!(header(&r, "x-vercel-id").unwrap(), "fake");
    assert_eq!(body_string(r).await, "down");

    let r = send(&c, Method::POST, &url, "{}").await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header(&r, "content-type").unwrap(), "text/html");

    // Queue drained: back to Auto.
    let r = send(&c, Method::POST, &url, r#"{"model":"m"}"#).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(fake.request_count(), 7);
}

#[tokio::test]
async fn queue_is_fifo_then_default_applies() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/models", fake.base_url());
    fake.set_default(Behavior::Json {
        status: 418,
        body: "{}".to_owned(),
    });
    fake.push(Behavior::Json {
        status: 200,
        body: r#"{"n":1}"#.to_owned(),
    });
    fake.push(Behavior::Json {
        status: 200,
        body: r#"{"n":2}"#.to_owned(),
    });
    let c = client();
    assert_eq!(
        body_json(send(&c, Method::GET, &url, "").await).await["n"],
        1
    );
    assert_eq!(
        body_json(send(&c, Method::GET, &url, "").await).await["n"],
        2
    );
    assert_eq!(send(&c, Method::GET, &url, "").await.status().as_u16(), 418);
    assert_eq!(send(&c, Method::GET, &url, "").await.status().as_u16(), 418);
    fake.set_default(Behavior::Auto);
    assert_eq!(
        send(&c, Method::GET, &url, "").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn stall_holds_until_client_gives_up() {
    let fake = FakeUpstream::start().await;
    fake.push(Behavior::Stall);
    let url = format!("{}/chat/completions", fake.base_url());
    let c = client();
    let result = tokio::time::timeout(
        Duration::from_millis(300),
        c.request(request(Method::POST, &url, r#"{"model":"m"}"#)),
    )
    .await;
    assert!(result.is_err(), "stalled request must not complete");
    // Recorded even though never answered.
    let recorded = fake.wait_for_requests(1, T).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].json()["model"], "m");

    // Dropping the client (and with it the stalled connection) ends the server side.
    drop(c);
    let deadline = Instant::now() + T;
    while fake.connections_closed() < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.connections_closed(), 1);

    // The fake keeps serving afterwards.
    let r = send(&client(), Method::POST, &url, r#"{"model":"m"}"#).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn reset_closes_connection_without_response() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/chat/completions", fake.base_url());
    for c in [client(), h2c_client()] {
        fake.push(Behavior::Reset);
        let result = tokio::time::timeout(T, c.request(request(Method::POST, &url, "{}")))
            .await
            .expect("reset must not hang");
        let err = result.expect_err("reset must surface as a client error, not a response");
        assert!(!err.is_connect(), "{err:?}");
    }
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn drop_mid_stream_errors_the_client_body() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/chat/completions", fake.base_url());
    for c in [client(), h2c_client()] {
        fake.push(Behavior::DropMidStream {
            chunks: vec!["data: a\n\n".to_owned(), "data: b\n\n".to_owned()],
            delay: Duration::from_millis(20),
        });
        let response = send(&c, Method::POST, &url, "{}").await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut received = String::new();
        let error = loop {
            match tokio::time::timeout(T, body.frame())
                .await
                .expect("frame timed out")
            {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        received.push_str(std::str::from_utf8(&data).unwrap());
                    }
                }
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        assert!(
            error.is_some(),
            "body must end with an error, got clean end after {received:?}"
        );
        assert_eq!(received, "data: a\n\ndata: b\n\n");
    }
    // The fake ended those bodies itself: not client disconnects.
    assert_eq!(fake.disconnects(), 0);
}

async fn assert_client_drop_is_detected(c: TestClient) {
    let fake = FakeUpstream::start().await;
    fake.push(Behavior::Stream {
        chunks: (0..5).map(|i| format!("data: {i}\n\n")).collect(),
        delay: Duration::from_millis(300),
    });
    let response = send(
        &c,
        Method::POST,
        &format!("{}/chat/completions", fake.base_url()),
        "{}",
    )
    .await;
    let mut body = response.into_body();
    let first = tokio::time::timeout(T, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from("data: 0\n\n"));
    assert!(!fake.wait_for_disconnect(Duration::from_millis(10)).await);

    let dropped_at = Instant::now();
    drop(body);
    assert!(fake.wait_for_disconnect(Duration::from_secs(1)).await);
    let detected_after = dropped_at.elapsed();
    // Well before the next chunk was due (300 ms): detection does not wait for a write.
    assert!(
        detected_after < Duration::from_millis(250),
        "{detected_after:?}"
    );
    assert_eq!(fake.disconnects(), 1);
    // Already happened: returns true immediately.
    assert!(fake.wait_for_disconnect(Duration::ZERO).await);
}

#[tokio::test]
async fn client_drop_mid_stream_is_detected_http1() {
    assert_client_drop_is_detected(client()).await;
}

#[tokio::test]
async fn client_drop_mid_stream_is_detected_h2c() {
    assert_client_drop_is_detected(h2c_client()).await;
}

#[tokio::test]
async fn h2c_is_served() {
    let fake = FakeUpstream::start().await;
    let r = send(
        &h2c_client(),
        Method::GET,
        &format!("{}/models", fake.base_url()),
        "",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_2);
    assert!(r.headers().get("connection").is_none());
    assert_eq!(header(&r, "set-cookie").unwrap(), "upstream=1");
    assert_eq!(body_json(r).await, catalog_json());
    assert_eq!(fake.requests()[0].version, Version::HTTP_2);
    assert_eq!(fake.requests()[0].path, "/v1/models");
}

#[tokio::test]
async fn auto_embeddings() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/embeddings", fake.base_url());
    let c = client();
    for (input, expected) in [
        (json!("one"), 1),
        (json!(["a", "b", "c"]), 3),
        (json!([1, 2, 3]), 1),
    ] {
        let model = "openai/text-embedding-3-small";
        let v = body_json(post_json(&c, &url, json!({"model": model, "input": input})).await).await;
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], model);
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), expected);
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            assert_eq!(d["embedding"].as_array().unwrap().len(), 3);
        }
        assert_eq!(v["usage"], json!({"prompt_tokens": 5, "total_tokens": 5}));
    }
}

#[tokio::test]
async fn auto_responses() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/responses", fake.base_url());
    let c = client();

    let v = body_json(post_json(&c, &url, json!({"model": "openai/gpt-4o", "input": "hi"})).await)
        .await;
    assert_eq!(v["object"], "response");
    assert_eq!(v["model"], "openai/gpt-4o");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello from fake");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 9, "output_tokens": 4, "total_tokens": 13})
    );

    let r = post_json(
        &c,
        &url,
        json!({"model": "openai/gpt-4o", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(header(&r, "content-type").unwrap(), "text/event-stream");
    let text = body_string(r).await;
    assert_eq!(
        sse_events(&text),
        [
            "response.created",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.completed"
        ]
    );
    let data: Vec<Value> = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data[1]["delta"], "Hello");
    assert_eq!(data[3]["type"], "response.completed");
    assert_eq!(data[3]["response"]["usage"]["total_tokens"], 13);
}

#[tokio::test]
async fn auto_full_events_responses() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Behavior::AutoFullEvents);
    let url = format!("{}/responses", fake.base_url());
    let c = client();
    let r = post_json(
        &c,
        &url,
        json!({"model": "openai/gpt-4o", "input": "hi", "stream": true}),
    )
    .await;
    let text = body_string(r).await;
    assert_eq!(
        sse_events(&text),
        [
            "response.created",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let data: Vec<Value> = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["sequence_number"], i, "{d}");
    }
    assert_eq!(data[1]["item"]["status"], "in_progress");
    assert_eq!(data[3]["item_id"], data[1]["item"]["id"]);
    assert_eq!(data[5]["text"], "Hello from fake");
    assert_eq!(data[7]["item"]["content"][0]["text"], "Hello from fake");
    assert_eq!(data[8]["response"]["usage"]["total_tokens"], 13);
    // Everything else is Auto's.
    let v = body_json(post_json(&c, &url, json!({"model": "openai/gpt-4o", "input": "hi"})).await)
        .await;
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello from fake");
}

#[tokio::test]
async fn auto_anthropic_messages() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/v1/messages", fake.origin());
    let c = client();
    let body = json!({"model": "anthropic/claude-3-haiku", "max_tokens": 10, "messages": []});

    let v = body_json(post_json(&c, &url, body.clone()).await).await;
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello from fake"}])
    );
    assert_eq!(v["model"], "anthropic/claude-3-haiku");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"], json!({"input_tokens": 12, "output_tokens": 6}));

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let text = body_string(post_json(&c, &url, streaming).await).await;
    assert_eq!(
        sse_events(&text),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 12);
    assert_eq!(data[2]["delta"]["type"], "text_delta");
    assert_eq!(data[5]["usage"]["output_tokens"], 6);

    let v = body_json(post_json(&c, &format!("{url}/count_tokens"), body).await).await;
    assert_eq!(v, json!({"input_tokens": 12}));
}

#[tokio::test]
async fn auto_models_catalog() {
    let fake = FakeUpstream::start().await;
    let c = client();
    let catalog = catalog_json();
    let ids: Vec<&str> = catalog["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "openai/text-embedding-3-small",
        "anthropic/claude-sonnet-4.5",
        "anthropic/claude-3-haiku",
        "google/gemini-2.5-flash",
        "xai/grok-3",
        "mistral/mistral-large",
    ] {
        assert!(ids.contains(&id), "{id} missing");
    }
    for m in catalog["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
        assert!(m["pricing"]["input"].is_string());
        assert!(m["pricing"]["output"].is_string());
        let expected_type = if m["id"] == "openai/text-embedding-3-small" {
            "embedding"
        } else {
            "language"
        };
        assert_eq!(m["type"], expected_type);
    }

    let r = send(&c, Method::GET, &format!("{}/models", fake.base_url()), "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_json(r).await, catalog);

    let r = send(
        &c,
        Method::GET,
        &format!("{}/models/xai/grok-3", fake.base_url()),
        "",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v = body_json(r).await;
    assert_eq!(v["id"], "xai/grok-3");
    assert_eq!(v["owned_by"], "xai");

    let r = send(
        &c,
        Method::GET,
        &format!("{}/models/nope/nope", fake.base_url()),
        "",
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_json(r).await["error"]["type"], "model_not_found");
}

#[tokio::test]
async fn direct_mode_paths_and_unknown_routes() {
    let fake = FakeUpstream::start().await;
    let c = client();
    let r = post_json(
        &c,
        &format!("{}/chat/completions", fake.origin()),
        json!({"model": "gpt-4o"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_json(r).await["model"], "gpt-4o");
    let r = send(&c, Method::GET, &format!("{}/models", fake.origin()), "").await;
    assert_eq!(body_json(r).await, catalog_json());
    assert_eq!(fake.requests()[0].path, "/chat/completions");

    for (method, path) in [
        (Method::GET, "/v1/nope"),
        (Method::POST, "/v1/models"),
        (Method::GET, "/v1/chat/completions"),
        (Method::GET, "/v1"),
        (Method::GET, "/v1x/models"),
    ] {
        let r = send(&c, method, &format!("{}{path}", fake.origin()), "").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            body_json(r).await,
            json!({"error": {"message": "not found", "type": "not_found"}})
        );
    }

    let r = send(
        &c,
        Method::POST,
        &format!("{}/chat/completions", fake.base_url()),
        "not json",
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(r).await["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn wait_for_requests_wakes_on_arrival_and_times_out() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/models", fake.base_url());

    let started = Instant::now();
    assert!(fake
        .wait_for_requests(1, Duration::from_millis(100))
        .await
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));

    let task_url = url.clone();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = client();
        for _ in 0..2 {
            send(&c, Method::GET, &task_url, "").await;
        }
    });
    let started = Instant::now();
    let recorded = fake.wait_for_requests(2, T).await;
    assert_eq!(recorded.len(), 2);
    assert!(started.elapsed() < Duration::from_secs(2));
    sender.await.unwrap();
}

#[tokio::test]
async fn dropping_the_fake_stops_the_server() {
    let fake = FakeUpstream::start().await;
    let addr = fake.addr();
    drop(fake);
    let deadline = Instant::now() + T;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(_) => panic!("fake still accepting connections after drop"),
        }
    }
}
