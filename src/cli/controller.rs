//! `migration-injector controller`: the run-once mode's controller (its own Deployment in the
//! chart). The flags, wired to [`migration_injector::controller::run`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use migration_injector::controller::{self, lease, LeaseConfig, Options};
use migration_injector::webhook::shutdown;

use super::log_args::LogArgs;

/// Well inside the pod's termination grace period.
const RELEASE_WITHIN: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Namespace of the leader-election Lease (the controller pod's namespace).
    #[arg(long, env = "MIGRATION_INJECTOR_NAMESPACE")]
    pub namespace: String,
    /// This replica's identity in the Lease (the pod's name).
    #[arg(long, env = "MIGRATION_INJECTOR_POD_NAME")]
    pub pod_name: String,
    /// Name of the leader-election Lease; one replica at a time runs migrations.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_LEASE_NAME",
        default_value = "migration-injector-controller"
    )]
    pub lease_name: String,
    /// Address of the admin HTTP server: /healthz, /readyz (caches synced), /metrics.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub admin_listen: SocketAddr,
    /// Attempts (Jobs) per MigrationRun before it is Failed; between attempts the wait starts
    /// at 10 s and doubles, at most 5 min. Annotate the MigrationRun `migrations.io/retry` with
    /// a new value to start over.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_MAX_ATTEMPTS",
        default_value = "5",
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    pub max_attempts: u32,
    /// The Job's activeDeadlineSeconds: an attempt running longer fails.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_JOB_DEADLINE_SECONDS",
        default_value = "3600",
        value_parser = clap::value_parser!(i64).range(1..)
    )]
    pub job_deadline_seconds: i64,
    #[command(flatten)]
    pub log: LogArgs,
}

pub fn controller(args: ControllerArgs) -> Result<()> {
    args.log.init_tracing()?;
    let options = Options {
        lease: LeaseConfig {
            namespace: args.namespace,
            name: args.lease_name,
            identity: args.pod_name,
        },
        admin_listen: args.admin_listen,
        max_attempts: args.max_attempts,
        job_deadline_seconds: args.job_deadline_seconds,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        // As PID 1 in its container it must handle SIGTERM itself: a replica being removed (a
        // scale to 0, a rollout) stops acting at once instead of running migrations through its
        // grace period. run() only returns on a fatal error; Kubernetes restarts the pod (as a
        // follower).
        let (first, _second) = shutdown::signals();
        let lease = options.lease.clone();
        tokio::select! {
            result = controller::run(client.clone(), options) => result.context("controller stopped"),
            () = first => {
                tracing::info!("stopping on a signal");
                // run() is dropped: nothing acts any more. Handing the Lease back lets a standby
                // lead within a renew period instead of the whole lease duration.
                let release = lease::release(&client, &lease, Timestamp::now());
                match tokio::time::timeout(RELEASE_WITHIN, release).await {
                    Ok(Ok(true)) => tracing::info!(lease = %lease.name, "released the Lease"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %migration_injector::error_chain(&e), "releasing the Lease"),
                    Err(_) => tracing::warn!(lease = %lease.name, "releasing the Lease timed out; it expires on its own"),
                }
                Ok(())
            }
        }
    })
}
