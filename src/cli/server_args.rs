//! `serve`'s listen addresses and shutdown timing, the parts of `ServerOptions` that are not
//! [`Limits`](migration_injector::webhook::Limits).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address of the HTTPS webhook endpoint (`POST /mutate`, `POST /mutate-pods`).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP admin endpoint (`/healthz`, `/readyz`, `/metrics`).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: SocketAddr,
    /// Seconds between failing readiness on SIGTERM and closing the listener, so Service
    /// endpoints drop the replica before it refuses connections.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_SHUTDOWN_DELAY_SECONDS",
        default_value_t = 5
    )]
    pub shutdown_delay_seconds: u64,
    /// Seconds in-flight requests may drain once accepting stops; a second signal stops without
    /// waiting (exit code 1).
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 25
    )]
    pub shutdown_grace_seconds: u64,
    /// Watch MigrationRuns (run-once mode) so `POST /mutate-pods` starts the pods of an applied
    /// revision without their waiter. Needs get/list/watch on migrationruns.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_RUN_STATUS_CACHE",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub run_status_cache: bool,
}

impl ServerArgs {
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_secs(self.shutdown_delay_seconds)
    }

    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}
