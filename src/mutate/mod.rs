//! The pure core: decode → resolve → plan → patch, with no I/O and no CLI types. The webhook and
//! the `inject` command both call [`mutate`], so they give identical results.
//!
//! - [`annotations`]: the annotation contract and its decoder;
//! - [`config`]: the cluster-wide defaults ([`InjectorConfig`]);
//! - [`values`] and [`validate`]: the rule for each value;
//! - [`workload`]: the kinds handled and the partial decoding of an object;
//! - [`resolve`]: what to inject for one workload;
//! - [`plan`](mod@plan): the edits that bring a pod template to that state;
//! - [`patch`]: the edits as an RFC 6902 JSON patch;
//! - [`denial`]: why a request is refused;
//! - [`once`]: run-once mode (the waiter instead of the migration, the fingerprint);
//! - [`manifests`]: the same mutation applied to YAML/JSON manifests;
//! - [`yaml`]: YAML read as kubectl reads it, and a patch applied to its text.

pub mod annotations;
pub mod config;
pub mod denial;
pub mod manifests;
pub mod once;
pub mod patch;
pub mod plan;
pub mod resolve;
pub mod validate;
pub mod values;
pub mod workload;
pub mod yaml;

use json_patch::Patch;

pub use config::InjectorConfig;
use denial::Denial;
use patch::to_patch;
use plan::plan;
use workload::{WorkloadKind, WorkloadView};

/// A successful mutation: the patch (empty when nothing changes) and warnings for the user.
#[derive(Debug, Clone, Default)]
pub struct Mutation {
    pub patch: Patch,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MutationError {
    /// The object breaks the annotation contract; the message is for the user.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// The object is not a valid object of its kind.
    #[error("the {kind} object cannot be decoded")]
    Decode {
        kind: WorkloadKind,
        #[source]
        source: serde_json::Error,
    },
}

/// Mutates the JSON text of an object of `kind`. `update` is true for an UPDATE request.
pub fn mutate(
    kind: WorkloadKind,
    object: &str,
    config: &InjectorConfig,
    update: bool,
) -> Result<Mutation, MutationError> {
    let view = WorkloadView::decode(kind, object)
        .map_err(|source| MutationError::Decode { kind, source })?;
    mutate_view(kind, &view, config, update)
}

/// Mutates an object already decoded (the webhook decodes it with the review around it).
pub fn mutate_view(
    kind: WorkloadKind,
    view: &WorkloadView<'_>,
    config: &InjectorConfig,
    update: bool,
) -> Result<Mutation, MutationError> {
    let plan = plan(kind, view, config, update)?;
    Ok(Mutation {
        patch: to_patch(kind, plan.edits),
        warnings: plan.warnings,
    })
}

pub use crate::error_chain;
