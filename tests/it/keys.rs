//! The self-service key API through HTTP, on both backends: lifecycle for every provider
//! shape, masking, isolation between users, encryption at rest, SPEC §5 errors, concurrency.

use crate::both_backends;
use crate::common::{assert_error, contains, Backend, TestProxy};
use reqwest::Method;
use serde_json::{json, Value};

fn creds(provider: &str, secret: &str) -> Value {
    match provider {
        "vertex" => json!({"project": "proj-1", "location": "us-central1",
            "googleCredentials": {"clientEmail": "sa@proj-1.iam.gserviceaccount.com",
                                  "privateKey": format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n")}}),
        "bedrock" => {
            json!({"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": secret, "region": "us-east-1"})
        }
        "azure" => {
            json!({"apiKey": secret, "resourceName": "my-resource", "modelMappings": {"gpt-4o": "prod-4o"}})
        }
        _ => json!({"apiKey": secret}),
    }
}

const PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "google",
    "xai",
    "groq",
    "mistral",
    "deepseek",
    "vertex",
    "bedrock",
    "azure",
];

async fn key_lifecycle(backend: Backend) {
    let p = TestProxy::start(backend).await;
    let (_, token) = p.user("alice").await;

    let (status, providers) = p.get("/api/providers", &token).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, PROVIDERS);

    let mut created = Vec::new();
    for provider in PROVIDERS {
        let secret = format!("sk-secret-{provider}-PLAINTEXT-0123456789-wxyz");
        let (status, key) = p
            .post("/api/keys", &token, json!({"provider": provider, "credentials": creds(provider, &secret), "label": format!("{provider} key")}))
            .await;
        assert_eq!(status, 201, "{provider}: {key}");
        assert_eq!(key["provider"], *provider);
        assert_eq!(key["is_active"], true);
        let text = key.to_string();
        assert!(!text.contains(&secret), "secret leaked: {text}");
        assert!(key.get("credentials").is_none() && key.get("encrypted_key").is_none());
        created.push((
            provider.to_string(),
            key["id"].as_str().unwrap().to_string(),
            secret,
        ));
    }
    // Several keys for one provider.
    let (status, second) = p
        .post("/api/keys", &token, json!({"provider": "openai", "credentials": {"apiKey": "sk-second-openai-key-00000000abcd"}}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(second["masked_hint"], "sk-...abcd");

    let (status, list) = p.get("/api/keys", &token).await;
    assert_eq!(status, 200);
    let list = list["data"].as_array().unwrap().clone();
    assert_eq!(list.len(), PROVIDERS.len() + 1);
    assert_eq!(list[0]["id"], second["id"], "newest first");
    assert_eq!(list.iter().filter(|k| k["provider"] == "openai").count(), 2);
    let listed = serde_json::to_string(&list).unwrap();
    for (provider, _, secret) in &created {
        assert!(
            !listed.contains(secret.as_str()),
            "{provider} secret in list"
        );
        // at most the last 4 characters of the secret appear
        assert!(
            !listed.contains(&secret[secret.len() - 5..]),
            "{provider}: more than 4 chars shown"
        );
    }
    let openai = list
        .iter()
        .find(|k| k["provider"] == "openai" && k["id"] != second["id"])
        .unwrap();
    assert_eq!(openai["masked_hint"], "sk-...wxyz");
    let vertex = list.iter().find(|k| k["provider"] == "vertex").unwrap();
    assert_eq!(vertex["masked_hint"], "proj-1 (us-central1)");

    // Deactivate, relabel, reactivate.
    let id = &created[0].1;
    let (status, k) = p
        .call(
            Method::PATCH,
            &format!("/api/keys/{id}"),
            &token,
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(status, 200, "{k}");
    assert_eq!(k["is_active"], false);
    assert_eq!(k["label"], "openai key");
    let (status, k) = p
        .call(
            Method::PATCH,
            &format!("/api/keys/{id}"),
            &token,
            Some(json!({"label": null})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(k["label"], Value::Null);
    assert_eq!(k["is_active"], false);

    // Delete.
    let (status, body) = p
        .call(Method::DELETE, &format!("/api/keys/{id}"), &token, None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = p
        .call(Method::DELETE, &format!("/api/keys/{id}"), &token, None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (_, list) = p.get("/api/keys", &token).await;
    assert_eq!(list["data"].as_array().unwrap().len(), PROVIDERS.len());

    // Audit trail of the caller, without secrets.
    let (status, audit) = p.get("/api/audit", &token).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "key.created").count(),
        PROVIDERS.len() + 1
    );
    assert_eq!(actions.iter().filter(|a| **a == "key.updated").count(), 2);
    assert_eq!(actions.iter().filter(|a| **a == "key.deleted").count(), 1);
    assert!(actions.contains(&"token.created"));
    let audit_text = audit.to_string();
    for (_, _, secret) in &created {
        assert!(!audit_text.contains(secret.as_str()));
    }
    assert!(!audit_text.contains(&token));
}
both_backends!(key_lifecycle);

async fn keys_are_private_to_their_owner(backend: Backend) {
    let p = TestProxy::start(backend).await;
    let (_, alice) = p.user("alice").await;
    let (_, bob) = p.user("bob").await;
    let (_, key) = p
        .post(
            "/api/keys",
            &alice,
            json!({"provider": "openai", "credentials": {"apiKey": "sk-alice-0000000000000000"}}),
        )
        .await;
    let id = key["id"].as_str().unwrap();
    let (_, bobs) = p.get("/api/keys", &bob).await;
    assert_eq!(bobs["data"], json!([]));
    let (status, body) = p
        .call(Method::DELETE, &format!("/api/keys/{id}"), &bob, None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = p
        .call(
            Method::PATCH,
            &format!("/api/keys/{id}"),
            &bob,
            Some(json!({"is_active": false})),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = p
        .call(Method::DELETE, "/api/keys/not-a-uuid", &bob, None)
        .await;
    assert_error(status, &body, 404, "not_found");
    // Alice's key is untouched.
    let (_, list) = p.get("/api/keys", &alice).await;
    assert_eq!(list["data"][0]["is_active"], true);
    // Bob's audit trail does not show Alice's events.
    let (_, audit) = p.get("/api/audit", &bob).await;
    assert!(!audit.to_string().contains(id));
}
both_backends!(keys_are_private_to_their_owner);

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let p = TestProxy::start_with(crate::common::TestDb::new(backend).await, |env| {
        env.insert("BYOK_LIMITS__MAX_BODY_BYTES".into(), "1000".into());
    })
    .await;
    let (_, token) = p.user("alice").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"provider": "nope", "credentials": {"apiKey": "x"}}),
            "unknown_provider",
        ),
        (
            json!({"provider": "openai", "credentials": {}}),
            "invalid_request",
        ),
        (
            json!({"provider": "openai", "credentials": {"apiKey": ""}}),
            "invalid_request",
        ),
        (
            json!({"provider": "openai", "credentials": {"api_key": "sk-typo-secret-value"}}),
            "invalid_request",
        ),
        (
            json!({"provider": "openai", "credentials": "sk-just-a-string"}),
            "invalid_request",
        ),
        (
            json!({"provider": "vertex", "credentials": {"project": "p", "location": "l"}}),
            "invalid_request",
        ),
        (
            json!({"provider": "bedrock", "credentials": {"accessKeyId": "AKIA"}}),
            "invalid_request",
        ),
        (
            json!({"provider": "azure", "credentials": {"apiKey": "k"}}),
            "invalid_request",
        ),
        (json!({"credentials": {"apiKey": "x"}}), "invalid_request"),
        (
            json!({"provider": 5, "credentials": {"apiKey": "x"}}),
            "invalid_request",
        ),
        (
            json!({"provider": "openai", "credentials": {"apiKey": "x"}, "label": true}),
            "invalid_request",
        ),
        (
            json!({"provider": "openai", "credentials": {"apiKey": "sk-in-an-extra-field"}, "extra": 1}),
            "invalid_request",
        ),
        (json!([1, 2]), "invalid_request"),
    ];
    for (body, code) in cases {
        let (status, resp) = p.post("/api/keys", &token, body.clone()).await;
        assert_error(status, &resp, 400, code);
        assert!(!resp.to_string().contains("sk-"), "echoed a value: {resp}");
    }
    // Not JSON at all.
    let resp = p
        .http
        .post(p.url("/api/keys"))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_error(400, &body, 400, "invalid_request");
    // Too large.
    let big = json!({"provider": "openai", "credentials": {"apiKey": "x".repeat(2000)}});
    let (status, resp) = p.post("/api/keys", &token, big).await;
    assert_error(status, &resp, 413, "request_too_large");
    // Bad PATCH bodies.
    let (_, key) = p
        .post(
            "/api/keys",
            &token,
            json!({"provider": "openai", "credentials": {"apiKey": "sk-good-key-000000000000"}}),
        )
        .await;
    let id = key["id"].as_str().unwrap();
    let (status, resp) = p
        .call(
            Method::PATCH,
            &format!("/api/keys/{id}"),
            &token,
            Some(json!({"is_active": "yes"})),
        )
        .await;
    assert_error(status, &resp, 400, "invalid_request");
    // Nothing changed: exactly the one good key, still active.
    let (_, list) = p.get("/api/keys", &token).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["is_active"], true);
    // Wrong method.
    let (status, resp) = p.call(Method::PUT, "/api/keys", &token, None).await;
    assert_error(status, &resp, 405, "method_not_allowed");
}
both_backends!(bad_input_is_refused_and_changes_nothing);

async fn credentials_are_encrypted_at_rest(backend: Backend) {
    let p = TestProxy::start(backend).await;
    let (_, token) = p.user("alice").await;
    let secrets = [
        "sk-PLAINTEXT-MARKER-openai-111111",
        "PLAINTEXT-MARKER-bedrock-secret-2222",
    ];
    let (s, _) = p
        .post(
            "/api/keys",
            &token,
            json!({"provider": "openai", "credentials": {"apiKey": secrets[0]}}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = p
        .post("/api/keys", &token, json!({"provider": "bedrock", "credentials": {"accessKeyId": "AKIAEXAMPLE0000", "secretAccessKey": secrets[1]}}))
        .await;
    assert_eq!(s, 201);
    let raw = p.db.raw_bytes().await;
    assert!(!raw.is_empty());
    for s in secrets {
        assert!(
            !contains(&raw, s.as_bytes()),
            "plaintext found in the database"
        );
    }
    assert!(!contains(&raw, b"PLAINTEXT-MARKER"));
    assert!(!contains(&raw, token.as_bytes()), "token stored in clear");
}
both_backends!(credentials_are_encrypted_at_rest);

async fn concurrent_adds_and_deletes_stay_consistent(backend: Backend) {
    let p = std::sync::Arc::new(TestProxy::start(backend).await);
    let (_, token) = p.user("alice").await;
    // 100 adds, then 100 requests mixing deletes of half of them with 50 more adds: 200 in all.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (p, token) = (p.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let (s, k) = p.post("/api/keys", &token, json!({"provider": "openai", "credentials": {"apiKey": format!("sk-concurrent-{i:04}-xxxxxxxxxxxx")}, "label": format!("k{i}")})).await;
            assert_eq!(s, 201, "{k}");
            k["id"].as_str().unwrap().to_string()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate().take(50) {
        let (p2, token2, id) = (p.clone(), token.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let (s, b) = p2
                .call(Method::DELETE, &format!("/api/keys/{id}"), &token2, None)
                .await;
            assert_eq!(s, 204, "{i}: {b}");
            None
        }));
        let (p, token) = (p.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let (s, k) = p.post("/api/keys", &token, json!({"provider": "anthropic", "credentials": {"apiKey": format!("sk-ant-more-{i:04}-yyyyyyyyyy")}})).await;
            assert_eq!(s, 201, "{k}");
            Some(k["id"].as_str().unwrap().to_string())
        }));
    }
    let mut added = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            added.push(id);
        }
    }
    let (_, list) = p.get("/api/keys", &token).await;
    let mut got: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = ids[50..].iter().cloned().chain(added).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), 100);
    assert_eq!(got, want, "lost or duplicated rows");
    let (_, audit) = p.get("/api/audit?limit=1000", &token).await;
    let n = |a: &str| {
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == a)
            .count()
    };
    assert_eq!(n("key.created"), 150);
    assert_eq!(n("key.deleted"), 50);
}
both_backends!(concurrent_adds_and_deletes_stay_consistent);
