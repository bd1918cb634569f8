//! The run: set-up (while the tests build in the background), then every test binary, then
//! one closing line `tests: N passed, N failed` over all of them.

use crate::postgres::{self, Slot};
use crate::system::short;
use crate::{deps, say, Repo};
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Process ids of the cargo processes we started, for passing a signal on.
type Children = Arc<Mutex<Vec<u32>>>;

/// Set once a signal arrived: from then on the signal thread owns the ending.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Blocks for good once a signal arrived (the signal thread then cleans up and exits), so
/// nothing new starts and nothing is reported about children the signal ended.
fn halt_if_stopping() {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `[--own-postgres] [CARGO TEST ARGS...]`: whether to start a cluster of our own, and the
/// arguments for cargo, with `--workspace` first unless they pick packages themselves (so the
/// xtask's own tests run too).
fn parse(args: &[String]) -> (bool, Vec<String>) {
    let own_postgres = args.first().is_some_and(|a| a == "--own-postgres");
    let mut cargo = args[usize::from(own_postgres)..].to_vec();
    let picks_packages = cargo_args(&cargo)
        .iter()
        .any(|a| a == "-p" || a.starts_with("--package") || a == "--workspace");
    if !picks_packages {
        cargo.insert(0, "--workspace".into());
    }
    (own_postgres, cargo)
}

/// The whole run; a set-up failure ends it with what to do (no test has run then).
pub fn run(repo: &Repo, args: &[String]) -> Result<ExitCode> {
    let (own_postgres, args) = parse(args);
    let args = &args[..];
    let slot: Slot = Arc::default();
    let children: Children = Arc::default();
    on_signal(slot.clone(), children.clone())?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    std::fs::create_dir_all(&repo.target)?;

    let started = Instant::now();
    let build = Build::start(&cargo, repo, args, &children)?;
    let env = match set_up(repo, &slot, own_postgres) {
        Ok(env) => env,
        Err(e) => {
            halt_if_stopping();
            build.abandon(&children);
            postgres::stop(&slot);
            return Err(e);
        }
    };
    say(format!(
        "set-up done in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    build.wait(repo, &children);

    let outcome = test(&cargo, repo, args, &env, &children);
    postgres::stop(&slot);
    let tally = outcome?;
    if tally.missing_results() > 0 {
        say(format!(
            "{} test binar{} ended without a result line (crashed or killed): counted as failed",
            tally.missing_results(),
            if tally.missing_results() == 1 {
                "y"
            } else {
                "ies"
            }
        ));
    }
    println!("tests: {} passed, {} failed", tally.passed, tally.failed());
    Ok(if tally.ok && tally.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Everything the tests need; returns the environment that points them at it.
fn set_up(repo: &Repo, slot: &Slot, own_postgres: bool) -> Result<Vec<(&'static str, String)>> {
    let database = postgres::resolve(slot, own_postgres)?;
    let python = deps::sdk_python(repo)?;
    for (folder, what) in deps::NPM_FOLDERS {
        deps::npm_folder(repo, folder, what)?;
    }
    deps::chromium()?;
    deps::systemd_analyze()?;
    deps::readme_tools()?;
    Ok(vec![
        ("BYOK_TEST_DATABASE_URL", database),
        ("BYOK_SDK_PYTHON", python.display().to_string()),
    ])
}

/// A Ctrl-C (or SIGTERM, SIGHUP) passes the signal on to the cargo processes, stops the
/// throwaway PostgreSQL and exits. Registered before anything starts.
fn on_signal(slot: Slot, children: Children) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut int, mut term, mut hup) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::spawn(move || {
        let (name, code) = rt.block_on(async {
            tokio::select! {
                _ = int.recv() => ("INT", 130),
                _ = term.recv() => ("TERM", 143),
                _ = hup.recv() => ("HUP", 129),
            }
        });
        STOPPING.store(true, Ordering::SeqCst);
        eprintln!("xtask: SIG{name}: stopping");
        let pids = children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-s", name, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        postgres::stop(&slot);
        std::process::exit(code);
    });
    Ok(())
}

fn track(children: &Children, pid: u32, on: bool) {
    let mut pids = children.lock().unwrap_or_else(PoisonError::into_inner);
    if on {
        pids.push(pid);
    } else {
        pids.retain(|p| *p != pid);
    }
}

/// The cargo arguments before a `--` (what a build understands).
fn cargo_args(args: &[String]) -> &[String] {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    &args[..end]
}

/// `cargo test --no-run` in the background, so compiling overlaps the downloads.
struct Build {
    child: Child,
    log: PathBuf,
}

impl Build {
    fn start(cargo: &str, repo: &Repo, args: &[String], children: &Children) -> Result<Build> {
        let log = repo.target.join("xtask-build.log");
        let file = File::create(&log).with_context(|| format!("{}", log.display()))?;
        let child = Command::new(cargo)
            .args(["test", "--no-run"])
            .args(cargo_args(args))
            .current_dir(&repo.root)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("cannot run cargo")?;
        track(children, child.id(), true);
        say(format!(
            "building the tests in the background ({})",
            short(&log, &repo.root)
        ));
        Ok(Build { child, log })
    }

    fn wait(mut self, repo: &Repo, children: &Children) {
        let started = Instant::now();
        if matches!(self.child.try_wait(), Ok(None)) {
            say("waiting for the build");
        }
        let status = self.child.wait();
        track(children, self.child.id(), false);
        halt_if_stopping();
        match status {
            Ok(s) if s.success() => say(format!(
                "build done (waited {:.1}s)",
                started.elapsed().as_secs_f64()
            )),
            _ => say(format!(
                "the build failed ({}); cargo test shows why",
                short(&self.log, &repo.root)
            )),
        }
    }

    fn abandon(mut self, children: &Children) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        track(children, self.child.id(), false);
    }
}

/// What the test binaries reported.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    /// Test binaries cargo started (`Running ...`, `Doc-tests ...`).
    binaries: u64,
    /// `test result:` lines seen.
    results: u64,
    /// cargo exited 0.
    ok: bool,
}

impl Tally {
    fn feed(&mut self, line: &str) {
        if line.starts_with("     Running ") || line.starts_with("   Doc-tests ") {
            self.binaries += 1;
        }
        if let Some(result) = line.trim_start().strip_prefix("test result: ") {
            self.results += 1;
            let words: Vec<&str> = result.split_whitespace().collect();
            for pair in words.windows(2) {
                let n = pair[0].parse::<u64>().unwrap_or(0);
                match pair[1].trim_end_matches([';', ',']) {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
    }

    fn missing_results(&self) -> u64 {
        self.binaries.saturating_sub(self.results)
    }

    fn failed(&self) -> u64 {
        self.failed + self.missing_results()
    }
}

/// `cargo test --no-fail-fast ARGS` with `env`; its output (stdout and stderr, in order) is
/// shown, kept in target/test-output.log and tallied.
fn test(
    cargo: &str,
    repo: &Repo,
    args: &[String],
    env: &[(&'static str, String)],
    children: &Children,
) -> Result<Tally> {
    let shown: Vec<&str> = args.iter().map(String::as_str).collect();
    say(format!("cargo test --no-fail-fast {}", shown.join(" ")).trim_end());
    let log_path = repo.target.join("test-output.log");
    let mut log = File::create(&log_path).with_context(|| format!("{}", log_path.display()))?;
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--no-fail-fast"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&repo.root)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = cmd.spawn().context("cannot run cargo test")?;
    // Our copies of the pipe's write end go with the Command, so the reader sees the end.
    drop(cmd);
    track(children, child.id(), true);
    let mut tally = Tally::default();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    let mut out = std::io::stdout();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        out.write_all(&line)?;
        out.flush()?;
        log.write_all(&line)?;
        tally.feed(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']));
    }
    let status = child.wait()?;
    track(children, child.id(), false);
    halt_if_stopping();
    tally.ok = status.success();
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_sums_every_binary_and_counts_one_without_a_result_as_failed() {
        let mut t = Tally::default();
        for line in [
            "     Running unittests src/lib.rs (target/debug/deps/byok_proxy-1)",
            "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s",
            "     Running tests/it/main.rs (target/debug/deps/it-2)",
            "test result: FAILED. 40 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 9s",
            "     Running tests/sdk.rs (target/debug/deps/sdk-3)",
            "   Doc-tests byok_proxy",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.0s",
        ] {
            t.feed(line);
        }
        assert_eq!(
            (t.passed, t.failed, t.missing_results(), t.failed()),
            (52, 2, 1, 3)
        );
    }
}
