//! Gateway mode's billing rules (SPEC §8): which of the caller's credentials go in
//! `providerOptions.gateway.byok`, how routing is pinned so the gateway can only serve the
//! request with them, and how to tell from an answer that it still used the operator's
//! ("system") credentials.
//!
//! [`plan`] is a pure function — (the caller's providers, the models a request can reach, the
//! client's `only` / `order`, the configuration) → a [`Plan`] to forward or a [`Refusal`] — so
//! the guarantee is unit- and property-tested without a network:
//!
//! - `deny` (the default): every model the request can reach (primary and every fallback,
//!   aliases resolved) needs at least one active credential of the caller among the providers
//!   allowed to serve it (its creator, or `models.serving_providers`), narrowed by the client's
//!   `only`; else the request is refused naming the model. `only` is set to exactly the
//!   providers whose credentials are sent; `order` keeps only those.
//! - `allow`: the caller's credentials for the providers the request can use are sent; models
//!   without one are left to the gateway (the operator pays), and reported as `sponsored`.
//!
//! What still slips through — the gateway falling back to system credentials on its own when
//! a BYOK credential errors or is rate limited — is detected afterwards by
//! [`system_credentials_used`].

use crate::config::SystemCredentials;
use crate::keys::providers;
use crate::secret::Secret;
use crate::upstream::catalog::creator;
use http::{HeaderValue, Uri};
use memchr::memmem::Finder;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The configuration the rules read.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub serving_providers: &'a BTreeMap<String, Vec<String>>,
    pub system_credentials: SystemCredentials,
}

/// A request's routing as the client sent it, models already resolved.
#[derive(Debug, Clone, Copy)]
pub struct Routing<'a> {
    /// The primary model, then every fallback.
    pub models: &'a [&'a str],
    /// The client's `providerOptions.gateway.only` / `.order`.
    pub only: Option<&'a [String]>,
    pub order: Option<&'a [String]>,
}

/// What to do with a routing list (`only`, `order`) the client may have sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListPlan {
    /// Forward the client's as sent (or none).
    Keep,
    Set(Vec<String>),
    Remove,
}

/// How to forward a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Providers whose credentials go in `byok`, in order of first need.
    pub byok: Vec<String>,
    pub only: ListPlan,
    pub order: ListPlan,
    /// `allow` mode: models no credential of the caller can serve (the operator pays).
    pub sponsored: Vec<String>,
}

/// Why a request is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The model's creator is neither a known provider nor in `models.serving_providers`.
    UnknownProvider { model: String },
    /// No active credential of the caller can serve `model` (within the client's `only`,
    /// when it sent one).
    NoKey {
        model: String,
        /// The providers that may serve it, for the message.
        allowed: Vec<String>,
        narrowed_by_only: bool,
    },
}

impl Policy<'_> {
    /// Whether model ids with this creator are routable at all.
    pub fn known_creator(&self, creator: &str) -> bool {
        providers::find(creator).is_some() || self.serving_providers.contains_key(creator)
    }

    /// The providers allowed to serve models of `creator`: its `serving_providers` entry, or
    /// the creator itself.
    pub fn allowed<'s>(&'s self, creator: &'s str) -> Vec<&'s str> {
        match self.serving_providers.get(creator) {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => vec![creator],
        }
    }
}

/// Decides how to forward a request whose caller holds active credentials for the providers
/// where `has_key` is true.
///
/// # Errors
/// [`Refusal`] when a model's creator is unknown, or (in `deny` mode) when a model the request
/// can reach has no credential of the caller among the providers allowed to serve it.
pub fn plan(
    policy: &Policy<'_>,
    routing: &Routing<'_>,
    has_key: impl Fn(&str) -> bool,
) -> Result<Plan, Refusal> {
    let deny = policy.system_credentials == SystemCredentials::Deny;
    let client_only = routing.only.filter(|_| deny);
    let mut byok: Vec<String> = Vec::new();
    let mut sponsored = Vec::new();
    for model in routing.models {
        let c = creator(model);
        if c.is_empty() || !policy.known_creator(c) {
            return Err(Refusal::UnknownProvider {
                model: (*model).to_string(),
            });
        }
        let allowed = policy.allowed(c);
        let usable: Vec<&str> = allowed
            .iter()
            .copied()
            .filter(|p| client_only.map_or(true, |only| only.iter().any(|o| o == p)))
            .filter(|p| has_key(p))
            .collect();
        if usable.is_empty() {
            if deny {
                return Err(Refusal::NoKey {
                    model: (*model).to_string(),
                    allowed: allowed.iter().map(|p| (*p).to_string()).collect(),
                    narrowed_by_only: client_only.is_some(),
                });
            }
            sponsored.push((*model).to_string());
        }
        for p in usable {
            if !byok.iter().any(|b| b == p) {
                byok.push(p.to_string());
            }
        }
    }
    if !deny {
        return Ok(Plan {
            byok,
            only: ListPlan::Keep,
            order: ListPlan::Keep,
            sponsored,
        });
    }
    let order = match routing.order {
        None => ListPlan::Keep,
        Some(order) => {
            let kept: Vec<String> = order
                .iter()
                .filter(|p| byok.iter().any(|b| b == *p))
                .cloned()
                .collect();
            if kept.is_empty() {
                ListPlan::Remove
            } else {
                ListPlan::Set(kept)
            }
        }
    };
    Ok(Plan {
        only: ListPlan::Set(byok.clone()),
        byok,
        order,
        sponsored,
    })
}

// === the endpoint ===

/// The gateway routes byok-proxy forwards to (after the base URL's `/v1`).
pub const PATHS: [&str; 5] = [
    "/chat/completions",
    "/embeddings",
    "/responses",
    "/messages",
    "/messages/count_tokens",
];

