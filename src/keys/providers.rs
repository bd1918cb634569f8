//! The providers byok-proxy knows, the shape of each one's credentials (SPEC §3), their
//! validation and the masked hint shown instead of the secret.
//!
//! Validation runs on the key-management path only (never per proxied request), so it works on a
//! `serde_json::Value`. Its errors name fields, never values.

use crate::secret::Secret;
use serde::Serialize;
use serde_json::{Map, Value};

/// One credential field, as `GET /api/providers` describes it to clients and the UI.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Field {
    /// JSON path inside the credential object, dotted for nested objects.
    pub name: &'static str,
    pub label: &'static str,
    pub secret: bool,
    pub required: bool,
    /// `"string"`, `"text"` (multi-line, e.g. a PEM key) or `"object"`.
    pub kind: &'static str,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Provider {
    pub id: &'static str,
    pub name: &'static str,
    pub fields: &'static [Field],
}

const fn secret(name: &'static str, label: &'static str) -> Field {
    Field {
        name,
        label,
        secret: true,
        required: true,
        kind: "string",
    }
}

const fn plain(name: &'static str, label: &'static str, required: bool) -> Field {
    Field {
        name,
        label,
        secret: false,
        required,
        kind: "string",
    }
}

const API_KEY: &[Field] = &[secret("apiKey", "API key")];

/// Every supported provider, in display order.
pub const PROVIDERS: &[Provider] = &[
    Provider {
        id: "openai",
        name: "OpenAI",
        fields: API_KEY,
    },
    Provider {
        id: "anthropic",
        name: "Anthropic",
        fields: API_KEY,
    },
    Provider {
        id: "google",
        name: "Google AI Studio",
        fields: API_KEY,
    },
    Provider {
        id: "xai",
        name: "xAI",
        fields: API_KEY,
    },
    Provider {
        id: "groq",
        name: "Groq",
        fields: API_KEY,
    },
    Provider {
        id: "mistral",
        name: "Mistral",
        fields: API_KEY,
    },
    Provider {
        id: "deepseek",
        name: "DeepSeek",
        fields: API_KEY,
    },
    Provider {
        id: "vertex",
        name: "Google Vertex AI",
        fields: &[
            plain("project", "Project ID", true),
            plain("location", "Location", true),
            plain(
                "googleCredentials.clientEmail",
                "Service account client email",
                true,
            ),
            Field {
                name: "googleCredentials.privateKey",
                label: "Service account private key (PEM)",
                secret: true,
                required: true,
                kind: "text",
            },
        ],
    },
    Provider {
        id: "bedrock",
        name: "Amazon Bedrock",
        fields: &[
            plain("accessKeyId", "Access key ID", true),
            secret("secretAccessKey", "Secret access key"),
            plain("region", "Region", false),
        ],
    },
    Provider {
        id: "azure",
        name: "Azure OpenAI",
        fields: &[
            secret("apiKey", "API key"),
            plain("resourceName", "Resource name", true),
            Field {
                name: "modelMappings",
                label: "Model mappings (JSON object)",
                secret: false,
                required: false,
                kind: "object",
            },
        ],
    },
];

/// Looks a provider up by id.
pub fn find(id: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.id == id)
}

/// A credential that passed validation: its canonical JSON (to be sealed) and a masked hint.
pub struct Validated {
    pub json: Secret<Vec<u8>>,
    pub masked_hint: String,
}

/// Why a credential was refused. Names fields only.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("unknown provider `{0}`; GET /api/providers lists the supported ones")]
    UnknownProvider(String),
    #[error("credentials must be a JSON object")]
    NotObject,
    #[error("credentials for {provider} need the field `{field}` (a non-empty string)")]
    Missing {
        provider: &'static str,
        field: &'static str,
    },
    #[error("credentials for {provider}: field `{field}` must be {expected}")]
    WrongType {
        provider: &'static str,
        field: &'static str,
        expected: &'static str,
    },
    #[error("credentials for {provider} do not take the field `{field}`; allowed: {allowed}")]
    Unexpected {
        provider: &'static str,
        field: String,
        allowed: String,
    },
}

/// Checks `credentials` against the provider's shape and returns it sealed-ready.
///
/// # Errors
/// Unknown provider, not an object, a missing or mistyped field, or a field the provider does
/// not take.
pub fn validate(provider: &str, credentials: &Value) -> Result<Validated, Invalid> {
    let spec = find(provider).ok_or_else(|| Invalid::UnknownProvider(provider.to_string()))?;
    let obj = credentials.as_object().ok_or(Invalid::NotObject)?;
    check_unexpected(spec, obj, "")?;
    for field in spec.fields {
        let value = lookup(obj, field.name);
        match (value, field.kind) {
            (None | Some(Value::Null), _) if !field.required => {}
            (None | Some(Value::Null), _) => {
                return Err(Invalid::Missing {
                    provider: spec.id,
                    field: field.name,
                })
            }
            (Some(Value::String(s)), "string" | "text") if !s.trim().is_empty() => {}
            (Some(Value::String(_)), "string" | "text") => {
                return Err(Invalid::Missing {
                    provider: spec.id,
                    field: field.name,
                })
            }
            (Some(Value::Object(m)), "object") if m.values().all(Value::is_string) => {}
            (Some(_), kind) => {
                return Err(Invalid::WrongType {
                    provider: spec.id,
                    field: field.name,
                    expected: if kind == "object" {
                        "an object of strings"
                    } else {
                        "a non-empty string"
                    },
                })
            }
        }
    }
    let json = serde_json::to_vec(credentials).map_err(|_| Invalid::NotObject)?;
    Ok(Validated {
        json: Secret::new(json),
        masked_hint: hint(spec.id, obj),
    })
}

fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = obj.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// Refuses fields the provider does not take (typos would otherwise be sealed silently).
fn check_unexpected(
    spec: &'static Provider,
    obj: &Map<String, Value>,
    prefix: &str,
) -> Result<(), Invalid> {
    for (key, value) in obj {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let known = spec.fields.iter().any(|f| f.name == path);
        let is_parent = spec
            .fields
            .iter()
            .any(|f| f.name.starts_with(&format!("{path}.")));
        if is_parent {
            match value {
                Value::Object(inner) => check_unexpected(spec, inner, &path)?,
                _ => {
                    return Err(Invalid::WrongType {
                        provider: spec.id,
                        field: spec
                            .fields
                            .iter()
                            .find(|f| f.name.starts_with(&format!("{path}.")))
                            .map_or("", |f| f.name),
                        expected: "an object",
                    })
                }
            }
        } else if !known {
            return Err(Invalid::Unexpected {
                provider: spec.id,
                field: path,
                allowed: spec
                    .fields
                    .iter()
                    .map(|f| f.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

/// Well-known, non-secret vendor prefixes that may be shown in a hint.
const VENDOR_PREFIXES: &[&str] = &["sk-proj-", "sk-ant-", "sk-", "xai-", "gsk_", "AIza"];

/// Masks a secret: a known vendor prefix, `...`, and at most the last 4 characters. Short
/// secrets (under 12 characters) show nothing of themselves.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "****".to_string();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    let prefix = if chars.len() >= 20 {
        VENDOR_PREFIXES
            .iter()
            .find(|p| secret.starts_with(*p))
            .copied()
            .unwrap_or("")
    } else {
        ""
    };
    format!("{prefix}...{tail}")
}

fn hint(provider: &str, obj: &Map<String, Value>) -> String {
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    match provider {
        "vertex" => format!("{} ({})", s("project"), s("location")),
        "bedrock" => format!("{} {}", mask(s("accessKeyId")), s("region"))
            .trim()
            .to_string(),
        "azure" => format!("{} {}", s("resourceName"), mask(s("apiKey"))),
        _ => mask(s("apiKey")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_key_shape() {
        let v = validate(
            "openai",
            &json!({"apiKey": "sk-abcdefghijklmnopqrstuvwx1234"}),
        )
        .unwrap();
        assert_eq!(v.masked_hint, "sk-...1234");
        assert_eq!(
            validate("openai", &json!({})).err(),
            Some(Invalid::Missing {
                provider: "openai",
                field: "apiKey"
            })
        );
        assert!(matches!(
            validate("openai", &json!({"apiKey": "x", "apikey": "y"})),
            Err(Invalid::Unexpected { .. })
        ));
        assert!(matches!(
            validate("nope", &json!({})),
            Err(Invalid::UnknownProvider(_))
        ));
        assert!(matches!(
            validate("openai", &json!("sk")),
            Err(Invalid::NotObject)
        ));
        assert!(matches!(
            validate("openai", &json!({"apiKey": 5})),
            Err(Invalid::WrongType { .. })
        ));
    }

    #[test]
    fn nested_and_optional_shapes() {
        let vertex = json!({"project": "p1", "location": "us-central1",
            "googleCredentials": {"privateKey": "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n", "clientEmail": "sa@p1.iam.gserviceaccount.com"}});
        assert_eq!(
            validate("vertex", &vertex).unwrap().masked_hint,
            "p1 (us-central1)"
        );
        let bad =
            json!({"project": "p1", "location": "l", "googleCredentials": {"clientEmail": "x"}});
        assert_eq!(
            validate("vertex", &bad).err(),
            Some(Invalid::Missing {
                provider: "vertex",
                field: "googleCredentials.privateKey"
            })
        );
        assert!(validate("bedrock", &json!({"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG"})).is_ok());
        assert!(validate(
            "azure",
            &json!({"apiKey": "k", "resourceName": "r", "modelMappings": {"gpt-4o": "my-deploy"}})
        )
        .is_ok());
        assert!(validate(
            "azure",
            &json!({"apiKey": "k", "resourceName": "r", "modelMappings": 3})
        )
        .is_err());
    }

    #[test]
    fn masks_show_at_most_four_trailing_characters() {
        assert_eq!(mask("short"), "****");
        assert_eq!(mask("abcdefghijklmnop"), "...mnop");
        assert_eq!(
            mask("sk-ant-api03-aaaaaaaaaaaaaaaaaaaa9876"),
            "sk-ant-...9876"
        );
    }
}
