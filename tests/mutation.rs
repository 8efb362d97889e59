//! The mutation over a table of workloads: what is stored after CREATE and UPDATE, and every
//! denial message.

mod support;

use migration_injector::mutate::workload::WorkloadKind::{self, *};
use migration_injector::mutate::InjectorConfig;
use serde_json::{json, Value};
use support::{apply, assert_warned, create, deny, remove_image};

const IMAGE: &str = "ghcr.io/repo/migrations:v0.1.2";

fn guide_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"},
                     "annotations": {"migrations.io/image": IMAGE}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2", "ports": [{"containerPort": 80}]}]}}}
    })
}

fn migrate_container(image: &str) -> Value {
    json!({
        "name": "migrate", "image": image, "imagePullPolicy": "Always",
        "args": ["migrate", "apply", "-c", "file:///etc/atlas/atlas.hcl", "--env", "k8s"],
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "atlas-project", "mountPath": "/etc/atlas", "readOnly": true}]
    })
}

const RECORD: &str = r#"{"initContainer":"migrate","volume":"atlas-project"}"#;

fn annotate(obj: &mut Value, key: &str, value: &str) {
    obj["metadata"]["annotations"][key] = json!(value);
}

#[test]
fn guide_deployment_gets_exactly_the_guide_additions() {
    let out = create(Deployment, &guide_deployment());
    let mut expected = guide_deployment();
    let t = &mut expected["spec"]["template"];
    t["metadata"]["annotations"] = json!({"migrations.io/injected": RECORD});
    t["spec"]["initContainers"] = json!([migrate_container(IMAGE)]);
    t["spec"]["volumes"] =
        json!([{"name": "atlas-project", "secret": {"secretName": "atlas-project"}}]);
    assert_eq!(out, expected);
}

#[test]
fn existing_init_containers_volumes_and_annotations_are_kept() {
    let mut d = guide_deployment();
    let t = &mut d["spec"]["template"];
    t["metadata"]["annotations"] = json!({"prometheus.io/scrape": "true"});
    t["spec"]["initContainers"] = json!([{"name": "wait-for-db", "image": "busybox:1.36", "command": ["sh", "-c", "until nc -z db 5432; do sleep 1; done"]}]);
    t["spec"]["volumes"] = json!([{"name": "cache", "emptyDir": {}}]);
    let out = create(Deployment, &d);
    let s = &out["spec"]["template"];
    assert_eq!(s["spec"]["initContainers"][0]["name"], "wait-for-db");
    assert_eq!(s["spec"]["initContainers"][1], migrate_container(IMAGE));
    assert_eq!(
        s["spec"]["volumes"][0],
        json!({"name": "cache", "emptyDir": {}})
    );
    assert_eq!(s["spec"]["volumes"][1]["name"], "atlas-project");
    assert_eq!(s["metadata"]["annotations"]["prometheus.io/scrape"], "true");
    assert_eq!(
        s["metadata"]["annotations"]["migrations.io/injected"],
        RECORD
    );
    assert_eq!(
        s["spec"]["containers"],
        d["spec"]["template"]["spec"]["containers"]
    );
}

