use super::*;

fn env(pairs: &[(&str, &str)]) -> EnvMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_valid() {
    let c = Config::defaults().unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.database.url, DatabaseUrl::Sqlite("./data/byok.db".into()));
    assert_eq!(c.upstream.mode, UpstreamMode::Gateway);
    assert_eq!(
        c.upstream.gateway_base_url,
        "https://ai-gateway.vercel.sh/v1"
    );
    assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
    assert!(c.crypto.master_key.is_none());
}

#[test]
fn shipped_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/byok-proxy.toml");
    Config::load(Some(&path), &EnvMap::new()).unwrap();
}

#[test]
fn env_overrides_file_and_defaults() {
    let c = Config::load(
        None,
        &env(&[
            ("BYOK_LIMITS__BURST", "7"),
            ("BYOK_UPSTREAM__FIRST_BYTE_TIMEOUT", "500ms"),
            ("BYOK_DATABASE__URL", "postgres://u@127.0.0.1/db"),
            ("BYOK_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef"),
            ("BYOK_METRICS__ENABLED", "false"),
            ("BYOK_LISTEN", "127.0.0.1:9000"),
            ("BYOK_TEST_DATABASE_URL", "ignored: no section separator"),
        ]),
    )
    .unwrap();
    assert_eq!(c.limits.burst, 7);
    assert_eq!(c.upstream.first_byte_timeout, Duration::from_millis(500));
    assert_eq!(
        c.database.url,
        DatabaseUrl::Postgres("postgres://u@127.0.0.1/db".into())
    );
    assert_eq!(
        c.admin_token.unwrap().expose(),
        "0123456789abcdef0123456789abcdef"
    );
    assert!(!c.metrics_enabled);
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("no gateway key"), "{:?}", c.warnings);
    let c = Config::load(None, &env(&[("BYOK_LISTN", "127.0.0.1:1")])).unwrap();
    assert!(c.warnings[0].contains("BYOK_LISTN"), "{:?}", c.warnings);
}

#[test]
fn short_admin_token_is_refused_without_echoing_it() {
    let short = "a".repeat(31);
    let err = Config::load(None, &env(&[("BYOK_ADMIN_TOKEN", short.as_str())])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("admin.token") && msg.contains("BYOK_ADMIN_TOKEN"),
        "{msg}"
    );
    assert!(msg.contains("at least 32"), "{msg}");
    assert!(!msg.contains(&short), "{msg}");
    let ok = "a".repeat(32);
    assert!(Config::load(None, &env(&[("BYOK_ADMIN_TOKEN", ok.as_str())])).is_ok());
}

