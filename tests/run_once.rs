//! Run-once mode (`migrations.io/run: once`): the waiter instead of the migration, the
//! fingerprint label, switching modes both ways, reinvocation, and what is refused.

mod support;

use migration_injector::mutate::once::{self, fingerprint};
use migration_injector::mutate::workload::WorkloadKind::{self, *};
use migration_injector::mutate::{InjectorConfig, MutationError};
use serde_json::{json, Value};
use support::{apply, assert_warned};

const IMAGE: &str = "ghcr.io/repo/migrations:v0.1.2";
const WAITER: &str = "ghcr.io/org/migration-injector:1.0.0";

fn config() -> InjectorConfig {
    InjectorConfig {
        waiter_image: Some(WAITER.into()),
        ..InjectorConfig::default()
    }
}

fn deployment(run: Option<&str>) -> Value {
    let mut annotations = json!({"migrations.io/image": IMAGE});
    if let Some(r) = run {
        annotations["migrations.io/run"] = json!(r);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "shop", "annotations": annotations},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "shop"}},
            "template": {"metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
    })
}

fn ok(kind: WorkloadKind, obj: &Value, config: &InjectorConfig, update: bool) -> Value {
    apply(kind, obj, config, update).unwrap().0
}

/// The migration container every-pod mode injects, as the waiter carries it for the controller.
fn every_pod_injection(obj: &Value) -> (Value, Value) {
    let mut every = obj.clone();
    every["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("migrations.io/run");
    let out = ok(Deployment, &every, &InjectorConfig::default(), false);
    let spec = &out["spec"]["template"]["spec"];
    (
        spec["initContainers"][0].clone(),
        spec["volumes"][0].clone(),
    )
}

#[test]
fn once_injects_the_waiter_the_downward_volume_and_the_label() {
    let d = deployment(Some("once"));
    let out = ok(Deployment, &d, &config(), false);
    let t = &out["spec"]["template"];
    let (migration, secret_volume) = every_pod_injection(&d);
    let fp = fingerprint(&migration, &secret_volume);
    assert_eq!(
        t["metadata"]["labels"],
        json!({"app": "shop", "migrations.io/fingerprint": fp})
    );
    let waiter = &t["spec"]["initContainers"][0];
    assert_eq!(t["spec"]["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(waiter["name"], "migrate");
    assert_eq!(waiter["image"], WAITER);
    assert_eq!(waiter["args"], json!(["wait"]));
    assert_eq!(
        waiter["env"][0],
        json!({"name": once::ENV_FINGERPRINT, "value": fp})
    );
    let run: Value = serde_json::from_str(waiter["env"][1]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        run,
        json!({"container": migration, "volume": secret_volume})
    );
    assert_eq!(
        waiter["securityContext"]["readOnlyRootFilesystem"],
        json!(true)
    );
    assert_eq!(t["spec"]["volumes"], json!([once::pod_volume()]));
    let record: Value = serde_json::from_str(
        t["metadata"]["annotations"]["migrations.io/injected"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record,
        json!({"initContainer": "migrate", "volume": once::POD_VOLUME, "fingerprint": fp})
    );
    // Nothing the user wrote changed.
    assert_eq!(
        t["spec"]["containers"],
        d["spec"]["template"]["spec"]["containers"]
    );
    assert_eq!(out["spec"]["selector"], d["spec"]["selector"]);
}

#[test]
fn once_is_deterministic_and_reinvocation_changes_nothing() {
    let d = deployment(Some("once"));
    let first = ok(Deployment, &d, &config(), false);
    assert_eq!(ok(Deployment, &d, &config(), false), first);
    let (_, _, ops) = apply(Deployment, &first, &config(), true).unwrap();
    assert_eq!(ops, 0, "a second pass must not patch");
}

#[test]
fn a_new_image_is_a_new_fingerprint_and_the_waiter_is_replaced() {
    let first = ok(Deployment, &deployment(Some("once")), &config(), false);
    let mut next = first.clone();
    next["metadata"]["annotations"]["migrations.io/image"] =
        json!("ghcr.io/repo/migrations:v0.1.3");
    let out = ok(Deployment, &next, &config(), true);
    let old = &first["spec"]["template"]["metadata"]["labels"]["migrations.io/fingerprint"];
    let new = &out["spec"]["template"]["metadata"]["labels"]["migrations.io/fingerprint"];
    assert_ne!(old, new);
    let inits = out["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap();
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0]["env"][0]["value"], *new);
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn switching_modes_both_ways_leaves_exactly_one_injection() {
    let once_out = ok(Deployment, &deployment(Some("once")), &config(), false);
    // once → every-pod: the migration container and Secret volume, no label, no waiter.
    let mut every = once_out.clone();
    every["metadata"]["annotations"]["migrations.io/run"] = json!("every-pod");
    let every_out = ok(Deployment, &every, &config(), true);
    let t = &every_out["spec"]["template"];
    assert_eq!(t["metadata"]["labels"], json!({"app": "shop"}));
    assert_eq!(t["spec"]["initContainers"][0]["image"], IMAGE);
    assert_eq!(t["spec"]["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(
        t["spec"]["volumes"],
        json!([{"name": "atlas-project", "secret": {"secretName": "atlas-project"}}])
    );
    // every-pod → once again: back to the first result.
    let mut again = every_out.clone();
    again["metadata"]["annotations"]["migrations.io/run"] = json!("once");
    assert_eq!(ok(Deployment, &again, &config(), true), once_out);
    // Opting out removes the waiter, its volume, the label and the record.
    let mut out = once_out.clone();
    out["metadata"]["annotations"] = json!({});
    let removed = ok(Deployment, &out, &config(), true);
    assert_eq!(
        removed["spec"]["template"],
        deployment(None)["spec"]["template"]
    );
}

#[test]
fn the_cluster_default_applies_and_the_annotation_overrides_it() {
    let cluster_once = InjectorConfig {
        run_mode: migration_injector::mutate::config::RunMode::Once,
        ..config()
    };
    let out = ok(Deployment, &deployment(None), &cluster_once, false);
    assert_eq!(
        out["spec"]["template"]["spec"]["initContainers"][0]["image"],
        WAITER
    );
    let out = ok(
        Deployment,
        &deployment(Some("every-pod")),
        &cluster_once,
        false,
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["initContainers"][0]["image"],
        IMAGE
    );
}

#[test]
fn a_template_without_labels_or_metadata_gets_them() {
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "annotations": {"migrations.io/image": IMAGE, "migrations.io/run": "once"}},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
            "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "job", "image": "job:1"}]}}}}}
    });
    let out = ok(CronJob, &job, &config(), false);
    let t = &out["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(t["metadata"]["labels"].as_object().unwrap().len(), 1);
    assert!(t["metadata"]["annotations"]["migrations.io/injected"].is_string());
    // Opting out removes the labels map it created, and the metadata's annotations.
    job = out.clone();
    job["metadata"]["annotations"] = json!({});
    let removed = ok(CronJob, &job, &config(), true);
    let t = &removed["spec"]["jobTemplate"]["spec"]["template"];
    assert!(t["metadata"].get("labels").is_none(), "{t}");
    assert!(t["spec"].get("initContainers").is_none(), "{t}");
}

#[test]
fn once_without_a_controller_is_refused_naming_the_fix() {
    match apply(
        Deployment,
        &deployment(Some("once")),
        &InjectorConfig::default(),
        false,
    ) {
        Err(MutationError::Denied(d)) => {
            let m = d.to_string();
            assert!(m.contains("migrations.io/run=\"once\""), "{m}");
            assert!(m.contains("controller.enabled=true"), "{m}");
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    match apply(Deployment, &deployment(Some("twice")), &config(), false) {
        Err(MutationError::Denied(d)) => {
            assert_eq!(
                d.to_string(),
                r#"annotation migrations.io/run="twice" is not a run mode; fix: use "once" (one run per revision, pods wait for it) or "every-pod""#
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn the_unpinned_image_warning_still_reaches_the_user() {
    let mut d = deployment(Some("once"));
    d["metadata"]["annotations"]["migrations.io/image"] = json!("ghcr.io/repo/migrations:latest");
    let (_, warnings, _) = apply(Deployment, &d, &config(), false).unwrap();
    assert_warned(&warnings, "not pinned");
}

#[test]
fn a_forged_record_cannot_make_the_injector_remove_a_users_downward_volume() {
    // The user's own init container and downward volume, under our names, with a forged record.
    let mut d = deployment(None);
    d["metadata"]["annotations"] = json!({});
    let t = &mut d["spec"]["template"];
    t["metadata"]["annotations"] = json!({"migrations.io/injected": json!({"initContainer": "migrate", "volume": once::POD_VOLUME, "fingerprint": "x"}).to_string()});
    t["metadata"]["labels"]["migrations.io/fingerprint"] = json!("x");
    t["spec"]["initContainers"] = json!([{"name": "migrate", "image": "mine:1", "args": ["wait"]}]);
    t["spec"]["volumes"] = json!([{"name": once::POD_VOLUME, "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]);
    let (out, warnings, _) = apply(Deployment, &d, &config(), true).unwrap();
    let t = &out["spec"]["template"];
    assert_eq!(
        t["spec"]["initContainers"],
        d["spec"]["template"]["spec"]["initContainers"]
    );
    assert_eq!(
        t["spec"]["volumes"],
        d["spec"]["template"]["spec"]["volumes"]
    );
    assert_warned(
        &warnings,
        "does not look like what migration-injector injects",
    );
}

#[test]
fn a_tag_gets_the_re_push_warning_and_a_digest_does_not() {
    let (_, warnings, _) = apply(Deployment, &deployment(Some("once")), &config(), false).unwrap();
    assert_warned(&warnings, "pin a digest");
    let mut d = deployment(Some("once"));
    d["metadata"]["annotations"]["migrations.io/image"] = json!(
        "ghcr.io/repo/migrations@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let (_, warnings, _) = apply(Deployment, &d, &config(), false).unwrap();
    assert!(
        warnings.iter().all(|w| !w.contains("pin a digest")),
        "{warnings:?}"
    );
    // every-pod mode: no such warning (each pod pulls the tag again).
    let (_, warnings, _) = apply(Deployment, &deployment(None), &config(), false).unwrap();
    assert!(
        warnings.iter().all(|w| !w.contains("pin a digest")),
        "{warnings:?}"
    );
}
