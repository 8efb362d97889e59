//! `migration-injector check`: "why was my workload not injected?", answered against the live
//! cluster with the user's kubeconfig, one line per check, each failure with its fix.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use migration_injector::mutate::annotations::Key;
use migration_injector::mutate::config::defaults;
use migration_injector::mutate::workload::WorkloadKind;
use migration_injector::mutate::{error_chain, mutate, InjectorConfig, MutationError};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Namespace the workload lives (or would live) in.
    #[arg(
        short = 'n',
        long,
        env = "MIGRATION_INJECTOR_CHECK_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// The MutatingWebhookConfiguration installed by the chart.
    #[arg(
        long,
        env = "MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME",
        default_value = "migration-injector"
    )]
    pub webhook_config_name: String,
    /// A manifest of the workload to check (its first supported object), dry-run created.
    #[arg(short = 'f', long = "filename", conflicts_with = "workload")]
    pub file: Option<PathBuf>,
    /// The image of the probe Deployment used when neither -f nor KIND/NAME is given.
    #[arg(long, default_value = "ghcr.io/migration-injector/check-probe:v0")]
    pub probe_image: String,
    /// A live workload, such as deployment/api.
    #[arg(value_name = "KIND/NAME")]
    pub workload: Option<String>,
}

/// The printed outcome of the checks.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn pass(&mut self, what: impl AsRef<str>) {
        println!("[ok]   {}", what.as_ref());
    }

    fn fail(&mut self, what: impl AsRef<str>, fix: impl AsRef<str>) {
        self.failed += 1;
        println!("[FAIL] {}", what.as_ref());
        println!("       fix: {}", fix.as_ref());
    }
}

/// The API coordinates of a handled kind.
fn api_resource(kind: WorkloadKind, batch_v1beta1: bool) -> ApiResource {
    let (group, version, plural) = match kind {
        WorkloadKind::Deployment => ("apps", "v1", "deployments"),
        WorkloadKind::StatefulSet => ("apps", "v1", "statefulsets"),
        WorkloadKind::DaemonSet => ("apps", "v1", "daemonsets"),
        WorkloadKind::ReplicaSet => ("apps", "v1", "replicasets"),
        WorkloadKind::Job => ("batch", "v1", "jobs"),
        WorkloadKind::CronJob if batch_v1beta1 => ("batch", "v1beta1", "cronjobs"),
        WorkloadKind::CronJob => ("batch", "v1", "cronjobs"),
        WorkloadKind::Pod => ("", "v1", "pods"),
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind.as_str()),
        plural,
    )
}

fn kind_from_cli(name: &str) -> Option<WorkloadKind> {
    Some(match name.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" => WorkloadKind::Deployment,
        "statefulset" | "statefulsets" | "sts" => WorkloadKind::StatefulSet,
        "daemonset" | "daemonsets" | "ds" => WorkloadKind::DaemonSet,
        "replicaset" | "replicasets" | "rs" => WorkloadKind::ReplicaSet,
        "job" | "jobs" => WorkloadKind::Job,
        "cronjob" | "cronjobs" | "cj" => WorkloadKind::CronJob,
        "pod" | "pods" | "po" => WorkloadKind::Pod,
        _ => return None,
    })
}

fn probe(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "migration-injector-check-probe", "labels": {"app": "migration-injector-check-probe"},
                     "annotations": {Key::Image.name(): image}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "migration-injector-check-probe"}},
            "template": {"metadata": {"labels": {"app": "migration-injector-check-probe"}},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]}}}
    })
}

/// The first object of a supported kind in a manifest file.
fn from_file(path: &PathBuf) -> Result<(WorkloadKind, Value)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value =
            Value::deserialize(document).with_context(|| format!("parsing {}", path.display()))?;
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(k) = WorkloadKind::from_api_version(api_version, kind) {
            return Ok((k, value));
        }
    }
    bail!(
        "{} holds no Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob or Pod",
        path.display()
    )
}

/// The annotations that apply: the workload's own over its pod template's.
fn annotation(kind: WorkloadKind, object: &Value, key: Key) -> Option<&str> {
    let template = kind
        .template_tokens()
        .iter()
        .try_fold(object, |v, t| v.get(*t));
    [Some(object), template]
        .into_iter()
        .flatten()
        .find_map(|v| {
            v.pointer(&format!(
                "/metadata/annotations/{}",
                key.name().replace('/', "~1")
            ))
        })
        .and_then(Value::as_str)
}

fn template_record(kind: WorkloadKind, object: &Value) -> bool {
    let template = kind
        .template_tokens()
        .iter()
        .try_fold(object, |v, t| v.get(*t));
    template
        .and_then(|t| {
            t.pointer(&format!(
                "/metadata/annotations/{}",
                Key::Injected.name().replace('/', "~1")
            ))
        })
        .is_some()
}

