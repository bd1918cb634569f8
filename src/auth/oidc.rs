//! OpenID Connect sign-in (authorization-code flow with PKCE), the protocol half of
//! `/auth/login` and `/auth/callback` (the HTTP half is `signin`). The `openidconnect` crate
//! does the protocol: discovery, the authorization URL, the code exchange and every check of
//! the ID token (signature from the issuer's JWKS, `iss`, `aud`, `exp`, `nonce`). What is ours:
//!
//! - The pending login (`state`, `nonce`, PKCE verifier, start time) travels in a short-lived
//!   cookie sealed with the master key (AES-256-GCM, its own associated data), so a callback
//!   can land on any replica, and a `state` that is not this browser's is refused.
//! - The identity rules: `email_verified: false` refused, the email domain checked
//!   case-insensitively on the exact domain (`a.example.com` is not `example.com`), admins from
//!   `auth.oidc.admin_emails`.
//! - The HTTP client: the proxy's own hyper client (rustls for https, plain http for a test
//!   issuer on 127.0.0.1), no redirects followed, bounded time and size.
//!
//! Discovery (with the JWKS) is cached for [`DISCOVERY_TTL`] and re-read once when an ID
//! token's key is unknown (the issuer rotated its keys).

use crate::config::OidcConfig;
use crate::keys::crypto::{Sealed, Vault};
use crate::secret::Secret;
use crate::store::OidcIdentity;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest,
    HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The pending-login cookie's name.
pub const LOGIN_COOKIE: &str = "byok_login";
/// How long a browser has between `/auth/login` and `/auth/callback`.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How long discovery and the JWKS are reused.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(600);
/// Associated data of the sealed login cookie (so no other sealed value opens as one).
const LOGIN_AAD: &[u8] = b"byok-proxy oidc login v1";
/// Issuer answers are small; anything larger is refused.
const MAX_RESPONSE: usize = 1024 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a sign-in failed: the `login_error` code the browser is sent back with. Details go
/// to the log, never to the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// No (or an expired, or a foreign) pending-login cookie, or `state` does not match it.
    BadState,
    /// The issuer answered the authorization request with an error (e.g. access denied).
    Denied,
    /// The issuer could not be reached or its discovery document is unusable.
    IssuerUnavailable,
    /// The code exchange failed (unknown, expired or replayed code).
    ExchangeFailed,
    /// The ID token is missing or fails verification (signature, iss, aud, exp, nonce).
    InvalidIdToken,
    EmailNotVerified,
    /// The token has no email, but `allowed_email_domains` needs one.
    NoEmail,
    DomainNotAllowed,
    UserDisabled,
    /// Our own failure (database, sealing).
    Internal,
}

impl LoginError {
    pub fn code(self) -> &'static str {
        match self {
            LoginError::BadState => "bad_state",
            LoginError::Denied => "denied",
            LoginError::IssuerUnavailable => "issuer_unavailable",
            LoginError::ExchangeFailed => "exchange_failed",
            LoginError::InvalidIdToken => "invalid_id_token",
            LoginError::EmailNotVerified => "email_not_verified",
            LoginError::NoEmail => "no_email",
            LoginError::DomainNotAllowed => "domain_not_allowed",
            LoginError::UserDisabled => "user_disabled",
            LoginError::Internal => "server_error",
        }
    }
}

/// What the login cookie holds between the two redirects.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    /// Unix seconds when the login started.
    at: i64,
}

/// A started login: where to send the browser, and the sealed cookie to set.
pub struct Started {
    pub redirect: String,
    pub cookie: Secret<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The issuer's HTTP client: hyper with rustls (https) or plain http, no redirects.
#[derive(Clone)]
pub struct HttpClient {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

impl HttpClient {
    pub fn new() -> HttpClient {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(HTTP_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        HttpClient {
            // No pooling: sign-ins are rare, and an issuer's idle keep-alive connection can be
            // reset under a token request (which must not be retried blindly).
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .pool_max_idle_per_host(0)
            .build(https),
        }
    }

    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    detail.push_str(": ");
                    detail.push_str(&s.to_string());
                    source = s.source();
                }
                HttpError(detail)
            })?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| HttpError(e.to_string()))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, bytes.to_vec()))
        };
        tokio::time::timeout(HTTP_TIMEOUT, call)
            .await
            .map_err(|_| HttpError("the issuer did not answer in time".into()))?
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl<'c> AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// The configured OpenID provider, its cached discovery, and the sealing key of the login
/// cookie.
pub struct Oidc {
    pub config: OidcConfig,
    redirect_uri: RedirectUrl,
    http: HttpClient,
    vault: Vault,
    discovered: RwLock<Option<(Instant, Arc<CoreProviderMetadata>)>>,
}