#[test]
fn position_first_goes_before_existing_init_containers() {
    let mut d = guide_deployment();
    annotate(&mut d, "migrations.io/position", "first");
    d["spec"]["template"]["spec"]["initContainers"] =
        json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]);
    let out = create(Deployment, &d);
    let names: Vec<_> = out["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["migrate", "a", "b"]);
    // Switching to last moves it, keeping the user's order.
    let mut moved = out.clone();
    annotate(&mut moved, "migrations.io/position", "last");
    let (out2, _, _) = apply(Deployment, &moved, &InjectorConfig::default(), true).unwrap();
    let names: Vec<_> = out2["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "migrate"]);
}

#[test]
fn second_pass_yields_no_patch() {
    let out = create(Deployment, &guide_deployment());
    let (again, warnings, ops) = apply(Deployment, &out, &InjectorConfig::default(), true).unwrap();
    assert_eq!(ops, 0);
    assert!(warnings.is_empty());
    assert_eq!(again, out);
}

#[test]
fn api_server_defaults_do_not_count_as_a_change() {
    let mut d = guide_deployment();
    annotate(&mut d, "migrations.io/cpu-request", "0.5");
    annotate(&mut d, "migrations.io/memory-limit", "1024Mi");
    let mut stored = create(Deployment, &d);
    let c = &mut stored["spec"]["template"]["spec"]["initContainers"][0];
    c["terminationMessagePath"] = json!("/dev/termination-log");
    // The API server canonicalises quantities.
    c["resources"] = json!({"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}});
    stored["spec"]["template"]["spec"]["volumes"][0]["secret"]["defaultMode"] = json!(420);
    let (_, _, ops) = apply(Deployment, &stored, &InjectorConfig::default(), true).unwrap();
    assert_eq!(ops, 0);
}

#[test]
fn changed_image_updates_only_the_injected_container() {
    let stored = create(Deployment, &guide_deployment());
    let mut updated = stored.clone();
    annotate(
        &mut updated,
        "migrations.io/image",
        "ghcr.io/repo/migrations:v0.2.0",
    );
    let (out, _, _) = apply(Deployment, &updated, &InjectorConfig::default(), true).unwrap();
    let mut expected = stored.clone();
    expected["metadata"]["annotations"]["migrations.io/image"] =
        json!("ghcr.io/repo/migrations:v0.2.0");
    expected["spec"]["template"]["spec"]["initContainers"][0] =
        migrate_container("ghcr.io/repo/migrations:v0.2.0");
    assert_eq!(out, expected);
}

#[test]
fn removing_the_annotation_removes_exactly_what_was_injected() {
    let mut d = guide_deployment();
    d["spec"]["template"]["spec"]["initContainers"] =
        json!([{"name": "wait", "image": "busybox:1"}]);
    d["spec"]["template"]["spec"]["volumes"] = json!([{"name": "cache", "emptyDir": {}}]);
    d["spec"]["template"]["metadata"]["annotations"] = json!({"team": "db"});
    let stored = create(Deployment, &d);
    let mut updated = stored.clone();
    remove_image(&mut updated);
    let (out, _, _) = apply(Deployment, &updated, &InjectorConfig::default(), true).unwrap();
    let mut expected = d.clone();
    remove_image(&mut expected);
    assert_eq!(out, expected);

    // Without any other init container, volume or annotation, the fields disappear entirely.
    let stored = create(Deployment, &guide_deployment());
    let mut updated = stored.clone();
    updated["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let (out, _, _) = apply(Deployment, &updated, &InjectorConfig::default(), true).unwrap();
    let mut expected = guide_deployment();
    expected["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    assert_eq!(out, expected);
}

#[test]
fn injected_volume_still_mounted_by_the_user_is_kept_with_a_warning() {
    let stored = create(Deployment, &guide_deployment());
    let mut updated = stored.clone();
    updated["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    updated["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "atlas-project", "mountPath": "/cfg"}]);
    let (out, warnings, _) = apply(Deployment, &updated, &InjectorConfig::default(), true).unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"][0]["name"],
        "atlas-project"
    );
    assert!(out["spec"]["template"]["spec"]
        .get("initContainers")
        .is_none());
    assert_warned(&warnings, "another container mounts it");
}

#[test]
fn renaming_the_container_replaces_the_old_one() {
    let stored = create(Deployment, &guide_deployment());
    let mut updated = stored.clone();
    annotate(&mut updated, "migrations.io/container-name", "db-migrate");
    annotate(&mut updated, "migrations.io/volume-name", "db-config");
    let (out, _, _) = apply(Deployment, &updated, &InjectorConfig::default(), true).unwrap();
    let spec = &out["spec"]["template"]["spec"];
    assert_eq!(spec["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(spec["initContainers"][0]["name"], "db-migrate");
    assert_eq!(
        spec["initContainers"][0]["volumeMounts"][0]["name"],
        "db-config"
    );
    assert_eq!(
        spec["volumes"],
        json!([{"name": "db-config", "secret": {"secretName": "atlas-project"}}])
    );
    assert_eq!(
        out["spec"]["template"]["metadata"]["annotations"]["migrations.io/injected"],
        r#"{"initContainer":"db-migrate","volume":"db-config"}"#
    );
}

#[test]
fn clashing_names_are_denied_with_the_renaming_annotation() {
    let mut d = guide_deployment();
    d["spec"]["template"]["spec"]["initContainers"] =
        json!([{"name": "migrate", "image": "mine:1"}]);
    assert_eq!(
        deny(Deployment, &d),
        r#"spec.template.spec.initContainers already has an init container named "migrate" that migration-injector did not add and that differs from the one it injects; fix: set annotation migrations.io/container-name=<another name>, or rename yours"#
    );
    let mut d = guide_deployment();
    d["spec"]["template"]["spec"]["volumes"] = json!([{"name": "atlas-project", "emptyDir": {}}]);
    assert_eq!(
        deny(Deployment, &d),
        r#"spec.template.spec.volumes already has a volume named "atlas-project" that migration-injector did not add and that differs from the one it injects; fix: set annotation migrations.io/volume-name=<another name>, or rename yours"#
    );
}

#[test]
fn an_app_container_with_the_injected_name_is_a_clash() {
    // Names are unique across init and app containers: a Job whose own container is "migrate".
    let mut job = workload(Job);
    job["spec"]["template"]["spec"]["containers"][0]["name"] = json!("migrate");
    assert_eq!(
        deny(Job, &job),
        r#"spec.template.spec.containers already has a container named "migrate" that migration-injector did not add and that differs from the one it injects; fix: set annotation migrations.io/container-name=<another name>, or rename yours"#
    );
    annotate(&mut job, "migrations.io/container-name", "schema");
    assert_eq!(
        template_of(Job, &create(Job, &job))["spec"]["initContainers"][0]["name"],
        "schema"
    );
}

#[test]
fn a_hand_written_copy_of_the_guide_is_left_alone() {
    let mut d = guide_deployment();
    d["spec"]["template"]["spec"]["initContainers"] = json!([migrate_container(IMAGE)]);
    d["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "atlas-project", "secret": {"secretName": "atlas-project"}}]);
    let (out, _, ops) = apply(Deployment, &d, &InjectorConfig::default(), false).unwrap();
    assert_eq!(ops, 0);
    assert_eq!(out, d);
}

#[test]
fn every_override() {
    let mut d = guide_deployment();
    for (k, v) in [
        ("migrations.io/secret", "prod-db"),
        ("migrations.io/volume-name", "db-config"),
        ("migrations.io/env", "prod"),
        ("migrations.io/mount-path", "/config/"),
        ("migrations.io/config-file", "project.hcl"),
        ("migrations.io/pull-policy", "IfNotPresent"),
        ("migrations.io/container-name", "schema"),
        ("migrations.io/cpu-request", "100m"),
        ("migrations.io/cpu-limit", "1"),
        ("migrations.io/memory-request", "64Mi"),
        ("migrations.io/memory-limit", "256Mi"),
    ] {
        annotate(&mut d, k, v);
    }
    let out = create(Deployment, &d);
    let c = &out["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(c["name"], "schema");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        c["args"],
        json!([
            "migrate",
            "apply",
            "-c",
            "file:///config/project.hcl",
            "--env",
            "prod"
        ])
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "db-config", "mountPath": "/config/", "readOnly": true}])
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}})
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"][0],
        json!({"name": "db-config", "secret": {"secretName": "prod-db"}})
    );

    // Another tool: command and args replace the Atlas defaults.
    let mut d = guide_deployment();
    annotate(&mut d, "migrations.io/command", r#"["flyway"]"#);
    annotate(
        &mut d,
        "migrations.io/args",
        r#"["-configFiles=/etc/atlas/flyway.conf","migrate"]"#,
    );
    annotate(&mut d, "migrations.io/env", "ignored");
    let (out, warnings, _) = apply(Deployment, &d, &InjectorConfig::default(), false).unwrap();
    let c = &out["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(c["command"], json!(["flyway"]));
    assert_eq!(
        c["args"],
        json!(["-configFiles=/etc/atlas/flyway.conf", "migrate"])
    );
    assert_warned(&warnings, "migrations.io/env has no effect");
}

#[test]
fn cluster_defaults_apply_and_annotations_override_them() {
    let config = InjectorConfig {
        secret: "cluster-db".into(),
        pull_policy: migration_injector::mutate::config::PullPolicy::IfNotPresent,
        memory_limit: Some("512Mi".into()),
        security_context: None,
        ..InjectorConfig::default()
    };
    let mut d = guide_deployment();
    annotate(&mut d, "migrations.io/pull-policy", "Always");
    let (out, _, _) = apply(Deployment, &d, &config, false).unwrap();
    let spec = &out["spec"]["template"]["spec"];
    assert_eq!(spec["volumes"][0]["secret"]["secretName"], "cluster-db");
    assert_eq!(spec["initContainers"][0]["imagePullPolicy"], "Always");
    assert_eq!(
        spec["initContainers"][0]["resources"],
        json!({"limits": {"memory": "512Mi"}})
    );
    assert!(spec["initContainers"][0].get("securityContext").is_none());
}

#[test]
fn every_bad_value_is_denied_with_its_message() {
    let cases = [
        (
            "migrations.io/image",
            "Not An Image",
            r#"annotation migrations.io/image="Not An Image" is not a valid image reference (expected [registry/]repository[:tag][@digest], repository in lower case); fix: set it to your migrations image, for example ghcr.io/org/migrations:v0.1.2"#,
        ),
        (
            "migrations.io/image",
            "",
            r#"annotation migrations.io/image="" must not be empty; fix: set it to your migrations image, for example ghcr.io/org/migrations:v0.1.2"#,
        ),
        (
            "migrations.io/secret",
            "Bad_Secret",
            r#"annotation migrations.io/secret="Bad_Secret" must consist of lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit; fix: use the name of a Secret in the workload's namespace"#,
        ),
        (
            "migrations.io/volume-name",
            "a.b",
            r#"annotation migrations.io/volume-name="a.b" must consist of lower-case letters, digits and '-', and start and end with a letter or digit; fix: use a lower-case RFC 1123 name such as "migrate-db""#,
        ),
        (
            "migrations.io/container-name",
            "",
            r#"annotation migrations.io/container-name="" must be 1 to 63 characters; fix: use a lower-case RFC 1123 name such as "migrate-db""#,
        ),
        (
            "migrations.io/env",
            "k 8s",
            r#"annotation migrations.io/env="k 8s" must not contain whitespace; fix: use the name of an env block of atlas.hcl such as "k8s""#,
        ),
        (
            "migrations.io/mount-path",
            "etc/atlas",
            r#"annotation migrations.io/mount-path="etc/atlas" must be an absolute path; fix: use an absolute path such as "/etc/atlas""#,
        ),
        (
            "migrations.io/config-file",
            "../atlas.hcl",
            r#"annotation migrations.io/config-file="../atlas.hcl" must not contain '..' or empty path segments; fix: use a file name inside the mount path such as "atlas.hcl""#,
        ),
        (
            "migrations.io/args",
            "migrate up",
            r#"annotation migrations.io/args="migrate up" is not a JSON array of strings; fix: write it as JSON, for example ["migrate","up"]"#,
        ),
        (
            "migrations.io/command",
            "[1]",
            r#"annotation migrations.io/command="[1]" is not a JSON array of strings; fix: write it as JSON, for example ["migrate","up"]"#,
        ),
        (
            "migrations.io/pull-policy",
            "always",
            r#"annotation migrations.io/pull-policy="always" is not an image pull policy; fix: use Always, IfNotPresent or Never"#,
        ),
        (
            "migrations.io/position",
            "middle",
            r#"annotation migrations.io/position="middle" is not a position; fix: use "first" or "last""#,
        ),
        (
            "migrations.io/cpu-request",
            "fast",
            r#"annotation migrations.io/cpu-request="fast" is not a Kubernetes quantity (examples: 100m, 0.5, 128Mi, 1Gi); fix: use a quantity such as "100m" or "0.5""#,
        ),
        (
            "migrations.io/memory-limit",
            "-1Gi",
            r#"annotation migrations.io/memory-limit="-1Gi" must not be negative; fix: use a quantity such as "128Mi" or "1Gi""#,
        ),
    ];
    for (key, value, message) in cases {
        let mut d = guide_deployment();
        annotate(&mut d, key, value);
        assert_eq!(deny(Deployment, &d), message, "for {key}={value:?}");
    }
}

#[test]
fn template_annotations_opt_in_and_workload_wins() {
    let mut d = guide_deployment();
    d["metadata"].as_object_mut().unwrap().remove("annotations");
    d["spec"]["template"]["metadata"]["annotations"] =
        json!({"migrations.io/image": IMAGE, "migrations.io/env": "template"});
    let out = create(Deployment, &d);
    assert_eq!(
        out["spec"]["template"]["spec"]["initContainers"][0]["args"][5],
        "template"
    );
    let mut d2 = d.clone();
    d2["metadata"]["annotations"] = json!({"migrations.io/env": "workload"});
    let out = create(Deployment, &d2);
    assert_eq!(
        out["spec"]["template"]["spec"]["initContainers"][0]["args"][5],
        "workload"
    );
    assert_eq!(
        out["spec"]["template"]["metadata"]["annotations"]["migrations.io/image"],
        IMAGE
    );
}

#[test]
fn unannotated_objects_and_unpinned_images() {
    let mut d = guide_deployment();
    d["metadata"].as_object_mut().unwrap().remove("annotations");
    let (out, warnings, ops) = apply(Deployment, &d, &InjectorConfig::default(), false).unwrap();
    assert_eq!((ops, warnings.len()), (0, 0));
    assert_eq!(out, d);

    for image in ["ghcr.io/repo/migrations", "ghcr.io/repo/migrations:latest"] {
        let mut d = guide_deployment();
        annotate(&mut d, "migrations.io/image", image);
        let (_, warnings, _) = apply(Deployment, &d, &InjectorConfig::default(), false).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("is not pinned"));
    }
}

