use super::*;
use proptest::prelude::*;

fn serving() -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    for (creator, list) in [
        ("anthropic", &["anthropic", "bedrock", "vertex"][..]),
        ("google", &["google", "vertex"][..]),
        ("openai", &["openai", "azure"][..]),
        ("meta", &["groq", "bedrock"][..]),
    ] {
        m.insert(
            creator.to_string(),
            list.iter().map(|s| s.to_string()).collect(),
        );
    }
    m
}

fn deny(serving: &BTreeMap<String, Vec<String>>) -> Policy<'_> {
    Policy {
        serving_providers: serving,
        system_credentials: SystemCredentials::Deny,
    }
}

fn keys(list: &'static [&'static str]) -> impl Fn(&str) -> bool {
    move |p| list.contains(&p)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_fallback_without_a_key_is_refused_naming_it() {
    let s = serving();
    // The issue's probe: an OpenAI-only user, an Anthropic primary, an OpenAI fallback.
    let r = plan(
        &deny(&s),
        &Routing {
            models: &["anthropic/claude-sonnet-4", "openai/gpt-4o"],
            only: None,
            order: None,
        },
        keys(&["openai"]),
    );
    assert_eq!(
        r,
        Err(Refusal::NoKey {
            model: "anthropic/claude-sonnet-4".into(),
            allowed: strings(&["anthropic", "bedrock", "vertex"]),
            narrowed_by_only: false,
        })
    );
    // And the other way round: the fallback is the one without a key.
    let r = plan(
        &deny(&s),
        &Routing {
            models: &["openai/gpt-4o", "meta/llama-3"],
            only: None,
            order: None,
        },
        keys(&["openai"]),
    );
    assert!(matches!(r, Err(Refusal::NoKey { model, .. }) if model == "meta/llama-3"));
    // An unknown fallback creator is refused like an unknown primary.
    let r = plan(
        &deny(&s),
        &Routing {
            models: &["openai/gpt-4o", "bogusprov/x"],
            only: None,
            order: None,
        },
        keys(&["openai"]),
    );
    assert_eq!(
        r,
        Err(Refusal::UnknownProvider {
            model: "bogusprov/x".into()
        })
    );
}

#[test]
fn only_is_pinned_to_the_providers_whose_keys_are_sent() {
    let s = serving();
    let p = plan(
        &deny(&s),
        &Routing {
            models: &["openai/gpt-4o", "anthropic/claude-sonnet-4"],
            only: None,
            order: None,
        },
        keys(&["openai", "bedrock", "xai"]),
    )
    .unwrap();
    assert_eq!(p.byok, strings(&["openai", "bedrock"]));
    assert_eq!(p.only, ListPlan::Set(strings(&["openai", "bedrock"])));
    assert_eq!(p.order, ListPlan::Keep);
    assert!(p.sponsored.is_empty());
}

#[test]
fn client_only_narrower_wider_and_disjoint() {
    let s = serving();
    let models: &[&str] = &["openai/gpt-4o"];
    let has = keys(&["openai", "azure"]);
    // Narrower: only azure.
    let narrow = strings(&["azure"]);
    let p = plan(
        &deny(&s),
        &Routing {
            models,
            only: Some(&narrow),
            order: None,
        },
        &has,
    )
    .unwrap();
    assert_eq!(p.byok, strings(&["azure"]));
    assert_eq!(p.only, ListPlan::Set(strings(&["azure"])));
    // Wider: providers the caller has no key for are dropped.
    let wide = strings(&["openai", "azure", "bedrock", "vertex"]);
    let p = plan(
        &deny(&s),
        &Routing {
            models,
            only: Some(&wide),
            order: None,
        },
        &has,
    )
    .unwrap();
    assert_eq!(p.only, ListPlan::Set(strings(&["openai", "azure"])));
    // Disjoint: nothing left to serve the model with the caller's keys.
    let disjoint = strings(&["bedrock"]);
    let r = plan(
        &deny(&s),
        &Routing {
            models,
            only: Some(&disjoint),
            order: None,
        },
        &has,
    );
    assert!(matches!(
        r,
        Err(Refusal::NoKey {
            narrowed_by_only: true,
            ..
        })
    ));
}

#[test]
fn order_keeps_only_providers_in_the_set() {
    let s = serving();
    let order = strings(&["vertex", "azure", "openai"]);
    let p = plan(
        &deny(&s),
        &Routing {
            models: &["openai/gpt-4o"],
            only: None,
            order: Some(&order),
        },
        keys(&["openai", "azure"]),
    )
    .unwrap();
    assert_eq!(p.order, ListPlan::Set(strings(&["azure", "openai"])));
    let order = strings(&["vertex"]);
    let p = plan(
        &deny(&s),
        &Routing {
            models: &["openai/gpt-4o"],
            only: None,
            order: Some(&order),
        },
        keys(&["openai"]),
    )
    .unwrap();
    assert_eq!(p.order, ListPlan::Remove);
}

#[test]
fn allow_mode_forwards_and_reports_what_the_operator_pays_for() {
    let s = serving();
    let allow = Policy {
        serving_providers: &s,
        system_credentials: SystemCredentials::Allow,
    };
    let only = strings(&["azure"]);
    let p = plan(
        &allow,
        &Routing {
            models: &["anthropic/claude-sonnet-4", "openai/gpt-4o"],
            only: Some(&only),
            order: None,
        },
        keys(&["openai"]),
    )
    .unwrap();
    assert_eq!(p.byok, strings(&["openai"]));
    assert_eq!(p.only, ListPlan::Keep);
    assert_eq!(p.sponsored, strings(&["anthropic/claude-sonnet-4"]));
    // Unknown creators are still refused.
    assert!(plan(
        &allow,
        &Routing {
            models: &["bogusprov/x"],
            only: None,
            order: None
        },
        keys(&[])
    )
    .is_err());
}

// === detection ===

#[test]
fn detects_is_byok_false_and_system_attempts_in_json_and_streams() {
    // usage.is_byok false alone.
    assert_eq!(
        system_credentials_used(b"{}", Some(false)),
        Some(SystemUse {
            provider: None,
            byok_status: None
        })
    );
    assert_eq!(system_credentials_used(b"{}", Some(true)), None);
    // Chat JSON: routing inside choices[].message.provider_metadata, a failed BYOK attempt
    // then a system one.
    let body = br#"{"choices":[{"message":{"content":"hi","provider_metadata":{"gateway":{"routing":{"originalModelId":"openai/gpt-4o","finalProvider":"openai","attempts":[{"provider":"openai","credentialType":"byok","success":false,"statusCode":429},{"provider":"openai","credentialType":"system","success":true,"statusCode":200}]}}}}}],"usage":{"prompt_tokens":1,"is_byok":true}}"#;
    assert_eq!(
        system_credentials_used(body, Some(true)),
        Some(SystemUse {
            provider: Some("openai".into()),
            byok_status: Some(429)
        })
    );
    // Stream final chunk with delta.provider_metadata, camelCase providerMetadata on
    // embeddings, nested per-model attempt lists, whitespace.
    let tail = b"data: {\"choices\":[{\"delta\":{\"provider_metadata\":{\"gateway\":{\"routing\" : {\"modelAttempts\":[{\"modelId\":\"anthropic/claude\",\"providerAttempts\":[{\"provider\":\"bedrock\",\"credentialType\":\"SYSTEM\"}]}]}}}}}]}\n\ndata: [DONE]\n\n";
    assert_eq!(
        system_credentials_used(tail, None),
        Some(SystemUse {
            provider: Some("bedrock".into()),
            byok_status: None
        })
    );
    // A failed system attempt is not a use; BYOK-only routing is clean; the word "system"
    // elsewhere (a system prompt echo) is not a use.
    let clean = br#"{"providerMetadata":{"gateway":{"routing":{"finalProvider":"openai","attempts":[{"provider":"openai","credentialType":"system","success":false},{"provider":"openai","credentialType":"byok","success":true}]}}},"role":"system"}"#;
    assert_eq!(system_credentials_used(clean, Some(true)), None);
    // Garbage and cut-off metadata never panic and find nothing.
    assert_eq!(
        system_credentials_used(b"\"routing\":{\"credentialType\":\"system\"", None),
        None
    );
}

// === properties ===

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
const CREATORS: &[&str] = &[
    "openai",
    "anthropic",
    "google",
    "xai",
    "meta",
    "mistral",
    "bogusprov",
];

fn subset(of: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(of.to_vec(), 0..=of.len())
        .prop_map(|v| v.into_iter().map(str::to_string).collect())
}

fn serving_strategy() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
    proptest::collection::btree_map(
        proptest::sample::select(CREATORS.to_vec()).prop_map(str::to_string),
        subset(PROVIDERS),
        0..5,
    )
}

