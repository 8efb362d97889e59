//! check's logic without a cluster: the pure parts directly, the API calls over `api_mock`,
//! where each test states the exact requests and answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::Method;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde_json::{json, Value};

use super::checks::{self, *};
use super::target::{self, probe, Selection, Target};
use super::{run, CheckError, Line, Options};
use crate::api_mock::{self, ApiServer};
use crate::error_chain;
use crate::mutate::workload::WorkloadKind;

const CONFIG_PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mi";
const SECRET_PATH: &str = "/api/v1/namespaces/ns/secrets/atlas-project";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/ns/deployments";
const RECORD: &str = r#"{"initContainer":"migrate","volume":"atlas-project"}"#;

fn webhook(rules: Value, extra: Value) -> Value {
    let mut w = json!({
        "name": "inject.migrations.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"caBundle": "Y2E=", "service": {"name": "mi", "namespace": "mi"}},
        "rules": rules,
        "namespaceSelector": {"matchExpressions": [
            {"key": "migrations.io/injection", "operator": "NotIn", "values": ["disabled"]}]},
    });
    if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
        w.extend(extra.clone());
    }
    w
}

fn rule(group: &str, version: &str, resource: &str) -> Value {
    json!({"apiGroups": [group], "apiVersions": [version], "resources": [resource],
           "operations": ["CREATE", "UPDATE"]})
}

fn configuration(webhooks: Value) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": "mi"}, "webhooks": webhooks})
}

/// The chart's configuration, covering Deployments.
fn healthy_configuration() -> Value {
    configuration(json!([webhook(
        json!([rule("apps", "v1", "deployments")]),
        json!({})
    )]))
}

fn probe_target() -> Target {
    Target {
        kind: WorkloadKind::Deployment,
        object: probe("ghcr.io/x/migrations:v1"),
        live: false,
    }
}

fn deployment(name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": name}},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}})
}

/// `object` as the API server returns it after the webhook injected it.
fn injected(mut object: Value) -> Value {
    object["spec"]["template"]["metadata"]["annotations"] =
        json!({"migrations.io/injected": RECORD});
    object["spec"]["template"]["spec"]["initContainers"] =
        json!([{"name": "migrate", "image": "m:1"}]);
    object
}