fn template_of(kind: WorkloadKind, obj: &Value) -> Value {
    match kind {
        Pod => obj.clone(),
        CronJob => obj["spec"]["jobTemplate"]["spec"]["template"].clone(),
        _ => obj["spec"]["template"].clone(),
    }
}

fn workload(kind: WorkloadKind) -> Value {
    let pod_spec =
        json!({"containers": [{"name": "app", "image": "app:1"}], "restartPolicy": "OnFailure"});
    let meta = json!({"name": "w", "annotations": {"migrations.io/image": IMAGE}});
    let template = json!({"metadata": {"labels": {"app": "w"}}, "spec": pod_spec});
    match kind {
        Pod => json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}),
        // A job template without metadata at all.
        CronJob => json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
            "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}}),
        Job => {
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"template": template}})
        }
        _ => json!({"apiVersion": "apps/v1", "kind": kind.as_str(), "metadata": meta,
            "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": template}}),
    }
}

#[test]
fn every_kind_is_injected_at_its_own_template() {
    for kind in WorkloadKind::ALL {
        let obj = workload(kind);
        let out = create(kind, &obj);
        let t = template_of(kind, &out);
        assert_eq!(
            t["spec"]["initContainers"],
            json!([migrate_container(IMAGE)]),
            "{kind}"
        );
        assert_eq!(t["spec"]["volumes"][0]["name"], "atlas-project", "{kind}");
        assert_eq!(
            t["metadata"]["annotations"]["migrations.io/injected"], RECORD,
            "{kind}"
        );
        let (_, _, ops) = apply(kind, &out, &InjectorConfig::default(), true).unwrap();
        assert_eq!(ops, 0, "{kind}: reinvocation patches");
        // Removing the opt-in restores the original (minus the annotation).
        let mut removed = out.clone();
        remove_image(&mut removed);
        let (restored, _, _) = apply(kind, &removed, &InjectorConfig::default(), false).unwrap();
        let mut expected = obj.clone();
        remove_image(&mut expected);
        if kind == Pod {
            // A Pod's metadata is its template's: the record lived in the same map.
            assert_eq!(restored["metadata"].get("annotations"), None);
            expected["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
        }
        if kind == CronJob {
            // The template metadata created for the record stays, empty: the same object to
            // the API server, which omits empty metadata when it stores it.
            expected["spec"]["jobTemplate"]["spec"]["template"]["metadata"] = json!({});
        }
        assert_eq!(restored, expected, "{kind}");
    }
}

#[test]
fn immutable_templates_are_not_patched_on_update() {
    for kind in [Job, Pod] {
        let stored = create(kind, &workload(kind));
        let mut updated = stored.clone();
        annotate(
            &mut updated,
            "migrations.io/image",
            "ghcr.io/repo/migrations:v9",
        );
        let (out, warnings, ops) = apply(kind, &updated, &InjectorConfig::default(), true).unwrap();
        assert_eq!(ops, 0, "{kind}");
        assert_eq!(out, updated);
        assert_warned(&warnings, "cannot change after creation");
    }
}

#[test]
fn missing_template_spec_is_denied_only_when_opted_in() {
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "annotations": {"migrations.io/image": IMAGE}}, "spec": {"template": {}}});
    assert_eq!(deny(Deployment, &obj), "spec.template.spec is missing; fix: add a pod spec, or remove the migrations.io/image annotation");
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}});
    assert_eq!(
        apply(Deployment, &obj, &InjectorConfig::default(), false)
            .unwrap()
            .2,
        0
    );
}

