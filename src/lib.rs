//! byok-proxy: a self-hosted, OpenAI-compatible LLM proxy that sends each user's requests
//! upstream with *their own* provider credentials (BYOK), stored AES-256-GCM encrypted.
//!
//! # Layout
//!
//! - [`cli`]: clap types; [`cli::commands`] runs each subcommand.
//! - [`config`]: defaults -> TOML file -> `BYOK_SECTION__KEY` env, checked into [`config::Config`].
//! - [`server`]: accept loop on a bound listener, HTTP/1.1 + HTTP/2, graceful drain.
//! - [`app`]: `AppState` and the request pipeline (request id, route, auth, handler, access log).
//! - [`router`]: path -> [`router::Route`], the metrics label and who may call it.
//! - [`auth`]: app tokens -> SHA-256 -> cached lookup -> [`auth::Caller`]; the admin token.
//! - [`accounts`]: users and app tokens (minting, expiry).
//! - [`keys`]: provider credentials: [`keys::providers`] (shapes, validation, masking),
//!   [`keys::crypto`] (master keys, AES-256-GCM seal/open with row-bound AAD), rotation.
//! - [`store`]: the persistence enum over [`store::sqlite`] and [`store::postgres`].
//! - [`api`]: self-service `/api`; [`admin`]: operator `/admin`.
//! - [`error`]: `ProxyError`, the OpenAI (or Anthropic) error envelope.
//! - [`secret`]: `Secret<T>`, redacted and zeroized.
//!
//! # How a request flows
//!
//! `server::run` accepts -> `AppState::handle` assigns the request id and route -> auth (app
//! token or admin token; `/healthz`, `/readyz` are open) -> the route's handler, which reads
//! the body under a limit and answers JSON or an error envelope -> one access log line.

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
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod ui;
pub mod upstream;
pub mod usage;
pub mod watchdog;
