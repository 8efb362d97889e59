//! `migration-injector`: parse the command line and run it. Everything else lives in the
//! library (`mutate`, `webhook`, `tls`) and in `cli`.

mod cli;

use clap::Parser;

// mimalloc: the handler's many small, short-lived allocations are cheaper than with glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Each error prints its own message; {:#} appends its causes once each.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
