//! The request rewrite: parse the body's top level once, as raw JSON (`RawValue` slices that
//! borrow the body; the messages are never parsed), and splice in the changes — the BYOK
//! object under `providerOptions.gateway.byok`, a resolved alias or a stripped provider prefix
//! in `model`, `stream_options.include_usage` — copying every other byte verbatim.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("Request body must be a JSON object.")]
    NotObject,
    #[error("Request body needs a string field `model`, like \"openai/gpt-4o\".")]
    Model,
    #[error("`{0}` must be {1}.")]
    Field(&'static str, &'static str),
    #[error("`{0}` appears more than once in the request body.")]
    Duplicate(&'static str),
}

/// An object's entries in order: key and the raw value slice.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    v.push(entry);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn entries(text: &str) -> Option<Entries<'_>> {
    serde_json::from_str(text).ok()
}

/// Where `inner` (a slice of `outer`) sits inside `outer`.
fn span(outer: &str, inner: &str) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

/// The top level of a request body, borrowed from it.
pub struct Parsed<'a> {
    body: &'a str,
    pub model: String,
    model_span: Range<usize>,
    /// Top-level fallback `models`, and the span of that value.
    pub models: Vec<String>,
    models_span: Option<Range<usize>>,
    pub stream: bool,
    /// `providerOptions` value span, and what its `gateway` member says about routing.
    provider_options: Option<Range<usize>>,
    pub gateway_models: Vec<String>,
    /// The client's `providerOptions.gateway.only` / `.order`, when sent.
    pub gateway_only: Option<Vec<String>>,
    pub gateway_order: Option<Vec<String>>,
    /// Whether the client sent its own `providerOptions.gateway.byok`.
    pub client_byok: bool,
    /// `providerOptions.gateway.zeroDataRetention` set to anything but `false` / `null`: the
    /// gateway then skips request-scoped BYOK credentials (and would use its own).
    pub zero_data_retention: bool,
    /// `stream_options` value span and whether it already asks for usage.
    stream_options: Option<Range<usize>>,
    pub include_usage: bool,
    /// Position of the closing `}` of the top-level object.
    end: usize,
}

fn strings(raw: &RawValue, field: &'static str) -> Result<Vec<String>, Invalid> {
    serde_json::from_str(raw.get()).map_err(|_| Invalid::Field(field, "an array of strings"))
}

/// Parses the top level of `body`.
///
/// # Errors
/// Not a JSON object, `model` missing or not a string, mistyped `stream` / `models` /
/// `providerOptions.gateway.{models,only,order}`, or duplicated fields this proxy edits.
pub fn parse(body: &[u8]) -> Result<Parsed<'_>, Invalid> {
    let text = std::str::from_utf8(body).map_err(|_| Invalid::NotObject)?;
    let top = entries(text).ok_or(Invalid::NotObject)?;
    let end = text
        .trim_end()
        .len()
        .checked_sub(1)
        .ok_or(Invalid::NotObject)?;
    let mut p = Parsed {
        body: text,
        model: String::new(),
        model_span: 0..0,
        models: Vec::new(),
        models_span: None,
        stream: false,
        provider_options: None,
        gateway_models: Vec::new(),
        gateway_only: None,
        gateway_order: None,
        client_byok: false,
        zero_data_retention: false,
        stream_options: None,
        include_usage: false,
        end,
    };
    let mut seen_model = false;
    let once = |seen: bool, name| {
        if seen {
            Err(Invalid::Duplicate(name))
        } else {
            Ok(())
        }
    };
    for (key, raw) in &top.0 {
        match key.as_ref() {
            "model" => {
                once(seen_model, "model")?;
                seen_model = true;
                p.model = serde_json::from_str(raw.get()).map_err(|_| Invalid::Model)?;
                p.model_span = span(text, raw.get());
            }
            "models" => {
                once(p.models_span.is_some(), "models")?;
                p.models = serde_json::from_str(raw.get())
                    .map_err(|_| Invalid::Field("models", "an array of model ids"))?;
                p.models_span = Some(span(text, raw.get()));
            }
            "stream" => {
                p.stream = serde_json::from_str::<Option<bool>>(raw.get())
                    .map_err(|_| Invalid::Field("stream", "true or false"))?
                    .unwrap_or(false);
            }
            "providerOptions" => {
                once(p.provider_options.is_some(), "providerOptions")?;
                p.provider_options = Some(span(text, raw.get()));
                let po =
                    entries(raw.get()).ok_or(Invalid::Field("providerOptions", "an object"))?;
                let mut seen_gateway = false;
                for (k, v) in &po.0 {
                    if k != "gateway" {
                        continue;
                    }
                    once(seen_gateway, "providerOptions.gateway")?;
                    seen_gateway = true;
                    let gw = entries(v.get())
                        .ok_or(Invalid::Field("providerOptions.gateway", "an object"))?;
                    let mut seen = [false; 4];
                    for (gk, gv) in &gw.0 {
                        if gk == "zeroDataRetention" {
                            p.zero_data_retention = !matches!(gv.get().trim(), "false" | "null");
                        }
                        let (i, name) = match gk.as_ref() {
                            "models" => (0, "providerOptions.gateway.models"),
                            "only" => (1, "providerOptions.gateway.only"),
                            "order" => (2, "providerOptions.gateway.order"),
                            "byok" => (3, "providerOptions.gateway.byok"),
                            _ => continue,
                        };
                        once(seen[i], name)?;
                        seen[i] = true;
                        match i {
                            0 => p.gateway_models = strings(gv, name)?,
                            1 => p.gateway_only = Some(strings(gv, name)?),
                            2 => p.gateway_order = Some(strings(gv, name)?),
                            _ => p.client_byok = true,
                        }
                    }
                }
            }
            "stream_options" => {
                once(p.stream_options.is_some(), "stream_options")?;
                p.stream_options = Some(span(text, raw.get()));
                if let Some(so) = entries(raw.get()) {
                    p.include_usage =
                        so.0.iter()
                            .any(|(k, v)| k == "include_usage" && v.get() == "true");
                }
            }
            _ => {}
        }
    }
    if !seen_model {
        return Err(Invalid::Model);
    }
    Ok(p)
}

