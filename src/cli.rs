//! Command-line types (clap). Each subcommand calls one function in [`commands`].

pub mod commands;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "byok-proxy",
    version,
    about = "Self-hosted OpenAI-compatible LLM proxy with per-user BYOK credentials"
)]
pub struct Cli {
    /// Config file (TOML). Default: config/byok-proxy.toml when it exists.
    #[arg(long, global = true, env = "BYOK_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve,
    /// Apply database migrations and exit (serve also applies them at start).
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage app tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Master key operations.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Validate the configuration and exit non-zero with a clear message if it is wrong.
    CheckConfig,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: Option<String>,
    },
    /// List users.
    List,
    /// Disable a user (their tokens stop working).
    Disable {
        /// User id or name.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an app token and print it once.
    Create(TokenCreate),
    /// List a user's tokens (never the tokens themselves).
    List {
        /// User id or name.
        #[arg(long)]
        user: String,
    },
    /// Revoke a token.
    Revoke {
        /// Token id (from `token list`).
        token_id: String,
    },
}

#[derive(Debug, Args)]
pub struct TokenCreate {
    /// User id or name.
    #[arg(long)]
    pub user: String,
    /// A label for the token.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, like 90d or 12h. Default: no expiry.
    #[arg(long)]
    pub expires_in: Option<String>,
    /// Scope: a model pattern the token may use, like `openai/*` or `anthropic/claude-*`
    /// (repeat for several). Default: every model.
    #[arg(long = "allow-model", value_name = "PATTERN")]
    pub allow_models: Vec<String>,
    /// Scope: a route family the token may call: chat, embeddings, responses, messages,
    /// models (repeat for several). Default: every /v1 route.
    #[arg(long = "allow-route", value_name = "ROUTE")]
    pub allow_routes: Vec<String>,
    /// Scope: this token's own requests per minute (the user's limit still applies).
    #[arg(long)]
    pub requests_per_minute: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Re-encrypt every stored credential under the current master key (crypto.master_key),
    /// opening old rows with crypto.old_keys. Resumable: run it again after a crash.
    Rotate {
        /// Rows per transaction.
        #[arg(long, default_value_t = 100)]
        batch: u32,
    },
    /// Print a new random master key (base64) for BYOK_MASTER_KEY.
    Generate,
}
