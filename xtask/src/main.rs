//! `cargo xtask test`: the one test command (README "Quick start"; `.ci/run` calls it too).
//!
//! It makes the machine ready for the whole test suite, then runs every test binary:
//!
//! 1. starts `cargo test --no-run` in the background, so the build overlaps the set-up;
//! 2. PostgreSQL ([`postgres`]): `BYOK_TEST_DATABASE_URL` when set (it must answer: CI sets
//!    it so that a database that is down fails the run), else the tests' default URL when it
//!    answers, else a throwaway cluster of its own, stopped and removed at the end;
//! 3. the test clients ([`deps`]): the pinned SDKs in `target/sdk-venv` (Python) and
//!    `tests/sdk/node_modules`, Debian's chromium and `tests/ui/node_modules` for the browser
//!    tests, the coding-agent CLIs in `tests/agents/node_modules`, `systemd-analyze` for the
//!    deploy checks, `curl` and `jq` for the README's commands;
//! 4. `cargo test --no-fail-fast` ([`suite`]) with the environment pointing at all of that,
//!    ending with one line `tests: N passed, N failed` over every test binary.
//!
//! Every step checks first and does nothing when its part is already there, so a second run
//! spends about no time on set-up. System packages come from `apt-get` when run as root;
//! otherwise the run stops and prints the one command to run.

mod deps;
mod postgres;
mod suite;
mod system;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask test [--own-postgres] [CARGO TEST ARGS...]

Installs what the test suite needs (see README \"Tests\"), then runs
`cargo test --workspace --no-fail-fast [CARGO TEST ARGS...]` and ends with one
line `tests: N passed, N failed` over every test binary.

PostgreSQL: BYOK_TEST_DATABASE_URL if set (it must answer), else the local
default when it answers, else a throwaway cluster of its own (always with
--own-postgres), removed at the end.

Examples:
  cargo xtask test
  cargo xtask test --test sdk
  cargo xtask test --test it -- proxy::";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => match suite::run(&Repo::locate(), &args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("xtask: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Where things are: the repository root and cargo's target directory.
pub struct Repo {
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Repo {
    fn locate() -> Repo {
        // xtask/ sits in the repository root.
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_relative() { root.join(t) } else { t })
            .unwrap_or_else(|| root.join("target"));
        Repo { root, target }
    }
}

/// One short progress line.
pub fn say(msg: impl AsRef<str>) {
    println!("xtask: {}", msg.as_ref());
}
