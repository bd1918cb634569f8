//! Configuration: built-in defaults, then the TOML file, then `BYOK_SECTION__KEY` environment
//! overrides (plus the well-known `BYOK_MASTER_KEY`, `BYOK_ADMIN_TOKEN`, `AI_GATEWAY_API_KEY`).
//!
//! [`Config::load`] returns checked types (durations are `Duration`, the database URL is parsed,
//! the master key is exactly 32 bytes) so nothing downstream re-validates. `serve`, `migrate`,
//! the CLI and `check-config` all go through it. Errors name the setting, what is wrong and,
//! when an environment variable set it, which one.

use crate::keys::crypto::MasterKey;
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The values used when neither the file nor the environment says otherwise. Kept as TOML so the
/// environment layer can read the type a setting expects.
const DEFAULTS: &str = r#"
listen = "127.0.0.1:8080"
public_base_url = "http://127.0.0.1:8080"
shutdown_timeout = "30s"

[server]
header_read_timeout = "10s"
idle_timeout = "60s"
body_read_timeout = "30s"
max_connections = 10000

[database]
url = "sqlite://./data/byok.db"
pool_size = 16

[crypto]
master_key_file = "./data/master.key"
old_keys = []

[upstream]
mode = "gateway"
connect_timeout = "10s"
first_byte_timeout = "120s"
idle_timeout = "300s"

[upstream.gateway]
base_url = "https://ai-gateway.vercel.sh/v1"
system_credentials = "deny"

[upstream.direct]

[limits]
max_body_bytes = 10485760
requests_per_minute = 600
burst = 60
max_concurrent_requests = 32
max_in_flight = 4096
max_buffered_bytes = 268435456

[models]
catalog_ttl = "5m"

[models.aliases]

[models.serving_providers]
anthropic = ["anthropic", "bedrock", "vertex"]
google = ["google", "vertex"]
openai = ["openai", "azure"]

[models.test_models]

[models.bare_names]
openai = "openai"
anthropic = "anthropic"

[admin]

[auth]
session_ttl = "12h"
session_idle_timeout = "2h"

[audit]
auth_failure_window = "60s"

[metrics]
enabled = true

[health]
window = "5m"
bucket = "10s"
degraded_error_ratio = 0.2
degraded_ttfb_p95 = "10s"
down_consecutive_failures = 5
min_requests = 5

[ui]
enabled = true

[log]
format = "text"
level = "info"
"#;

/// Where configuration values come from besides the file: a snapshot of the environment.
/// Tests pass their own map; nothing here calls `std::env::set_var`.
pub type EnvMap = BTreeMap<String, String>;

/// The whole checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_base_url: String,
    /// How long `serve` waits for in-flight requests after SIGTERM before it exits anyway.
    pub shutdown_timeout: Duration,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub crypto: CryptoConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    pub models: ModelsConfig,
    /// Operator token for `/admin`; `None` disables the operator API.
    pub admin_token: Option<Secret<String>>,
    /// Web sign-in (OIDC) and sessions.
    pub auth: AuthConfig,
    pub metrics_enabled: bool,
    pub ui_enabled: bool,
    pub health: HealthConfig,
    /// Failed authentications are audited as one row per source address per window.
    pub auth_failure_window: Duration,
    pub log: LogConfig,
    /// Things worth telling the operator that are not errors (logged at start).
    pub warnings: Vec<String>,
}

/// Web sign-in and its sessions (SPEC §9).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// A session ends this long after sign-in, however active.
    pub session_ttl: Duration,
    /// A session ends after this long without a request.
    pub session_idle_timeout: Duration,
    /// `None`: no web sign-in; the UI takes an app token.
    pub oidc: Option<OidcConfig>,
}

/// The OpenID provider people sign in with.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Exactly as the issuer names itself (`iss`), e.g. `https://accounts.google.com`.
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: Option<Secret<String>>,
    /// Lower-cased; empty means anyone the issuer vouches for.
    pub allowed_email_domains: Vec<String>,
    /// Lower-cased; these users are admins (set at each sign-in).
    pub admin_emails: Vec<String>,
    pub scopes: Vec<String>,
    /// Shown as "Sign in with <name>" (default: the issuer's host).
    pub name: String,
}

