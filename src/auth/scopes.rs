//! Token scopes: what an app token may do beyond "everything its user may do". A token
//! without scopes carries its user's full rights; each scope only ever narrows them:
//!
//! - `allowed_models`: patterns over resolved model ids (`openai/*`, `anthropic/claude-*`,
//!   `openai/gpt-4o`); `*` matches any run of characters. Every model a request can reach —
//!   the primary and each fallback, aliases resolved — must match one
//!   ([`Scopes::check_models`], 403 `model_not_allowed`); `/v1/models` lists only matching ones.
//! - `allowed_routes`: a subset of [`ROUTE_SCOPES`]; checked where the route is known, before
//!   any handler runs ([`Scopes::check_route`], 403 `route_not_allowed`).
//! - `requests_per_minute`: a per-token rate, applied under the user's own (see `limits`).
//!
//! A scoped token may not manage tokens (403 `insufficient_scope`), and a token created by a
//! scoped caller could never be wider than it ([`Scopes::within`]).

use crate::router::Route;
use serde::{Deserialize, Serialize};

/// The route names `allowed_routes` takes.
pub const ROUTE_SCOPES: &[&str] = &["chat", "embeddings", "responses", "messages", "models"];

/// The most patterns or routes one token may carry (they are matched on every request).
const MAX_PATTERNS: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scopes {
    /// `None`: any model.
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    /// `None`: any `/v1` route.
    #[serde(default)]
    pub allowed_routes: Option<Vec<String>>,
    /// `None`: only the user's own rate applies.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

/// A scope that cannot be stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("scopes.allowed_routes: unknown route `{0}` (one of chat, embeddings, responses, messages, models)")]
    Route(String),
    #[error("scopes.allowed_models: `{0}` is not a model pattern like \"openai/*\" or \"anthropic/claude-*\"")]
    Pattern(String),
    #[error("scopes.{0}: at most 64 entries")]
    TooMany(&'static str),
    #[error("scopes.requests_per_minute must be at least 1")]
    ZeroRate,
    #[error("the requested scopes are wider than the token you are using: {0}")]
    Wider(String),
}

impl Scopes {
    /// Whether this token is narrowed at all.
    pub fn is_scoped(&self) -> bool {
        self.allowed_models.is_some()
            || self.allowed_routes.is_some()
            || self.requests_per_minute.is_some()
    }

    /// Checks the shape of each scope; lists are trimmed and deduplicated.
    ///
    /// # Errors
    /// An unknown route, an empty or odd pattern, too many entries, a zero rate.
    pub fn checked(mut self) -> Result<Scopes, Invalid> {
        if let Some(models) = &mut self.allowed_models {
            if models.len() > MAX_PATTERNS {
                return Err(Invalid::TooMany("allowed_models"));
            }
            for m in models.iter_mut() {
                *m = m.trim().to_string();
                let ok = !m.is_empty()
                    && m.len() <= 200
                    && m.chars().all(|c| !c.is_whitespace() && !c.is_control());
                if !ok {
                    return Err(Invalid::Pattern(m.clone()));
                }
            }
            models.sort();
            models.dedup();
        }
        if let Some(routes) = &mut self.allowed_routes {
            if routes.len() > MAX_PATTERNS {
                return Err(Invalid::TooMany("allowed_routes"));
            }
            for r in routes.iter_mut() {
                *r = r.trim().to_ascii_lowercase();
                if !ROUTE_SCOPES.contains(&r.as_str()) {
                    return Err(Invalid::Route(r.clone()));
                }
            }
            routes.sort();
            routes.dedup();
        }
        if self.requests_per_minute == Some(0) {
            return Err(Invalid::ZeroRate);
        }
        Ok(self)
    }

    /// Whether `self` (requested) is no wider than `outer` (the creator's).
    ///
    /// # Errors
    /// `Wider`, naming the scope that would widen.
    pub fn within(&self, outer: &Scopes) -> Result<(), Invalid> {
        if let Some(outer_models) = &outer.allowed_models {
            match &self.allowed_models {
                None => return Err(Invalid::Wider("allowed_models must be set".into())),
                Some(mine) => {
                    for m in mine {
                        if !outer_models.iter().any(|o| pattern_covers(o, m)) {
                            return Err(Invalid::Wider(format!("allowed_models `{m}`")));
                        }
                    }
                }
            }
        }
        if let Some(outer_routes) = &outer.allowed_routes {
            match &self.allowed_routes {
                None => return Err(Invalid::Wider("allowed_routes must be set".into())),
                Some(mine) => {
                    if let Some(r) = mine.iter().find(|r| !outer_routes.contains(r)) {
                        return Err(Invalid::Wider(format!("allowed_routes `{r}`")));
                    }
                }
            }
        }
        if let Some(outer_rpm) = outer.requests_per_minute {
            if self.requests_per_minute.map_or(true, |r| r > outer_rpm) {
                return Err(Invalid::Wider(format!(
                    "requests_per_minute must be at most {outer_rpm}"
                )));
            }
        }
        Ok(())
    }

    /// Whether a resolved model id may be used.
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models
            .as_ref()
            .map_or(true, |pats| pats.iter().any(|p| wildcard(p, model)))
    }

    /// Every model a request can reach must be allowed.
    ///
    /// # Errors
    /// 403 `model_not_allowed` naming the first model that is not.
    pub fn check_models(&self, models: &[&str]) -> Result<(), Denied> {
        match models.iter().find(|m| !self.allows_model(m)) {
            None => Ok(()),
            Some(m) => Err(Denied::Model((*m).to_string())),
        }
    }

    /// A scoped token may call only its routes (`/api` is not a `/v1` route: never refused
    /// here).
    ///
    /// # Errors
    /// 403 `route_not_allowed`.
    pub fn check_route(&self, route: &Route) -> Result<(), Denied> {
        let (Some(allowed), Some(name)) = (&self.allowed_routes, route_scope(route)) else {
            return Ok(());
        };
        if allowed.iter().any(|r| r == name) {
            Ok(())
        } else {
            Err(Denied::Route(name))
        }
    }
}

