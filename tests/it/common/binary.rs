//! The built binary as a process, the one way every test that runs it does: a clean
//! environment ([`command`]), and `serve` on `127.0.0.1:0` with its address read from its own
//! log line `byok-proxy listening addr=...` ([`Served`]), never a port picked in advance.
//! Everything `serve` logs (stderr) is kept for the test to search.
//!
//! Used by tests/it/binary.rs, tests/deploy.rs and tests/readme.rs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_byok-proxy");

/// How long `serve` may take to log its address and answer `/readyz`.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long `serve` may take to exit after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// The binary in `dir` with a clean environment: only `PATH` and `BYOK_LISTEN=127.0.0.1:0`;
/// stdin closed, killed when dropped.
pub fn command(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BYOK_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// A running `serve` (or a shell whose last act is to exec it).
pub struct Served {
    /// The address it listens on, from its log.
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Spawns `cmd` (stdout discarded, stderr kept), waits for the log line with its address
    /// and for `/readyz` to answer 200. `RUST_LOG` defaults to `info`; a value that hides the
    /// `info` line makes this fail. Panics with the log so far if it exits or takes longer
    /// than 20 s.
    pub async fn start(mut cmd: Command) -> Served {
        if !cmd.as_std().get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.as_std()));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(read_log(stderr, log.clone(), tx));
        let snapshot =
            |log: &Arc<Mutex<String>>| log.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let addr = match tokio::time::timeout(START_LIMIT, rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                let status = child.wait().await;
                panic!(
                    "serve exited ({status:?}) before logging `byok-proxy listening`:\n{}",
                    snapshot(&log)
                )
            }
            Err(_) => panic!(
                "serve did not log `byok-proxy listening addr=...` within {START_LIMIT:?} \
                 (does RUST_LOG let info through?):\n{}",
                snapshot(&log)
            ),
        };
        let served = Served {
            addr,
            child,
            log,
            reader,
        };
        served.wait_ready().await;
        served
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let url = self.url("/readyz");
        let start = std::time::Instant::now();
        loop {
            if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "{url} did not answer 200 within {START_LIMIT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends SIGTERM (a graceful drain) and returns at once.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("serve already reaped");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits (at most 15 s) for it to exit; returns its status and everything it logged.
    pub async fn wait(mut self) -> (ExitStatus, String) {
        let status = tokio::time::timeout(STOP_LIMIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("serve did not exit within {STOP_LIMIT:?}"))
            .unwrap();
        // The log reader ends with the pipe.
        let _ = tokio::time::timeout(STOP_LIMIT, &mut self.reader).await;
        (status, self.log())
    }

    /// SIGTERM, then [`Served::wait`].
    pub async fn stop(self) -> (ExitStatus, String) {
        self.terminate().await;
        self.wait().await
    }

    /// SIGKILL; returns what it logged.
    pub async fn kill(mut self) -> String {
        let _ = self.child.kill().await;
        let _ = tokio::time::timeout(STOP_LIMIT, &mut self.reader).await;
        self.log()
    }
}

/// Keeps every stderr line; sends the address of the first `byok-proxy listening` line.
async fn read_log(
    stderr: tokio::process::ChildStderr,
    log: Arc<Mutex<String>>,
    tx: tokio::sync::oneshot::Sender<SocketAddr>,
) {
    let mut tx = Some(tx);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addr) = listening_addr(&line) {
            if let Some(tx) = tx.take() {
                let _ = tx.send(addr);
            }
        }
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.push_str(&line);
        log.push('\n');
    }
}

/// The address of a `byok-proxy listening` log line, text (`addr=1.2.3.4:5`, possibly with
/// colour codes) or JSON (`"addr":"1.2.3.4:5"`).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let plain = strip_ansi(line);
    if !plain.contains("byok-proxy listening") {
        return None;
    }
    let rest = plain
        .split_once("addr=")
        .or_else(|| plain.split_once("\"addr\":\""))?
        .1;
    rest.split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