/// Client-connection limits: what a slow, idle or hostile client may hold.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A request's head must arrive within this (slow-header clients are closed).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request, or a response the client does not read
    /// (no write progress), is closed after this.
    pub idle_timeout: Duration,
    /// A request body must arrive within this (408 `request_timeout`).
    pub body_read_timeout: Duration,
    /// Connections beyond this are closed at once (counted), not queued.
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    pub pool_size: usize,
}

#[derive(Debug, Clone)]
pub struct CryptoConfig {
    /// The current key; `None` means the development key file is used (and created if missing).
    pub master_key: Option<MasterKey>,
    /// Previous keys, still accepted for opening until `key rotate` has re-sealed every row.
    pub old_keys: Vec<MasterKey>,
    pub master_key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamMode {
    Gateway,
    Direct,
}

/// Whether the gateway may serve a request with the operator's own ("system") credentials
/// for providers the caller holds no key for (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemCredentials {
    /// Every model a request can reach needs a credential of the caller; routing is pinned
    /// to the providers whose credentials are sent.
    Deny,
    /// Providers without a caller key are left to the gateway (the operator pays).
    Allow,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub mode: UpstreamMode,
    pub gateway_base_url: String,
    pub gateway_api_key: Option<Secret<String>>,
    pub system_credentials: SystemCredentials,
    /// provider -> its own OpenAI-compatible base URL, for `direct` mode.
    pub direct: BTreeMap<String, String>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub requests_per_minute: u32,
    pub burst: u32,
    pub max_concurrent_requests: u32,
    pub max_in_flight: usize,
    /// Request-body bytes held at once across all requests (503 `overloaded` beyond it).
    pub max_buffered_bytes: usize,
    pub redis_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ModelsConfig {
    pub aliases: BTreeMap<String, String>,
    pub catalog_ttl: Duration,
    pub serving_providers: BTreeMap<String, Vec<String>>,
    /// provider -> model used by `POST /api/keys/{id}/test` in gateway mode.
    pub test_models: BTreeMap<String, String>,
    /// The provider a model id without a `provider/` prefix (and no alias) means, per route
    /// family; `None` refuses such ids with 400 `unknown_provider`.
    pub bare_names: BareNames,
}

/// Provider of bare model names, per route family.
#[derive(Debug, Clone, Default)]
pub struct BareNames {
    /// `/v1/chat/completions`, `/v1/embeddings`, `/v1/responses` (Codex CLI's default model
    /// is a bare OpenAI name).
    pub openai: Option<String>,
    /// `/v1/messages*` (Claude Code sends dated bare `claude-*` names).
    pub anthropic: Option<String>,
}

/// Thresholds of the provider health view (`/api/providers/health`).
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// How far back outcomes count.
    pub window: Duration,
    /// Granularity of the window (memory is window / bucket counters per provider).
    pub bucket: Duration,
    /// Error ratio (failures / answered + failures) at which a provider is `degraded`.
    pub degraded_error_ratio: f64,
    /// TTFB p95 at which a provider is `degraded`.
    pub degraded_ttfb_p95: Duration,
    /// Failures in a row after which a provider is `down`.
    pub down_consecutive_failures: u32,
    /// Requests needed in the window before the error ratio is judged.
    pub min_requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// A configuration problem, with the setting it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("setting `{key}`{origin}: {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
}