#[test]
fn server_limits_and_system_credentials() {
    let c = Config::defaults().unwrap();
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(c.server.max_connections, 10_000);
    assert_eq!(
        c.upstream.system_credentials,
        crate::config::SystemCredentials::Deny
    );
    let c = Config::load(
        None,
        &env(&[
            ("BYOK_UPSTREAM__GATEWAY__SYSTEM_CREDENTIALS", "allow"),
            ("BYOK_SERVER__IDLE_TIMEOUT", "5s"),
            ("AI_GATEWAY_API_KEY", "gw"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.upstream.system_credentials,
        crate::config::SystemCredentials::Allow
    );
    assert_eq!(c.server.idle_timeout, Duration::from_secs(5));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    for (var, value) in [
        ("BYOK_UPSTREAM__GATEWAY__SYSTEM_CREDENTIALS", "sometimes"),
        ("BYOK_SERVER__BODY_READ_TIMEOUT", "0s"),
        ("BYOK_SERVER__MAX_CONNECTIONS", "0"),
        ("BYOK_LIMITS__MAX_BUFFERED_BYTES", "1"),
    ] {
        let err = Config::load(None, &env(&[(var, value)])).unwrap_err();
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn unknown_key_is_refused_with_its_name() {
    let e = Config::load(None, &env(&[("BYOK_LIMITS__BRUST", "7")])).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("brust"), "{msg}");
    assert!(msg.contains("BYOK_LIMITS__BRUST"), "{msg}");
}

#[test]
fn bad_values_name_the_setting() {
    let e = Config::load(None, &env(&[("BYOK_LIMITS__BURST", "many")])).unwrap_err();
    assert!(e.to_string().contains("limits.burst"), "{e}");
    let e = Config::load(None, &env(&[("BYOK_UPSTREAM__IDLE_TIMEOUT", "soon")])).unwrap_err();
    assert!(e.to_string().contains("upstream.idle_timeout"), "{e}");
    let e = Config::load(None, &env(&[("BYOK_DATABASE__URL", "mysql://x")])).unwrap_err();
    assert!(e.to_string().contains("database.url"), "{e}");
}

#[test]
fn short_master_key_is_refused_without_echoing_it() {
    let e = Config::load(None, &env(&[("BYOK_MASTER_KEY", "c2hvcnQta2V5")])).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("crypto.master_key"), "{msg}");
    assert!(msg.contains("32 bytes"), "{msg}");
    assert!(!msg.contains("c2hvcnQta2V5"), "{msg}");
}

#[test]
fn file_layer_applies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9999\"\n[models.aliases]\n\"gpt-4o\" = \"openai/gpt-4o\"\n",
    )
    .unwrap();
    let c = Config::load(Some(&path), &EnvMap::new()).unwrap();
    assert_eq!(c.listen.port(), 9999);
    assert_eq!(c.models.aliases["gpt-4o"], "openai/gpt-4o");
    std::fs::write(&path, "[models.aliases]\n\"gpt-4o\" = \"gpt-4o\"\n").unwrap();
    assert!(Config::load(Some(&path), &EnvMap::new()).is_err());
}

#[test]
fn secret_settings_are_never_echoed() {
    for (var, value) in [
        ("BYOK_CRYPTO__OLD_KEYS", "sk-not-a-list-SECRET"),
        ("BYOK_ADMIN__TOKEN", "[\"SECRET-in-a-list\"]"),
    ] {
        let e = Config::load(None, &env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRET"), "{e}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const VARS: &[&str] = &[
        "BYOK_LISTEN",
        "BYOK_MASTER_KEY",
        "BYOK_ADMIN_TOKEN",
        "AI_GATEWAY_API_KEY",
        "BYOK_LIMITS__BURST",
        "BYOK_LIMITS__MAX_BODY_BYTES",
        "BYOK_SERVER__IDLE_TIMEOUT",
        "BYOK_UPSTREAM__MODE",
        "BYOK_UPSTREAM__GATEWAY__SYSTEM_CREDENTIALS",
        "BYOK_MODELS__ALIASES",
        "BYOK_MODELS__SERVING_PROVIDERS",
        "BYOK_CRYPTO__OLD_KEYS",
        "BYOK_METRICS__ENABLED",
        "BYOK_NOPE__X",
        "BYOK_X",
    ];

    proptest! {
        /// Any environment: the loader never panics, and an error never echoes the value of
        /// a secret setting.
        #[test]
        fn any_environment_loads_or_names_the_setting(
            vars in proptest::collection::vec(
                (proptest::sample::select(VARS.to_vec()), "[ -~]{0,40}"),
                0..6,
            )
        ) {
            let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let map = env(&pairs);
            if let Err(e) = Config::load(None, &map) {
                let msg = e.to_string();
                for (k, v) in &map {
                    let secret = matches!(k.as_str(), "BYOK_MASTER_KEY" | "BYOK_ADMIN_TOKEN" | "AI_GATEWAY_API_KEY" | "BYOK_CRYPTO__OLD_KEYS");
                    if secret && v.len() >= 6 {
                        prop_assert!(!msg.contains(v.as_str()), "{msg}");
                    }
                }
                prop_assert!(msg.contains("setting") || msg.contains("config"), "{msg}");
            }
        }
    }
}

#[test]
fn web_sign_in_settings() {
    let c = Config::defaults().unwrap();
    assert!(c.auth.oidc.is_none());
    assert_eq!(c.auth.session_ttl, Duration::from_secs(12 * 3600));
    assert_eq!(c.auth.session_idle_timeout, Duration::from_secs(2 * 3600));
    let base = [
        ("BYOK_AUTH__OIDC__ISSUER_URL", "https://login.example.com"),
        ("BYOK_AUTH__OIDC__CLIENT_ID", "byok"),
        ("BYOK_AUTH__OIDC__CLIENT_SECRET", "s3cret-SECRET"),
        (
            "BYOK_AUTH__OIDC__ALLOWED_EMAIL_DOMAINS",
            "[\"Example.COM\", \"@corp.example\"]",
        ),
        ("BYOK_AUTH__OIDC__ADMIN_EMAILS", "[\"Boss@Example.com\"]"),
        ("BYOK_AUTH__SESSION_IDLE_TIMEOUT", "30m"),
    ];
    let c = Config::load(None, &env(&base)).unwrap();
    let o = c.auth.oidc.unwrap();
    assert_eq!(o.scopes, ["openid", "email", "profile"]);
    assert_eq!(o.allowed_email_domains, ["example.com", "corp.example"]);
    assert_eq!(o.admin_emails, ["boss@example.com"]);
    assert_eq!(o.name, "login.example.com");
    assert_eq!(o.client_secret.unwrap().expose(), "s3cret-SECRET");
    assert_eq!(c.auth.session_idle_timeout, Duration::from_secs(1800));
    // Scopes without openid, or without email while domains are checked, are refused.
    for scopes in ["[\"email\"]", "[\"openid\"]"] {
        let mut e = base.to_vec();
        e.push(("BYOK_AUTH__OIDC__SCOPES", scopes));
        let err = Config::load(None, &env(&e)).unwrap_err().to_string();
        assert!(err.contains("auth.oidc.scopes"), "{err}");
    }
    // A client secret of the wrong type is refused without echoing it.
    let mut e = base.to_vec();
    e[2] = ("BYOK_AUTH__OIDC__CLIENT_SECRET", "[\"hunter2-in-a-list\"]");
    let err = Config::load(None, &env(&e)).unwrap_err().to_string();
    assert!(
        err.contains("auth.oidc.client_secret") && !err.contains("hunter2"),
        "{err}"
    );
    // An issuer that is not a URL, a zero timeout.
    let err = Config::load(
        None,
        &env(&[
            ("BYOK_AUTH__OIDC__ISSUER_URL", "accounts.google.com"),
            ("BYOK_AUTH__OIDC__CLIENT_ID", "x"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("auth.oidc.issuer_url"), "{err}");
    let err = Config::load(None, &env(&[("BYOK_AUTH__SESSION_TTL", "0s")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.session_ttl"), "{err}");
}