impl Oidc {
    /// # Errors
    /// `public_base_url` does not make a valid redirect URI.
    pub fn new(config: OidcConfig, public_base_url: &str, vault: Vault) -> anyhow::Result<Oidc> {
        let redirect_uri = RedirectUrl::new(format!(
            "{}/auth/callback",
            public_base_url.trim_end_matches('/')
        ))?;
        Ok(Oidc {
            config,
            redirect_uri,
            http: HttpClient::new(),
            vault,
            discovered: RwLock::new(None),
        })
    }

    /// The issuer's discovery document and keys (cached; `fresh` forces a re-read).
    async fn metadata(&self, fresh: bool) -> Result<Arc<CoreProviderMetadata>, LoginError> {
        if !fresh {
            if let Ok(guard) = self.discovered.read() {
                if let Some((at, m)) = guard.as_ref() {
                    if at.elapsed() < DISCOVERY_TTL {
                        return Ok(m.clone());
                    }
                }
            }
        }
        let issuer = IssuerUrl::new(self.config.issuer_url.clone()).map_err(|e| {
            tracing::error!(error = %e, "auth.oidc.issuer_url is not a URL");
            LoginError::IssuerUnavailable
        })?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, issuer = %self.config.issuer_url, "OIDC discovery failed");
                LoginError::IssuerUnavailable
            })?;
        let m = Arc::new(m);
        if let Ok(mut guard) = self.discovered.write() {
            *guard = Some((Instant::now(), m.clone()));
        }
        Ok(m)
    }

    fn client(
        &self,
        metadata: &CoreProviderMetadata,
    ) -> openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.config
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().clone())),
        )
        .set_redirect_uri(self.redirect_uri.clone())
    }

    /// Starts a sign-in: the issuer's authorization URL (code flow, PKCE S256, `state`,
    /// `nonce`, the configured scopes) and the sealed cookie that remembers them.
    ///
    /// # Errors
    /// `IssuerUnavailable` (discovery failed), `Internal` (sealing failed).
    pub async fn begin(&self, now_unix: i64) -> Result<Started, LoginError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            at: now_unix,
        };
        let plain = Secret::new(serde_json::to_vec(&pending).map_err(|_| LoginError::Internal)?);
        let sealed = self
            .vault
            .seal(plain.expose(), LOGIN_AAD)
            .map_err(|_| LoginError::Internal)?;
        let mut raw = sealed.key_version.to_be_bytes().to_vec();
        raw.extend_from_slice(&sealed.nonce);
        raw.extend_from_slice(&sealed.ciphertext);
        Ok(Started {
            redirect: url.to_string(),
            cookie: Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)),
        })
    }

    fn open_pending(&self, cookie: &str, now_unix: i64) -> Result<Pending, LoginError> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cookie)
            .map_err(|_| LoginError::BadState)?;
        if raw.len() < 4 + 12 + 16 {
            return Err(LoginError::BadState);
        }
        let version = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let sealed = Sealed {
            nonce: raw[4..16].to_vec(),
            ciphertext: raw[16..].to_vec(),
            key_version: version,
        };
        let plain = self
            .vault
            .open(&sealed, LOGIN_AAD)
            .map_err(|_| LoginError::BadState)?;
        let pending: Pending =
            serde_json::from_slice(plain.expose()).map_err(|_| LoginError::BadState)?;
        let age = now_unix - pending.at;
        if !(0..=LOGIN_TTL.as_secs() as i64).contains(&age) {
            return Err(LoginError::BadState);
        }
        Ok(pending)
    }

    /// Finishes a sign-in: checks `state` against this browser's login cookie, exchanges the
    /// code (with the PKCE verifier), verifies the ID token and applies the identity rules.
    ///
    /// # Errors
    /// The [`LoginError`] to send the browser back with.
    pub async fn finish(
        &self,
        code: &str,
        state: &str,
        cookie: Option<&str>,
        now_unix: i64,
    ) -> Result<OidcIdentity, LoginError> {
        let pending = self.open_pending(cookie.ok_or(LoginError::BadState)?, now_unix)?;
        if !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(LoginError::BadState);
        }
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| {
                tracing::error!(error = %e, "the issuer has no token endpoint");
                LoginError::IssuerUnavailable
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "OIDC code exchange failed");
                LoginError::ExchangeFailed
            })?;
        let id_token = response.id_token().ok_or_else(|| {
            tracing::warn!("the issuer answered the code exchange without an ID token");
            LoginError::InvalidIdToken
        })?;
        let nonce = Nonce::new(pending.nonce.clone());
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(signing_algs(&metadata));
        let claims = match id_token.claims(&verifier, &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                // The issuer may have rotated its keys since discovery: re-read them once.
                let metadata = self.metadata(true).await?;
                let client = self.client(&metadata);
                let verifier = client
                    .id_token_verifier()
                    .set_allowed_algs(signing_algs(&metadata));
                let claims = id_token.claims(&verifier, &nonce).map_err(|e| {
                    tracing::warn!(error = %e, first = %first, "ID token refused");
                    LoginError::InvalidIdToken
                })?;
                claims.clone()
            }
        };
        let email = claims.email().map(|e| e.as_str().to_string());
        if email.is_some() && claims.email_verified() == Some(false) {
            return Err(LoginError::EmailNotVerified);
        }
        let allowed = &self.config.allowed_email_domains;
        if !allowed.is_empty() {
            let Some(email) = &email else {
                return Err(LoginError::NoEmail);
            };
            if !domain_allowed(email, allowed) {
                return Err(LoginError::DomainNotAllowed);
            }
        }
        let lower = email.as_deref().map(str::to_ascii_lowercase);
        let is_admin = lower
            .as_deref()
            .is_some_and(|e| self.config.admin_emails.iter().any(|a| a == e));
        let subject = claims.subject().as_str().to_string();
        let preferred_name = email
            .clone()
            .or_else(|| claims.preferred_username().map(|u| u.as_str().to_string()))
            .map(|n| user_name_from(&n))
            .filter(|n| crate::accounts::check_name(n).is_ok())
            .unwrap_or_else(|| format!("user-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        Ok(OidcIdentity {
            issuer: claims.issuer().as_str().to_string(),
            subject,
            email,
            preferred_name,
            is_admin,
        })
    }
}

