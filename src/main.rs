//! The `byok-proxy` binary: parse the command line and run the subcommand.

/// mimalloc: measured faster than glibc malloc for the proxy's many small per-request
/// allocations across tokio worker threads (see README, Performance).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    byok_proxy::cli::commands::main()
}
