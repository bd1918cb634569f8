use super::*;
use serde_json::{json, Value};

fn v(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

fn byok_only(byok: &str) -> GatewayEdits<'_> {
    GatewayEdits {
        byok: Some(byok),
        ..GatewayEdits::default()
    }
}

#[test]
fn inserts_byok_and_keeps_everything_else_byte_for_byte() {
    let body = br#"{ "model" : "openai/gpt-4o", "messages":[{"role":"user","content":"hi \u00e9  "}],  "temperature":0.70, "x_unknown":{"a":[1, 2]} }"#;
    let p = parse(body).unwrap();
    assert_eq!(p.model, "openai/gpt-4o");
    let out = p.rewrite(&Edits {
        gateway: Some(byok_only(r#"{"openai":[{"apiKey":"k"}]}"#)),
        ..Default::default()
    });
    let text = String::from_utf8(out.clone()).unwrap();
    // Original bytes untouched up to the end, then the new field.
    let original = std::str::from_utf8(body).unwrap();
    let cut = original.rfind('}').unwrap();
    assert!(text.starts_with(&original[..cut]), "{text}");
    assert!(text.contains(r#""temperature":0.70"#));
    assert!(text.contains(r#"\u00e9  "#));
    assert_eq!(
        v(&out)["providerOptions"],
        json!({"gateway": {"byok": {"openai": [{"apiKey": "k"}]}}})
    );
}

#[test]
fn replaces_client_byok_and_keeps_other_provider_options() {
    let body = br#"{"providerOptions":{"anthropic":{"thinking":{"type":"enabled","budgetTokens":1024}},"gateway":{"order":["vertex","anthropic"],"byok":{"openai":[{"apiKey":"client"}]},"models":["openai/gpt-4o"]}},"model":"anthropic/claude-sonnet-4.5","messages":[]}"#;
    let p = parse(body).unwrap();
    assert_eq!(p.gateway_models, vec!["openai/gpt-4o"]);
    let out = p.rewrite(&Edits {
        gateway: Some(byok_only(r#"{"anthropic":[{"apiKey":"mine"}]}"#)),
        ..Default::default()
    });
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(!text.contains("client"));
    assert!(text.contains(r#""anthropic":{"thinking":{"type":"enabled","budgetTokens":1024}}"#));
    let val = v(&out);
    assert_eq!(
        val["providerOptions"]["gateway"]["order"],
        json!(["vertex", "anthropic"])
    );
    assert_eq!(
        val["providerOptions"]["gateway"]["byok"],
        json!({"anthropic": [{"apiKey": "mine"}]})
    );
    assert!(text.ends_with(r#","model":"anthropic/claude-sonnet-4.5","messages":[]}"#));
}

#[test]
fn model_and_usage_edits() {
    let body = br#"{"model":"gpt-4o","stream":true,"stream_options":{"foo":1},"messages":[]}"#;
    let p = parse(body).unwrap();
    assert!(p.stream && !p.include_usage);
    let out = p.rewrite(&Edits {
        model: Some("openai/gpt-4o"),
        include_usage: true,
        ..Default::default()
    });
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"model":"openai/gpt-4o","stream":true,"stream_options":{"foo":1,"include_usage":true},"messages":[]}"#
    );
    let body = br#"{"model":"m/x","stream":true}"#;
    let out = parse(body).unwrap().rewrite(&Edits {
        include_usage: true,
        gateway: Some(byok_only("{}")),
        ..Default::default()
    });
    let val = v(&out);
    assert_eq!(val["stream_options"]["include_usage"], true);
    assert_eq!(val["providerOptions"]["gateway"]["byok"], json!({}));
    let p = parse(br#"{"model":"m/x","stream_options":{"include_usage":true}}"#).unwrap();
    assert!(p.include_usage);
}

#[test]
fn refuses_bad_bodies() {
    assert_eq!(parse(b"[1]").err(), Some(Invalid::NotObject));
    assert_eq!(parse(b"not json").err(), Some(Invalid::NotObject));
    assert_eq!(parse(b"{}").err(), Some(Invalid::Model));
    assert_eq!(parse(br#"{"model":5}"#).err(), Some(Invalid::Model));
    assert_eq!(
        parse(br#"{"model":"a/b","models":"x"}"#).err(),
        Some(Invalid::Field("models", "an array of model ids"))
    );
    assert_eq!(
        parse(br#"{"model":"a/b","model":"c/d"}"#).err(),
        Some(Invalid::Duplicate("model"))
    );
    assert_eq!(
        parse(br#"{"model":"a/b","providerOptions":3}"#).err(),
        Some(Invalid::Field("providerOptions", "an object"))
    );
    assert!(parse(&[0xff, 0xfe]).is_err());
}

#[test]
fn pins_only_filters_order_and_rewrites_fallbacks() {
    let body = br#"{"model":"sonnet","models":["gpt","openai/gpt-4o"],"providerOptions":{"gateway":{"only":["azure","openai"],"order":["vertex","openai"],"tags":["t1"],"user":"u-1","models":["gpt"],"byok":{"openai":[{"apiKey":"client"}]}},"openai":{"store":false}},"messages":[]}"#;
    let p = parse(body).unwrap();
    assert_eq!(
        p.gateway_only.as_deref(),
        Some(&["azure".to_string(), "openai".to_string()][..])
    );
    assert_eq!(
        p.gateway_order.as_deref(),
        Some(&["vertex".to_string(), "openai".to_string()][..])
    );
    assert!(p.client_byok);
    let only = vec!["openai".to_string()];
    let order = vec!["openai".to_string()];
    let fallbacks = vec!["openai/gpt-4o".to_string(), "openai/gpt-4o".to_string()];
    let gw_fallbacks = vec!["openai/gpt-4o".to_string()];
    let out = p.rewrite(&Edits {
        model: Some("anthropic/claude-sonnet-4.5"),
        models: Some(&fallbacks),
        gateway: Some(GatewayEdits {
            byok: Some(r#"{"openai":[{"apiKey":"mine"}]}"#),
            only: ListEdit::Set(&only),
            order: ListEdit::Set(&order),
            models: Some(&gw_fallbacks),
        }),
        ..Default::default()
    });
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(!text.contains("client"), "{text}");
    // Other gateway members and other providerOptions byte-identical.
    assert!(text.contains(r#""tags":["t1"],"user":"u-1""#), "{text}");
    assert!(text.contains(r#""openai":{"store":false}"#), "{text}");
    let val = v(&out);
    assert_eq!(val["model"], "anthropic/claude-sonnet-4.5");
    assert_eq!(val["models"], json!(["openai/gpt-4o", "openai/gpt-4o"]));
    let gw = &val["providerOptions"]["gateway"];
    assert_eq!(gw["only"], json!(["openai"]));
    assert_eq!(gw["order"], json!(["openai"]));
    assert_eq!(gw["models"], json!(["openai/gpt-4o"]));
    assert_eq!(gw["byok"], json!({"openai": [{"apiKey": "mine"}]}));
    // Remove drops a list; Keep forwards it as sent.
    let out = p.rewrite(&Edits {
        gateway: Some(GatewayEdits {
            byok: None,
            only: ListEdit::Keep,
            order: ListEdit::Remove,
            models: None,
        }),
        ..Default::default()
    });
    let gw = v(&out)["providerOptions"]["gateway"].clone();
    assert_eq!(gw["only"], json!(["azure", "openai"]));
    assert!(
        gw.get("order").is_none() && gw.get("byok").is_none(),
        "{gw}"
    );
}

#[test]
fn drops_provider_options_wherever_it_stands() {
    for (body, want) in [
        (
            r#"{"model":"a/b","providerOptions":{"gateway":{"byok":{}}},"x":1}"#,
            r#"{"model":"a/b","x":1}"#,
        ),
        (
            r#"{"providerOptions" : {"gateway":{}} , "model":"a/b"}"#,
            r#"{"model":"a/b"}"#,
        ),
        (
            r#"{"model":"a/b" ,
  "providerOptions":{"a":"}\"\\"}}"#,
            r#"{"model":"a/b"}"#,
        ),
        (
            r#"{"model":"a/b","prov\"iderOptions":1,"providerOptions":{}}"#,
            r#"{"model":"a/b","prov\"iderOptions":1}"#,
        ),
    ] {
        let p = parse(body.as_bytes()).unwrap();
        let out = p.rewrite(&Edits {
            drop_provider_options: true,
            model: Some("b"),
            include_usage: true,
            ..Default::default()
        });
        let got = v(&out);
        let mut want = v(want.as_bytes());
        want["model"] = json!("b");
        want["stream_options"] = json!({"include_usage": true});
        assert_eq!(got, want, "{body}");
    }
}

#[test]
fn refuses_mistyped_routing_lists() {
    for body in [
        r#"{"model":"a/b","providerOptions":{"gateway":{"only":"openai"}}}"#,
        r#"{"model":"a/b","providerOptions":{"gateway":{"order":[1]}}}"#,
        r#"{"model":"a/b","providerOptions":{"gateway":{"models":{}}}}"#,
        r#"{"model":"a/b","providerOptions":{"gateway":{"only":[],"only":[]}}}"#,
        r#"{"model":"a/b","providerOptions":{"gateway":{},"gateway":{}}}"#,
        r#"{"model":"a/b","models":[],"models":[]}"#,
    ] {
        assert!(parse(body.as_bytes()).is_err(), "{body}");
    }
}

// === properties ===

use proptest::prelude::*;

/// Any JSON value, bounded in depth and size.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~\u{e9}\u{1F600}\\\"]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z_\"]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn ids() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[a-z]{1,6}/[a-z0-9.-]{1,8}", 0..3)
}

/// A request body: any fields, a string model, maybe fallbacks and providerOptions with
/// routing lists and a client byok, serialized with random whitespace.
fn request_body() -> impl Strategy<Value = (Value, String)> {
    (
        proptest::collection::btree_map("[a-z_]{1,10}", json_value(), 0..5),
        "[a-z]{1,6}/[a-z0-9.-]{1,8}",
        proptest::option::of(ids()),
        proptest::option::of((
            proptest::option::of(ids()),
            proptest::option::of(proptest::collection::vec("[a-z]{1,6}", 0..3)),
            proptest::option::of(proptest::collection::vec("[a-z]{1,6}", 0..3)),
            any::<bool>(),
            json_value(),
        )),
        any::<bool>(),
    )
        .prop_map(|(extra, model, models, po, pretty)| {
            let mut obj = serde_json::Map::new();
            for (k, v) in extra {
                if !matches!(
                    k.as_str(),
                    "model" | "models" | "provider_options" | "stream" | "stream_options"
                ) {
                    obj.insert(k, v);
                }
            }
            obj.insert("model".into(), json!(model));
            if let Some(m) = models {
                obj.insert("models".into(), json!(m));
            }
            if let Some((gm, only, order, client_byok, other)) = po {
                let mut gw = serde_json::Map::new();
                if let Some(gm) = gm {
                    gw.insert("models".into(), json!(gm));
                }
                if let Some(o) = only {
                    gw.insert("only".into(), json!(o));
                }
                if let Some(o) = order {
                    gw.insert("order".into(), json!(o));
                }
                if client_byok {
                    gw.insert("byok".into(), json!({"openai": [{"apiKey": "client-key"}]}));
                }
                gw.insert("tags".into(), other.clone());
                obj.insert(
                    "providerOptions".into(),
                    json!({"gateway": Value::Object(gw), "openai": other}),
                );
            }
            let v = Value::Object(obj);
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            (v, text)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// For any request object: the output parses and equals the input with exactly the
    /// intended edits — nothing else changes.
    #[test]
    fn rewrite_applies_exactly_the_edits(
        (input, text) in request_body(),
        new_model in proptest::option::of("[a-z]{1,6}/[a-z]{1,6}"),
        only in proptest::option::of(proptest::collection::vec("[a-z]{1,6}", 0..3)),
        remove_order in any::<bool>(),
        include_usage in any::<bool>(),
        drop_po in any::<bool>(),
    ) {
        let p = parse(text.as_bytes()).unwrap();
        let byok = r#"{"openai":[{"apiKey":"mine"}]}"#;
        let edits = Edits {
            model: new_model.as_deref(),
            models: None,
            gateway: (!drop_po).then_some(GatewayEdits {
                byok: Some(byok),
                only: only.as_deref().map_or(ListEdit::Keep, ListEdit::Set),
                order: if remove_order { ListEdit::Remove } else { ListEdit::Keep },
                models: None,
            }),
            drop_provider_options: drop_po,
            include_usage,
        };
        let out = p.rewrite(&edits);
        let got: Value = serde_json::from_slice(&out).expect("the output parses");
        let mut want = input.clone();
        if let Some(m) = &new_model {
            want["model"] = json!(m);
        }
        if include_usage {
            want["stream_options"] = json!({"include_usage": true});
        }
        if drop_po {
            want.as_object_mut().unwrap().remove("providerOptions");
        } else {
            let po = want
                .as_object_mut()
                .unwrap()
                .entry("providerOptions")
                .or_insert_with(|| json!({}));
            let gw = po
                .as_object_mut()
                .unwrap()
                .entry("gateway")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .unwrap();
            gw.insert("byok".into(), serde_json::from_str(byok).unwrap());
            if let Some(o) = &only {
                gw.insert("only".into(), json!(o));
            }
            if remove_order {
                gw.remove("order");
            }
        }
        prop_assert_eq!(got, want);
        // The client's own byok never survives.
        prop_assert!(!String::from_utf8_lossy(&out).contains("client-key"));
    }

    /// Any bytes: parse never panics, and whatever parses rewrites into valid JSON.
    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = parse(&bytes) {
            let out = p.rewrite(&Edits {
                model: Some("x/y"),
                include_usage: true,
                drop_provider_options: true,
                ..Default::default()
            });
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
    }

    /// Bodies that are almost requests: object text with random cuts and splices.
    #[test]
    fn near_json_never_panics((_, text) in request_body(), cut in 0usize..400, junk in "[{}\\[\\]\",: ]{0,4}") {
        let cut = cut.min(text.len());
        let mut s = text.as_bytes()[..cut].to_vec();
        s.extend_from_slice(junk.as_bytes());
        s.extend_from_slice(&text.as_bytes()[cut..]);
        if let Ok(p) = parse(&s) {
            let out = p.rewrite(&Edits {
                gateway: Some(GatewayEdits { byok: Some("{}"), ..GatewayEdits::default() }),
                ..Default::default()
            });
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
    }
}
