//! The `byok-proxy` binary: parse the command line and run the subcommand.

/// jemalloc, with its background threads purging freed pages: memory taken by a burst of
/// streams goes back to the system after them (see README, Performance).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    byok_proxy::cli::commands::main()
}