// === raw (unchecked) shapes, as written in TOML ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
    public_base_url: String,
    shutdown_timeout: String,
    server: RawServer,
    database: RawDatabase,
    crypto: RawCrypto,
    upstream: RawUpstream,
    limits: RawLimits,
    models: RawModels,
    admin: RawAdmin,
    auth: RawAuth,
    audit: RawAudit,
    metrics: RawEnabled,
    ui: RawEnabled,
    log: RawLog,
    health: RawHealth,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    window: String,
    bucket: String,
    degraded_error_ratio: f64,
    degraded_ttfb_p95: String,
    down_consecutive_failures: u32,
    min_requests: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    header_read_timeout: String,
    idle_timeout: String,
    body_read_timeout: String,
    max_connections: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    auth_failure_window: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    pool_size: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrypto {
    master_key: Option<Secret<String>>,
    old_keys: Vec<Secret<String>>,
    master_key_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    mode: UpstreamMode,
    connect_timeout: String,
    first_byte_timeout: String,
    idle_timeout: String,
    gateway: RawGateway,
    direct: BTreeMap<String, RawDirect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    base_url: String,
    api_key: Option<Secret<String>>,
    system_credentials: SystemCredentials,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirect {
    base_url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: usize,
    requests_per_minute: u32,
    burst: u32,
    max_concurrent_requests: u32,
    max_in_flight: usize,
    max_buffered_bytes: usize,
    redis_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    aliases: BTreeMap<String, String>,
    catalog_ttl: String,
    serving_providers: BTreeMap<String, Vec<String>>,
    test_models: BTreeMap<String, String>,
    bare_names: RawBareNames,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBareNames {
    openai: String,
    anthropic: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token: Option<Secret<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    session_ttl: String,
    session_idle_timeout: String,
    oidc: Option<RawOidc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer_url: String,
    client_id: String,
    client_secret: Option<Secret<String>>,
    #[serde(default)]
    allowed_email_domains: Vec<String>,
    #[serde(default)]
    admin_emails: Vec<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnabled {
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: LogFormat,
    level: String,
}

/// Settings that hold secrets: their values never appear in an error message.
const SECRET_SETTINGS: &[&str] = &[
    "crypto.master_key",
    "crypto.old_keys",
    "upstream.gateway.api_key",
    "admin.token",
    "auth.oidc.client_secret",
];

/// The shortest admin token accepted (SPEC §2).
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Top-level settings, overridable as `BYOK_<KEY>`.
const TOP_LEVEL: &[&str] = &["listen", "public_base_url", "shutdown_timeout"];

/// `BYOK_*` variables that are not settings (the CLI's `BYOK_CONFIG`, the test suite's own).
const NOT_SETTINGS: &[&str] = &["BYOK_CONFIG", "BYOK_TEST_", "BYOK_SDK_", "BYOK_UI_"];

/// Environment variables with a fixed name, mapped to their setting.
const NAMED_ENV: &[(&str, &str)] = &[
    ("BYOK_MASTER_KEY", "crypto.master_key"),
    ("BYOK_ADMIN_TOKEN", "admin.token"),
    ("AI_GATEWAY_API_KEY", "upstream.gateway.api_key"),
];

// === impl Config ===

impl Config {
    /// Loads defaults, then `file` (if given), then overrides from `env`.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, an unknown setting, or a value of the wrong type or
    /// range; the error names the setting and, for an environment override, the variable.
    pub fn load(file: Option<&Path>, env: &EnvMap) -> Result<Config, Error> {
        let mut table: toml::Table =
            DEFAULTS
                .parse()
                .map_err(|e: toml::de::Error| Error::Syntax {
                    path: PathBuf::from("<defaults>"),
                    message: e.to_string(),
                })?;
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        let mut warnings = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let file_table: toml::Table =
                text.parse().map_err(|e: toml::de::Error| Error::Syntax {
                    path: path.to_path_buf(),
                    message: e.message().to_string(),
                })?;
            merge(&mut table, file_table);
        }
        for (var, value) in env {
            let key = if let Some((_, key)) = NAMED_ENV.iter().find(|(name, _)| name == var) {
                key.to_string()
            } else if let Some(rest) = var.strip_prefix("BYOK_") {
                if !rest.contains("__") {
                    // Top-level settings have no section: BYOK_LISTEN, BYOK_PUBLIC_BASE_URL, ...
                    let key = rest.to_ascii_lowercase();
                    if !TOP_LEVEL.contains(&key.as_str()) {
                        if !NOT_SETTINGS.iter().any(|p| var.starts_with(p)) {
                            warnings.push(format!(
                                "{var} is not a setting and is ignored (sections are separated by \
                                 a double underscore, e.g. BYOK_LIMITS__BURST)"
                            ));
                        }
                        continue;
                    }
                }
                rest.split("__")
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join(".")
            } else {
                continue;
            };
            set_path(&mut table, &key, value).map_err(|message| Error::Invalid {
                key: key.clone(),
                origin: format!(" (from {var})"),
                message,
            })?;
            origins.insert(key, var.clone());
        }
        let origin_of = |key: &str| -> String {
            origins
                .iter()
                .find(|(k, _)| key == k.as_str() || key.starts_with(&format!("{k}.")))
                .map(|(_, v)| format!(" (from {v})"))
                .unwrap_or_default()
        };
        let raw: Raw = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let key = e.path().to_string();
                let message = if SECRET_SETTINGS.iter().any(|s| key.starts_with(s)) {
                    // serde quotes the offending value; for these settings it may be a secret.
                    "has the wrong type: it takes a string".to_string()
                } else {
                    e.into_inner().message().to_string()
                };
                Error::Invalid {
                    origin: origin_of(&key),
                    message,
                    key,
                }
            },
        )?;
        let mut config = Config::check(raw).map_err(|(key, message)| Error::Invalid {
            origin: origin_of(key),
            key: key.to_string(),
            message,
        })?;
        if config.upstream.mode == UpstreamMode::Gateway
            && config.upstream.gateway_api_key.is_none()
        {
            warnings.push(
                "no gateway key: upstream.gateway.api_key (AI_GATEWAY_API_KEY) is not set, so \
                 every proxied request will answer 502 upstream_not_configured until it is"
                    .to_string(),
            );
        }
        config.warnings = warnings;
        Ok(config)
    }

    fn check(raw: Raw) -> Result<Config, (&'static str, String)> {
        let listen = raw.listen.parse().map_err(|_| {
            (
                "listen",
                format!("`{}` is not an address like 127.0.0.1:8080", raw.listen),
            )
        })?;
        let url = parse_database_url(&raw.database.url).map_err(|m| ("database.url", m))?;
        if raw.database.pool_size == 0 {
            return Err(("database.pool_size", "must be at least 1".into()));
        }
        let master_key = raw
            .crypto
            .master_key
            .as_ref()
            .map(|k| MasterKey::from_base64(k.expose()))
            .transpose()
            .map_err(|e| ("crypto.master_key", e.to_string()))?;
        let old_keys = raw
            .crypto
            .old_keys
            .iter()
            .map(|k| MasterKey::from_base64(k.expose()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("crypto.old_keys", e.to_string()))?;
        for (provider, p) in &raw.upstream.direct {
            check_http_url(&p.base_url)
                .map_err(|m| ("upstream.direct", format!("{provider}: {m}")))?;
        }
        check_http_url(&raw.upstream.gateway.base_url)
            .map_err(|m| ("upstream.gateway.base_url", m))?;
        if raw.limits.max_body_bytes == 0 {
            return Err(("limits.max_body_bytes", "must be at least 1".into()));
        }
        if raw.limits.requests_per_minute == 0 {
            return Err(("limits.requests_per_minute", "must be at least 1".into()));
        }
        if raw.limits.burst == 0 {
            return Err(("limits.burst", "must be at least 1".into()));
        }
        if raw.limits.max_concurrent_requests == 0 {
            return Err((
                "limits.max_concurrent_requests",
                "must be at least 1".into(),
            ));
        }
        if raw.limits.max_in_flight == 0 {
            return Err(("limits.max_in_flight", "must be at least 1".into()));
        }
        if raw.limits.max_buffered_bytes < raw.limits.max_body_bytes {
            return Err((
                "limits.max_buffered_bytes",
                "must be at least limits.max_body_bytes (one largest body must fit)".into(),
            ));
        }
        if raw.server.max_connections == 0 {
            return Err(("server.max_connections", "must be at least 1".into()));
        }
        if let Some(token) = &raw.admin.token {
            let len = token.expose().chars().count();
            if len > 0 && len < MIN_ADMIN_TOKEN_CHARS {
                return Err((
                    "admin.token",
                    format!(
                        "is too short: it needs at least {MIN_ADMIN_TOKEN_CHARS} characters \
                         (e.g. `openssl rand -base64 32`)"
                    ),
                ));
            }
        }
        let nonzero = |key: &'static str, text: &str| -> Result<Duration, (&'static str, String)> {
            match duration(text) {
                Ok(d) if d.is_zero() => Err((key, "must be longer than zero".into())),
                Ok(d) => Ok(d),
                Err(m) => Err((key, m)),
            }
        };
        let server = ServerConfig {
            header_read_timeout: nonzero(
                "server.header_read_timeout",
                &raw.server.header_read_timeout,
            )?,
            idle_timeout: nonzero("server.idle_timeout", &raw.server.idle_timeout)?,
            body_read_timeout: nonzero("server.body_read_timeout", &raw.server.body_read_timeout)?,
            max_connections: raw.server.max_connections,
        };
        let auth_failure_window =
            nonzero("audit.auth_failure_window", &raw.audit.auth_failure_window)?;
        let health = HealthConfig {
            window: duration(&raw.health.window).map_err(|m| ("health.window", m))?,
            bucket: duration(&raw.health.bucket).map_err(|m| ("health.bucket", m))?,
            degraded_error_ratio: raw.health.degraded_error_ratio,
            degraded_ttfb_p95: duration(&raw.health.degraded_ttfb_p95)
                .map_err(|m| ("health.degraded_ttfb_p95", m))?,
            down_consecutive_failures: raw.health.down_consecutive_failures.max(1),
            min_requests: raw.health.min_requests,
        };
        if health.bucket.is_zero() || health.window < health.bucket {
            return Err((
                "health.bucket",
                "must be non-zero and no longer than health.window".into(),
            ));
        }
        if !(0.0..=1.0).contains(&health.degraded_error_ratio) {
            return Err((
                "health.degraded_error_ratio",
                "must be between 0 and 1".into(),
            ));
        }
        for (family, provider) in [
            ("openai", &raw.models.bare_names.openai),
            ("anthropic", &raw.models.bare_names.anthropic),
        ] {
            if provider.contains('/') {
                return Err((
                    "models.bare_names",
                    format!("`{family}` takes a provider id like \"{family}\", not a model id"),
                ));
            }
        }
        for (alias, target) in &raw.models.aliases {
            if !target.contains('/') {
                return Err((
                    "models.aliases",
                    format!("alias `{alias}` must map to a `provider/model` id, not `{target}`"),
                ));
            }
        }
        let auth = check_auth(raw.auth, &raw.public_base_url)?;
        Ok(Config {
            listen,
            auth,
            public_base_url: raw.public_base_url,
            shutdown_timeout: duration(&raw.shutdown_timeout)
                .map_err(|m| ("shutdown_timeout", m))?,
            server,
            database: DatabaseConfig {
                url,
                pool_size: raw.database.pool_size,
            },
            crypto: CryptoConfig {
                master_key,
                old_keys,
                master_key_file: raw.crypto.master_key_file,
            },
            upstream: UpstreamConfig {
                mode: raw.upstream.mode,
                gateway_base_url: raw
                    .upstream
                    .gateway
                    .base_url
                    .trim_end_matches('/')
                    .to_string(),
                gateway_api_key: raw
                    .upstream
                    .gateway
                    .api_key
                    .filter(|k| !k.expose().is_empty()),
                system_credentials: raw.upstream.gateway.system_credentials,
                direct: raw
                    .upstream
                    .direct
                    .into_iter()
                    .map(|(k, v)| (k, v.base_url.trim_end_matches('/').to_string()))
                    .collect(),
                connect_timeout: duration(&raw.upstream.connect_timeout)
                    .map_err(|m| ("upstream.connect_timeout", m))?,
                first_byte_timeout: duration(&raw.upstream.first_byte_timeout)
                    .map_err(|m| ("upstream.first_byte_timeout", m))?,
                idle_timeout: duration(&raw.upstream.idle_timeout)
                    .map_err(|m| ("upstream.idle_timeout", m))?,
            },
            limits: LimitsConfig {
                max_body_bytes: raw.limits.max_body_bytes,
                requests_per_minute: raw.limits.requests_per_minute,
                burst: raw.limits.burst,
                max_concurrent_requests: raw.limits.max_concurrent_requests,
                max_in_flight: raw.limits.max_in_flight,
                max_buffered_bytes: raw.limits.max_buffered_bytes,
                redis_url: raw.limits.redis_url,
            },
            models: ModelsConfig {
                aliases: raw.models.aliases,
                catalog_ttl: duration(&raw.models.catalog_ttl)
                    .map_err(|m| ("models.catalog_ttl", m))?,
                serving_providers: raw.models.serving_providers,
                test_models: raw.models.test_models,
                bare_names: BareNames {
                    openai: Some(raw.models.bare_names.openai).filter(|p| !p.is_empty()),
                    anthropic: Some(raw.models.bare_names.anthropic).filter(|p| !p.is_empty()),
                },
            },
            admin_token: raw.admin.token.filter(|t| !t.expose().is_empty()),
            metrics_enabled: raw.metrics.enabled,
            health,
            auth_failure_window,
            ui_enabled: raw.ui.enabled,
            log: LogConfig {
                format: raw.log.format,
                level: raw.log.level,
            },
            warnings: Vec::new(),
        })
    }

    /// The configuration with defaults only, for tests and tools.
    ///
    /// # Errors
    /// Never in practice: the defaults are checked by a unit test.
    pub fn defaults() -> Result<Config, Error> {
        Config::load(None, &EnvMap::new())
    }
}