/// A live object as its author wrote it: without what the injector added (so the dry run shows
/// whether the webhook is called now) and without what a Job's controller generated.
fn strip_injection(kind: WorkloadKind, object: &mut Value) {
    #[derive(Deserialize, Default)]
    struct Record {
        #[serde(rename = "initContainer")]
        init_container: Option<String>,
        volume: Option<String>,
    }
    if kind == WorkloadKind::Job {
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("selector");
            spec.remove("manualSelector");
        }
        if let Some(labels) = object
            .pointer_mut("/spec/template/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            for generated in [
                "controller-uid",
                "job-name",
                "batch.kubernetes.io/controller-uid",
                "batch.kubernetes.io/job-name",
            ] {
                labels.remove(generated);
            }
        }
    }
    let mut pointer = String::new();
    for token in kind.template_tokens() {
        pointer.push('/');
        pointer.push_str(token);
    }
    let Some(template) = object.pointer_mut(&pointer) else {
        return;
    };
    let record: Record = template
        .pointer(&format!(
            "/metadata/annotations/{}",
            Key::Injected.name().replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    if let Some(annotations) = template
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(Key::Injected.name());
    }
    for (list, name) in [
        ("initContainers", record.init_container),
        ("volumes", record.volume),
    ] {
        let (Some(name), Some(items)) = (
            name,
            template
                .pointer_mut(&format!("/spec/{list}"))
                .and_then(Value::as_array_mut),
        ) else {
            continue;
        };
        items.retain(|i| i.get("name").and_then(Value::as_str) != Some(name.as_str()));
    }
}

/// Whether `labels` satisfy a Kubernetes label selector (an absent selector matches all).
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

fn covers(webhook: &MutatingWebhook, resource: &ApiResource) -> bool {
    let any = |list: &Option<Vec<String>>, want: &str| {
        list.iter().flatten().any(|v| v == "*" || v == want)
    };
    webhook.rules.iter().flatten().any(|r| {
        any(&r.api_groups, &resource.group)
            && any(&r.api_versions, &resource.version)
            && any(&r.resources, &resource.plural)
            && any(&r.operations, "CREATE")
    })
}

/// What an API server error for the webhook call means, and its fix.
fn explain(message: &str, config_name: &str) -> (String, String) {
    let m = message.to_ascii_lowercase();
    if m.contains("x509") || m.contains("certificate") {
        (
            format!("the API server does not trust the webhook's certificate: {message}"),
            format!("the caBundle of MutatingWebhookConfiguration {config_name} does not match the CA of the serving certificate: re-run `helm upgrade` (tls.mode helm), check cert-manager's CA injector, or restart the webhook pods (selfManaged)"),
        )
    } else if m.contains("connection refused")
        || m.contains("no endpoints available")
        || m.contains("service \"")
        || m.contains("no such host")
    {
        (
            format!("the API server cannot reach the webhook: {message}"),
            "check the webhook's Service and that its pods are Ready: kubectl -n <webhook namespace> get pods,endpoints".to_owned(),
        )
    } else if m.contains("deadline exceeded") || m.contains("timeout") || m.contains("timed out") {
        (
            format!("the webhook call timed out: {message}"),
            "check the webhook pods' logs and the network path from the API server to them (NetworkPolicy, firewall)".to_owned(),
        )
    } else if m.contains("denied the request") {
        (
            format!("the webhook refused the object: {message}"),
            "correct the annotation the message names".to_owned(),
        )
    } else {
        (
            format!("the API server refused the dry-run create: {message}"),
            "read the message above".to_owned(),
        )
    }
}

