//! `wait`: the init container of run-once mode (see `migration_injector::waiter`).

use std::path::PathBuf;

use migration_injector::mutate::once;
use migration_injector::waiter::{self, Paths, Target};

/// Flags of `wait`. The webhook injects the container with the env vars; the paths are the
/// injected mount's.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// The fingerprint of the migration to wait for.
    #[arg(long, env = once::ENV_FINGERPRINT)]
    fingerprint: String,
    /// The migration (JSON), only to name its image in messages.
    #[arg(long, env = once::ENV_RUN, hide_env_values = true)]
    run: Option<String>,
    /// The downward API file with the pod's annotations.
    #[arg(long, default_value_t = format!("{}/{}", once::POD_MOUNT, once::ANNOTATIONS_FILE))]
    annotations_file: String,
    /// Where the last line is left as the container's termination message.
    #[arg(long, default_value = "/dev/termination-log")]
    termination_log: PathBuf,
}

pub fn wait(args: WaitArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = Target::new(args.fingerprint, args.run.as_deref());
    let paths = Paths {
        annotations: args.annotations_file.into(),
        termination_log: args.termination_log,
    };
    runtime.block_on(async {
        // As PID 1 in its container, the waiter must handle SIGTERM itself or the pod's deletion
        // waits for the grace period.
        let (first, _second) = migration_injector::webhook::shutdown::signals();
        tokio::select! {
            () = waiter::wait(&target, &paths) => Ok(()),
            () = first => anyhow::bail!("stopped by a signal while waiting for the migration"),
        }
    })
}
