//! The PostgreSQL server the tests use (they read `BYOK_TEST_DATABASE_URL`).
//!
//! The rule, in order:
//! 1. `BYOK_TEST_DATABASE_URL` set: it must answer, or the run fails. CI sets it, so a
//!    database that is down fails CI instead of being replaced by something else.
//! 2. Not set: the tests' default, [`DEFAULT_URL`], when it answers.
//! 3. Otherwise a throwaway cluster ([`Cluster`]): the system's `initdb` and `pg_ctl` (Debian:
//!    `/usr/lib/postgresql/*/bin`, package `postgresql`, installed when root and missing) in a
//!    temporary directory on a free port of 127.0.0.1, run as the `postgres` user when we are
//!    root (initdb refuses root). It is stopped and removed when the run ends, also on an
//!    error or Ctrl-C.

use crate::say;
use crate::system::{apt_install, is_root, user_ids, which};
use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The tests' own default (tests/it/common/mod.rs `pg_base_url`).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Where the throwaway cluster lives while it runs; shared with the signal handler, which
/// stops it on Ctrl-C.
pub type Slot = Arc<Mutex<Option<Cluster>>>;

/// The URL the tests get, following the rule in the module doc (`own`: straight to 3).
pub fn resolve(slot: &Slot, own: bool) -> Result<String> {
    if own {
        say("PostgreSQL: starting a throwaway cluster (--own-postgres)");
        return start_own(slot);
    }
    if let Ok(url) = std::env::var("BYOK_TEST_DATABASE_URL") {
        if let Err(e) = answers(&url) {
            bail!(
                "BYOK_TEST_DATABASE_URL={} does not answer: {e}. A URL you give must work \
                 (CI relies on that); unset it to let `cargo xtask test` use {DEFAULT_URL} or \
                 a throwaway PostgreSQL of its own",
                masked(&url)
            );
        }
        say(format!(
            "PostgreSQL: {} (BYOK_TEST_DATABASE_URL)",
            masked(&url)
        ));
        return Ok(url);
    }
    if answers(DEFAULT_URL).is_ok() {
        say(format!("PostgreSQL: {DEFAULT_URL}"));
        return Ok(DEFAULT_URL.to_string());
    }
    say(format!(
        "PostgreSQL: nothing answers at {DEFAULT_URL}; starting a throwaway cluster"
    ));
    start_own(slot)
}

fn start_own(slot: &Slot) -> Result<String> {
    // Held while the cluster starts: a Ctrl-C meanwhile waits, then stops what started.
    let mut held = slot.lock().unwrap_or_else(PoisonError::into_inner);
    let cluster = held.insert(Cluster::create()?);
    cluster.start()?;
    let url = cluster.url();
    say(format!(
        "PostgreSQL: throwaway cluster at {url} ({})",
        cluster.dir.display()
    ));
    Ok(url)
}

/// Stops and removes the throwaway cluster, if one runs.
pub fn stop(slot: &Slot) {
    let mut held = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = held.take() {
        say("stopping the throwaway PostgreSQL");
        drop(cluster);
    }
}

/// Whether a server at `url` accepts a connection and answers `SELECT 1` within seconds.
pub fn answers(url: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let limit = Duration::from_secs(5);
        let (client, connection) =
            tokio::time::timeout(limit, tokio_postgres::connect(url, tokio_postgres::NoTls))
                .await
                .map_err(|_| anyhow!("no answer within {limit:?}"))?
                .map_err(|e| anyhow!("{}", error_chain(&e)))?;
        let connection = tokio::spawn(connection);
        let result = tokio::time::timeout(limit, client.simple_query("SELECT 1"))
            .await
            .map_err(|_| anyhow!("no answer to SELECT 1 within {limit:?}"))?
            .map_err(|e| anyhow!("{}", error_chain(&e)));
        drop(client);
        let _ = connection.await;
        result.map(drop)
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `url` with any password replaced by `***`, for messages.
pub fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A throwaway PostgreSQL cluster: data, socket and log in one temporary directory.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    /// uid/gid the server runs as (set when we are root).
    owner: Option<(u32, u32)>,
    port: u16,
}

impl Cluster {
    /// Finds the server programs (installing them when root and missing), picks the user
    /// and creates the directory. Nothing runs yet.
    fn create() -> Result<Cluster> {
        let bin = match server_bin_dir() {
            Some(bin) => bin,
            None => {
                apt_install(&["postgresql"], false, "the PostgreSQL tests")?;
                server_bin_dir().ok_or_else(|| {
                    anyhow!("initdb and pg_ctl are still missing after apt-get install postgresql")
                })?
            }
        };
        let owner = if is_root() {
            Some(
                ["postgres", "nobody"]
                    .into_iter()
                    .find_map(user_ids)
                    .ok_or_else(|| {
                        anyhow!("running as root, and neither a `postgres` nor a `nobody` user exists to run initdb as")
                    })?,
            )
        } else {
            None
        };
        // As root, TMPDIR may be a folder the server's user cannot enter.
        let base = if owner.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = base.join(format!("byok-test-pg-{}-{nanos:x}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .with_context(|| format!("cannot hand {} to uid {uid}", dir.display()))?;
        }
        Ok(Cluster {
            dir,
            bin,
            owner,
            port: 0,
        })
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A server program, run as the cluster's user, in its directory, output captured.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        cmd
    }

    /// initdb, then pg_ctl start on a free port (a few tries: another process may take the
    /// port between our check and the server's bind).
    fn start(&mut self) -> Result<()> {
        let data = self.dir.join("data");
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .context("cannot run initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = self.dir.join("server.log");
        let mut last = String::new();
        for _ in 0..3 {
            self.port = free_port()?;
            // Durability is of no use to a cluster removed at the end.
            let options = format!(
                "-p {} -c listen_addresses=127.0.0.1 -k '{}' -c max_connections=200 \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                self.port,
                self.dir.display()
            );
            let out = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .output()
                .context("cannot run pg_ctl")?;
            if out.status.success() && answers(&self.url()).is_ok() {
                return Ok(());
            }
            last = format!(
                "{}{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        bail!("the throwaway PostgreSQL did not start: {last}")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The folder holding `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/<version>/bin`,
/// else wherever `PATH` has them.
fn server_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let initdb = which("initdb")?.canonicalize().ok()?;
    let bin = initdb.parent()?.to_path_buf();
    has_server(&bin).then_some(bin)
}

fn has_server(bin: &Path) -> bool {
    bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::{answers, masked, Cluster};

    #[test]
    fn a_throwaway_cluster_answers_and_is_gone_once_dropped() {
        let mut cluster = Cluster::create().unwrap();
        cluster.start().unwrap();
        let (url, dir) = (cluster.url(), cluster.dir.clone());
        answers(&url).unwrap();
        drop(cluster);
        assert!(!dir.exists(), "{} is left behind", dir.display());
        assert!(answers(&url).is_err(), "{url} still answers");
    }

    #[test]
    fn masked_hides_only_a_password() {
        assert_eq!(
            masked("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(masked(super::DEFAULT_URL), super::DEFAULT_URL);
    }
}
