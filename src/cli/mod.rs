//! The binary's edge: the clap types and the subcommands (`serve`, `inject` on files, `certs`,
//! `check`, `controller`, the hidden `docs`), wiring flags to the library, with anyhow errors.
//! Every flag the Helm chart sets has an env-var fallback.

mod certs;
mod check;
mod check_interval;
mod controller;
mod docs;
mod inject;
mod injection_args;
mod limits_args;
mod log_args;
mod serve;
mod server_args;
mod tls_args;
mod wait;

use clap::{Parser, Subcommand};

pub use certs::CertsCommand;
pub use inject::InjectArgs;
pub use serve::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "migration-injector",
    version,
    about = "Injects a schema-migration init container into annotated Kubernetes workloads"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the mutating admission webhook (HTTPS) and its admin endpoints (HTTP).
    Serve(Box<ServeArgs>),
    /// Apply the webhook's mutation to manifests and print the result.
    Inject(Box<InjectArgs>),
    /// Certificate tooling for the webhook's TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Diagnose why a workload is or is not injected, against the cluster of your kubeconfig.
    Check(Box<check::CheckArgs>),
    /// Run the run-once mode's controller: one migration Job per MigrationRun, leader-elected.
    Controller(Box<controller::ControllerArgs>),
    /// Wait until the migration of this pod's revision succeeded (the init container of
    /// run-once mode; not for interactive use).
    Wait(Box<wait::WaitArgs>),
    /// Documentation generated from the flags' definitions (the README's flag tables).
    #[command(subcommand, hide = true)]
    Docs(docs::DocsCommand),
}

/// Runs one subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::serve(*args),
        Command::Inject(args) => inject::inject(*args),
        Command::Certs(cmd) => certs::certs(cmd),
        Command::Check(args) => check::check(*args),
        Command::Controller(args) => controller::controller(*args),
        Command::Docs(cmd) => docs::docs(cmd),
        Command::Wait(args) => wait::wait(*args),
    }
}
