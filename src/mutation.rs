//! The whole mutation of one object, decode → plan → patch: the one code path behind both the
//! webhook and the `inject` command.

use json_patch::Patch;

use crate::config::InjectorConfig;
use crate::denial::Denial;
use crate::patch::to_patch;
use crate::plan::plan;
use crate::workload::{WorkloadKind, WorkloadView};

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
    #[error("the {kind} object cannot be decoded: {source}")]
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