fn fail_what(line: &Line) -> &str {
    match line {
        Line::Fail { what, .. } => what,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn fail_fix(line: &Line) -> &str {
    match line {
        Line::Fail { fix, .. } => fix,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Target selection.

#[test]
fn flags_select_file_then_workload_then_probe() {
    let path = PathBuf::from("app.yaml");
    assert_eq!(
        Selection::from_flags(Some(path.clone()), Some("deploy/api"), "p:1").unwrap(),
        Selection::File(path)
    );
    assert_eq!(
        Selection::from_flags(None, Some("sts/db"), "p:1").unwrap(),
        Selection::Live {
            kind: WorkloadKind::StatefulSet,
            name: "db".into()
        }
    );
    assert_eq!(
        Selection::from_flags(None, None, "p:1").unwrap(),
        Selection::Probe {
            image: "p:1".into()
        }
    );
}

#[test]
fn a_bad_kind_name_is_refused_clearly() {
    let err = Selection::parse_workload("api").unwrap_err();
    assert_eq!(
        err.to_string(),
        "give the workload as KIND/NAME, e.g. deployment/api"
    );
    let err = Selection::parse_workload("service/api").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#""service" is not a kind migration-injector handles"#
    );
}

#[test]
fn a_manifest_gives_its_first_supported_object() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n\
                apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\n---\n\
                apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    let (kind, object) = target::from_manifest(text, Path::new("m.yaml")).unwrap();
    assert_eq!(kind, WorkloadKind::CronJob);
    assert_eq!(object["metadata"]["name"], "c");

    let err =
        target::from_manifest("apiVersion: v1\nkind: Service\n", Path::new("m.yaml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.yaml holds no Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob or Pod"
    );
    let err = target::from_manifest("a: [", Path::new("m.yaml")).unwrap_err();
    assert!(matches!(err, CheckError::ParseFile { .. }), "{err:?}");
    assert!(error_chain(&err).starts_with("parsing m.yaml: "), "{err}");
}

#[tokio::test]
async fn a_missing_file_names_the_file() {
    let (client, _api) = api_mock::pair();
    let selection = Selection::File(PathBuf::from("/nonexistent/app.yaml"));
    let err = target::select(&client, "ns", &selection).await.unwrap_err();
    assert!(
        error_chain(&err).starts_with("reading /nonexistent/app.yaml: "),
        "{}",
        error_chain(&err)
    );
}

#[tokio::test]
async fn the_probe_is_an_opted_in_deployment() {
    let (client, _api) = api_mock::pair();
    let selection = Selection::Probe {
        image: "p:1".into(),
    };
    let t = target::select(&client, "ns", &selection).await.unwrap();
    assert_eq!(t.kind, WorkloadKind::Deployment);
    assert!(!t.live);
    assert_eq!(t.name(), "migration-injector-check-probe");
    assert_eq!(
        t.object["metadata"]["annotations"]["migrations.io/image"],
        "p:1"
    );
}

/// A named workload of each kind is read from its own URL (literal paths, not derived from the
/// mapping under test).
#[tokio::test]
async fn a_live_workload_of_each_kind_is_read_from_its_url() {
    let cases = [
        (
            "deploy/w",
            "/apis/apps/v1/namespaces/ns/deployments/w",
            "apps/v1",
            WorkloadKind::Deployment,
        ),
        (
            "sts/w",
            "/apis/apps/v1/namespaces/ns/statefulsets/w",
            "apps/v1",
            WorkloadKind::StatefulSet,
        ),
        (
            "ds/w",
            "/apis/apps/v1/namespaces/ns/daemonsets/w",
            "apps/v1",
            WorkloadKind::DaemonSet,
        ),
        (
            "rs/w",
            "/apis/apps/v1/namespaces/ns/replicasets/w",
            "apps/v1",
            WorkloadKind::ReplicaSet,
        ),
        (
            "job/w",
            "/apis/batch/v1/namespaces/ns/jobs/w",
            "batch/v1",
            WorkloadKind::Job,
        ),
        (
            "cj/w",
            "/apis/batch/v1/namespaces/ns/cronjobs/w",
            "batch/v1",
            WorkloadKind::CronJob,
        ),
        (
            "po/w",
            "/api/v1/namespaces/ns/pods/w",
            "v1",
            WorkloadKind::Pod,
        ),
    ];
    assert_eq!(cases.map(|c| c.3), WorkloadKind::ALL, "one case per kind");
    for (arg, path, api_version, kind) in cases {
        let (client, mut api) = api_mock::pair();
        let selection = Selection::parse_workload(arg).unwrap();
        let task = tokio::spawn(async move { target::select(&client, "ns", &selection).await });
        api.expect(Method::GET, path).await.json(
            200,
            &json!({"apiVersion": api_version, "kind": kind.as_str(),
                    "metadata": {"name": "w", "namespace": "ns"}}),
        );
        let t = api_mock::finish(task).await.unwrap();
        assert_eq!((t.kind, t.live, t.name()), (kind, true, "w"), "{arg}");
    }
}

#[tokio::test]
async fn a_missing_workload_is_reported_clearly() {
    let (client, mut api) = api_mock::pair();
    let selection = Selection::parse_workload("deployment/api").unwrap();
    let task = tokio::spawn(async move { target::select(&client, "ns", &selection).await });
    api.expect(Method::GET, "/apis/apps/v1/namespaces/ns/deployments/api")
        .await
        .not_found();
    let err = api_mock::finish(task).await.unwrap_err();
    assert_eq!(err.to_string(), "Deployment ns/api does not exist");
}

/// batch/v1 CronJobs are not served before Kubernetes 1.21: the API server answers a bare 404.
#[tokio::test]
async fn a_cronjob_falls_back_to_batch_v1beta1() {
    let (client, mut api) = api_mock::pair();
    let selection = Selection::parse_workload("cronjob/nightly").unwrap();
    let task = tokio::spawn(async move { target::select(&client, "ns", &selection).await });
    api.expect(Method::GET, "/apis/batch/v1/namespaces/ns/cronjobs/nightly")
        .await
        .text(404, "404 page not found");
    api.expect(
        Method::GET,
        "/apis/batch/v1beta1/namespaces/ns/cronjobs/nightly",
    )
    .await
    .json(
        200,
        &json!({"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "nightly"}}),
    );
    let t = api_mock::finish(task).await.unwrap();
    assert_eq!((t.kind, t.name()), (WorkloadKind::CronJob, "nightly"));
    assert_eq!(t.object["apiVersion"], "batch/v1beta1");
}

#[tokio::test]
async fn a_cronjob_that_does_not_exist_is_not_looked_up_twice() {
    let (client, mut api) = api_mock::pair();
    let selection = Selection::parse_workload("cj/nightly").unwrap();
    let task = tokio::spawn(async move { target::select(&client, "ns", &selection).await });
    api.expect(Method::GET, "/apis/batch/v1/namespaces/ns/cronjobs/nightly")
        .await
        .not_found();
    // A second request would go unanswered and `finish` would time out.
    let err = api_mock::finish(task).await.unwrap_err();
    assert_eq!(err.to_string(), "CronJob ns/nightly does not exist");
}

#[tokio::test]
async fn an_api_error_reading_the_workload_says_what_was_read() {
    let (client, mut api) = api_mock::pair();
    let selection = Selection::parse_workload("deployment/api").unwrap();
    let task = tokio::spawn(async move { target::select(&client, "ns", &selection).await });
    api.expect(Method::GET, "/apis/apps/v1/namespaces/ns/deployments/api")
        .await
        .status(
            403,
            "Forbidden",
            r#"deployments.apps "api" is forbidden: User "u" cannot get"#,
        );
    let err = api_mock::finish(task).await.unwrap_err();
    let message = error_chain(&err);
    assert!(
        message.starts_with("reading Deployment ns/api: ")
            && message.contains(r#"deployments.apps "api" is forbidden"#),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. The webhook configuration.

async fn webhook_check(kind: WorkloadKind, answer: impl FnOnce(api_mock::Call)) -> WebhookCheck {
    let (client, mut api) = api_mock::pair();
    let task =
        tokio::spawn(async move { checks::webhook_configuration(&client, "mi", kind).await });
    answer(api.expect(Method::GET, CONFIG_PATH).await);
    api_mock::finish(task).await.unwrap()
}

#[tokio::test]
async fn a_configuration_covering_the_kind_passes() {
    let c = webhook_check(WorkloadKind::Deployment, |call| {
        call.json(200, &healthy_configuration())
    })
    .await;
    assert_eq!(
        c.webhook().map(|w| w.name.as_str()),
        Some("inject.migrations.io")
    );
    assert_eq!(
        c.line(),
        Line::Pass(
            "MutatingWebhookConfiguration mi covers Deployments (webhook inject.migrations.io)"
                .into()
        )
    );
}

#[tokio::test]
async fn a_missing_configuration_fails_with_the_install_fix() {
    let c = webhook_check(WorkloadKind::Deployment, |call| call.not_found()).await;
    assert_eq!(c.coverage, Coverage::Missing);
    assert_eq!(
        fail_what(&c.line()),
        "MutatingWebhookConfiguration mi does not exist"
    );
    assert!(fail_fix(&c.line()).contains("--webhook-config-name"));
}

#[tokio::test]
async fn a_configuration_without_the_kind_fails_naming_the_resource() {
    let c = webhook_check(WorkloadKind::StatefulSet, |call| {
        call.json(200, &healthy_configuration())
    })
    .await;
    assert_eq!(
        c.coverage,
        Coverage::NoRule {
            plural: "statefulsets".into()
        }
    );
    assert_eq!(
        fail_what(&c.line()),
        "MutatingWebhookConfiguration mi has no rule for CREATE of statefulsets"
    );
    assert_eq!(
        fail_fix(&c.line()),
        "enable statefulsets in the chart's webhook.kinds values"
    );
}

#[tokio::test]
async fn a_rule_for_update_only_does_not_cover() {
    let mut r = rule("apps", "v1", "deployments");
    r["operations"] = json!(["UPDATE"]);
    let config = configuration(json!([webhook(json!([r]), json!({}))]));
    let c = webhook_check(WorkloadKind::Deployment, |call| call.json(200, &config)).await;
    assert!(matches!(c.coverage, Coverage::NoRule { .. }), "{c:?}");
}

#[tokio::test]
async fn a_batch_v1beta1_cronjob_rule_covers_cronjobs() {
    let config = configuration(json!([
        webhook(
            json!([rule("apps", "v1", "deployments")]),
            json!({"name": "other"})
        ),
        webhook(
            json!([rule("batch", "v1beta1", "cronjobs")]),
            json!({"name": "legacy"})
        ),
    ]));
    let c = webhook_check(WorkloadKind::CronJob, |call| call.json(200, &config)).await;
    assert_eq!(c.webhook().map(|w| w.name.as_str()), Some("legacy"));
}

#[tokio::test]
async fn wildcard_rules_cover() {
    let r =
        json!({"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "operations": ["*"]});
    let config = configuration(json!([webhook(json!([r]), json!({}))]));
    let c = webhook_check(WorkloadKind::Pod, |call| call.json(200, &config)).await;
    assert!(c.webhook().is_some(), "{c:?}");
}

#[tokio::test]
async fn an_api_error_reading_the_configuration_is_an_error_naming_it() {
    let (client, mut api) = api_mock::pair();
    let task = tokio::spawn(async move {
        checks::webhook_configuration(&client, "mi", WorkloadKind::Deployment).await
    });
    api.expect(Method::GET, CONFIG_PATH).await.status(
        403,
        "Forbidden",
        "mutatingwebhookconfigurations is forbidden",
    );
    let err = api_mock::finish(task).await.unwrap_err();
    let message = error_chain(&err);
    assert!(
        message.starts_with("reading MutatingWebhookConfiguration mi: ")
            && message.contains("mutatingwebhookconfigurations is forbidden"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The annotations.

fn annotations_of(object: Value) -> AnnotationsCheck {
    checks::annotations(&Target {
        kind: WorkloadKind::Deployment,
        object,
        live: false,
    })
}

#[test]
fn valid_annotations_pass() {
    let c = checks::annotations(&probe_target());
    assert!(c.opted_in);
    assert_eq!(c.outcome, AnnotationsOutcome::Valid);
    assert_eq!(
        c.line(),
        Line::Pass("the annotations of Deployment migration-injector-check-probe are valid".into())
    );
}

#[test]
fn no_image_annotation_fails_as_not_opted_in() {
    let c = annotations_of(deployment("api", json!({})));
    assert!(!c.opted_in);
    assert_eq!(c.outcome, AnnotationsOutcome::NotOptedIn);
    assert_eq!(
        fail_what(&c.line()),
        "Deployment api has no migrations.io/image annotation: it does not opt in"
    );
}

#[test]
fn the_image_annotation_on_the_pod_template_opts_in() {
    let mut d = deployment("api", json!({}));
    d["spec"]["template"]["metadata"]["annotations"] = json!({"migrations.io/image": "m:1"});
    let c = annotations_of(d);
    assert!(c.opted_in);
    assert_eq!(c.outcome, AnnotationsOutcome::Valid);
}

#[test]
fn an_invalid_annotation_fails_with_the_webhooks_message() {
    let c = annotations_of(deployment(
        "bad",
        json!({"migrations.io/image": "m:1", "migrations.io/pull-policy": "Sometimes"}),
    ));
    assert!(matches!(c.outcome, AnnotationsOutcome::Refused(_)), "{c:?}");
    let what = fail_what(&c.line()).to_owned();
    assert!(
        what.starts_with("the annotations of Deployment bad are refused: ")
            && what.contains(r#"annotation migrations.io/pull-policy="Sometimes""#),
        "{what}"
    );
}

#[test]
fn an_undecodable_object_fails_as_unreadable() {
    let c = annotations_of(
        json!({"metadata": {"name": "x", "annotations": {"migrations.io/image": 1}}}),
    );
    assert!(
        matches!(c.outcome, AnnotationsOutcome::Unreadable(_)),
        "{c:?}"
    );
    assert!(fail_what(&c.line()).starts_with("Deployment x cannot be read: "));
}

#[test]
fn unknown_keys_are_warnings() {
    let c = annotations_of(deployment(
        "api",
        json!({"migrations.io/image": "m:1", "migrations.io/imgae": "m:1"}),
    ));
    assert_eq!(c.outcome, AnnotationsOutcome::Valid);
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("did you mean migrations.io/image?"));
}

// ---------------------------------------------------------------------------------------------
// 3. The Secret.

fn secret_ref(annotations: Value) -> SecretRef {
    checks::secret_reference(&Target {
        kind: WorkloadKind::Deployment,
        object: deployment("api", annotations),
        live: false,
    })
}

#[test]
fn the_secret_and_key_follow_the_annotations() {
    let r = |name: &str, key: Option<&str>| SecretRef {
        name: name.into(),
        key: key.map(Into::into),
    };
    assert_eq!(secret_ref(json!({})), r("atlas-project", Some("atlas.hcl")));
    assert_eq!(
        secret_ref(json!({"migrations.io/secret": "s", "migrations.io/config-file": "c.hcl"})),
        r("s", Some("c.hcl"))
    );
    // Custom args: the config file is not read, so no key is required.
    assert_eq!(
        secret_ref(json!({"migrations.io/args": "migrate apply"})),
        r("atlas-project", None)
    );
    assert_eq!(
        secret_ref(json!({"migrations.io/url-secret": "db/url", "migrations.io/secret": "s"})),
        r("db", Some("url"))
    );
    // The workload's annotation wins over its pod template's.
    let mut d = deployment("api", json!({"migrations.io/secret": "outer"}));
    d["spec"]["template"]["metadata"]["annotations"] =
        json!({"migrations.io/secret": "inner", "migrations.io/config-file": "t.hcl"});
    let t = Target {
        kind: WorkloadKind::Deployment,
        object: d,
        live: false,
    };
    assert_eq!(checks::secret_reference(&t), r("outer", Some("t.hcl")));
}

async fn secret_check(
    target: Target,
    path: &str,
    answer: impl FnOnce(api_mock::Call),
) -> SecretCheck {
    let (client, mut api) = api_mock::pair();
    let task = tokio::spawn(async move { checks::secret(&client, "ns", &target).await });
    answer(api.expect(Method::GET, path).await);
    api_mock::finish(task).await
}

fn secret_json(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "atlas-project"}, "data": data})
}

#[tokio::test]
async fn a_secret_with_the_key_passes() {
    let c = secret_check(probe_target(), SECRET_PATH, |call| {
        call.json(200, &secret_json(json!({"atlas.hcl": "ZW52"})))
    })
    .await;
    assert_eq!(c.outcome, SecretOutcome::HoldsKey("atlas.hcl".into()));
    assert_eq!(
        c.line(),
        Line::Pass(r#"Secret ns/atlas-project holds "atlas.hcl""#.into())
    );
}

#[tokio::test]
async fn a_missing_secret_fails_with_the_create_fix() {
    let c = secret_check(probe_target(), SECRET_PATH, |call| call.not_found()).await;
    assert_eq!(c.outcome, SecretOutcome::Missing);
    assert_eq!(
        c.line(),
        Line::Fail {
            what: "Secret ns/atlas-project does not exist: the migrate container cannot start"
                .into(),
            fix: "create it (kubectl -n ns create secret generic atlas-project --from-file=...)"
                .into(),
        }
    );
}

#[tokio::test]
async fn a_secret_without_the_key_fails_naming_it() {
    let c = secret_check(probe_target(), SECRET_PATH, |call| {
        call.json(200, &secret_json(json!({"other": "eA=="})))
    })
    .await;
    assert_eq!(c.outcome, SecretOutcome::MissingKey("atlas.hcl".into()));
    assert_eq!(
        fail_what(&c.line()),
        r#"Secret ns/atlas-project has no key "atlas.hcl""#
    );
}

#[tokio::test]
async fn the_url_secret_is_the_one_read() {
    let object = deployment(
        "api",
        json!({"migrations.io/image": "m:1", "migrations.io/url-secret": "db/url"}),
    );
    let target = Target {
        kind: WorkloadKind::Deployment,
        object,
        live: false,
    };
    let c = secret_check(target, "/api/v1/namespaces/ns/secrets/db", |call| {
        call.json(200, &secret_json(json!({"url": "eA=="})))
    })
    .await;
    assert_eq!(
        (c.name.as_str(), &c.outcome),
        ("db", &SecretOutcome::HoldsKey("url".into()))
    );
}

#[tokio::test]
async fn a_forbidden_secret_fails_with_the_rbac_fix() {
    let c = secret_check(probe_target(), SECRET_PATH, |call| {
        call.status(403, "Forbidden", r#"secrets "atlas-project" is forbidden"#)
    })
    .await;
    assert!(
        matches!(&c.outcome, SecretOutcome::Unreadable(m) if m.contains("is forbidden")),
        "{c:?}"
    );
    assert_eq!(
        fail_fix(&c.line()),
        "run check with credentials that may get Secrets in the namespace"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The dry run.

fn covering_webhook(extra: Value) -> MutatingWebhook {
    serde_json::from_value(webhook(json!([rule("apps", "v1", "deployments")]), extra)).unwrap()
}

/// Runs the dry-run check; `serve` plays the API server.
async fn dry_run_check(
    target: Target,
    webhook: Option<MutatingWebhook>,
    opted_in: bool,
    serve: impl AsyncFnOnce(&mut ApiServer),
) -> DryRunCheck {
    let (client, mut api) = api_mock::pair();
    let task = tokio::spawn(async move {
        checks::dry_run(&client, "ns", "mi", &target, webhook.as_ref(), opted_in).await
    });
    serve(&mut api).await;
    api_mock::finish(task).await.unwrap()
}

#[tokio::test]
async fn a_dry_run_that_comes_back_injected_passes() {
    let probe = probe_target();
    let created = injected(probe.object.clone());
    let c = dry_run_check(
        probe,
        Some(covering_webhook(json!({}))),
        true,
        async |api| {
            let call = api.expect(Method::POST, DEPLOYMENTS).await;
            assert!(call.query.contains("dryRun=All"), "{}", call.query);
            assert!(
                call.query.contains("fieldManager=migration-injector-check"),
                "{}",
                call.query
            );
            assert_eq!(
                call.body["metadata"]["name"],
                "migration-injector-check-probe"
            );
            call.json(201, &created);
        },
    )
    .await;
    assert_eq!(c.outcome, DryRunOutcome::Injected);
    assert_eq!(
        c.line(),
        Line::Pass("a server-side dry-run create of Deployment migration-injector-check-probe in ns comes back with the migration init container".into())
    );
}

#[tokio::test]
async fn an_excluded_namespace_is_named() {
    let probe = probe_target();
    let created = probe.object.clone();
    let c = dry_run_check(
        probe,
        Some(covering_webhook(json!({}))),
        true,
        async |api| {
            api.expect(Method::POST, DEPLOYMENTS)
                .await
                .json(201, &created);
            api.expect(Method::GET, "/api/v1/namespaces/ns").await.json(
                200,
                &json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "ns", "labels": {"migrations.io/injection": "disabled"}}}),
            );
        },
    )
    .await;
    assert_eq!(
        c.outcome,
        DryRunOutcome::NotInjected(Exclusion::NamespaceSelector {
            labels: labels(&[("migrations.io/injection", "disabled")])
        })
    );
    let what = fail_what(&c.line()).to_owned();
    assert!(
        what.ends_with(r#"comes back without the init container: the webhook's namespaceSelector excludes namespace ns (labels {"migrations.io/injection": "disabled"})"#),
        "{what}"
    );
}

#[tokio::test]
async fn an_unreadable_namespace_is_diagnosed_without_labels() {
    let probe = probe_target();
    let created = probe.object.clone();
    let c = dry_run_check(
        probe,
        Some(covering_webhook(json!({}))),
        true,
        async |api| {
            api.expect(Method::POST, DEPLOYMENTS)
                .await
                .json(201, &created);
            api.expect(Method::GET, "/api/v1/namespaces/ns")
                .await
                .status(403, "Forbidden", "namespaces is forbidden");
        },
    )
    .await;
    // No labels: NotIn disabled matches, so the remaining filters are looked at.
    assert_eq!(c.outcome, DryRunOutcome::NotInjected(Exclusion::Unknown));
}

#[tokio::test]
async fn a_webhook_call_error_is_explained() {
    let message = r#"Internal error occurred: failed calling webhook "inject.migrations.io": failed to call webhook: Post "https://mi.mi.svc:443/mutate?timeout=10s": tls: failed to verify certificate: x509: certificate signed by unknown authority"#;
    let c = dry_run_check(
        probe_target(),
        Some(covering_webhook(json!({}))),
        true,
        async |api| {
            api.expect(Method::POST, DEPLOYMENTS)
                .await
                .status(500, "InternalError", message);
        },
    )
    .await;
    assert_eq!(
        c.outcome,
        DryRunOutcome::Failed {
            cause: Cause::Untrusted,
            message: message.into()
        }
    );
    let line = c.line();
    assert!(
        fail_what(&line).starts_with("a server-side dry-run create of Deployment migration-injector-check-probe in ns failed: the API server does not trust the webhook's certificate: "),
        "{line:?}"
    );
    assert!(
        fail_fix(&line)
            .starts_with("the caBundle of MutatingWebhookConfiguration mi does not match"),
        "{line:?}"
    );
}

#[tokio::test]
async fn a_live_object_is_dry_run_as_written_under_a_generated_name() {
    let mut live = injected(deployment("api", json!({"migrations.io/image": "m:1"})));
    live["metadata"]["resourceVersion"] = json!("7");
    live["metadata"]["uid"] = json!("u");
    live["status"] = json!({"replicas": 1});
    let target = Target {
        kind: WorkloadKind::Deployment,
        object: live,
        live: true,
    };
    let c = dry_run_check(
        target,
        Some(covering_webhook(json!({}))),
        true,
        async |api| {
            let call = api.expect(Method::POST, DEPLOYMENTS).await;
            let m = &call.body["metadata"];
            assert_eq!(m["generateName"], "api-check-");
            assert!(
                m.get("name").is_none()
                    && m.get("resourceVersion").is_none()
                    && m.get("uid").is_none(),
                "{m}"
            );
            assert!(call.body.get("status").is_none());
            let template = &call.body["spec"]["template"];
            assert!(
                template["metadata"]["annotations"]
                    .get("migrations.io/injected")
                    .is_none(),
                "{template}"
            );
            assert!(
                template["spec"]
                    .get("initContainers")
                    .is_none_or(|l| l == &json!([])),
                "{template}"
            );
            let answer = injected(call.body.clone());
            call.json(201, &answer);
        },
    )
    .await;
    assert_eq!(c.outcome, DryRunOutcome::Injected);
}

/// An older cluster serves CronJobs only as batch/v1beta1: the dry run is retried there.
#[tokio::test]
async fn a_cronjob_dry_run_falls_back_to_batch_v1beta1() {
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "c", "annotations": {"migrations.io/image": "m:1"}},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
    let mut created = cron.clone();
    created["spec"]["jobTemplate"]["spec"]["template"]["metadata"] =
        json!({"annotations": {"migrations.io/injected": RECORD}});
    let target = Target {
        kind: WorkloadKind::CronJob,
        object: cron,
        live: false,
    };
    let c = dry_run_check(target, None, true, async |api| {
        api.expect(Method::POST, "/apis/batch/v1/namespaces/ns/cronjobs")
            .await
            .text(404, "404 page not found");
        api.expect(Method::POST, "/apis/batch/v1beta1/namespaces/ns/cronjobs")
            .await
            .json(201, &created);
    })
    .await;
    assert_eq!(c.outcome, DryRunOutcome::Injected);
}

#[test]
fn exclusions_are_found_in_order() {
    let none = BTreeMap::new();
    let disabled = labels(&[("migrations.io/injection", "disabled")]);
    let w = covering_webhook(json!({
        "objectSelector": {"matchLabels": {"team": "a"}},
        "matchConditions": [{"name": "opted-in", "expression": "true"}]}));
    let team_a = labels(&[("team", "a")]);
    assert_eq!(
        exclusion(Some(&w), false, &disabled, &none),
        Exclusion::NotOptedIn
    );
    assert_eq!(
        exclusion(Some(&w), true, &disabled, &none),
        Exclusion::NamespaceSelector {
            labels: disabled.clone()
        }
    );
    assert_eq!(
        exclusion(Some(&w), true, &none, &none),
        Exclusion::ObjectSelector {
            labels: none.clone()
        }
    );
    assert_eq!(
        exclusion(Some(&w), true, &none, &team_a),
        Exclusion::MatchConditions(vec!["opted-in".into()])
    );
    assert_eq!(exclusion(None, true, &disabled, &none), Exclusion::Unknown);
    assert_eq!(
        exclusion(Some(&covering_webhook(json!({}))), true, &none, &none),
        Exclusion::Unknown
    );
}

#[test]
fn label_selectors() {
    let labels = labels(&[("team", "a")]);
    let req = |op: &str, values: &[&str]| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "team".into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }]),
        ..LabelSelector::default()
    };
    assert!(selects(None, &labels));
    assert!(selects(Some(&req("In", &["a", "b"])), &labels));
    assert!(!selects(Some(&req("In", &["b"])), &labels));
    assert!(!selects(Some(&req("NotIn", &["a"])), &labels));
    assert!(selects(Some(&req("NotIn", &["a"])), &BTreeMap::new()));
    assert!(selects(Some(&req("Exists", &[])), &labels));
    assert!(!selects(Some(&req("DoesNotExist", &[])), &labels));
    assert!(!selects(Some(&req("Bogus", &[])), &labels));
}

#[test]
fn api_errors_are_explained() {
    for (message, cause) in [
        (
            "Post \"https://s/mutate\": x509: certificate signed by unknown authority",
            Cause::Untrusted,
        ),
        (
            "dial tcp 10.0.0.1:443: connect: connection refused",
            Cause::Unreachable,
        ),
        (
            "no endpoints available for service \"mi\"",
            Cause::Unreachable,
        ),
        ("context deadline exceeded", Cause::TimedOut),
        (
            "admission webhook \"inject.migrations.io\" denied the request: annotation ...",
            Cause::Denied,
        ),
        (
            "Deployment.apps \"x\" is invalid: spec.selector: Required value",
            Cause::Refused,
        ),
    ] {
        assert_eq!(Cause::of(message), cause, "{message}");
    }
}

#[test]
fn live_objects_are_checked_as_written() {
    let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "j", "annotations": {"migrations.io/image": "a:1"}},
        "spec": {"selector": {"matchLabels": {"controller-uid": "x"}},
            "template": {"metadata": {"labels": {"controller-uid": "x", "job-name": "j", "app": "j"},
                "annotations": {"migrations.io/injected": RECORD}},
            "spec": {"initContainers": [{"name": "wait"}, {"name": "migrate"}],
                "volumes": [{"name": "atlas-project"}], "containers": [{"name": "c"}]}}}});
    strip_injection(WorkloadKind::Job, &mut job);
    assert!(job["spec"].get("selector").is_none());
    let t = &job["spec"]["template"];
    assert_eq!(t["metadata"]["labels"], json!({"app": "j"}));
    assert_eq!(t["metadata"]["annotations"], json!({}));
    assert_eq!(t["spec"]["initContainers"], json!([{"name": "wait"}]));
    assert_eq!(t["spec"]["volumes"], json!([]));
}

/// A record that is not the injector's owns nothing: nothing is stripped but the record.
#[test]
fn an_unreadable_record_strips_nothing_else() {
    let mut d = deployment("api", json!({}));
    d["spec"]["template"]["metadata"]["annotations"] = json!({"migrations.io/injected": "junk"});
    d["spec"]["template"]["spec"]["initContainers"] = json!([{"name": "migrate"}]);
    strip_injection(WorkloadKind::Deployment, &mut d);
    assert_eq!(d["spec"]["template"]["metadata"]["annotations"], json!({}));
    assert_eq!(
        d["spec"]["template"]["spec"]["initContainers"],
        json!([{"name": "migrate"}])
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The live object.

#[test]
fn a_live_object_without_the_record_fails_with_the_restart_fix() {
    let target = |object| Target {
        kind: WorkloadKind::Deployment,
        object,
        live: true,
    };
    let plain = deployment("api", json!({"migrations.io/image": "m:1"}));
    let c = live_injection("shop", &target(plain.clone())).unwrap();
    assert!(!c.injected);
    assert_eq!(
        c.line(),
        Line::Fail {
            what: "the live Deployment api does not carry the injection: it was created before the webhook was in place, or was skipped".into(),
            fix: "kubectl -n shop rollout restart deployment/api (or re-apply it) once the checks above pass".into(),
        }
    );
    let c = live_injection("shop", &target(injected(plain.clone()))).unwrap();
    assert_eq!(
        c.line(),
        Line::Pass("the live Deployment api carries the injection".into())
    );
    // Only a live object is checked.
    let file = Target {
        live: false,
        ..target(plain)
    };
    assert_eq!(live_injection("shop", &file), None);
}

// ---------------------------------------------------------------------------------------------
// The whole run.

async fn run_checks(
    target: Target,
    serve: impl AsyncFnOnce(&mut ApiServer),
) -> (Result<(), CheckError>, Vec<Line>) {
    let (client, mut api) = api_mock::pair();
    let task = tokio::spawn(async move {
        let options = Options {
            namespace: "ns".into(),
            webhook_config_name: "mi".into(),
        };
        let mut lines = Vec::new();
        let result = run(&client, &options, &target, |l| lines.push(l)).await;
        (result, lines)
    });
    serve(&mut api).await;
    api_mock::finish(task).await
}

#[tokio::test]
async fn a_healthy_install_passes_four_checks_in_order() {
    let created = injected(probe_target().object);
    let (result, lines) = run_checks(probe_target(), async |api| {
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &healthy_configuration());
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret_json(json!({"atlas.hcl": "ZW52"})));
        api.expect(Method::POST, DEPLOYMENTS)
            .await
            .json(201, &created);
    })
    .await;
    result.unwrap();
    let pass = |s: &str| Line::Pass(s.into());
    assert_eq!(
        lines,
        [
            pass("MutatingWebhookConfiguration mi covers Deployments (webhook inject.migrations.io)"),
            pass("the annotations of Deployment migration-injector-check-probe are valid"),
            pass(r#"Secret ns/atlas-project holds "atlas.hcl""#),
            pass("a server-side dry-run create of Deployment migration-injector-check-probe in ns comes back with the migration init container"),
        ]
    );
}

/// The e2e's "created while its namespace was excluded" case: only the live check fails.
#[tokio::test]
async fn a_live_workload_created_before_the_webhook_fails_only_the_live_check() {
    let live = deployment("old-app", json!({"migrations.io/image": "m:1"}));
    let target = Target {
        kind: WorkloadKind::Deployment,
        object: live,
        live: true,
    };
    let (result, lines) = run_checks(target, async |api| {
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &healthy_configuration());
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret_json(json!({"atlas.hcl": "ZW52"})));
        let call = api.expect(Method::POST, DEPLOYMENTS).await;
        let answer = injected(call.body.clone());
        call.json(201, &answer);
    })
    .await;
    result.unwrap();
    let failures: Vec<_> = lines
        .iter()
        .filter(|l| matches!(l, Line::Fail { .. }))
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(failures.len(), 1, "{lines:?}");
    assert!(fail_what(failures[0]).contains("created before the webhook was in place"));
}

#[tokio::test]
async fn warnings_follow_the_annotations_line() {
    let mut probe = probe_target();
    probe.object["metadata"]["annotations"]["migrations.io/imgae"] = json!("x");
    let created = injected(probe.object.clone());
    let (result, lines) = run_checks(probe, async |api| {
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &healthy_configuration());
        api.expect(Method::GET, SECRET_PATH)
            .await
            .json(200, &secret_json(json!({"atlas.hcl": "ZW52"})));
        api.expect(Method::POST, DEPLOYMENTS)
            .await
            .json(201, &created);
    })
    .await;
    result.unwrap();
    assert!(
        matches!(&lines[2], Line::Warning(w) if w.contains("migrations.io/imgae")),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 5);
}

#[tokio::test]
async fn an_api_error_stops_the_run_with_a_clear_message() {
    let (result, lines) = run_checks(probe_target(), async |api| {
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .status(401, "Unauthorized", "Unauthorized");
    })
    .await;
    let err = result.unwrap_err();
    assert!(
        error_chain(&err).starts_with("reading MutatingWebhookConfiguration mi: "),
        "{}",
        error_chain(&err)
    );
    assert!(lines.is_empty(), "{lines:?}");
}

// ---------------------------------------------------------------------------------------------
// 6. Run-once mode: the run of the live revision.

const FP: &str = "0123456789abcdef0123456789abcdef01234567";
const RUN_PATH: &str = "/apis/migrations.io/v1alpha1/namespaces/ns/migrationruns/0123456789abcdef0123456789abcdef01234567";
const PODS_PATH: &str = "/api/v1/namespaces/ns/pods";

fn once_target() -> Target {
    let mut object = injected(deployment("api", json!({"migrations.io/image": "m:1"})));
    object["spec"]["template"]["metadata"]["labels"]["migrations.io/fingerprint"] = json!(FP);
    Target {
        kind: WorkloadKind::Deployment,
        object,
        live: true,
    }
}

fn pods(phases: &[&str]) -> Value {
    let items: Vec<Value> = phases
        .iter()
        .map(|p| json!({"metadata": {"name": "p"}, "status": {"phase": p}}))
        .collect();
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

async fn run_check(
    target: Target,
    run: impl FnOnce(api_mock::Call),
    phases: &[&str],
) -> Option<RunCheck> {
    let (client, mut api) = api_mock::pair();
    let task = tokio::spawn(async move { checks::migration_run(&client, "ns", &target).await });
    if live_fingerprint(&once_target()).is_some() {
        run(api.expect(Method::GET, RUN_PATH).await);
        let list = api.expect(Method::GET, PODS_PATH).await;
        assert!(
            list.query
                .contains("labelSelector=migrations.io%2Ffingerprint%3D0123456789abcdef"),
            "{}",
            list.query
        );
        list.json(200, &pods(phases));
    }
    api_mock::finish(task).await
}

fn run_object(status: Value) -> Value {
    json!({"apiVersion": "migrations.io/v1alpha1", "kind": "MigrationRun",
           "metadata": {"name": FP, "namespace": "ns"}, "spec": {}, "status": status})
}

#[tokio::test]
async fn every_pod_mode_has_no_run_line() {
    let (client, _api) = api_mock::pair();
    let mut t = once_target();
    t.object["spec"]["template"]["metadata"]["labels"] = json!({"app": "api"});
    assert_eq!(checks::migration_run(&client, "ns", &t).await, None);
    // Nor has a manifest that is not live.
    let mut t = once_target();
    t.live = false;
    assert_eq!(checks::migration_run(&client, "ns", &t).await, None);
}

#[tokio::test]
async fn a_succeeded_run_passes_and_names_its_attempts() {
    let c = run_check(
        once_target(),
        |call| call.json(200, &run_object(json!({"phase": "Succeeded", "attempts": 1, "finishedAt": "2026-12-04T10:00:00Z", "message": "applied 2 migrations"}))),
        &["Running", "Running"],
    )
    .await
    .unwrap();
    assert_eq!(c.waiting, 0);
    assert_eq!(
        c.line(),
        Line::Pass(format!("the migration of this revision (MigrationRun ns/{FP}) succeeded at 2026-12-04T10:00:00Z after 1 attempt(s): applied 2 migrations"))
    );
}

#[tokio::test]
async fn a_failed_run_fails_with_the_tools_message_and_the_retry() {
    let c = run_check(
        once_target(),
        |call| call.json(200, &run_object(json!({"phase": "Failed", "attempts": 5, "message": "ERROR: relation \"users\" already exists"}))),
        &["Pending", "Pending", "Running"],
    )
    .await
    .unwrap();
    assert_eq!(c.waiting, 2);
    let Line::Fail { what, fix } = c.line() else {
        panic!("a failure expected: {:?}", c.line())
    };
    assert!(what.contains("failed after 5 attempt(s): ERROR: relation \"users\" already exists; 2 pods wait for it"), "{what}");
    assert!(
        fix.contains(&format!("annotate migrationrun {FP} migrations.io/retry=")),
        "{fix}"
    );
}

#[tokio::test]
async fn a_missing_run_or_crd_says_what_to_install() {
    let c = run_check(once_target(), |call| call.not_found(), &["Pending"])
        .await
        .unwrap();
    // A 404 on the object and on the resource look alike through the API; both are explained.
    assert_eq!(c.outcome, RunOutcome::Missing);
    let Line::Fail { what, fix } = c.line() else {
        panic!("a failure expected")
    };
    assert!(what.contains("1 pod waits for it"), "{what}");
    assert!(fix.contains("controller.enabled=true"), "{fix}");
}

#[tokio::test]
async fn a_running_run_passes_with_the_pods_waiting() {
    let c = run_check(
        once_target(),
        |call| call.json(200, &run_object(json!({"phase": "Running", "attempts": 2}))),
        &["Pending", "Pending", "Pending", "Running"],
    )
    .await
    .unwrap();
    assert_eq!(
        c.line(),
        Line::Pass(format!("the migration of this revision (MigrationRun ns/{FP}) is Running (attempt 2); 3 pods wait for it"))
    );
}
