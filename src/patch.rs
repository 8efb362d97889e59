//! Turns a plan into an RFC 6902 JSON patch rooted at the workload's pod template. Paths are
//! built from tokens, so `migrations.io/injected` is escaped as `migrations.io~1injected`.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

use crate::annotations::Key;
use crate::plan::Edit;
#[cfg(test)]
use crate::plan::Plan;
use crate::workload::WorkloadKind;

fn path(kind: WorkloadKind, rest: &[&str], index: Option<usize>) -> PointerBuf {
    let mut p = PointerBuf::from_tokens(kind.template_tokens().iter().chain(rest).copied());
    if let Some(i) = index {
        p.push_back(i);
    }
    p
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

fn remove(path: PointerBuf) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation { path })
}

fn record_map(value: String) -> Value {
    let mut m = Map::new();
    m.insert(Key::Injected.name().to_owned(), Value::String(value));
    Value::Object(m)
}

/// The JSON patch that applies `plan` to an object of `kind`.
pub fn to_patch(kind: WorkloadKind, edits: Vec<Edit>) -> Patch {
    const INIT: &[&str] = &["spec", "initContainers"];
    const VOLUMES: &[&str] = &["spec", "volumes"];
    const ANNOTATIONS: &[&str] = &["metadata", "annotations"];
    const RECORD: &[&str] = &["metadata", "annotations", Key::Injected.name()];
    let ops = edits
        .into_iter()
        .map(|edit| match edit {
            Edit::CreateInitContainers(list) => add(path(kind, INIT, None), list),
            Edit::InsertInitContainer {
                index: Some(i),
                container,
            } => add(path(kind, INIT, Some(i)), container),
            Edit::InsertInitContainer {
                index: None,
                container,
            } => {
                let mut p = path(kind, INIT, None);
                p.push_back("-");
                add(p, container)
            }
            Edit::ReplaceInitContainer { index, container } => {
                PatchOperation::Replace(ReplaceOperation {
                    path: path(kind, INIT, Some(index)),
                    value: container,
                })
            }
            Edit::RemoveInitContainer { index } => remove(path(kind, INIT, Some(index))),
            Edit::RemoveInitContainers => remove(path(kind, INIT, None)),
            Edit::CreateVolumes(list) => add(path(kind, VOLUMES, None), list),
            Edit::AppendVolume(volume) => {
                let mut p = path(kind, VOLUMES, None);
                p.push_back("-");
                add(p, volume)
            }
            Edit::ReplaceVolume { index, volume } => PatchOperation::Replace(ReplaceOperation {
                path: path(kind, VOLUMES, Some(index)),
                value: volume,
            }),
            Edit::RemoveVolume { index } => remove(path(kind, VOLUMES, Some(index))),
            Edit::RemoveVolumes => remove(path(kind, VOLUMES, None)),
            Edit::CreateMetadataWithRecord(v) => {
                let mut meta = Map::new();
                meta.insert("annotations".into(), record_map(v));
                add(path(kind, &["metadata"], None), Value::Object(meta))
            }
            Edit::CreateAnnotationsWithRecord(v) => {
                add(path(kind, ANNOTATIONS, None), record_map(v))
            }
            // "add" on an existing member replaces it (RFC 6902 4.1), so one op covers both.
            Edit::SetRecord(v) => add(path(kind, RECORD, None), Value::String(v)),
            Edit::RemoveRecord => remove(path(kind, RECORD, None)),
            Edit::RemoveAnnotations => remove(path(kind, ANNOTATIONS, None)),
        })
        .collect();
    Patch(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_key_is_escaped_by_the_pointer() {
        let plan = Plan {
            edits: vec![Edit::SetRecord("{}".into())],
            warnings: vec![],
        };
        let patch =
            serde_json::to_value(to_patch(WorkloadKind::CronJob, plan.edits.clone())).unwrap();
        assert_eq!(
            patch[0]["path"],
            "/spec/jobTemplate/spec/template/metadata/annotations/migrations.io~1injected"
        );
        let pod = serde_json::to_value(to_patch(WorkloadKind::Pod, plan.edits)).unwrap();
        assert_eq!(
            pod[0]["path"],
            "/metadata/annotations/migrations.io~1injected"
        );
    }

    #[test]
    fn append_uses_dash() {
        let plan = Plan {
            edits: vec![Edit::InsertInitContainer {
                index: None,
                container: Value::Null,
            }],
            warnings: vec![],
        };
        let patch = serde_json::to_value(to_patch(WorkloadKind::Deployment, plan.edits)).unwrap();
        assert_eq!(patch[0]["path"], "/spec/template/spec/initContainers/-");
    }
}
