//! byok-proxy: a self-hosted, OpenAI-compatible LLM proxy that sends each user's requests
//! upstream with *their own* provider credentials (BYOK), stored AES-256-GCM encrypted.
//!
//! # Layout
//!
//! Top of the request path first; each module imports only modules below it (no cycles).
//!
//! - [`cli`]: clap types; [`cli::commands`] runs each subcommand.
//! - [`server`]: accept loop on a bound listener (HTTP/1.1 + HTTP/2, connection cap, graceful
//!   drain); [`watchdog`]: connection deadlines and stalled-response sweeping.
//! - [`app`]: **the request spine**, written once in `app::handle` (see below).
//! - [`ops`] (health, readiness, metrics, OpenAPI, UI assets), [`proxy`] (`/v1`),
//!   [`api`] (self-service `/api`), [`admin`] (operator `/admin`): the handlers.
//! - [`state`]: `AppState`, everything a request may need, built once.
//! - [`auth`]: the authenticate stage (app tokens -> SHA-256 -> cached lookup ->
//!   [`auth::Caller`]; web sessions [`auth::sessions`]; token scopes [`auth::scopes`] and
//!   `Caller::authorize`; the admin token; aggregated failure audit); [`auth::oidc`] and
//!   [`signin`]: web sign-in (`/auth/*`).
//! - [`limits`]: the overload and admit stages (global slot, per-user GCRA and concurrency,
//!   a scoped token's own rate, the buffered-bytes budget).
//! - [`upstream`]: the pooled client; [`upstream::gateway`] (billing rules: BYOK, `only` /
//!   `order`, system-credential detection), [`upstream::direct`] (provider auth),
//!   [`upstream::headers`] (allowlists), [`upstream::catalog`] (model list).
//! - [`stream`]: `PassthroughBody`, upstream bytes out unchanged, observed once.
//! - [`usage`]: usage extraction and the off-path batch writer; [`health`]: provider health.
//! - [`request`]: the request context and the one body reader (size, time, budget, encoding).
//! - [`keys`]: provider credentials ([`keys::providers`] shapes, [`keys::crypto`] AES-256-GCM
//!   with row-bound AAD, [`keys::ring`] the decrypted-credential cache); [`accounts`]: users
//!   and tokens.
//! - [`store`]: the persistence facade over [`store::sqlite`] and [`store::postgres`], and
//!   cross-replica invalidation ([`store::notify`]).
//! - [`error`]: `ProxyError`, the OpenAI (or Anthropic) error envelope; [`http_util`],
//!   [`config`], [`metrics`], [`secret`], [`telemetry`].
//!
//! # How a request flows
//!
//! `server::run` accepts (within `server.max_connections`, under the [`watchdog`]'s
//! deadlines) and calls [`app::handle`], which runs the stages in this order:
//! context (request id, route) -> overload (global slot) -> authenticate (app token, web
//! session outside `/v1`, admin token) and authorize (token scopes) -> admit (rate,
//! concurrency) -> dispatch (the route's handler; for `/v1`: read -> resolve -> credentials
//! -> build -> send -> wrap) -> respond (error envelope, request id, rate headers, metrics)
//! -> account (when the response body ends: access line; usage, health and stream metrics from
//! the proxied body's finish callback).

pub mod accounts;
pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod health;
pub mod http_util;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod request;
pub mod router;
pub mod secret;
pub mod server;
pub mod signin;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod ui;
pub mod upstream;
pub mod usage;
pub mod watchdog;
