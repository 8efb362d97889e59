//! Turns a plan into an RFC 6902 JSON patch rooted at the workload's pod template. Paths are
//! built from tokens, so `migrations.io/injected` is escaped as `migrations.io~1injected`.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

use super::annotations::Key;
#[cfg(test)]
use super::plan::Plan;
use super::plan::{Edit, List};
use super::workload::WorkloadKind;

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
    const ANNOTATIONS: &[&str] = &["metadata", "annotations"];
    const RECORD: &[&str] = &["metadata", "annotations", Key::Injected.name()];
    const LABELS: &[&str] = &["metadata", "labels"];
    const FINGERPRINT: &[&str] = &["metadata", "labels", Key::Fingerprint.name()];
    let list_path = |list: List, index: Option<usize>| path(kind, &["spec", list.field()], index);
    let ops = edits
        .into_iter()
        .map(|edit| match edit {
            Edit::CreateList { list, item } => add(list_path(list, None), Value::Array(vec![item])),
            Edit::Insert {
                list,
                index: Some(i),
                item,
            } => add(list_path(list, Some(i)), item),
            Edit::Insert {
                list,
                index: None,
                item,
            } => {
                let mut p = list_path(list, None);
                p.push_back("-");
                add(p, item)
            }
            Edit::Replace { list, index, item } => PatchOperation::Replace(ReplaceOperation {
                path: list_path(list, Some(index)),
                value: item,
            }),
            Edit::Remove { list, index } => remove(list_path(list, Some(index))),
            Edit::RemoveList { list } => remove(list_path(list, None)),
            Edit::CreateMetadataWithRecord(v, fingerprint) => {
                let mut meta = Map::new();
                if let Some(fp) = fingerprint {
                    let mut labels = Map::new();
                    labels.insert(Key::Fingerprint.name().to_owned(), Value::String(fp));
                    meta.insert("labels".into(), Value::Object(labels));
                }
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
            Edit::CreateLabelsWithFingerprint(v) => {
                let mut m = Map::new();
                m.insert(Key::Fingerprint.name().to_owned(), Value::String(v));
                add(path(kind, LABELS, None), Value::Object(m))
            }
            Edit::SetFingerprint(v) => add(path(kind, FINGERPRINT, None), Value::String(v)),
            Edit::RemoveFingerprint => remove(path(kind, FINGERPRINT, None)),
            Edit::RemoveLabels => remove(path(kind, LABELS, None)),
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
            edits: vec![Edit::Insert {
                list: List::InitContainers,
                index: None,
                item: Value::Null,
            }],
            warnings: vec![],
        };
        let patch = serde_json::to_value(to_patch(WorkloadKind::Deployment, plan.edits)).unwrap();
        assert_eq!(patch[0]["path"], "/spec/template/spec/initContainers/-");
    }
}