pub fn check(args: CheckArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failed = runtime.block_on(run(args))?;
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

async fn run(args: CheckArgs) -> Result<usize> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG)")?;
    let ns = args.namespace.as_str();
    let mut report = Report::default();

    // The object to check: a file, a live workload, or a probe.
    let (kind, mut object, live) = match (&args.file, &args.workload) {
        (Some(path), _) => {
            let (kind, object) = from_file(path)?;
            (kind, object, false)
        }
        (None, Some(target)) => {
            let (kind_name, name) = target
                .split_once('/')
                .context("give the workload as KIND/NAME, e.g. deployment/api")?;
            let kind = kind_from_cli(kind_name).with_context(|| {
                format!("{kind_name:?} is not a kind migration-injector handles")
            })?;
            let mut found = None;
            for v1beta1 in [false, true] {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), ns, &api_resource(kind, v1beta1));
                match api.get_opt(name).await {
                    Ok(Some(o)) => {
                        found = Some(serde_json::to_value(o)?);
                        break;
                    }
                    Ok(None) => break,
                    Err(_) if kind == WorkloadKind::CronJob && !v1beta1 => continue,
                    Err(e) => return Err(e).context(format!("reading {kind} {ns}/{name}")),
                }
            }
            let object = found.with_context(|| format!("{kind} {ns}/{name} does not exist"))?;
            (kind, object, true)
        }
        (None, None) => (WorkloadKind::Deployment, probe(&args.probe_image), false),
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_owned();

    // 1. The webhook configuration exists and covers the kind.
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = configs.get_opt(&args.webhook_config_name).await?;
    let resource = api_resource(kind, false);
    let webhook = match &config {
        None => {
            report.fail(
                format!("MutatingWebhookConfiguration {} does not exist", args.webhook_config_name),
                "install the chart (helm install migration-injector charts/migration-injector), or pass --webhook-config-name",
            );
            None
        }
        Some(c) => {
            let webhook = c.webhooks.iter().flatten().find(|w| {
                covers(w, &resource)
                    || (kind == WorkloadKind::CronJob && covers(w, &api_resource(kind, true)))
            });
            match webhook {
                Some(w) => report.pass(format!(
                    "MutatingWebhookConfiguration {} covers {}s (webhook {})",
                    args.webhook_config_name, kind, w.name
                )),
                None => report.fail(
                    format!(
                        "MutatingWebhookConfiguration {} has no rule for CREATE of {}",
                        args.webhook_config_name, resource.plural
                    ),
                    format!(
                        "enable {} in the chart's webhook.kinds values",
                        resource.plural
                    ),
                ),
            }
            webhook
        }
    };

    // 2. The annotations are valid (the same rules the webhook applies, default settings).
    let opted_in = annotation(kind, &object, Key::Image).is_some();
    match mutate(kind, &object.to_string(), &InjectorConfig::default(), false) {
        Ok(m) => {
            if opted_in {
                report.pass(format!("the annotations of {kind} {name} are valid"));
            } else {
                report.fail(
                    format!(
                        "{kind} {name} has no {} annotation: it does not opt in",
                        Key::Image
                    ),
                    format!(
                        "add {}: <your migrations image> to its metadata.annotations",
                        Key::Image
                    ),
                );
            }
            for w in m.warnings {
                println!("       warning: {w}");
            }
        }
        Err(MutationError::Denied(d)) => report.fail(
            format!("the annotations of {kind} {name} are refused: {d}"),
            "correct the annotation the message names",
        ),
        Err(e) => report.fail(
            format!("{kind} {name} cannot be read: {}", error_chain(&e)),
            "correct the manifest",
        ),
    }

    // 3. The Secret the injection reads exists in the namespace, with the expected key.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let (secret_name, secret_key) =
        match annotation(kind, &object, Key::UrlSecret).and_then(|v| v.split_once('/')) {
            Some((s, k)) => (s.to_owned(), Some(k.to_owned())),
            None => (
                annotation(kind, &object, Key::Secret)
                    .unwrap_or(defaults::SECRET)
                    .to_owned(),
                annotation(kind, &object, Key::Args).is_none().then(|| {
                    annotation(kind, &object, Key::ConfigFile)
                        .unwrap_or(defaults::CONFIG_FILE)
                        .to_owned()
                }),
            ),
        };
    match secrets.get_opt(&secret_name).await {
        Ok(None) => report.fail(
            format!("Secret {ns}/{secret_name} does not exist: the migrate container cannot start"),
            format!(
                "create it (kubectl -n {ns} create secret generic {secret_name} --from-file=...)"
            ),
        ),
        Ok(Some(secret)) => {
            let has = |k: &str| {
                secret.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || secret
                        .string_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(k))
            };
            match secret_key {
                Some(k) if !has(&k) => report.fail(
                    format!("Secret {ns}/{secret_name} has no key {k:?}"),
                    format!("add the key {k:?} to the Secret (the migration tool reads it)"),
                ),
                Some(k) => report.pass(format!("Secret {ns}/{secret_name} holds {k:?}")),
                None => report.pass(format!("Secret {ns}/{secret_name} exists")),
            }
        }
        Err(e) => report.fail(
            format!("Secret {ns}/{secret_name} cannot be read: {e}"),
            "run check with credentials that may get Secrets in the namespace",
        ),
    }

    // 4. A server-side dry-run create comes back injected.
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
            "ownerReferences",
        ] {
            metadata.remove(field);
        }
        if live {
            // The live name is taken: let the API server generate one for the dry run.
            metadata.remove("name");
            metadata.insert("generateName".into(), format!("{name}-check-").into());
        }
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    // Read before the injection is stripped for the dry run.
    let live_injected = live && template_record(kind, &object);
    if live {
        strip_injection(kind, &mut object);
    }
    let dry: DynamicObject = serde_json::from_value(object.clone())?;
    let mut result = Err(anyhow::anyhow!("not tried"));
    for v1beta1 in [false, true] {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &api_resource(kind, v1beta1));
        let params = PostParams {
            dry_run: true,
            field_manager: Some("migration-injector-check".into()),
        };
        result = api.create(&params, &dry).await.map_err(anyhow::Error::from);
        let not_served = matches!(&result, Err(e) if e.downcast_ref::<kube::Error>().is_some_and(|k| matches!(k, kube::Error::Api(s) if s.code == 404)));
        if !(kind == WorkloadKind::CronJob && !v1beta1 && not_served) {
            break;
        }
    }
    match result {
        Ok(created) => {
            let created = serde_json::to_value(created)?;
            if template_record(kind, &created) {
                report.pass(format!("a server-side dry-run create of {kind} {name} in {ns} comes back with the migration init container"));
            } else {
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let ns_labels = namespaces
                    .get_opt(ns)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|n| n.metadata.labels)
                    .unwrap_or_default();
                let object_labels: BTreeMap<String, String> = object
                    .pointer("/metadata/labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                let (what, fix) = match webhook {
                    _ if !opted_in => (
                        "it is not opted in".to_owned(),
                        format!("add the {} annotation", Key::Image),
                    ),
                    Some(w) if !selects(w.namespace_selector.as_ref(), &ns_labels) => (
                        format!("the webhook's namespaceSelector excludes namespace {ns} (labels {ns_labels:?})"),
                        format!("use a namespace the webhook covers, or change the label of {ns} / the chart's webhook.namespaceSelector and webhook.excludeNamespaces"),
                    ),
                    Some(w) if !selects(w.object_selector.as_ref(), &object_labels) => (
                        format!("the webhook's objectSelector excludes the object (labels {object_labels:?})"),
                        "change the object's labels (migrations.io/injection: disabled opts out) or the chart's webhook.objectSelector".to_owned(),
                    ),
                    Some(w) if w.match_conditions.as_ref().is_some_and(|m| !m.is_empty()) => (
                        format!(
                            "a matchCondition left it out ({})",
                            w.match_conditions.iter().flatten().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        format!("put {} on the workload's or its pod template's metadata.annotations", Key::Image),
                    ),
                    _ => (
                        "the webhook was not called, or left it unchanged".to_owned(),
                        "check the webhook's logs at debug level (--log-level migration_injector=debug)".to_owned(),
                    ),
                };
                report.fail(format!("a server-side dry-run create of {kind} {name} in {ns} comes back without the init container: {what}"), fix);
            }
        }
        Err(e) => {
            let message = match e.downcast_ref::<kube::Error>() {
                Some(kube::Error::Api(status)) => status.message.clone(),
                _ => format!("{e:#}"),
            };
            let (what, fix) = explain(&message, &args.webhook_config_name);
            report.fail(
                format!("a server-side dry-run create of {kind} {name} in {ns} failed: {what}"),
                fix,
            );
        }
    }

    // 5. A live workload carries the injection in its stored pod template.
    if live {
        if live_injected {
            report.pass(format!("the live {kind} {name} carries the injection"));
        } else {
            report.fail(
                format!("the live {kind} {name} does not carry the injection: it was created before the webhook was in place, or was skipped"),
                format!("kubectl -n {ns} rollout restart {}/{name} (or re-apply it) once the checks above pass", kind.as_str().to_ascii_lowercase()),
            );
        }
    }
    Ok(report.failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn label_selectors() {
        let labels = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
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
        assert!(!selects(Some(&req("NotIn", &["a"])), &labels));
        assert!(selects(Some(&req("NotIn", &["a"])), &BTreeMap::new()));
        assert!(selects(Some(&req("Exists", &[])), &labels));
        assert!(!selects(Some(&req("DoesNotExist", &[])), &labels));
    }

    #[test]
    fn live_objects_are_checked_as_written() {
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j", "annotations": {"migrations.io/image": "a:1"}},
            "spec": {"selector": {"matchLabels": {"controller-uid": "x"}},
                "template": {"metadata": {"labels": {"controller-uid": "x", "job-name": "j", "app": "j"},
                    "annotations": {"migrations.io/injected": r#"{"initContainer":"migrate","volume":"atlas-project"}"#}},
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

    #[test]
    fn api_errors_are_explained() {
        let (what, fix) = explain("Internal error occurred: failed calling webhook \"x\": Post \"https://s/mutate\": x509: certificate signed by unknown authority", "mi");
        assert!(
            what.contains("does not trust") && fix.contains("caBundle"),
            "{what} / {fix}"
        );
        let (what, _) = explain(
            "failed calling webhook: dial tcp 10.0.0.1:443: connect: connection refused",
            "mi",
        );
        assert!(what.contains("cannot reach"), "{what}");
        let (what, _) = explain("context deadline exceeded", "mi");
        assert!(what.contains("timed out"), "{what}");
    }
}