/// What to do with a list the client may have sent (`only`, `order`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ListEdit<'c> {
    /// Forward it as sent (or not at all when absent).
    #[default]
    Keep,
    /// Send this list instead.
    Set(&'c [String]),
    /// Do not send it.
    Remove,
}

/// How `providerOptions.gateway` is rebuilt; every member not named here is kept as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct GatewayEdits<'c> {
    /// The BYOK object (already serialized) to send; `None` sends none. A client's own `byok`
    /// is never forwarded.
    pub byok: Option<&'c str>,
    pub only: ListEdit<'c>,
    pub order: ListEdit<'c>,
    /// Replace the fallback `models` (aliases resolved).
    pub models: Option<&'c [String]>,
}

/// What to change in the body.
#[derive(Debug, Default, Clone, Copy)]
pub struct Edits<'c> {
    /// Replace `model` with this id.
    pub model: Option<&'c str>,
    /// Replace the top-level fallback `models` (aliases resolved).
    pub models: Option<&'c [String]>,
    /// Rebuild `providerOptions.gateway` (gateway mode).
    pub gateway: Option<GatewayEdits<'c>>,
    /// Remove `providerOptions` (direct mode: the gateway's options mean nothing to a
    /// provider).
    pub drop_provider_options: bool,
    /// Make sure `stream_options.include_usage` is true.
    pub include_usage: bool,
}

impl Parsed<'_> {
    /// The body with `edits` applied; every byte outside the edited values is copied as sent.
    pub fn rewrite(&self, edits: &Edits<'_>) -> Vec<u8> {
        let body = self.body;
        let mut out = String::with_capacity(body.len() + 256);
        // (span to replace, replacement) in body order; insertions are empty spans at `end`.
        let mut pieces: Vec<(Range<usize>, String)> = Vec::with_capacity(4);
        if let Some(model) = edits.model {
            pieces.push((self.model_span.clone(), json_string(model)));
        }
        if let (Some(models), Some(r)) = (edits.models, &self.models_span) {
            pieces.push((r.clone(), json_strings(models)));
        }
        if let Some(r) = &self.provider_options {
            if edits.drop_provider_options {
                pieces.push((entry_span(body, r.clone()), String::new()));
            } else if let Some(gw) = &edits.gateway {
                pieces.push((r.clone(), provider_options_with(&body[r.clone()], gw)));
            }
        } else if let Some(gw) = edits.gateway.as_ref().filter(|g| g.adds_anything()) {
            let mut text = String::from("\"providerOptions\":{\"gateway\":");
            text.push_str(&gateway_with("{}", gw));
            text.push('}');
            pieces.push((self.end..self.end, text));
        }
        if edits.include_usage && !self.include_usage {
            match &self.stream_options {
                Some(r) => pieces.push((r.clone(), stream_options_with_usage(&body[r.clone()]))),
                None => pieces.push((
                    self.end..self.end,
                    "\"stream_options\":{\"include_usage\":true}".to_string(),
                )),
            }
        }
        pieces.sort_by_key(|(r, _)| r.start);
        let mut at = 0;
        for (range, text) in &pieces {
            out.push_str(&body[at..range.start]);
            if range.is_empty() && range.start == self.end {
                // A new top-level field; `model` always precedes it (parse requires it).
                out.push(',');
            }
            out.push_str(text);
            at = range.end;
        }
        out.push_str(&body[at..]);
        out.into_bytes()
    }
}