/// Parses a duration written like `"10s"`, `"500ms"` or `"90d"`.
///
/// # Errors
/// The text is not a duration.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like \"10s\" or \"500ms\" ({e})"))
}

fn check_auth(raw: RawAuth, public_base_url: &str) -> Result<AuthConfig, (&'static str, String)> {
    let nonzero = |key: &'static str, text: &str| match duration(text) {
        Ok(d) if d.is_zero() => Err((key, "must be longer than zero".to_string())),
        Ok(d) => Ok(d),
        Err(m) => Err((key, m)),
    };
    let session_ttl = nonzero("auth.session_ttl", &raw.session_ttl)?;
    let session_idle_timeout = nonzero("auth.session_idle_timeout", &raw.session_idle_timeout)?;
    let oidc = match raw.oidc {
        None => None,
        Some(o) => {
            check_http_url(&o.issuer_url).map_err(|m| ("auth.oidc.issuer_url", m))?;
            check_http_url(public_base_url).map_err(|m| {
                (
                    "public_base_url",
                    format!("{m} (sign-in redirects to <public_base_url>/auth/callback)"),
                )
            })?;
            if o.client_id.trim().is_empty() {
                return Err(("auth.oidc.client_id", "must not be empty".into()));
            }
            let scopes = o
                .scopes
                .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
            if !scopes.iter().any(|s| s == "openid") {
                return Err(("auth.oidc.scopes", "must include \"openid\"".into()));
            }
            let lower = |v: Vec<String>| -> Vec<String> {
                v.into_iter()
                    .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                    .filter(|d| !d.is_empty())
                    .collect()
            };
            let allowed_email_domains = lower(o.allowed_email_domains);
            if !allowed_email_domains.is_empty() && !scopes.iter().any(|s| s == "email") {
                return Err((
                    "auth.oidc.scopes",
                    "must include \"email\" when allowed_email_domains is set".into(),
                ));
            }
            let name = o.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| {
                o.issuer_url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.host().map(str::to_string))
                    .unwrap_or_else(|| o.issuer_url.clone())
            });
            Some(OidcConfig {
                issuer_url: o.issuer_url,
                client_id: o.client_id,
                client_secret: o.client_secret.filter(|s| !s.expose().is_empty()),
                allowed_email_domains,
                admin_emails: lower(o.admin_emails),
                scopes,
                name,
            })
        }
    };
    Ok(AuthConfig {
        session_ttl,
        session_idle_timeout,
        oidc,
    })
}