#[test]
fn allow_list_denial_lists_prefixes() {
    let config = InjectorConfig {
        allowed_image_prefixes: vec!["registry.corp/".into()],
        ..InjectorConfig::default()
    };
    match apply(Deployment, &guide_deployment(), &config, false) {
        Err(e) => assert_eq!(
            e.to_string(),
            r#"annotation migrations.io/image="ghcr.io/repo/migrations:v0.1.2" names an image outside the allowed registries; fix: use an image starting with one of: registry.corp/"#
        ),
        Ok(_) => panic!("expected a denial"),
    }
}

#[test]
fn a_corrupt_record_is_ignored_with_a_warning() {
    let mut d = guide_deployment();
    d["spec"]["template"]["metadata"]["annotations"] = json!({"migrations.io/injected": "garbage"});
    let (out, warnings, _) = apply(Deployment, &d, &InjectorConfig::default(), false).unwrap();
    assert_warned(&warnings, "is not a record");
    assert_eq!(
        out["spec"]["template"]["metadata"]["annotations"]["migrations.io/injected"],
        RECORD
    );
}

#[test]
fn copies_made_by_workload_controllers_are_left_alone() {
    // A Deployment's ReplicaSet carries the injected template (with the record) but, like a
    // Pod of that ReplicaSet or a Job of a CronJob, not always the opt-in: it must be stored
    // exactly as its controller made it, neither stripped nor re-injected.
    let deployment = create(Deployment, &guide_deployment());
    let owner = |kind: &str, api: &str| json!([{"apiVersion": api, "kind": kind, "name": "p", "uid": "1", "controller": true}]);
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "rs", "ownerReferences": owner("Deployment", "apps/v1")},
        "spec": {"selector": {"matchLabels": {"app": "nginx"}}, "template": deployment["spec"]["template"]}});
    let mut pod = deployment["spec"]["template"].clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["ownerReferences"] = owner("ReplicaSet", "apps/v1");
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "j", "annotations": {"migrations.io/image": "other:1"}, "ownerReferences": owner("CronJob", "batch/v1")},
        "spec": {"template": deployment["spec"]["template"]}});
    for (kind, obj) in [(ReplicaSet, &rs), (Pod, &pod), (Job, &job)] {
        let (out, warnings, ops) = apply(kind, obj, &InjectorConfig::default(), false).unwrap();
        assert_eq!((ops, warnings.len()), (0, 0), "{kind}");
        assert_eq!(&out, obj);
    }
    // Owned by something else (an operator's custom resource), the object is handled as usual.
    let mut foreign = rs.clone();
    foreign["metadata"]["ownerReferences"] = owner("Rollout", "argoproj.io/v1alpha1");
    let (out, _, _) = apply(ReplicaSet, &foreign, &InjectorConfig::default(), false).unwrap();
    assert!(
        out["spec"]["template"]["spec"]
            .get("initContainers")
            .is_none(),
        "opt-out applies"
    );
}