fn models_strategy() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        (
            proptest::sample::select(CREATORS.to_vec()),
            proptest::sample::select(vec!["a", "b-1"]),
        )
            .prop_map(|(c, m)| format!("{c}/{m}")),
        1..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Either the request is refused, or every model it can reach has a credential of the
    /// caller in the forwarded `byok` among the providers that may serve it (within the
    /// client's `only`), `only` is exactly the providers in `byok`, and `order` ⊆ `only`.
    #[test]
    fn deny_never_forwards_a_model_without_the_callers_credential(
        keys in subset(PROVIDERS),
        serving in serving_strategy(),
        models in models_strategy(),
        only in proptest::option::of(subset(PROVIDERS)),
        order in proptest::option::of(subset(PROVIDERS)),
    ) {
        let policy = deny(&serving);
        let refs: Vec<&str> = models.iter().map(String::as_str).collect();
        let routing = Routing { models: &refs, only: only.as_deref(), order: order.as_deref() };
        let has = |p: &str| keys.iter().any(|k| k == p);
        match plan(&policy, &routing, has) {
            Err(_) => {}
            Ok(p) => {
                let ListPlan::Set(pinned) = &p.only else {
                    panic!("deny must pin `only`: {p:?}");
                };
                prop_assert_eq!(pinned, &p.byok);
                for b in &p.byok {
                    prop_assert!(keys.contains(b), "byok {b} without a key");
                    if let Some(o) = &only {
                        prop_assert!(o.contains(b), "byok {b} outside the client's only");
                    }
                }
                for m in &refs {
                    let allowed = policy.allowed(creator(m));
                    prop_assert!(
                        allowed.iter().any(|a| p.byok.iter().any(|b| b == a)),
                        "{m} reachable without a credential: {p:?}"
                    );
                }
                if let ListPlan::Set(o) = &p.order {
                    prop_assert!(o.iter().all(|x| p.byok.contains(x)));
                }
                prop_assert!(p.sponsored.is_empty());
            }
        }
    }

    /// Refusals are exact: a request is refused only when some model really has no usable
    /// credential (or an unknown creator).
    #[test]
    fn deny_refuses_only_when_it_must(
        keys in subset(PROVIDERS),
        serving in serving_strategy(),
        models in models_strategy(),
    ) {
        let policy = deny(&serving);
        let refs: Vec<&str> = models.iter().map(String::as_str).collect();
        let routing = Routing { models: &refs, only: None, order: None };
        let has = |p: &str| keys.iter().any(|k| k == p);
        let servable = refs.iter().all(|m| {
            let c = creator(m);
            policy.known_creator(c) && policy.allowed(c).iter().any(|a| has(a))
        });
        prop_assert_eq!(plan(&policy, &routing, has).is_ok(), servable);
    }

    /// The detector never panics on any bytes.
    #[test]
    fn detection_never_panics(head in proptest::collection::vec(any::<u8>(), 0..256),
                              tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = system_credentials_used(&head, None);
        let _ = system_credentials_used(&tail, None);
        let _ = final_provider(&head);
    }
}