fn parse_database_url(url: &str) -> Result<DatabaseUrl, String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("sqlite URL needs a file path, like sqlite://./data/byok.db".into());
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DatabaseUrl::Postgres(url.to_string()))
    } else {
        Err("must start with sqlite:// or postgres://".into())
    }
}

fn check_http_url(url: &str) -> Result<(), String> {
    match url.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http") | Some("https")) && uri.host().is_some() =>
        {
            Ok(())
        }
        _ => Err(format!("`{url}` is not an http(s) URL")),
    }
}

/// Deep-merges `over` into `base`: tables merge, everything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// Sets `dotted.key` to the environment value `raw`, typed like the value already there.
fn set_path(table: &mut toml::Table, key: &str, raw: &str) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or("empty setting name")?;
    let mut cur = table;
    for part in parts {
        let next = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match next {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{part}` is not a section")),
        };
    }
    let value = match cur.get(last) {
        Some(toml::Value::String(_)) | None if !raw.starts_with('[') && !raw.starts_with('{') => {
            toml::Value::String(raw.to_string())
        }
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| "is not a whole number".to_string())?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            raw.trim()
                .parse()
                .map_err(|_| "is not true or false".to_string())?,
        ),
        _ => {
            let doc: toml::Table = format!("v = {raw}").parse().map_err(|_| {
                "is not a TOML value (a list looks like [\"a\", \"b\"], a table like { k = \"v\" })"
                    .to_string()
            })?;
            doc.get("v").cloned().ok_or("empty value")?
        }
    };
    cur.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests;