/// The ID token signatures accepted: the asymmetric algorithms the issuer advertises (never
/// `none` or an HMAC keyed by the client secret); RS256 when it advertises none of them.
fn signing_algs(metadata: &CoreProviderMetadata) -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    let algs: Vec<A> = metadata
        .id_token_signing_alg_values_supported()
        .iter()
        .filter(|a| {
            matches!(
                a,
                A::RsaSsaPkcs1V15Sha256
                    | A::RsaSsaPkcs1V15Sha384
                    | A::RsaSsaPkcs1V15Sha512
                    | A::RsaSsaPssSha256
                    | A::RsaSsaPssSha384
                    | A::RsaSsaPssSha512
                    | A::EcdsaP256Sha256
                    | A::EcdsaP384Sha384
                    | A::EcdsaP521Sha512
                    | A::EdDsa
            )
        })
        .cloned()
        .collect();
    if algs.is_empty() {
        vec![A::RsaSsaPkcs1V15Sha256]
    } else {
        algs
    }
}

/// Whether `email`'s domain is exactly one of `allowed` (lower-cased), case-insensitively.
pub fn domain_allowed(email: &str, allowed: &[String]) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(domain.trim_end_matches('.')))
}

/// A user name from an email or login name: the allowed characters kept, at most 64.
fn user_name_from(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_domains_case_insensitively() {
        let allowed = vec!["example.com".to_string()];
        assert!(domain_allowed("a@example.com", &allowed));
        assert!(domain_allowed("A@EXAMPLE.COM", &allowed));
        assert!(!domain_allowed("a@sub.example.com", &allowed));
        assert!(!domain_allowed("a@example.com.evil.io", &allowed));
        assert!(!domain_allowed("a@notexample.com", &allowed));
        assert!(!domain_allowed("example.com", &allowed));
        assert!(!domain_allowed("@example.com", &allowed));
    }

    #[test]
    fn names_from_emails() {
        assert_eq!(user_name_from("Ann Lee@x.io"), "AnnLee@x.io");
        assert_eq!(user_name_from(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn login_cookie_round_trip_and_expiry() {
        let vault = Vault::new(crate::keys::crypto::MasterKey::generate(), vec![]);
        let config = OidcConfig {
            issuer_url: "http://127.0.0.1:1".into(),
            client_id: "c".into(),
            client_secret: None,
            allowed_email_domains: vec![],
            admin_emails: vec![],
            scopes: vec!["openid".into()],
            name: "test".into(),
        };
        let oidc = Oidc::new(config, "http://127.0.0.1:8080", vault).unwrap();
        let pending = Pending {
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            at: 1000,
        };
        let sealed = oidc
            .vault
            .seal(&serde_json::to_vec(&pending).unwrap(), LOGIN_AAD)
            .unwrap();
        let mut raw = sealed.key_version.to_be_bytes().to_vec();
        raw.extend_from_slice(&sealed.nonce);
        raw.extend_from_slice(&sealed.ciphertext);
        let cookie = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(oidc.open_pending(&cookie, 1010).unwrap().state, "s");
        assert_eq!(
            oidc.open_pending(&cookie, 1000 + 601).err(),
            Some(LoginError::BadState)
        );
        raw[20] ^= 1;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            oidc.open_pending(&forged, 1010).err(),
            Some(LoginError::BadState)
        );
    }
}
