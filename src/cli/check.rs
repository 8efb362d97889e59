//! `migration-injector check`: "why was my workload not injected?", answered against the live
//! cluster with the user's kubeconfig, one line per check, each failure with its fix. The checks
//! live in the library ([`migration_injector::check`]); here: the flags, printing, exit code.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use kube::Client;
use migration_injector::check::{self, Line, Options, Selection};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Namespace the workload lives (or would live) in.
    #[arg(
        short = 'n',
        long,
        env = "MIGRATION_INJECTOR_CHECK_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// The MutatingWebhookConfiguration installed by the chart.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME",
        default_value = "migration-injector"
    )]
    pub webhook_config_name: String,
    /// A manifest of the workload to check (its first supported object), dry-run created.
    #[arg(short = 'f', long = "filename", conflicts_with = "workload")]
    pub file: Option<PathBuf>,
    /// The image of the probe Deployment used when neither -f nor KIND/NAME is given.
    #[arg(long, default_value = "ghcr.io/migration-injector/check-probe:v0")]
    pub probe_image: String,
    /// A live workload, such as deployment/api.
    #[arg(value_name = "KIND/NAME")]
    pub workload: Option<String>,
}

fn print(line: &Line) {
    match line {
        Line::Pass(what) => println!("[ok]   {what}"),
        Line::Fail { what, fix } => {
            println!("[FAIL] {what}");
            println!("       fix: {fix}");
        }
        Line::Warning(w) => println!("       warning: {w}"),
    }
}

pub fn check(args: CheckArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failed = runtime.block_on(run(args))?;
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

async fn run(args: CheckArgs) -> Result<usize> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG)")?;
    let selection = Selection::from_flags(args.file, args.workload.as_deref(), &args.probe_image)?;
    let target = check::select(&client, &args.namespace, &selection).await?;
    let options = Options {
        namespace: args.namespace,
        webhook_config_name: args.webhook_config_name,
    };
    let mut failed = 0;
    check::run(&client, &options, &target, |line| {
        failed += usize::from(matches!(line, Line::Fail { .. }));
        print(&line);
    })
    .await?;
    Ok(failed)
}
