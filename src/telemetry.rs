//! Logging setup: tracing to stderr, `text` or `json` (`log.format`), level from `RUST_LOG`
//! or `log.level`. Nothing logged anywhere carries key material or tokens: secrets are
//! `Secret<T>` and print as `[redacted]`.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `quiet` (CLI commands) lowers the default to warnings.
pub fn init(log: &LogConfig, quiet: bool) {
    let default = if quiet { "warn" } else { log.level.as_str() };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
