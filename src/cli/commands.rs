//! What each subcommand does. Config errors and failures are printed plainly to stderr with
//! a non-zero exit; logs go to stderr through tracing; command output goes to stdout.

use super::{Cli, Command, KeyCommand, TokenCommand, UserCommand};
use crate::accounts;
use crate::config::{Config, EnvMap};
use crate::state::{vault_from_config, AppState};
use crate::store::{AuditEntry, Store, UserPatch};
use anyhow::{anyhow, Context};
use std::path::PathBuf;
use std::process::ExitCode;

/// Parses arguments, loads the configuration, initialises logging and runs the command.
pub fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    let env: EnvMap = std::env::vars().collect();
    let file = cli.config.clone().or_else(|| {
        let default = PathBuf::from("config/byok-proxy.toml");
        default.exists().then_some(default)
    });
    let config = match Config::load(file.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("byok-proxy: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let quiet = !matches!(cli.command, Command::Serve);
    crate::telemetry::init(&config.log, quiet);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Command::CheckConfig = cli.command {
        for w in &config.warnings {
            println!("warning: {w}");
        }
        println!(
            "configuration OK{}",
            file.map(|f| format!(" ({})", f.display()))
                .unwrap_or_default()
        );
        if config.crypto.master_key.is_none() {
            println!(
                "note: no master key set; serve will use the development key file {}",
                config.crypto.master_key_file.display()
            );
        }
        return ExitCode::SUCCESS;
    }
    // One core to run on (a container's CPU quota, or an affinity mask): one thread does it
    // all — accepting, every connection, the upstream connections they drive — with tokio's
    // current-thread scheduler, which skips the work-stealing machinery and cross-thread
    // wake-ups a single worker cannot use. More cores: the work-stealing scheduler, one worker
    // per core.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("byok-proxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("byok-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cli_audit(action: &'static str) -> AuditEntry {
    AuditEntry {
        actor_user_id: None,
        action,
        target: None,
        detail: serde_json::json!({ "by": "cli" }),
        request_id: None,
        remote_addr: None,
    }
}

async fn store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database.url, config.database.pool_size)
        .await
        .context("cannot open the database")?;
    store.migrate().await.context("cannot apply migrations")?;
    Ok(store)
}

async fn find_user(store: &Store, id_or_name: &str) -> anyhow::Result<crate::store::User> {
    store
        .find_user(id_or_name)
        .await?
        .ok_or_else(|| anyhow!("no user `{id_or_name}` (see `byok-proxy user list`)"))
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let store = Store::connect(&config.database.url, config.database.pool_size).await?;
            let applied = store.migrate().await?;
            println!(
                "migrations applied: {applied:?} ({} store)",
                store.backend()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => Ok(ExitCode::SUCCESS),
        Command::User(cmd) => user(cmd, &config).await,
        Command::Token(cmd) => token(cmd, &config).await,
        Command::Key(KeyCommand::Generate) => {
            println!(
                "{}",
                crate::keys::crypto::MasterKey::generate()
                    .to_base64()
                    .expose()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(KeyCommand::Rotate { batch }) => {
            if config.crypto.master_key.is_none() {
                anyhow::bail!(
                    "key rotate needs the new key in BYOK_MASTER_KEY (crypto.master_key) and the \
                     old one(s) in crypto.old_keys"
                );
            }
            let vault = vault_from_config(&config)?;
            let store = store(&config).await?;
            let report = crate::keys::rotate(&store, &vault, batch.max(1)).await?;
            println!(
                "re-encrypted {} credential(s) under key version {}",
                report.rotated,
                vault.current_version()
            );
            if report.failed.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                for id in &report.failed {
                    eprintln!(
                        "could not open credential {id}: no configured key opens it for its row"
                    );
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let drain = config.shutdown_timeout;
    let app = AppState::build(config).await?;
    tracing::info!(addr = %listener.local_addr()?, store = app.store.backend(), "byok-proxy listening");
    crate::server::run(
        listener,
        app.clone(),
        crate::server::shutdown_signal(),
        drain,
    )
    .await;
    app.usage.flush().await;
    // Failed-auth rows of the current window would otherwise be lost with the process.
    app.auth.flush_failures().await;
    tracing::info!("usage flushed; failed-auth audit flushed; bye");
    Ok(ExitCode::SUCCESS)
}

async fn user(cmd: UserCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let store = store(config).await?;
    match cmd {
        UserCommand::Create { name, email } => {
            let user =
                accounts::create_user(&store, &name, email.as_deref(), cli_audit("user.created"))
                    .await?;
            println!("created user {} ({})", user.name, user.id);
        }
        UserCommand::List => {
            println!("{:<36}  {:<24}  {:<8}  email", "id", "name", "status");
            for u in store.list_users().await? {
                println!(
                    "{:<36}  {:<24}  {:<8}  {}",
                    u.id,
                    u.name,
                    if u.disabled { "disabled" } else { "active" },
                    u.email.unwrap_or_default()
                );
            }
        }
        UserCommand::Disable { id } => {
            let u = find_user(&store, &id).await?;
            let mut audit = cli_audit("user.disabled");
            audit.target = Some(crate::store::user_target(u.id));
            store
                .update_user(
                    u.id,
                    UserPatch {
                        disabled: Some(true),
                        requests_per_minute: None,
                    },
                    Some(audit),
                )
                .await?;
            println!("disabled user {} ({})", u.name, u.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn token(cmd: TokenCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let store = store(config).await?;
    match cmd {
        TokenCommand::Create(args) => {
            let u = find_user(&store, &args.user).await?;
            let expires_at = args
                .expires_in
                .as_deref()
                .map(accounts::expiry)
                .transpose()?;
            let scopes = crate::auth::scopes::Scopes {
                allowed_models: (!args.allow_models.is_empty()).then_some(args.allow_models),
                allowed_routes: (!args.allow_routes.is_empty()).then_some(args.allow_routes),
                requests_per_minute: args.requests_per_minute,
            }
            .checked()?;
            let minted = accounts::create_token(
                &store,
                &u,
                args.name,
                expires_at,
                scopes,
                cli_audit("token.created"),
            )
            .await?;
            eprintln!(
                "token {} for user {}{} — shown once, store it now:",
                minted.record.id,
                u.name,
                minted
                    .record
                    .expires_at
                    .map(|t| format!(", expires {t}"))
                    .unwrap_or_default()
            );
            println!("{}", minted.token.expose());
        }
        TokenCommand::List { user } => {
            let u = find_user(&store, &user).await?;
            println!(
                "{:<36}  {:<9}  {:<16}  {:<8}  expires",
                "id", "prefix", "name", "status"
            );
            for t in store.list_tokens(u.id).await? {
                let status = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<36}  {:<9}  {:<16}  {:<8}  {}",
                    t.id,
                    t.prefix,
                    t.name.unwrap_or_default(),
                    status,
                    t.expires_at
                        .map(|e| e.to_rfc3339())
                        .unwrap_or_else(|| "never".into())
                );
            }
        }
        TokenCommand::Revoke { token_id } => {
            let id = uuid::Uuid::parse_str(&token_id).map_err(|_| {
                anyhow!("`{token_id}` is not a token id (see `byok-proxy token list`)")
            })?;
            let mut audit = cli_audit("token.revoked");
            audit.detail = serde_json::json!({ "by": "cli", "token_id": id });
            match store.revoke_token(id, audit).await? {
                Some(t) => println!("revoked token {} ({})", t.id, t.prefix),
                None => anyhow::bail!("no token {id}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