/// The gateway's address and the operator's key as every request needs them, built once at
/// start (not formatted and parsed per request).
pub struct Endpoint {
    base: String,
    /// `Authorization: Bearer <gateway key>`, marked sensitive; `None` without a key.
    pub auth: Option<HeaderValue>,
    /// The full URI of each of [`PATHS`], for requests without a query string.
    uris: Vec<(&'static str, Uri)>,
}

impl Endpoint {
    pub fn new(base_url: &str, key: Option<&Secret<String>>) -> Endpoint {
        let auth = key.and_then(|k| {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose())).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        let uris = PATHS
            .iter()
            .filter_map(|p| Some((*p, format!("{base_url}{p}").parse::<Uri>().ok()?)))
            .collect();
        Endpoint {
            base: base_url.to_string(),
            auth,
            uris,
        }
    }

    /// The URI of `path` with `query` (`""` or `?...`).
    ///
    /// # Errors
    /// The result is not a valid URI.
    pub fn uri(&self, path: &str, query: &str) -> Result<Uri, http::uri::InvalidUri> {
        if query.is_empty() {
            if let Some((_, uri)) = self.uris.iter().find(|(p, _)| *p == path) {
                return Ok(uri.clone());
            }
        }
        format!("{}{path}{query}", self.base).parse()
    }
}

// === detection ===

/// The gateway said it served (part of) a request with the operator's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemUse {
    /// The provider it used system credentials for, when the routing metadata names it.
    pub provider: Option<String>,
    /// HTTP status of the caller's own (BYOK) attempt that failed before, when reported.
    pub byok_status: Option<u16>,
}

/// Looks for signs that the gateway used system credentials in `buf` (the last `"routing"`
/// object the answer scan kept, or a whole JSON body): `usage.is_byok: false` (passed in
/// from usage extraction), or a routing attempt with
/// `credentialType: "system"` anywhere under a `routing` object
/// (`providerMetadata.gateway.routing`, `provider_metadata.gateway.routing`, including
/// per-attempt lists of any nesting). Unknown shapes are tolerated: anything that does not
/// parse is ignored.
pub fn system_credentials_used(buf: &[u8], is_byok: Option<bool>) -> Option<SystemUse> {
    static ROUTING: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"routing\""));
    static CREDENTIAL_TYPE: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"credentialType"));
    // Only answers that report routing attempts are parsed.
    let found = if buf.is_empty() || CREDENTIAL_TYPE.find(buf).is_none() {
        None
    } else {
        objects_after(buf, &ROUTING).find_map(|routing| {
            let mut walk = Walk::default();
            walk.visit(&routing);
            walk.system.then(|| SystemUse {
                provider: walk.system_provider.or(walk.final_provider),
                byok_status: walk.byok_failed_status,
            })
        })
    };
    match (found, is_byok) {
        (Some(f), _) => Some(f),
        (None, Some(false)) => Some(SystemUse {
            provider: None,
            byok_status: None,
        }),
        (None, _) => None,
    }
}

/// The provider the gateway's routing metadata says finally served the request
/// (`"finalProvider": "..."`), found without parsing the whole answer.
pub fn final_provider(buf: &[u8]) -> Option<String> {
    static FINAL_PROVIDER: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"\"finalProvider\""));
    let key = FINAL_PROVIDER.needle();
    FINAL_PROVIDER.find_iter(buf).find_map(|at| {
        let rest = &buf[at + key.len()..];
        let rest = trim_start(rest).strip_prefix(b":")?;
        let rest = trim_start(rest).strip_prefix(b"\"")?;
        // A name with an escape in it is not a provider slug.
        let end = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
        (rest[end] == b'"')
            .then(|| std::str::from_utf8(&rest[..end]).ok().map(str::to_string))
            .flatten()
    })
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// Every JSON object that follows `key` and a colon in `buf` (complete ones only).
fn objects_after<'b>(buf: &'b [u8], key: &'b Finder<'static>) -> impl Iterator<Item = Value> + 'b {
    key.find_iter(buf).filter_map(move |at| {
        let key = key.needle();
        let rest = buf.get(at + key.len()..)?;
        let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        if rest[colon] != b':' {
            return None;
        }
        let rest = &rest[colon + 1..];
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        if rest[start] != b'{' {
            return None;
        }
        serde_json::Deserializer::from_slice(&rest[start..])
            .into_iter::<Value>()
            .next()?
            .ok()
    })
}

/// A walk over a routing object, any shape.
#[derive(Default)]
struct Walk {
    system: bool,
    system_provider: Option<String>,
    final_provider: Option<String>,
    byok_failed_status: Option<u16>,
}

impl Walk {
    fn visit(&mut self, v: &Value) {
        match v {
            Value::Object(map) => {
                let credential = map.get("credentialType").and_then(Value::as_str);
                let failed = map.get("success").and_then(Value::as_bool) == Some(false);
                let provider = map.get("provider").and_then(Value::as_str);
                match credential {
                    Some(c) if c.eq_ignore_ascii_case("system") && !failed => {
                        self.system = true;
                        if self.system_provider.is_none() {
                            self.system_provider = provider.map(str::to_string);
                        }
                    }
                    Some(c)
                        if c.eq_ignore_ascii_case("byok")
                            && failed
                            && self.byok_failed_status.is_none() =>
                    {
                        self.byok_failed_status = map
                            .get("statusCode")
                            .and_then(Value::as_u64)
                            .and_then(|s| u16::try_from(s).ok());
                    }
                    _ => {}
                }
                if self.final_provider.is_none() {
                    self.final_provider = map
                        .get("finalProvider")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                for child in map.values() {
                    self.visit(child);
                }
            }
            Value::Array(items) => {
                for child in items {
                    self.visit(child);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