/// The record is written by whoever writes the object: a tenant naming another webhook's init
/// container and volume in it (a mesh's `istio-init`, say) must not get them removed.
#[test]
fn a_forged_record_cannot_remove_what_was_not_injected() {
    let istio_init = json!({"name": "istio-init", "image": "docker.io/istio/proxyv2:1.20.0",
        "args": ["istio-iptables", "-p", "15001"],
        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}, "runAsUser": 0}});
    let certs = json!({"name": "certs", "emptyDir": {"medium": "Memory"}});
    let forged = r#"{"initContainer":"istio-init","volume":"certs"}"#;
    for opted_in in [false, true] {
        let mut d = guide_deployment();
        if !opted_in {
            remove_image(&mut d);
        }
        let t = &mut d["spec"]["template"];
        t["metadata"]["annotations"] = json!({"migrations.io/injected": forged});
        t["spec"]["initContainers"] = json!([istio_init.clone()]);
        t["spec"]["volumes"] = json!([certs.clone()]);
        let (out, warnings, _) = apply(Deployment, &d, &InjectorConfig::default(), true).unwrap();
        let s = &out["spec"]["template"]["spec"];
        assert_eq!(s["initContainers"][0], istio_init, "opted in: {opted_in}");
        assert_eq!(s["volumes"][0], certs, "opted in: {opted_in}");
        assert_warned(
            &warnings,
            "migrations.io/injected names init container \"istio-init\"",
        );
        assert_warned(&warnings, "migrations.io/injected names volume \"certs\"");
        // The forged claim is not carried forward.
        let record = &out["spec"]["template"]["metadata"]["annotations"]["migrations.io/injected"];
        if opted_in {
            assert_eq!(record, RECORD);
            assert_eq!(s["initContainers"][1]["name"], "migrate");
        } else {
            assert!(record.is_null(), "{record}");
        }
    }
    // A Secret volume mounted by a forged-record container is not trusted through it either.
    let mut d = guide_deployment();
    remove_image(&mut d);
    let t = &mut d["spec"]["template"];
    t["metadata"]["annotations"] = json!({"migrations.io/injected": r#"{"initContainer":"vault-agent-init","volume":"vault-token"}"#});
    let vault = json!({"name": "vault-agent-init", "image": "hashicorp/vault:1.15",
        "args": ["agent"], "volumeMounts": [{"name": "vault-token", "mountPath": "/vault", "readOnly": false}]});
    t["spec"]["initContainers"] = json!([vault.clone()]);
    t["spec"]["volumes"] =
        json!([{"name": "vault-token", "secret": {"secretName": "vault-token"}}]);
    let (out, warnings, _) = apply(Deployment, &d, &InjectorConfig::default(), true).unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["initContainers"][0], vault);
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"][0]["name"],
        "vault-token"
    );
    assert_warned(&warnings, "vault-agent-init");
}

