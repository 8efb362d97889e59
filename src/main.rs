use clap::Parser;
use migration_injector::cli::{Cli, Command};

mod run;

// mimalloc: the handler's many small, short-lived allocations are cheaper than with glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run::serve(*args),
        Command::Inject(args) => run::inject(*args),
        Command::Certs(cmd) => run::certs(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Library errors already embed their cause; print each cause only once.
            let mut message = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message = format!("{message}: {text}");
                }
            }
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
