//! The integration tests' fake Vercel AI Gateway as a standalone process, for load tests
//! (`benches/load/run.sh`).
//!
//! It binds `127.0.0.1:0`, prints the port on stdout (one line, flushed), then serves
//! [`fake_upstream::Behavior::Auto`] answers (HTTP/1.1 and h2c) until killed. Request
//! recording is turned off so memory stays flat under load.
//!
//! ```sh
//! cargo build --release --example fake-upstream
//! target/release/examples/fake-upstream [--threads N]   # prints e.g. 40123
//! ```
//!
//! `--threads N` sets the tokio worker threads (default: one per CPU the process may use).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../../tests/it/common/fake_upstream.rs"]
mod fake_upstream;

use std::io::Write;

fn main() {
    let mut threads: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => {
                let n = args.next().expect("--threads needs a value");
                threads = Some(n.parse().expect("--threads takes a positive integer"));
            }
            "-h" | "--help" => {
                println!("usage: fake-upstream [--threads N]  (prints the bound port, runs until killed)");
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    let runtime = builder.build().expect("tokio runtime");
    runtime.block_on(async {
        let fake = fake_upstream::FakeUpstream::start().await;
        fake.set_recording(false);
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{}", fake.addr().port()).expect("write port");
        stdout.flush().expect("flush stdout");
        // Serve until SIGTERM / SIGINT (or SIGKILL).
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        drop(fake);
    });
}
