//! `migration-injector check`: "why was my workload not injected?", answered against the live
//! cluster. [`target`] turns the user's choice into the object to check; [`checks`] holds one
//! function per check, each returning a typed result; [`report`] words each result as a line
//! (and a fix). [`run`] runs them in order, each feeding what the next needs.
//!
//! The binary only parses the flags, makes the client and prints the lines.

pub mod checks;
pub mod report;
pub mod target;

use std::path::PathBuf;

use kube::Client;

use crate::mutate::workload::WorkloadKind;
pub use report::Line;
pub use target::{select, Selection, Target};

/// Why the checks could not run (as opposed to a check that failed, which is a [`Line`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("give the workload as KIND/NAME, e.g. deployment/api")]
    NotKindName,
    #[error("{0:?} is not a kind migration-injector handles")]
    UnknownKind(String),
    #[error("reading {}", .path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}", .path.display())]
    ParseFile {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{} holds no Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob or Pod", .0.display())]
    NoWorkload(PathBuf),
    #[error("{kind} {namespace}/{name} does not exist")]
    NotFound {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    #[error("reading {kind} {namespace}/{name}")]
    ReadWorkload {
        kind: WorkloadKind,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading MutatingWebhookConfiguration {name}")]
    ReadWebhookConfiguration {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// An object that does not convert between JSON and kube's dynamic object.
    #[error("converting the object for the API")]
    Encode(#[source] serde_json::Error),
}

/// Where to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub namespace: String,
    /// The MutatingWebhookConfiguration installed by the chart.
    pub webhook_config_name: String,
}

/// Runs every check on `target`, handing each line to `emit` as soon as it is known (so what
/// passed is shown even if a later step cannot run).
pub async fn run(
    client: &Client,
    options: &Options,
    target: &Target,
    mut emit: impl FnMut(Line),
) -> Result<(), CheckError> {
    let ns = options.namespace.as_str();
    let config = options.webhook_config_name.as_str();

    let webhook = checks::webhook_configuration(client, config, target.kind).await?;
    emit(webhook.line());

    let annotations = checks::annotations(target);
    emit(annotations.line());
    for w in &annotations.warnings {
        emit(Line::Warning(w.clone()));
    }

    emit(checks::secret(client, ns, target).await.line());

    let dry_run = checks::dry_run(
        client,
        ns,
        config,
        target,
        webhook.webhook(),
        annotations.opted_in,
    )
    .await?;
    emit(dry_run.line());

    if let Some(live) = checks::live_injection(ns, target) {
        emit(live.line());
    }
    if let Some(run) = checks::migration_run(client, ns, target).await {
        emit(run.line());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
