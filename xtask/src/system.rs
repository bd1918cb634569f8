//! Small helpers over the operating system: who we are, running a command, finding a
//! program, and Debian packages through `apt-get` (as root; otherwise the one command to run).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this process runs as root (uid 0).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `cmd` (stdin closed, output shown); fails with `what` unless it exits 0.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Whether `program args...` runs and exits 0 (output discarded).
pub fn runs(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first `name` on `PATH` that is a file.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Installs Debian `packages` with `apt-get` (refreshing the package lists once per run when
/// the first try fails). Not root: stops with the command to run.
pub fn apt_install(packages: &[&str], recommends: bool, why: &str) -> Result<()> {
    let list = packages.join(" ");
    if !is_root() {
        bail!(
            "{why} needs the Debian package(s) {list}, and installing them needs root: \
             run `sudo apt-get install -y {list}`, then `cargo xtask test` again"
        );
    }
    if which("apt-get").is_none() {
        bail!("{why} needs {list}; this system has no apt-get: install them, then run again");
    }
    static UPDATED: AtomicBool = AtomicBool::new(false);
    crate::say(format!("installing {list} (apt-get) for {why}"));
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "-qq", "-o", "Dpkg::Use-Pty=0"]);
        if !recommends {
            cmd.arg("--no-install-recommends");
        }
        quiet(cmd.args(packages), &format!("apt-get install {list}"))
    };
    if install().is_ok() {
        return Ok(());
    }
    if !UPDATED.swap(true, Ordering::SeqCst) {
        crate::say("refreshing the package lists (apt-get update)");
        quiet(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
    }
    install()
}

/// Runs an apt command non-interactively; its (long) output is shown only if it fails.
fn quiet(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// uid and gid of a local user (through NSS: `getent passwd NAME`).
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let mut fields = line.trim().split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}

/// `path` relative to `base` when it is inside it, for short messages.
pub fn short(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}