#[test]
fn control_characters_roots_and_huge_values_are_refused() {
    for (key, value, problem) in [
        (
            "migrations.io/mount-path",
            "/etc/atlas\u{0}",
            "control characters",
        ),
        (
            "migrations.io/mount-path",
            "/etc/at\nlas",
            "control characters",
        ),
        ("migrations.io/mount-path", "/", "root directory"),
        ("migrations.io/mount-path", "//./", "root directory"),
        (
            "migrations.io/config-file",
            "atlas\u{1b}[31m.hcl",
            "control characters",
        ),
        ("migrations.io/env", "k8s\u{7}", "control characters"),
    ] {
        let mut d = guide_deployment();
        annotate(&mut d, key, value);
        let message = deny(Deployment, &d);
        assert!(
            message.contains(key) && message.contains(problem),
            "{key}={value:?}: {message}"
        );
        assert!(!message.contains(['\n', '\u{0}', '\u{1b}']), "{message:?}");
    }
    // A 200 kB value is refused, and echoed cut short with its length.
    let mut d = guide_deployment();
    let huge = format!("/{}", "a".repeat(200_000));
    annotate(&mut d, "migrations.io/mount-path", &huge);
    let message = deny(Deployment, &d);
    assert!(message.len() < 600, "{} bytes", message.len());
    assert!(message.contains("(200001 bytes in all)"), "{message}");
    let mut d = guide_deployment();
    annotate(&mut d, "migrations.io/image", &"a".repeat(200_000));
    let message = deny(Deployment, &d);
    assert!(
        message.len() < 600 && message.contains("(200000 bytes in all)"),
        "{message}"
    );
}

