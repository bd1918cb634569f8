//! Direct mode: a request goes to the provider's own OpenAI-compatible endpoint
//! (`upstream.direct.<provider>.base_url`) with the caller's key, as that provider expects it.
//!
//! Only providers whose credential is an API key can be called this way. Bedrock (AWS SigV4
//! request signing) and Vertex (Google OAuth from a service account) are gateway-only: their
//! keys are refused at `POST /api/keys` in direct mode, and `GET /api/providers` says so.
//!
//! Gateway-only request fields have no meaning for a provider: fallback lists (`models`,
//! `providerOptions.gateway.models`) are refused with 400 (no fallback can happen), and
//! `providerOptions` is not forwarded (so a client-typed `byok` never reaches a provider).

use http::{HeaderMap, HeaderValue};

/// Whether a provider's keys can be used in direct mode.
pub fn supports(provider: &str) -> bool {
    !matches!(provider, "bedrock" | "vertex")
}

/// Why a provider cannot be used in direct mode, for messages.
pub fn unsupported_reason(provider: &str) -> String {
    format!(
        "{provider} credentials need request signing (AWS SigV4 / Google OAuth) that direct \
         mode does not do; use gateway mode (upstream.mode = \"gateway\") for {provider}"
    )
}

/// The query parameters a direct-mode request may carry to `provider` (Azure needs its
/// `api-version`); everything else the client put in the URL stays at the proxy.
pub fn allowed_query(provider: &str, name: &str) -> bool {
    provider == "azure" && name == "api-version"
}

/// The key can't be put in a header (it has control characters or non-ASCII bytes).
#[derive(Debug, thiserror::Error)]
#[error("the stored key is not a valid header value")]
pub struct BadKey;

/// Sets the caller's `key` the way `provider` reads it: `x-api-key` (+ `anthropic-version`)
/// for Anthropic, `api-key` for Azure, `Authorization: Bearer` for the others.
///
/// # Errors
/// [`BadKey`] when the key cannot be a header value.
pub fn set_auth(headers: &mut HeaderMap, provider: &str, key: &str) -> Result<(), BadKey> {
    let value = |text: String| {
        let mut v = HeaderValue::from_str(&text).map_err(|_| BadKey)?;
        v.set_sensitive(true);
        Ok::<_, BadKey>(v)
    };
    match provider {
        "anthropic" => {
            headers.insert("x-api-key", value(key.to_string())?);
            if !headers.contains_key("anthropic-version") {
                headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            }
        }
        "azure" => {
            headers.insert("api-key", value(key.to_string())?);
        }
        _ => {
            headers.insert(http::header::AUTHORIZATION, value(format!("Bearer {key}"))?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_as_each_provider_expects() {
        let mut h = HeaderMap::new();
        set_auth(&mut h, "anthropic", "sk-ant-1").unwrap();
        assert_eq!(h["x-api-key"], "sk-ant-1");
        assert_eq!(h["anthropic-version"], "2023-06-01");
        let mut h = HeaderMap::new();
        set_auth(&mut h, "azure", "az-1").unwrap();
        assert_eq!(h["api-key"], "az-1");
        assert!(!h.contains_key("authorization"));
        let mut h = HeaderMap::new();
        set_auth(&mut h, "groq", "gsk_1").unwrap();
        assert_eq!(h["authorization"], "Bearer gsk_1");
        assert!(h["authorization"].is_sensitive());
        assert!(set_auth(&mut HeaderMap::new(), "openai", "bad\nkey").is_err());
        assert!(!supports("bedrock") && !supports("vertex") && supports("azure"));
        assert!(allowed_query("azure", "api-version") && !allowed_query("openai", "api-version"));
    }
}
