//! Users and app tokens: creation, listing, disabling, minting and revoking tokens. Used by the
//! CLI and the operator API alike.
//!
//! A token is `bkp_` + 43 URL-safe characters (256 random bits). It is returned once, at
//! creation; the store keeps only its SHA-256 and an 8-character prefix for recognition.

use crate::auth::scopes::Scopes;
use crate::secret::Secret;
use crate::store::{AppToken, AuditEntry, NewToken, Store, User};
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const TOKEN_PREFIX: &str = "bkp_";

/// A freshly minted token: the secret (shown once) and what is stored about it.
pub struct MintedToken {
    pub token: Secret<String>,
    pub record: AppToken,
}

/// SHA-256 of a token, the only form in which tokens are stored or cached.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `bkp_` + base64url(32 random bytes), without padding: 47 characters in all.
fn generate_token() -> Secret<String> {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    zeroize::Zeroize::zeroize(&mut raw);
    Secret::new(format!("{TOKEN_PREFIX}{body}"))
}

/// Whether `text` has the shape of an app token (cheap check before hashing and lookup).
pub fn looks_like_token(text: &str) -> bool {
    text.len() == TOKEN_PREFIX.len() + 43
        && text.starts_with(TOKEN_PREFIX)
        && text[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no user `{0}`")]
    NoSuchUser(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Checks a user name: 1–64 characters of letters, digits, `.`, `_`, `-`, `@`.
///
/// # Errors
/// Empty, too long or other characters.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "user name must be 1-64 characters of letters, digits, '.', '_', '-' or '@'".into(),
        ))
    }
}

/// Creates a user.
///
/// # Errors
/// Invalid name, or `Store(Conflict)` if the name is taken.
pub async fn create_user(
    store: &Store,
    name: &str,
    email: Option<&str>,
    audit: AuditEntry,
) -> Result<User, Error> {
    check_name(name)?;
    if let Some(e) = email {
        if !e.contains('@') || e.len() > 254 {
            return Err(Error::Invalid(
                "email must look like name@example.com".into(),
            ));
        }
    }
    Ok(store.create_user(name, email, audit).await?)
}

/// Mints a token for `user`, optionally expiring at `expires_at` and narrowed by `scopes`
/// (already checked).
///
/// # Errors
/// A name over 100 characters; store failure.
pub async fn create_token(
    store: &Store,
    user: &User,
    name: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    scopes: Scopes,
    audit: AuditEntry,
) -> Result<MintedToken, Error> {
    if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
        return Err(Error::Invalid(
            "token name must be at most 100 characters".into(),
        ));
    }
    let token = generate_token();
    let id = Uuid::new_v4();
    let prefix: String = token
        .expose()
        .chars()
        .take(TOKEN_PREFIX.len() + 4)
        .collect();
    let audit = AuditEntry {
        target: Some(crate::store::user_target(user.id)),
        detail: serde_json::json!({ "token_id": id, "name": name, "scopes": scopes }),
        ..audit
    };
    let record = store
        .create_token(
            NewToken {
                id,
                user_id: user.id,
                name,
                prefix,
                hash: hash_token(token.expose()),
                expires_at,
                scopes,
            },
            audit,
        )
        .await?;
    Ok(MintedToken { token, record })
}

/// Turns an `--expires-in`/`expires_in` like `90d` into an instant.
///
/// # Errors
/// Not a duration, or zero.
pub fn expiry(expires_in: &str) -> Result<DateTime<Utc>, Error> {
    let d = crate::config::duration(expires_in).map_err(Error::Invalid)?;
    if d.is_zero() {
        return Err(Error::Invalid("expires_in must be longer than 0".into()));
    }
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .ok_or_else(|| Error::Invalid(format!("expires_in `{expires_in}` is too long")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = generate_token();
        assert_eq!(t.expose().len(), 47);
        assert!(looks_like_token(t.expose()));
        assert_ne!(generate_token().expose(), t.expose());
        assert!(!looks_like_token("bkp_short"));
        assert!(!looks_like_token(&format!("xyz_{}", &t.expose()[4..])));
    }

    #[test]
    fn names_and_expiry() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(expiry("90d").unwrap() > Utc::now());
        assert!(expiry("0s").is_err());
        assert!(expiry("soon").is_err());
    }
}
