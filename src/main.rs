//! The `byok-proxy` binary: parse the command line and run the subcommand.

fn main() -> std::process::ExitCode {
    byok_proxy::cli::commands::main()
}
