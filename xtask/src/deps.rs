//! The programs and packages the tests drive, each checked first and installed only when
//! missing or at another version: everything npm or pip brings goes into the repository's
//! own ignored folders (`target/sdk-venv`, `tests/*/node_modules`), never into the system's
//! Python or Node; Debian packages come from `apt-get`.

use crate::system::{apt_install, run, runs, short};
use crate::{say, Repo};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The folders with a package-lock.json that `npm ci` fills, and what they serve.
pub const NPM_FOLDERS: &[(&str, &str)] = &[
    ("tests/sdk", "the OpenAI Node SDK (tests/sdk.rs)"),
    ("tests/ui", "playwright-core (tests/ui.rs)"),
    (
        "tests/agents",
        "the Claude Code and Codex CLIs (tests/agents.rs)",
    ),
    (
        "tests/oidc",
        "oidc-provider, the OpenID provider of the sign-in tests (tests/it/oidc.rs, sessions.rs, tests/ui.rs)",
    ),
];

/// The Python the SDK tests run: `BYOK_SDK_PYTHON` if set (checked, never changed), else
/// `target/sdk-venv/bin/python`, created and filled from tests/sdk/requirements.txt when
/// it lacks a pinned package.
pub fn sdk_python(repo: &Repo) -> Result<PathBuf> {
    let requirements = repo.root.join("tests/sdk/requirements.txt");
    if let Some(given) = std::env::var_os("BYOK_SDK_PYTHON") {
        let python = PathBuf::from(given);
        if !pins_installed(&python, &requirements) {
            bail!(
                "BYOK_SDK_PYTHON={} lacks the pins of tests/sdk/requirements.txt; unset it to \
                 let `cargo xtask test` make its own virtualenv in target/sdk-venv",
                python.display()
            );
        }
        say(format!(
            "SDK clients (Python): {} (BYOK_SDK_PYTHON)",
            python.display()
        ));
        return Ok(python);
    }
    let venv = repo.target.join("sdk-venv");
    let python = venv.join("bin/python");
    let shown = short(&venv, &repo.root);
    if pins_installed(&python, &requirements) {
        say(format!("SDK clients (Python): up to date in {shown}"));
        return Ok(python);
    }
    if !runs(&python, &["-c", "import sys"]) {
        ensure_python()?;
        say(format!("creating a Python virtualenv in {shown}"));
        let make_venv = || {
            let _ = std::fs::remove_dir_all(&venv);
            run(
                Command::new("python3").arg("-m").arg("venv").arg(&venv),
                "python3 -m venv",
            )
        };
        if make_venv().is_err() {
            // Debian ships what venv needs (ensurepip's wheels) apart from python3.
            apt_install(&["python3-venv"], false, "the SDK tests' virtualenv")?;
            make_venv()?;
        }
    }
    say("installing the pinned Python SDKs (tests/sdk/requirements.txt)");
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
        "pip install -r tests/sdk/requirements.txt",
    )?;
    if !pins_installed(&python, &requirements) {
        bail!("the pins of tests/sdk/requirements.txt are still missing after pip install");
    }
    Ok(python)
}

fn ensure_python() -> Result<()> {
    if runs("python3", &["--version"]) {
        return Ok(());
    }
    apt_install(&["python3", "python3-venv"], false, "the SDK tests")
}

/// Whether every `name==version` line of `requirements` is installed for `python`.
fn pins_installed(python: &Path, requirements: &Path) -> bool {
    const CHECK: &str = r##"
import re, sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
    try:
        if not m or version(m.group(1)) != m.group(2):
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
"##;
    Command::new(python)
        .args(["-B", "-c", CHECK])
        .arg(requirements)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `npm ci` in `rel` (a folder with a package-lock.json) unless every locked package is
/// already in its node_modules at the locked version.
pub fn npm_folder(repo: &Repo, rel: &str, what: &str) -> Result<()> {
    let dir = repo.root.join(rel);
    if lock_satisfied(&dir)? {
        say(format!("{what}: up to date in {rel}/node_modules"));
        return Ok(());
    }
    ensure_node()?;
    say(format!("{what}: npm ci in {rel}"));
    run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
        &format!("npm ci in {rel}"),
    )?;
    if !lock_satisfied(&dir)? {
        bail!("{rel}/node_modules still differs from its package-lock.json after npm ci");
    }
    Ok(())
}

/// Every package of `dir/package-lock.json` is installed at its locked version (optional
/// and dev packages may be absent: npm skips other platforms' binaries).
fn lock_satisfied(dir: &Path) -> Result<bool> {
    let lock_path = dir.join("package-lock.json");
    let lock: Value = serde_json::from_slice(
        &std::fs::read(&lock_path).with_context(|| format!("{}", lock_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", lock_path.display()))?;
    let Some(packages) = lock["packages"].as_object() else {
        bail!("{} has no `packages`", lock_path.display());
    };
    for (path, meta) in packages {
        if path.is_empty() {
            continue;
        }
        let installed = std::fs::read(dir.join(path).join("package.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned));
        let may_be_absent = meta["optional"] == true || meta["dev"] == true;
        match installed {
            Some(v) if meta["version"].as_str() == Some(v.as_str()) => {}
            None if may_be_absent => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

fn ensure_node() -> Result<()> {
    if runs("node", &["--version"]) && runs("npm", &["--version"]) {
        return Ok(());
    }
    apt_install(&["nodejs", "npm"], false, "the Node-based test clients")
}

/// Debian's chromium for the browser tests: `BYOK_UI_CHROMIUM`, else `/usr/bin/chromium`,
/// installed when missing.
pub fn chromium() -> Result<()> {
    if let Some(given) = std::env::var_os("BYOK_UI_CHROMIUM") {
        let path = PathBuf::from(given);
        if !path.is_file() {
            bail!("BYOK_UI_CHROMIUM={} does not exist", path.display());
        }
        say(format!("browser: {} (BYOK_UI_CHROMIUM)", path.display()));
        return Ok(());
    }
    let path = Path::new("/usr/bin/chromium");
    if !path.is_file() {
        apt_install(&["chromium"], true, "the browser tests")?;
        if !path.is_file() {
            bail!("/usr/bin/chromium is still missing after apt-get install chromium");
        }
    }
    say("browser: /usr/bin/chromium");
    Ok(())
}

/// `systemd-analyze` for the deploy checks (`systemd-analyze verify` on the unit).
pub fn systemd_analyze() -> Result<()> {
    if !runs("systemd-analyze", &["--version"]) {
        apt_install(&["systemd"], false, "the deploy checks (systemd-analyze)")?;
    }
    say("deploy checks: systemd-analyze");
    Ok(())
}

/// `bash`, `curl` and `jq`, which the README's command blocks use (tests/readme.rs).
pub fn readme_tools() -> Result<()> {
    let missing: Vec<&str> = ["curl", "jq"]
        .into_iter()
        .filter(|p| !runs(p, &["--version"]))
        .collect();
    if !missing.is_empty() {
        apt_install(&missing, false, "the README's commands")?;
    }
    say("README commands: bash, curl, jq");
    Ok(())
}
