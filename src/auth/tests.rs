use super::*;
use crate::store::{AuditEntry, UserPatch};
use http::HeaderValue;
use proptest::prelude::*;

fn audit() -> AuditEntry {
    AuditEntry {
        actor_user_id: None,
        action: "test",
        target: None,
        detail: serde_json::json!({}),
        request_id: None,
        remote_addr: None,
    }
}

fn ctx() -> RequestCtx {
    RequestCtx::new(&HeaderMap::new(), "127.0.0.1:1".parse().unwrap())
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// Every outcome of the authenticate stage, against a real (SQLite) store.
#[tokio::test]
async fn outcomes_of_the_authenticate_stage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(
        &crate::config::DatabaseUrl::Sqlite(dir.path().join("a.db")),
        1,
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let admin = Secret::new("a".repeat(32));
    let mut config = crate::config::Config::defaults().unwrap();
    config.admin_token = Some(admin.clone());
    config.auth_failure_window = Duration::from_secs(60);
    let auth = Authenticator::new(store.clone(), &config, metrics.clone());
    let user = store.create_user("u", None, audit()).await.unwrap();
    let good =
        crate::accounts::create_token(&store, &user, None, None, Default::default(), audit())
            .await
            .unwrap();
    let ctx = ctx();
    // Open routes look at nothing.
    assert!(matches!(
        auth.authenticate(Access::Open, &Method::GET, &HeaderMap::new(), &ctx)
            .await,
        Ok(Principal::Anonymous)
    ));
    // The admin token on /admin only.
    assert!(matches!(
        auth.authenticate(Access::Admin, &Method::GET, &bearer(admin.expose()), &ctx)
            .await,
        Ok(Principal::Admin(None))
    ));
    assert!(matches!(
        auth.authenticate(Access::App, &Method::GET, &bearer(admin.expose()), &ctx)
            .await,
        Err(ProxyError::InvalidApiKey)
    ));
    assert!(matches!(
        auth.authenticate(
            Access::Admin,
            &Method::GET,
            &bearer(good.token.expose()),
            &ctx
        )
        .await,
        Err(ProxyError::InvalidAdminToken)
    ));
    // A valid app token, by each header.
    for (name, value) in [
        ("authorization", format!("Bearer {}", good.token.expose())),
        ("x-api-key", good.token.expose().clone()),
        ("api-key", good.token.expose().clone()),
    ] {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HeaderName::from_static(name),
            HeaderValue::from_str(&value).unwrap(),
        );
        match auth.authenticate(Access::App, &Method::GET, &h, &ctx).await {
            Ok(Principal::User(c)) => assert_eq!(c.user_id, user.id),
            other => panic!("{name}: {other:?}"),
        }
    }
    // Missing, malformed, unknown.
    for h in [
        HeaderMap::new(),
        bearer("x"),
        bearer(&format!("bkp_{}", "A".repeat(43))),
    ] {
        assert!(matches!(
            auth.authenticate(Access::App, &Method::GET, &h, &ctx).await,
            Err(ProxyError::InvalidApiKey)
        ));
    }
    // A disabled user: 403; then revoked: 401.
    store
        .update_user(
            user.id,
            UserPatch {
                disabled: Some(true),
                ..UserPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    auth.tokens.invalidate_user(user.id);
    assert!(matches!(
        auth.authenticate(
            Access::App,
            &Method::GET,
            &bearer(good.token.expose()),
            &ctx
        )
        .await,
        Err(ProxyError::UserDisabled)
    ));
    store.revoke_token(good.record.id, audit()).await.unwrap();
    auth.tokens.invalidate_user(user.id);
    assert!(matches!(
        auth.authenticate(
            Access::App,
            &Method::GET,
            &bearer(good.token.expose()),
            &ctx
        )
        .await,
        Err(ProxyError::InvalidApiKey)
    ));
    // Each failure was counted by reason and lands in one aggregated audit row.
    let count = |r: &str| metrics.auth_failures.with_label_values(&[r]).get();
    // (The admin token sent as an app token is not token-shaped: malformed.)
    assert_eq!(
        (count("admin_token"), count("missing"), count("malformed")),
        (1, 1, 2)
    );
    assert_eq!((count("unknown_token"), count("user_disabled")), (1, 1));
    assert_eq!(count("token_revoked"), 1);
    auth.flush_failures().await;
    let rows = store
        .list_audit(crate::store::AuditFilter {
            user: None,
            limit: 100,
        })
        .await
        .unwrap();
    let total: u64 = rows
        .iter()
        .filter(|r| r.action == "auth.failed")
        .map(|r| r.detail["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 7);
}

proptest! {
    /// Any header bytes: extraction never panics, and what it returns is trimmed text
    /// taken from one of the three headers.
    #[test]
    fn token_extraction_never_panics(
        auth in proptest::collection::vec(any::<u8>(), 0..80),
        key in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&auth) {
            h.insert(http::header::AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_bytes(&key) {
            h.insert("x-api-key", v);
        }
        if let Some(t) = extract_token(&h) {
            let t = t.expose();
            prop_assert_eq!(t.trim(), t.as_str());
            let a = String::from_utf8_lossy(&auth);
            let k = String::from_utf8_lossy(&key);
            prop_assert!(a.contains(t.as_str()) || k.contains(t.as_str()));
            // Only token-shaped strings ever reach a hash and a lookup.
            if looks_like_token(t) {
                prop_assert!(t.len() == 47 && t.starts_with("bkp_"));
            }
        }
    }
}

#[test]
fn a_session_caller_prints_no_credential() {
    let via = Via::Session {
        id_hash: [7u8; 32],
        csrf: "csrf-value-secret".into(),
    };
    let text = format!("{via:?}");
    assert!(
        !text.contains("csrf-value-secret") && !text.contains("7, 7"),
        "{text}"
    );
}
