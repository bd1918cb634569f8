use super::*;
use serde_json::{json, Value};

fn v(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn inserts_byok_and_keeps_everything_else_byte_for_byte() {
    let body = br#"{ "model" : "openai/gpt-4o", "messages":[{"role":"user","content":"hi \u00e9  "}],  "temperature":0.70, "x_unknown":{"a":[1, 2]} }"#;
    let p = parse(body).unwrap();
    assert_eq!(p.model, "openai/gpt-4o");
    let out = p.rewrite(&Edits {
        byok: Some(r#"{"openai":[{"apiKey":"k"}]}"#),
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
        byok: Some(r#"{"anthropic":[{"apiKey":"mine"}]}"#),
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
        byok: Some("{}"),
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
