//! `ProxyError`: the one edge error type, one variant per row of SPEC §5 plus the few the
//! management API adds. `status()`, `code()` and `kind()` are exhaustive, so a new variant forces
//! a decision. The client gets the OpenAI envelope (or Anthropic's shape on `/v1/messages*`) with
//! a message saying what to do; detail goes to the log with the request id, never to the client.

use crate::http_util::{json_response, Body, RateHeaders};
use http::{HeaderValue, Response, StatusCode};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("Missing, unknown, expired or revoked API token. Send a byok-proxy app token as `Authorization: Bearer bkp_...`.")]
    InvalidApiKey,
    #[error(
        "The operator API needs `Authorization: Bearer <admin token>` matching BYOK_ADMIN_TOKEN."
    )]
    InvalidAdminToken,
    #[error("This user is disabled. Ask your byok-proxy operator to re-enable it.")]
    UserDisabled,
    /// The message names the model (and the providers that could serve it) and what to do.
    #[error("{0}")]
    NoProviderKey(String),
    #[error("This token may not use model `{model}`: it is outside the token's allowed_models. Use a model the token allows, or create a token that allows it (web UI, Tokens).")]
    ModelNotAllowed { model: String },
    #[error("This token may not call the `{route}` routes: they are outside the token's allowed_routes. Create a token that allows them (web UI, Tokens).")]
    RouteNotAllowed { route: &'static str },
    #[error("This token is scoped and may not manage tokens or provider keys. Use an unscoped token or sign in to the web UI.")]
    InsufficientScope,
    #[error("Missing or wrong CSRF header: with a web session, send `x-byok-csrf` with the `csrf` value of GET /api/me, from the proxy's own origin.")]
    CsrfFailed,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    UnknownProvider(String),
    #[error("Request body is larger than the {limit}-byte limit (limits.max_body_bytes).")]
    RequestTooLarge { limit: usize },
    #[error("Rate limit exceeded: at most {} {per}. Retry after {} s.", rate.limit, retry_after.as_secs_f64().ceil().max(1.0))]
    RateLimited {
        /// What the limit counts: "requests per minute" or "concurrent requests".
        per: &'static str,
        rate: RateHeaders,
        retry_after: Duration,
    },
    #[error("Request bodies must not be compressed: send the JSON as is (no content-encoding).")]
    UnsupportedMediaType,
    #[error("The request body did not arrive within {0:?}.")]
    RequestTimeout(Duration),
    #[error("byok-proxy is overloaded. Retry shortly.")]
    Overloaded,
    #[error(
        "The upstream could not be reached. Retry shortly; if it persists, tell your operator."
    )]
    UpstreamUnavailable,
    #[error("The upstream did not start answering within {0:?}.")]
    UpstreamTimeout(Duration),
    #[error("The operator has not configured the upstream: byok-proxy has no gateway key (AI_GATEWAY_API_KEY / upstream.gateway.api_key). Tell your byok-proxy operator.")]
    UpstreamNotConfigured,
    #[error("The gateway refused the operator's gateway key (HTTP {0}). Nothing is wrong with your token or your provider keys: tell your byok-proxy operator to check AI_GATEWAY_API_KEY.")]
    UpstreamAuthFailed(u16),
    #[error("{0}")]
    NotFound(String),
    #[error("Method not allowed on this route.")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("The database is unavailable. Retry shortly.")]
    StoreUnavailable,
    #[error("Internal error. The request id identifies it in the proxy's log.")]
    Internal,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::InvalidApiKey | ProxyError::InvalidAdminToken => StatusCode::UNAUTHORIZED,
            ProxyError::UserDisabled
            | ProxyError::NoProviderKey(_)
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::RouteNotAllowed { .. }
            | ProxyError::InsufficientScope
            | ProxyError::CsrfFailed => StatusCode::FORBIDDEN,
            ProxyError::InvalidRequest(_) | ProxyError::UnknownProvider(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Overloaded | ProxyError::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UpstreamUnavailable
            | ProxyError::UpstreamNotConfigured
            | ProxyError::UpstreamAuthFailed(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Conflict(_) => StatusCode::CONFLICT,
            ProxyError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `code` of the envelope.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::InvalidApiKey | ProxyError::InvalidAdminToken => "invalid_api_key",
            ProxyError::UserDisabled => "user_disabled",
            ProxyError::NoProviderKey(_) => "no_provider_key",
            ProxyError::ModelNotAllowed { .. } => "model_not_allowed",
            ProxyError::RouteNotAllowed { .. } => "route_not_allowed",
            ProxyError::InsufficientScope => "insufficient_scope",
            ProxyError::CsrfFailed => "csrf_failed",
            ProxyError::InvalidRequest(_) => "invalid_request",
            ProxyError::UnknownProvider(_) => "unknown_provider",
            ProxyError::RequestTooLarge { .. } => "request_too_large",
            ProxyError::UnsupportedMediaType => "unsupported_media_type",
            ProxyError::RequestTimeout(_) => "request_timeout",
            ProxyError::RateLimited { .. } => "rate_limit_exceeded",
            ProxyError::Overloaded => "overloaded",
            ProxyError::UpstreamUnavailable => "upstream_unavailable",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::UpstreamNotConfigured => "upstream_not_configured",
            ProxyError::UpstreamAuthFailed(_) => "upstream_auth_failed",
            ProxyError::NotFound(_) => "not_found",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::Conflict(_) => "conflict",
            ProxyError::StoreUnavailable => "store_unavailable",
            ProxyError::Internal => "internal_error",
        }
    }

    /// The OpenAI `type` of the envelope.
    fn openai_type(&self) -> &'static str {
        match self {
            ProxyError::InvalidApiKey | ProxyError::InvalidAdminToken => "authentication_error",
            ProxyError::UserDisabled
            | ProxyError::NoProviderKey(_)
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::RouteNotAllowed { .. }
            | ProxyError::InsufficientScope
            | ProxyError::CsrfFailed => "permission_error",
            ProxyError::InvalidRequest(_)
            | ProxyError::UnknownProvider(_)
            | ProxyError::RequestTooLarge { .. }
            | ProxyError::UnsupportedMediaType
            | ProxyError::RequestTimeout(_)
            | ProxyError::NotFound(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::Conflict(_) => "invalid_request_error",
            ProxyError::RateLimited { .. } => "rate_limit_error",
            ProxyError::Overloaded
            | ProxyError::UpstreamUnavailable
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::UpstreamNotConfigured
            | ProxyError::UpstreamAuthFailed(_)
            | ProxyError::StoreUnavailable
            | ProxyError::Internal => "server_error",
        }
    }

    /// Anthropic's error `type`, for `/v1/messages*`.
    fn anthropic_type(&self) -> &'static str {
        match self {
            ProxyError::InvalidApiKey | ProxyError::InvalidAdminToken => "authentication_error",
            ProxyError::UserDisabled
            | ProxyError::NoProviderKey(_)
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::RouteNotAllowed { .. }
            | ProxyError::InsufficientScope
            | ProxyError::CsrfFailed => "permission_error",
            ProxyError::InvalidRequest(_)
            | ProxyError::UnknownProvider(_)
            | ProxyError::UnsupportedMediaType
            | ProxyError::RequestTimeout(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::Conflict(_) => "invalid_request_error",
            ProxyError::RequestTooLarge { .. } => "request_too_large",
            ProxyError::NotFound(_) => "not_found_error",
            ProxyError::RateLimited { .. } => "rate_limit_error",
            ProxyError::Overloaded => "overloaded_error",
            ProxyError::UpstreamUnavailable
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::UpstreamNotConfigured
            | ProxyError::UpstreamAuthFailed(_)
            | ProxyError::StoreUnavailable
            | ProxyError::Internal => "api_error",
        }
    }

    /// Whether retrying the same request can succeed. The others are answered with
    /// `x-should-retry: false`.
    pub fn retryable(&self) -> bool {
        match self {
            ProxyError::InvalidApiKey
            | ProxyError::InvalidAdminToken
            | ProxyError::UserDisabled
            | ProxyError::NoProviderKey(_)
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::RouteNotAllowed { .. }
            | ProxyError::InsufficientScope
            | ProxyError::CsrfFailed
            | ProxyError::InvalidRequest(_)
            | ProxyError::UnknownProvider(_)
            | ProxyError::RequestTooLarge { .. }
            | ProxyError::UnsupportedMediaType
            | ProxyError::NotFound(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::Conflict(_)
            | ProxyError::UpstreamNotConfigured
            | ProxyError::UpstreamAuthFailed(_) => false,
            ProxyError::RateLimited { .. }
            | ProxyError::RequestTimeout(_)
            | ProxyError::Overloaded
            | ProxyError::UpstreamUnavailable
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::StoreUnavailable
            | ProxyError::Internal => true,
        }
    }

    /// A short label for metrics and logs (low cardinality).
    pub fn kind(&self) -> &'static str {
        self.code()
    }

    /// The response in the OpenAI envelope (or Anthropic's shape when `anthropic` is set).
    pub fn to_response(&self, anthropic: bool) -> Response<Body> {
        let body = if anthropic {
            serde_json::json!({
                "type": "error",
                "error": { "type": self.anthropic_type(), "message": self.to_string() }
            })
        } else {
            serde_json::json!({
                "error": {
                    "message": self.to_string(),
                    "type": self.openai_type(),
                    "param": null,
                    "code": self.code(),
                }
            })
        };
        let mut resp = json_response(self.status(), &body);
        let headers = resp.headers_mut();
        if !self.retryable() {
            // Clients such as Claude Code retry anything else for minutes.
            headers.insert(
                crate::http_util::names::X_SHOULD_RETRY,
                HeaderValue::from_static("false"),
            );
        }
        match self {
            ProxyError::RateLimited {
                rate, retry_after, ..
            } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                rate.apply(headers);
            }
            ProxyError::Overloaded | ProxyError::StoreUnavailable => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProxyError::InvalidApiKey | ProxyError::InvalidAdminToken => {
                headers.insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        resp.extensions_mut().insert(ErrorKind(self.kind()));
        resp
    }
}

/// Rides in response extensions so the metrics/log layer can label the error.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

impl From<crate::auth::scopes::Denied> for ProxyError {
    fn from(d: crate::auth::scopes::Denied) -> Self {
        match d {
            crate::auth::scopes::Denied::Model(model) => ProxyError::ModelNotAllowed { model },
            crate::auth::scopes::Denied::Route(route) => ProxyError::RouteNotAllowed { route },
        }
    }
}

impl From<crate::store::Error> for ProxyError {
    fn from(e: crate::store::Error) -> Self {
        match e {
            crate::store::Error::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ProxyError::StoreUnavailable
            }
            crate::store::Error::Conflict(detail) => ProxyError::Conflict(detail),
            other => {
                tracing::error!(error = %other, "store error");
                ProxyError::Internal
            }
        }
    }
}