impl GatewayEdits<'_> {
    /// Whether rebuilding an absent `providerOptions.gateway` would write anything.
    fn adds_anything(&self) -> bool {
        self.byok.is_some()
            || matches!(self.only, ListEdit::Set(_))
            || matches!(self.order, ListEdit::Set(_))
            || self.models.is_some()
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn json_strings(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_string())
}

/// The span of a whole top-level member (key, colon, value and one separating comma) whose
/// value is at `value`, so that removing it leaves valid JSON.
fn entry_span(body: &str, value: Range<usize>) -> Range<usize> {
    let b = body.as_bytes();
    let skip_ws_back = |mut i: usize| {
        while i > 0 && b[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        i
    };
    // value <- ws <- ':' <- ws <- closing quote of the key.
    let colon = skip_ws_back(value.start).saturating_sub(1);
    let mut i = skip_ws_back(colon).saturating_sub(1);
    // Back to the key's opening quote: the first quote not escaped by an odd run of `\`.
    while i > 0 {
        i -= 1;
        if b[i] == b'"' {
            let slashes = b[..i].iter().rev().take_while(|c| **c == b'\\').count();
            if slashes % 2 == 0 {
                break;
            }
        }
    }
    let key_start = i;
    let before = skip_ws_back(key_start);
    if before > 0 && b[before - 1] == b',' {
        // `, "key": value` -> remove from the comma.
        return before - 1..value.end;
    }
    // First member: `"key": value ,` -> remove through the following comma.
    let mut j = value.end;
    while j < b.len() && b[j].is_ascii_whitespace() {
        j += 1;
    }
    if j < b.len() && b[j] == b',' {
        j += 1;
    }
    key_start..j
}

/// Rebuilds a `providerOptions` object with its `gateway` member edited; every other member's
/// value bytes are kept as sent.
fn provider_options_with(raw: &str, gw: &GatewayEdits<'_>) -> String {
    let mut out = String::with_capacity(raw.len() + gw.byok.map_or(0, str::len) + 64);
    out.push('{');
    let mut first = true;
    let mut saw_gateway = false;
    for (k, v) in entries(raw).map(|e| e.0).unwrap_or_default() {
        let text = if k == "gateway" {
            saw_gateway = true;
            gateway_with(v.get(), gw)
        } else {
            v.get().to_string()
        };
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push_str(&json_string(&k));
        out.push(':');
        out.push_str(&text);
    }
    if !saw_gateway && gw.adds_anything() {
        if !first {
            out.push(',');
        }
        out.push_str("\"gateway\":");
        out.push_str(&gateway_with("{}", gw));
    }
    out.push('}');
    out
}

/// A `gateway` object rebuilt from `raw`: `byok`, and `only` / `order` / `models` when edited,
/// replaced; every other member kept as sent.
fn gateway_with(raw: &str, gw: &GatewayEdits<'_>) -> String {
    let mut out = String::with_capacity(raw.len() + gw.byok.map_or(0, str::len) + 64);
    out.push('{');
    let mut first = true;
    let mut member = |out: &mut String, key: &str, value: &str| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push_str(key);
        out.push(':');
        out.push_str(value);
    };
    for (k, v) in entries(raw).map(|e| e.0).unwrap_or_default() {
        let replaced = match k.as_ref() {
            "byok" => true,
            "only" => gw.only != ListEdit::Keep,
            "order" => gw.order != ListEdit::Keep,
            "models" => gw.models.is_some(),
            _ => false,
        };
        if !replaced {
            member(&mut out, &json_string(&k), v.get());
        }
    }
    if let Some(models) = gw.models {
        member(&mut out, "\"models\"", &json_strings(models));
    }
    if let ListEdit::Set(only) = gw.only {
        member(&mut out, "\"only\"", &json_strings(only));
    }
    if let ListEdit::Set(order) = gw.order {
        member(&mut out, "\"order\"", &json_strings(order));
    }
    if let Some(byok) = gw.byok {
        member(&mut out, "\"byok\"", byok);
    }
    out.push('}');
    out
}

/// `stream_options` with `include_usage: true`, other entries kept.
fn stream_options_with_usage(raw: &str) -> String {
    let mut out = String::from("{");
    for (k, v) in entries(raw).map(|e| e.0).unwrap_or_default() {
        if k == "include_usage" {
            continue;
        }
        out.push_str(&json_string(&k));
        out.push(':');
        out.push_str(v.get());
        out.push(',');
    }
    out.push_str("\"include_usage\":true}");
    out
}

#[cfg(test)]
mod tests;