#[test]
fn lock_timeout_is_appended_to_the_default_args_only() {
    let mut d = guide_deployment();
    annotate(&mut d, "migrations.io/lock-timeout", "5m");
    let c = &template_of(Deployment, &create(Deployment, &d))["spec"]["initContainers"][0];
    assert_eq!(
        c["args"],
        json!([
            "migrate",
            "apply",
            "-c",
            "file:///etc/atlas/atlas.hcl",
            "--env",
            "k8s",
            "--lock-timeout",
            "5m"
        ])
    );
    // A cluster default applies; the annotation overrides it; unset keeps the guide's args.
    let config = InjectorConfig {
        lock_timeout: Some("2m".into()),
        ..InjectorConfig::default()
    };
    let (out, _, _) = apply(Deployment, &guide_deployment(), &config, false).unwrap();
    assert_eq!(
        template_of(Deployment, &out)["spec"]["initContainers"][0]["args"][7],
        "2m"
    );
    let (out, _, _) = apply(Deployment, &d, &config, false).unwrap();
    assert_eq!(
        template_of(Deployment, &out)["spec"]["initContainers"][0]["args"][7],
        "5m"
    );
    // With the args replaced, the annotation is refused naming both.
    annotate(&mut d, "migrations.io/args", r#"["migrate","up"]"#);
    assert_eq!(
        deny(Deployment, &d),
        r#"annotation migrations.io/lock-timeout="5m" has no effect because migrations.io/args replaces the default args; fix: add --lock-timeout 5m to migrations.io/args yourself, and remove migrations.io/lock-timeout"#
    );
    let mut d = guide_deployment();
    annotate(&mut d, "migrations.io/lock-timeout", "5 minutes");
    assert!(deny(Deployment, &d).contains("is not a duration"));
    // When the cluster replaced the default args, the refusal says so (not the user's args).
    let config = InjectorConfig {
        args: Some(vec!["migrate".into(), "up".into()]),
        ..InjectorConfig::default()
    };
    let mut d = guide_deployment();
    annotate(&mut d, "migrations.io/lock-timeout", "5m");
    match apply(Deployment, &d, &config, false) {
        Err(e) => assert!(
            e.to_string()
                .contains("because the cluster's --default-args replaces"),
            "{e}"
        ),
        Ok(_) => panic!("lock-timeout with the cluster's default args must be refused"),
    }
}

#[test]
fn the_database_url_from_an_existing_secret() {
    let mut d = guide_deployment();
    annotate(&mut d, "migrations.io/url-secret", "app-db/uri");
    let out = create(Deployment, &d);
    let s = &template_of(Deployment, &out)["spec"];
    let c = &s["initContainers"][0];
    assert_eq!(
        c["env"],
        json!([{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "app-db", "key": "uri"}}}])
    );
    assert_eq!(
        c["args"],
        json!([
            "migrate",
            "apply",
            "--url",
            "$(DATABASE_URL)",
            "--dir",
            "file:///migrations"
        ])
    );
    assert!(
        c.get("volumeMounts").is_none() && s.get("volumes").is_none(),
        "{s}"
    );
    assert_eq!(
        template_of(Deployment, &out)["metadata"]["annotations"]["migrations.io/injected"],
        r#"{"initContainer":"migrate"}"#
    );
    // Re-applied: no patch. An atlas:// directory and a lock timeout.
    let (_, _, ops) = apply(Deployment, &out, &InjectorConfig::default(), true).unwrap();
    assert_eq!(ops, 0);
    let mut again = out.clone();
    annotate(&mut again, "migrations.io/dir", "atlas://app");
    annotate(&mut again, "migrations.io/lock-timeout", "1m");
    let (updated, _, _) = apply(Deployment, &again, &InjectorConfig::default(), true).unwrap();
    assert_eq!(
        template_of(Deployment, &updated)["spec"]["initContainers"][0]["args"],
        json!([
            "migrate",
            "apply",
            "--url",
            "$(DATABASE_URL)",
            "--dir",
            "atlas://app",
            "--lock-timeout",
            "1m"
        ])
    );
    // Switching an injected volume setup to url-secret removes the volume; removing the image
    // removes the rest.
    let volume_setup = create(Deployment, &guide_deployment());
    let mut switched = volume_setup.clone();
    annotate(&mut switched, "migrations.io/url-secret", "app-db/uri");
    let (switched, _, _) = apply(Deployment, &switched, &InjectorConfig::default(), true).unwrap();
    let s = &template_of(Deployment, &switched)["spec"];
    assert!(s.get("volumes").is_none(), "{s}");
    assert!(s["initContainers"][0]["env"].is_array());
    let mut removed = switched.clone();
    remove_image(&mut removed);
    let (removed, _, _) = apply(Deployment, &removed, &InjectorConfig::default(), true).unwrap();
    assert_eq!(
        removed["spec"]["template"],
        guide_deployment()["spec"]["template"]
    );
    // Both sources at once, or a malformed reference, are refused.
    let mut both = d.clone();
    annotate(&mut both, "migrations.io/secret", "atlas-project");
    let message = deny(Deployment, &both);
    assert!(
        message.contains("migrations.io/url-secret") && message.contains("migrations.io/secret"),
        "{message}"
    );
    for bad in ["app-db", "App_DB/uri", "app-db/", "app-db/a/b"] {
        let mut d = guide_deployment();
        annotate(&mut d, "migrations.io/url-secret", bad);
        assert!(
            deny(Deployment, &d).contains("migrations.io/url-secret"),
            "{bad}"
        );
    }
}

#[test]
fn unknown_migrations_keys_are_warned_about_with_the_closest_known_key() {
    // The typo that would otherwise leave a workload silently uninjected.
    let mut d = guide_deployment();
    remove_image(&mut d);
    annotate(&mut d, "migrations.io/imgae", IMAGE);
    let (out, warnings, ops) = apply(Deployment, &d, &InjectorConfig::default(), false).unwrap();
    assert_eq!((ops, out), (0, d.clone()));
    assert_warned(&warnings, "migrations.io/imgae");
    assert_warned(&warnings, "did you mean migrations.io/image?");
    // Alongside a real opt-in, on the template too; not an error.
    let mut d = guide_deployment();
    d["spec"]["template"]["metadata"]["annotations"] = json!({"migrations.io/lock-timout": "5m"});
    let (_, warnings, ops) = apply(Deployment, &d, &InjectorConfig::default(), false).unwrap();
    assert!(ops > 0);
    assert_warned(&warnings, "did you mean migrations.io/lock-timeout?");
}
