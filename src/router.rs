//! Path -> [`Route`]. Each route has a low-cardinality label (its template) for metrics and
//! logs, and says who may call it ([`Access`]).

/// Every route byok-proxy serves. Path parameters are kept as text; handlers parse them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Ui(String),
    // OpenAI/Anthropic-compatible proxy routes
    ChatCompletions,
    Embeddings,
    Responses,
    Messages,
    CountTokens,
    Models,
    Model(String),
    // self-service
    Me,
    Providers,
    ProvidersHealth,
    Keys,
    Key(String),
    KeyTest(String),
    Usage,
    Audit,
    Tokens,
    Token(String),
    // web sign-in
    AuthConfig,
    AuthLogin,
    AuthCallback,
    AuthLogout,
    // operator
    AdminUsers,
    AdminUser(String),
    AdminUserTokens(String),
    AdminToken(String),
    AdminAudit,
    NotFound,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The unauthenticated allowlist: operations routes, the UI's static files and the
    /// sign-in redirects.
    Open,
    /// `/v1`: an app token, never a web session.
    App,
    /// `/api` and logout: an app token or a web session.
    User,
    /// `/admin`: the admin token or an admin's web session.
    Admin,
}

impl Route {
    pub fn parse(path: &str) -> Route {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segs.as_slice() {
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            ["openapi.json"] => Route::OpenApi,
            ["ui", rest @ ..] => Route::Ui(rest.join("/")),
            ["v1", "chat", "completions"] => Route::ChatCompletions,
            ["v1", "embeddings"] => Route::Embeddings,
            ["v1", "responses"] => Route::Responses,
            ["v1", "messages"] => Route::Messages,
            ["v1", "messages", "count_tokens"] => Route::CountTokens,
            ["v1", "models"] => Route::Models,
            ["v1", "models", rest @ ..] if !rest.is_empty() => {
                // SDKs send `openai%2Fgpt-4o`; others the raw slash.
                Route::Model(percent_decode(&rest.join("/")))
            }
            ["api", "me"] => Route::Me,
            ["api", "providers"] => Route::Providers,
            ["api", "providers", "health"] => Route::ProvidersHealth,
            ["api", "keys"] => Route::Keys,
            ["api", "keys", id] => Route::Key(id.to_string()),
            ["api", "keys", id, "test"] => Route::KeyTest(id.to_string()),
            ["api", "usage"] => Route::Usage,
            ["api", "audit"] => Route::Audit,
            ["api", "tokens"] => Route::Tokens,
            ["api", "tokens", id] => Route::Token(id.to_string()),
            ["auth", "config"] => Route::AuthConfig,
            ["auth", "login"] => Route::AuthLogin,
            ["auth", "callback"] => Route::AuthCallback,
            ["auth", "logout"] => Route::AuthLogout,
            ["admin", "users"] => Route::AdminUsers,
            ["admin", "users", id] => Route::AdminUser(id.to_string()),
            ["admin", "users", id, "tokens"] => Route::AdminUserTokens(id.to_string()),
            ["admin", "tokens", id] => Route::AdminToken(id.to_string()),
            ["admin", "audit"] => Route::AdminAudit,
            [""] => Route::Ui(String::new()),
            _ => Route::NotFound,
        }
    }

    /// The route template, used as the metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Ui(_) => "/ui",
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Responses => "/v1/responses",
            Route::Messages => "/v1/messages",
            Route::CountTokens => "/v1/messages/count_tokens",
            Route::Models => "/v1/models",
            Route::Model(_) => "/v1/models/{id}",
            Route::Me => "/api/me",
            Route::Providers => "/api/providers",
            Route::ProvidersHealth => "/api/providers/health",
            Route::Keys => "/api/keys",
            Route::Key(_) => "/api/keys/{id}",
            Route::KeyTest(_) => "/api/keys/{id}/test",
            Route::Usage => "/api/usage",
            Route::Audit => "/api/audit",
            Route::Tokens => "/api/tokens",
            Route::Token(_) => "/api/tokens/{id}",
            Route::AuthConfig => "/auth/config",
            Route::AuthLogin => "/auth/login",
            Route::AuthCallback => "/auth/callback",
            Route::AuthLogout => "/auth/logout",
            Route::AdminUsers => "/admin/users",
            Route::AdminUser(_) => "/admin/users/{id}",
            Route::AdminUserTokens(_) => "/admin/users/{id}/tokens",
            Route::AdminToken(_) => "/admin/tokens/{id}",
            Route::AdminAudit => "/admin/audit",
            Route::NotFound => "unknown",
        }
    }

    pub fn access(&self) -> Access {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::OpenApi
            | Route::Ui(_)
            | Route::AuthConfig
            | Route::AuthLogin
            | Route::AuthCallback
            | Route::NotFound => Access::Open,
            Route::AdminUsers
            | Route::AdminUser(_)
            | Route::AdminUserTokens(_)
            | Route::AdminToken(_)
            | Route::AdminAudit => Access::Admin,
            Route::ChatCompletions
            | Route::Embeddings
            | Route::Responses
            | Route::Messages
            | Route::CountTokens
            | Route::Models
            | Route::Model(_) => Access::App,
            Route::Me
            | Route::Providers
            | Route::ProvidersHealth
            | Route::Keys
            | Route::Key(_)
            | Route::KeyTest(_)
            | Route::Usage
            | Route::Audit
            | Route::Tokens
            | Route::Token(_)
            | Route::AuthLogout => Access::User,
        }
    }

    /// Errors on the Anthropic routes use Anthropic's shape.
    pub fn anthropic_errors(&self) -> bool {
        matches!(self, Route::Messages | Route::CountTokens)
    }
}

/// Decodes `%XX` escapes; malformed escapes are kept as written.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_templates() {
        assert_eq!(
            Route::parse("/v1/models/openai/gpt-4o"),
            Route::Model("openai/gpt-4o".into())
        );
        assert_eq!(
            Route::parse("/api/keys/abc/test"),
            Route::KeyTest("abc".into())
        );
        assert_eq!(Route::parse("/api/keys/"), Route::Keys);
        assert_eq!(Route::parse("/nope"), Route::NotFound);
        assert_eq!(
            Route::parse("/admin/users/x/tokens").access(),
            Access::Admin
        );
        assert_eq!(Route::parse("/healthz").access(), Access::Open);
        assert_eq!(Route::parse("/auth/callback").access(), Access::Open);
        assert_eq!(Route::parse("/v1/models").access(), Access::App);
        assert_eq!(Route::parse("/api/tokens/x").access(), Access::User);
        assert_eq!(Route::parse("/auth/logout").access(), Access::User);
    }
}
