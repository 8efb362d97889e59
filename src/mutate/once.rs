//! Run-once mode: instead of the migration container, a pod gets a small init container that
//! waits until the migration of its revision has succeeded. The revision is the migration's
//! fingerprint; the controller runs each fingerprint once (a Job) and tells the waiting pods
//! through their own annotations, which the waiter reads through the downward API: it needs no
//! network, no RBAC, and keeps working after the run's Job is gone.
//!
//! Everything here is a pure function of the workload, so the pod template is the same whatever
//! the cluster's state (a `kubectl diff` stays empty, a rollback finds its old ReplicaSet).

use std::borrow::Cow;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::annotations::Key;
use super::config::InjectorConfig;
use super::denial::Denial;
use super::plan::Record;
use super::resolve::Injection;
use super::workload::{Item, WorkloadView};

/// The downward API volume that shows the waiter its pod's annotations.
pub const POD_VOLUME: &str = "migration-injector-pod";
/// Where the waiter mounts it, and the file in it.
pub const POD_MOUNT: &str = "/etc/migration-injector/pod";
pub const ANNOTATIONS_FILE: &str = "annotations";
/// The waiter's env: the fingerprint it waits for, and the migration (JSON) the controller runs.
pub const ENV_FINGERPRINT: &str = "MIGRATION_INJECTOR_FINGERPRINT";
pub const ENV_RUN: &str = "MIGRATION_INJECTOR_RUN";
/// Hex characters of the fingerprint: 160 bits, and short enough for a label value (63).
const FINGERPRINT_LEN: usize = 40;

/// The MigrationRun resource the controller keeps per fingerprint (its CRD is the controller's).
pub fn migration_run_resource() -> kube::core::ApiResource {
    kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("migrations.io", "v1alpha1", "MigrationRun"),
        "migrationruns",
    )
}

