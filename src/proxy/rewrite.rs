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
    /// Top-level fallback `models`.
    pub models: Vec<String>,
    pub stream: bool,
    /// `providerOptions` value span and its parsed gateway fallback `models`.
    provider_options: Option<Range<usize>>,
    pub gateway_models: Vec<String>,
    /// `stream_options` value span and whether it already asks for usage.
    stream_options: Option<Range<usize>>,
    pub include_usage: bool,
    /// Position of the closing `}` of the top-level object, and whether it has any field.
    end: usize,
    empty: bool,
}

/// Parses the top level of `body`.
///
/// # Errors
/// Not a JSON object, `model` missing or not a string, mistyped `stream` / `models`, or
/// duplicated fields this proxy edits.
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
        stream: false,
        provider_options: None,
        gateway_models: Vec::new(),
        stream_options: None,
        include_usage: false,
        end,
        empty: top.0.is_empty(),
    };
    let mut seen_model = false;
    for (key, raw) in &top.0 {
        let once = |seen: bool, name| {
            if seen {
                Err(Invalid::Duplicate(name))
            } else {
                Ok(())
            }
        };
        match key.as_ref() {
            "model" => {
                once(seen_model, "model")?;
                seen_model = true;
                p.model = serde_json::from_str(raw.get()).map_err(|_| Invalid::Model)?;
                p.model_span = span(text, raw.get());
            }
            "models" => {
                p.models = serde_json::from_str(raw.get())
                    .map_err(|_| Invalid::Field("models", "an array of model ids"))?;
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
                for (k, v) in &po.0 {
                    if k == "gateway" {
                        let gw = entries(v.get())
                            .ok_or(Invalid::Field("providerOptions.gateway", "an object"))?;
                        for (gk, gv) in &gw.0 {
                            if gk == "models" {
                                p.gateway_models =
                                    serde_json::from_str(gv.get()).map_err(|_| {
                                        Invalid::Field(
                                            "providerOptions.gateway.models",
                                            "an array of model ids",
                                        )
                                    })?;
                            }
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

/// What to change in the body.
#[derive(Default)]
pub struct Edits<'c> {
    /// Replace `model` with this id.
    pub model: Option<&'c str>,
    /// Set `providerOptions.gateway.byok` to this JSON object (already serialized).
    pub byok: Option<&'c str>,
    /// Make sure `stream_options.include_usage` is true.
    pub include_usage: bool,
}

impl Parsed<'_> {
    /// The body with `edits` applied; every byte outside the edited values is copied as sent.
    pub fn rewrite(&self, edits: &Edits<'_>) -> Vec<u8> {
        let body = self.body;
        let extra = edits.byok.map_or(0, str::len) + edits.model.map_or(0, str::len) + 96;
        let mut out = String::with_capacity(body.len() + extra);
        // (span to replace, replacement) in body order; insertions are empty spans at `end`.
        let mut pieces: Vec<(Range<usize>, String)> = Vec::with_capacity(3);
        if let Some(model) = edits.model {
            pieces.push((self.model_span.clone(), json_string(model)));
        }
        if let Some(byok) = edits.byok {
            match &self.provider_options {
                Some(r) => pieces.push((
                    r.clone(),
                    provider_options_with_byok(&body[r.clone()], byok),
                )),
                None => pieces.push((
                    self.end..self.end,
                    format!("\"providerOptions\":{{\"gateway\":{{\"byok\":{byok}}}}}"),
                )),
            }
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
        let mut inserted_any = false;
        for (range, text) in &pieces {
            out.push_str(&body[at..range.start]);
            if range.is_empty() && range.start == self.end {
                // A new top-level field: separate it from whatever precedes it.
                if !self.empty || inserted_any {
                    out.push(',');
                }
                inserted_any = true;
            }
            out.push_str(text);
            at = range.end;
        }
        out.push_str(&body[at..]);
        out.into_bytes()
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Rebuilds a `providerOptions` object with `gateway.byok` = `byok`, keeping every other
/// entry's value bytes as sent.
fn provider_options_with_byok(raw: &str, byok: &str) -> String {
    let mut out = String::with_capacity(raw.len() + byok.len() + 32);
    out.push('{');
    let mut first = true;
    let mut saw_gateway = false;
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
    };
    for (k, v) in entries(raw).map(|e| e.0).unwrap_or_default() {
        sep(&mut out);
        out.push_str(&json_string(&k));
        out.push(':');
        if k == "gateway" {
            saw_gateway = true;
            out.push('{');
            let mut gfirst = true;
            for (gk, gv) in entries(v.get()).map(|e| e.0).unwrap_or_default() {
                if gk == "byok" {
                    continue; // a client-sent byok is replaced
                }
                if !std::mem::take(&mut gfirst) {
                    out.push(',');
                }
                out.push_str(&json_string(&gk));
                out.push(':');
                out.push_str(gv.get());
            }
            if !gfirst {
                out.push(',');
            }
            out.push_str("\"byok\":");
            out.push_str(byok);
            out.push('}');
        } else {
            out.push_str(v.get());
        }
    }
    if !saw_gateway {
        sep(&mut out);
        out.push_str("\"gateway\":{\"byok\":");
        out.push_str(byok);
        out.push('}');
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