/// What a token's scopes refuse (the edge answers 403 `model_not_allowed` /
/// `route_not_allowed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Model(String),
    Route(&'static str),
}

/// The scope name of a `/v1` route; `None` for every other route.
pub fn route_scope(route: &Route) -> Option<&'static str> {
    match route {
        Route::ChatCompletions => Some("chat"),
        Route::Embeddings => Some("embeddings"),
        Route::Responses => Some("responses"),
        Route::Messages | Route::CountTokens => Some("messages"),
        Route::Models | Route::Model(_) => Some("models"),
        _ => None,
    }
}

/// `*` matches any run of characters (including `/`); everything else literally.
fn wildcard(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let Some((last, middle)) = rest.split_last() else {
        return pattern == text; // no `*` at all
    };
    let Some(mut left) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match left.find(part) {
            Some(i) => left = &left[i + part.len()..],
            None => return false,
        }
    }
    left.ends_with(last)
}

/// Whether every id `inner` matches is matched by `outer` too (conservatively: a literal is
/// checked by matching; a pattern is covered by an identical pattern or by an outer pattern
/// that matches it read as text, so `openai/*` covers `openai/gpt-*`).
fn pattern_covers(outer: &str, inner: &str) -> bool {
    outer == inner || wildcard(outer, inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(p: &[&str]) -> Scopes {
        Scopes {
            allowed_models: Some(p.iter().map(|s| s.to_string()).collect()),
            ..Scopes::default()
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("openai/*", "openai/gpt-4o"));
        assert!(!wildcard("openai/*", "anthropic/claude-3"));
        assert!(wildcard(
            "anthropic/claude-*",
            "anthropic/claude-sonnet-4.5"
        ));
        assert!(!wildcard("anthropic/claude-*", "anthropic/other"));
        assert!(wildcard("openai/gpt-4o", "openai/gpt-4o"));
        assert!(!wildcard("openai/gpt-4o", "openai/gpt-4o-mini"));
        assert!(wildcard("*", "anything/at-all"));
        assert!(wildcard("*/gpt-*-mini", "openai/gpt-4o-mini"));
        assert!(!wildcard("*/gpt-*-mini", "openai/gpt-4o"));
        assert!(wildcard("a*a", "aa"));
        assert!(!wildcard("a*a", "a"));
    }

    #[test]
    fn every_reachable_model_must_match() {
        let s = models(&["openai/*", "anthropic/claude-*"]);
        assert!(s
            .check_models(&["openai/gpt-4o", "anthropic/claude-3"])
            .is_ok());
        let Err(Denied::Model(model)) =
            s.check_models(&["openai/gpt-4o", "google/gemini-2.5-flash"])
        else {
            panic!("a fallback outside the patterns must be refused")
        };
        assert_eq!(model, "google/gemini-2.5-flash");
        assert!(Scopes::default().check_models(&["x/y"]).is_ok());
        assert!(!models(&[]).allows_model("openai/gpt-4o"));
    }

    #[test]
    fn routes() {
        let s = Scopes {
            allowed_routes: Some(vec!["chat".into(), "models".into()]),
            ..Scopes::default()
        };
        assert!(s.check_route(&Route::ChatCompletions).is_ok());
        assert!(s.check_route(&Route::Model("a/b".into())).is_ok());
        assert!(s.check_route(&Route::Keys).is_ok());
        assert!(matches!(
            s.check_route(&Route::Embeddings),
            Err(Denied::Route("embeddings"))
        ));
        assert!(matches!(
            s.check_route(&Route::CountTokens),
            Err(Denied::Route("messages"))
        ));
    }

    #[test]
    fn checked_normalizes_and_refuses_nonsense() {
        let s = Scopes {
            allowed_models: Some(vec![" openai/* ".into(), "openai/*".into()]),
            allowed_routes: Some(vec!["Chat".into()]),
            requests_per_minute: Some(5),
        }
        .checked()
        .unwrap();
        assert_eq!(
            s.allowed_models.as_deref(),
            Some(&["openai/*".to_string()][..])
        );
        assert_eq!(s.allowed_routes.as_deref(), Some(&["chat".to_string()][..]));
        let bad_route = Scopes {
            allowed_routes: Some(vec!["admin".into()]),
            ..Scopes::default()
        };
        assert_eq!(bad_route.checked(), Err(Invalid::Route("admin".into())));
        assert!(models(&[""]).checked().is_err());
        assert!(models(&["a b"]).checked().is_err());
        let zero = Scopes {
            requests_per_minute: Some(0),
            ..Scopes::default()
        };
        assert_eq!(zero.checked(), Err(Invalid::ZeroRate));
    }

    #[test]
    fn narrowing_only() {
        let outer = Scopes {
            allowed_models: Some(vec!["openai/*".into()]),
            allowed_routes: Some(vec!["chat".into(), "models".into()]),
            requests_per_minute: Some(10),
        };
        let narrower = Scopes {
            allowed_models: Some(vec!["openai/gpt-4o".into(), "openai/gpt-*".into()]),
            allowed_routes: Some(vec!["chat".into()]),
            requests_per_minute: Some(5),
        };
        assert!(narrower.within(&outer).is_ok());
        assert!(outer.within(&outer).is_ok());
        // Anything is within an unscoped caller.
        assert!(outer.within(&Scopes::default()).is_ok());
        let mut wider = narrower.clone();
        wider.allowed_models = Some(vec!["anthropic/*".into()]);
        assert!(wider.within(&outer).is_err());
        let mut wider = narrower.clone();
        wider.allowed_models = None;
        assert!(wider.within(&outer).is_err());
        let mut wider = narrower.clone();
        wider.allowed_routes = Some(vec!["embeddings".into()]);
        assert!(wider.within(&outer).is_err());
        let mut wider = narrower.clone();
        wider.requests_per_minute = Some(11);
        assert!(wider.within(&outer).is_err());
        let mut wider = narrower;
        wider.requests_per_minute = None;
        assert!(wider.within(&outer).is_err());
    }
}
