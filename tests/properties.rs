//! Properties over generated pod templates: the patch always applies, a second pass yields no
//! patch, and removing the opt-in restores the original object.

mod support;

use migration_injector::mutate::workload::WorkloadKind::{self, *};
use migration_injector::mutate::InjectorConfig;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use support::apply;

fn names(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(pool, 0..=pool.len()).prop_shuffle()
}

#[derive(Debug, Clone)]
struct Case {
    kind: WorkloadKind,
    init: Vec<&'static str>,
    volumes: Vec<&'static str>,
    mounts: Vec<bool>,
    template_annotations: Vec<(&'static str, &'static str)>,
    on_template: bool,
    overrides: Vec<(&'static str, &'static str)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(WorkloadKind::ALL.to_vec()),
        names(&["wait-for-db", "seed", "setup"]),
        names(&["cache", "data", "config"]),
        prop::collection::vec(any::<bool>(), 3),
        prop::collection::vec(
            (
                prop::sample::select(vec!["team", "example.com/owner", "a~b/c"]),
                prop::sample::select(vec!["x", "y/z", ""]),
            ),
            0..3,
        ),
        any::<bool>(),
        prop::collection::vec(
            prop::sample::select(vec![
                ("migrations.io/position", "first"),
                ("migrations.io/position", "last"),
                ("migrations.io/container-name", "schema"),
                ("migrations.io/volume-name", "db-config"),
                ("migrations.io/secret", "other"),
                ("migrations.io/pull-policy", "IfNotPresent"),
                ("migrations.io/memory-limit", "1Gi"),
                ("migrations.io/args", r#"["up"]"#),
            ]),
            0..4,
        ),
    )
        .prop_map(
            |(kind, init, volumes, mounts, template_annotations, on_template, overrides)| Case {
                kind,
                init,
                volumes,
                mounts,
                template_annotations,
                on_template,
                overrides,
            },
        )
}

fn build(c: &Case) -> Value {
    let mut container = json!({"name": "app", "image": "app:1"});
    let mounts: Vec<Value> = c
        .volumes
        .iter()
        .zip(&c.mounts)
        .filter(|(_, m)| **m)
        .map(|(v, _)| json!({"name": v, "mountPath": format!("/mnt/{v}")}))
        .collect();
    if !mounts.is_empty() {
        container["volumeMounts"] = Value::Array(mounts);
    }
    let mut spec = json!({"containers": [container]});
    if !c.init.is_empty() {
        spec["initContainers"] = c
            .init
            .iter()
            .map(|n| json!({"name": n, "image": "busybox:1"}))
            .collect();
    }
    if !c.volumes.is_empty() {
        spec["volumes"] = c
            .volumes
            .iter()
            .map(|n| json!({"name": n, "emptyDir": {}}))
            .collect();
    }
    let mut opt_in = Map::new();
    opt_in.insert(
        "migrations.io/image".into(),
        json!("ghcr.io/org/migrations:v1"),
    );
    for (k, v) in &c.overrides {
        opt_in.insert((*k).into(), json!(v));
    }
    let mut template_annotations: Map<String, Value> = c
        .template_annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let mut workload_meta = json!({"name": "w", "labels": {"app": "w"}});
    if c.on_template || c.kind == Pod {
        template_annotations.extend(opt_in);
    } else {
        workload_meta["annotations"] = Value::Object(opt_in);
    }
    let mut template = json!({"metadata": {"labels": {"app": "w"}}, "spec": spec});
    if !template_annotations.is_empty() {
        template["metadata"]["annotations"] = Value::Object(template_annotations);
    }
    match c.kind {
        Pod => {
            let mut meta = template["metadata"].clone();
            meta["name"] = json!("w");
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
        }
        CronJob => json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": workload_meta,
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}),
        kind => json!({"apiVersion": "apps/v1", "kind": kind.as_str(), "metadata": workload_meta,
            "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": template}}),
    }
}

/// Removes every `migrations.io/*` annotation the user set, leaving what else is there.
fn opt_out(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(a)) = m.get_mut("annotations") {
                a.retain(|k, _| !k.starts_with("migrations.io/") || k == "migrations.io/injected");
            }
            m.values_mut().for_each(opt_out);
        }
        Value::Array(a) => a.iter_mut().for_each(opt_out),
        _ => {}
    }
}

/// An empty annotations map is the same as none to the API server.
fn normalise(v: &mut Value) {
    if let Value::Object(m) = v {
        if m.get("annotations")
            .is_some_and(|a| a.as_object().is_some_and(Map::is_empty))
        {
            m.remove("annotations");
        }
        m.values_mut().for_each(normalise);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn patch_applies_is_idempotent_and_reversible(c in case()) {
        let original = build(&c);
        let config = InjectorConfig::default();
        let (mutated, _, ops) = apply(c.kind, &original, &config, false).unwrap();
        prop_assert!(ops > 0);

        let (again, _, ops) = apply(c.kind, &mutated, &config, true).unwrap();
        prop_assert_eq!(ops, 0, "second pass patched {}", again);

        let mut removed = mutated.clone();
        opt_out(&mut removed);
        let (mut restored, _, _) = apply(c.kind, &removed, &config, false).unwrap();
        let mut expected = original.clone();
        opt_out(&mut expected);
        normalise(&mut restored);
        normalise(&mut expected);
        prop_assert_eq!(restored, expected);
    }
}

const CREATE: &str = include_str!("fixtures/create-deployment.json");

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever a client sends, the answer is a result, never a panic.
    #[test]
    fn review_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = migration_injector::webhook::review::review(&body, &InjectorConfig::default());
    }

    /// Any annotation value, on any key, gets an allowed or denied answer for the right uid.
    #[test]
    fn any_annotation_value_is_answered(
        key in prop::sample::select(migration_injector::mutate::annotations::Key::ALL.to_vec()),
        value in "\\PC{0,40}",
    ) {
        let mut review: Value = serde_json::from_str(CREATE).unwrap();
        review["request"]["object"]["metadata"]["annotations"][key.name()] = json!(value);
        let out = migration_injector::webhook::review::review(review.to_string().as_bytes(), &InjectorConfig::default()).unwrap();
        let answer: Value = serde_json::from_slice(&out.body).unwrap();
        prop_assert_eq!(&answer["response"]["uid"], &review["request"]["uid"]);
        if answer["response"]["allowed"] == json!(false) {
            let message = answer["response"]["status"]["message"].as_str().unwrap();
            prop_assert!(message.contains("fix:") && !message.contains('\n'), "{}", message);
        }
    }
}