/// The fingerprint of a migration: what decides what it does (image, command, args, env, and
/// the Secret it reads its config from). Resources, hardening and the container's name are left
/// out: changing them does not change the migration. The namespace is not hashed either: runs
/// are namespaced objects named by the fingerprint.
pub fn fingerprint(container: &Value, volume: &Value) -> String {
    let field = |name: &str| container.get(name).cloned().unwrap_or(Value::Null);
    let secret = volume
        .pointer("/secret/secretName")
        .cloned()
        .unwrap_or(Value::Null);
    // serde_json's maps are sorted, so the text (and the hash) does not depend on key order.
    let canonical = json!([
        1,
        field("image"),
        field("command"),
        field("args"),
        field("env"),
        secret
    ]);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    let mut hex = String::with_capacity(FINGERPRINT_LEN);
    for byte in digest.iter().take(FINGERPRINT_LEN / 2) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// The waiter's resources: it sleeps and reads one small file.
fn waiter_resources() -> Value {
    json!({"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}})
}

/// The downward API volume, exactly as injected (also the shape trusted on removal).
pub fn pod_volume() -> Value {
    json!({
        "name": POD_VOLUME,
        "downwardAPI": {"items": [
            {"path": ANNOTATIONS_FILE, "fieldRef": {"fieldPath": "metadata.annotations"}}
        ]}
    })
}

/// Turns the resolved migration into the waiter that run-once mode injects, and returns the
/// fingerprint for the pod template's label.
pub fn into_waiter(injection: &mut Injection, config: &InjectorConfig) -> Result<String, Denial> {
    let Some(image) = config.waiter_image.as_deref() else {
        return Err(Denial::RunOnceUnavailable);
    };
    let fp = fingerprint(&injection.container, &injection.volume);
    let run = json!({"container": injection.container, "volume": injection.volume});
    let mut waiter = Map::new();
    waiter.insert("name".into(), injection.container_name.clone().into());
    waiter.insert("image".into(), image.into());
    waiter.insert("imagePullPolicy".into(), "IfNotPresent".into());
    waiter.insert("args".into(), json!(["wait"]));
    waiter.insert(
        "env".into(),
        json!([
            {"name": ENV_FINGERPRINT, "value": fp},
            {"name": ENV_RUN, "value": run.to_string()},
        ]),
    );
    waiter.insert("resources".into(), waiter_resources());
    if let Some(sc) = &config.security_context {
        waiter.insert("securityContext".into(), Value::Object(sc.clone()));
    }
    waiter.insert(
        "terminationMessagePolicy".into(),
        "FallbackToLogsOnError".into(),
    );
    waiter.insert(
        "volumeMounts".into(),
        json!([{"name": POD_VOLUME, "mountPath": POD_MOUNT, "readOnly": true}]),
    );
    injection.container = Value::Object(waiter);
    injection.volume_name = Some(POD_VOLUME.to_owned());
    injection.volume = pod_volume();
    Ok(fp)
}

/// In run-once mode an image reference is the revision: a tag pushed again with other migrations
/// is the same revision, so it would not run. A warning unless the image is pinned by digest.
pub fn mutable_tag_warning(container: &Value) -> Option<String> {
    let image = container.get("image")?.as_str()?;
    (!image.contains('@')).then(|| {
        format!(
            "{}=\"once\" runs the migration once per image reference: if {image} is pushed again with other migrations, they will not run; pin a digest ({image}@sha256:...)",
            Key::Run
        )
    })
}

/// Whether an init container has the waiter's shape: `wait` with exactly the waiter's env.
pub fn looks_like_waiter(item: &Value) -> bool {
    let env_ok = item
        .get("env")
        .and_then(Value::as_array)
        .is_some_and(|env| {
            env.len() == 2
                && env.iter().all(|e| {
                    e.as_object().is_some_and(|o| {
                        o.len() == 2
                            && o.get("value").is_some_and(Value::is_string)
                            && o.get("name")
                                .and_then(Value::as_str)
                                .is_some_and(|n| n == ENV_FINGERPRINT || n == ENV_RUN)
                    })
                })
        });
    env_ok && item.get("args") == Some(&json!(["wait"]))
}

/// Whether a volume is the injected downward API volume (API server defaults allowed).
pub fn looks_like_pod_volume(item: &Value) -> bool {
    let Some(o) = item.as_object() else {
        return false;
    };
    let items = item.pointer("/downwardAPI/items").and_then(Value::as_array);
    o.keys().all(|k| k == "name" || k == "downwardAPI")
        && items.is_some_and(|items| {
            items.len() == 1
                && items[0].get("path").and_then(Value::as_str) == Some(ANNOTATIONS_FILE)
                && items[0]
                    .pointer("/fieldRef/fieldPath")
                    .and_then(Value::as_str)
                    == Some("metadata.annotations")
        })
}

/// The pods webhook: a pod of a revision whose migration already succeeded starts without the
/// waiter (and its volume). `succeeded(fingerprint)` reads the run cache of the pod's namespace.
/// `None`: leave the pod as it is (not a waiting pod of ours, or its run has not succeeded).
pub fn skip_wait(view: &WorkloadView<'_>, succeeded: impl Fn(&str) -> bool) -> Option<Patch> {
    let template = view.template.as_ref()?;
    let annotations = template.annotations.as_ref()?;
    let fp = template.labels.as_ref()?.fingerprint.as_deref()?;
    let record: Record = serde_json::from_str(annotations.get(Key::Injected)?).ok()?;
    if record.fingerprint.as_deref() != Some(fp) {
        return None;
    }
    let lists = template.spec.as_ref()?.lists().ok()?;
    let find = |items: &Option<Vec<Item<'_>>>, name: &str| {
        items.as_ref()?.iter().enumerate().find_map(|(i, it)| {
            (it.name == name).then(|| (i, serde_json::from_str::<Value>(it.raw.get())))
        })
    };
    let (ci, container) = find(&lists.init_containers, record.init_container.as_deref()?)?;
    let (vi, volume) = find(&lists.volumes, record.volume.as_deref()?)?;
    let (container, volume) = (container.ok()?, volume.ok()?);
    let waits_for = container
        .get("env")
        .and_then(Value::as_array)
        .and_then(|env| {
            env.iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(ENV_FINGERPRINT))
        })
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str);
    if !looks_like_waiter(&container) || !looks_like_pod_volume(&volume) || waits_for != Some(fp) {
        return None;
    }
    if !succeeded(fp) {
        return None;
    }
    let pointer = |tokens: &[Cow<'_, str>]| PointerBuf::from_tokens(tokens.iter().map(|t| &**t));
    let remove = |list: &'static str, i: usize| {
        PatchOperation::Remove(RemoveOperation {
            path: pointer(&["spec".into(), list.into(), i.to_string().into()]),
        })
    };
    Some(Patch(vec![
        remove("initContainers", ci),
        remove("volumes", vi),
        PatchOperation::Add(AddOperation {
            path: pointer(&[
                "metadata".into(),
                "annotations".into(),
                Key::RunPhase.name().into(),
            ]),
            value: Value::String("Succeeded".into()),
        }),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::workload::{WorkloadKind, WorkloadView};

    fn container(image: &str, args: Value) -> Value {
        json!({"name": "migrate", "image": image, "args": args, "imagePullPolicy": "Always"})
    }

    #[test]
    fn fingerprint_is_stable_and_decided_by_the_migration_only() {
        let vol = json!({"name": "atlas-project", "secret": {"secretName": "atlas-project"}});
        let a = fingerprint(&container("m:1", json!(["migrate", "apply"])), &vol);
        assert_eq!(a.len(), 40);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // Same migration, other container name / pull policy / resources: same revision.
        let mut renamed = container("m:1", json!(["migrate", "apply"]));
        renamed["name"] = json!("db");
        renamed["imagePullPolicy"] = json!("IfNotPresent");
        renamed["resources"] = json!({"limits": {"memory": "1Gi"}});
        assert_eq!(fingerprint(&renamed, &vol), a);
        // Image, args, command, env, Secret: each a new revision.
        let others = [
            fingerprint(&container("m:2", json!(["migrate", "apply"])), &vol),
            fingerprint(&container("m:1", json!(["migrate", "up"])), &vol),
            fingerprint(
                &{
                    let mut c = container("m:1", json!(["migrate", "apply"]));
                    c["command"] = json!(["/bin/tool"]);
                    c
                },
                &vol,
            ),
            fingerprint(
                &{
                    let mut c = container("m:1", json!(["migrate", "apply"]));
                    c["env"] = json!([{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}]);
                    c
                },
                &Value::Null,
            ),
            fingerprint(
                &container("m:1", json!(["migrate", "apply"])),
                &json!({"name": "atlas-project", "secret": {"secretName": "other"}}),
            ),
        ];
        for (i, o) in others.iter().enumerate() {
            assert_ne!(o, &a, "change {i} must make a new fingerprint");
        }
        // A pinned value: the fingerprint of a revision never changes across releases, or every
        // upgrade of the injector would re-run every applied migration.
        assert_eq!(
            fingerprint(&container("m:1", json!(["migrate", "apply"])), &vol),
            a
        );
    }

    #[test]
    fn fingerprint_of_a_pinned_input_is_fixed() {
        let fp = fingerprint(
            &json!({"image": "ghcr.io/org/migrations:v0.1.2", "args": ["migrate", "apply"]}),
            &json!({"secret": {"secretName": "atlas-project"}}),
        );
        let canonical =
            r#"[1,"ghcr.io/org/migrations:v0.1.2",null,["migrate","apply"],null,"atlas-project"]"#;
        let want: String = Sha256::digest(canonical.as_bytes())
            .iter()
            .take(20)
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(fp, want);
    }

    fn waiting_pod(fp: &str, record_fp: &str, extra_env: bool) -> String {
        let mut env = vec![
            json!({"name": ENV_FINGERPRINT, "value": fp}),
            json!({"name": ENV_RUN, "value": "{}"}),
        ];
        if extra_env {
            env.push(json!({"name": "X", "value": "y"}));
        }
        json!({
            "metadata": {
                "labels": {"app": "a", "migrations.io/fingerprint": fp},
                "annotations": {"migrations.io/injected": json!({"initContainer": "migrate", "volume": POD_VOLUME, "fingerprint": record_fp}).to_string()},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a-1", "uid": "u", "controller": true}]
            },
            "spec": {
                "initContainers": [
                    {"name": "wait-db", "image": "busybox"},
                    {"name": "migrate", "image": "mi:1", "args": ["wait"], "env": env,
                     "volumeMounts": [{"name": POD_VOLUME, "mountPath": POD_MOUNT, "readOnly": true}]}
                ],
                "containers": [{"name": "app", "image": "app:1"}],
                "volumes": [{"name": "data", "emptyDir": {}}, pod_volume()]
            }
        })
        .to_string()
    }

    #[test]
    fn a_pod_of_an_applied_revision_starts_without_the_waiter() {
        let fp = "0123456789abcdef0123456789abcdef01234567";
        let pod = waiting_pod(fp, fp, false);
        let view = WorkloadView::decode(WorkloadKind::Pod, &pod).unwrap();
        let patch = skip_wait(&view, |f| f == fp).expect("a patch");
        let mut doc: Value = serde_json::from_str(&pod).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(
            doc["spec"]["initContainers"],
            json!([{"name": "wait-db", "image": "busybox"}])
        );
        assert_eq!(
            doc["spec"]["volumes"],
            json!([{"name": "data", "emptyDir": {}}])
        );
        assert_eq!(
            doc["metadata"]["annotations"]["migrations.io/run-phase"],
            "Succeeded"
        );
        // Not succeeded yet: the pod keeps its waiter.
        assert!(skip_wait(&view, |_| false).is_none());
    }

    #[test]
    fn only_the_injected_waiter_is_ever_removed() {
        let fp = "0123456789abcdef0123456789abcdef01234567";
        let other = "1123456789abcdef0123456789abcdef01234567";
        // The record names another fingerprint than the label (forged or stale): untouched.
        let pod = waiting_pod(fp, other, false);
        let view = WorkloadView::decode(WorkloadKind::Pod, &pod).unwrap();
        assert!(skip_wait(&view, |_| true).is_none());
        // The container named by the record is not the waiter (a user's): untouched.
        let pod = waiting_pod(fp, fp, true);
        let view = WorkloadView::decode(WorkloadKind::Pod, &pod).unwrap();
        assert!(skip_wait(&view, |_| true).is_none());
    }
}
