//! One function per check. Each returns what it found as a typed result; `report` words it.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Map, Value};

use super::target::Target;
use super::CheckError;
use crate::error_chain;
use crate::mutate::annotations::{Key, Layered, MigrationAnnotations};
use crate::mutate::config::defaults;
use crate::mutate::denial::Denial;
use crate::mutate::once::migration_run_resource;
use crate::mutate::plan::Record;
use crate::mutate::workload::{WorkloadKind, WorkloadView};
use crate::mutate::{mutate, InjectorConfig, MutationError};

/// The field manager of the dry-run create, as the API server records it.
const FIELD_MANAGER: &str = "migration-injector-check";

// ---------------------------------------------------------------------------------------------
// 1. The webhook configuration exists and covers the kind.

/// Whether the webhook configuration sends CREATEs of the target's kind to the webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum Coverage {
    /// No MutatingWebhookConfiguration of that name.
    Missing,
    /// It exists, but no webhook of it has a CREATE rule for `plural`.
    NoRule { plural: String },
    /// This webhook of it covers the kind.
    Covered(Box<MutatingWebhook>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookCheck {
    pub config: String,
    pub kind: WorkloadKind,
    pub coverage: Coverage,
}

impl WebhookCheck {
    /// The webhook that covers the kind, if any.
    pub fn webhook(&self) -> Option<&MutatingWebhook> {
        match &self.coverage {
            Coverage::Covered(w) => Some(w),
            _ => None,
        }
    }
}

pub async fn webhook_configuration(
    client: &Client,
    config: &str,
    kind: WorkloadKind,
) -> Result<WebhookCheck, CheckError> {
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let found =
        configs
            .get_opt(config)
            .await
            .map_err(|source| CheckError::ReadWebhookConfiguration {
                name: config.to_owned(),
                source,
            })?;
    let coverage = match found {
        None => Coverage::Missing,
        Some(c) => {
            let webhook = c.webhooks.into_iter().flatten().find(|w| {
                // Either version of a CronJob will do: the API server converts between them.
                kind.api_resources().any(|r| covers(w, &r))
            });
            match webhook {
                Some(w) => Coverage::Covered(Box::new(w)),
                None => Coverage::NoRule {
                    plural: kind.api_resource().plural,
                },
            }
        }
    };
    Ok(WebhookCheck {
        config: config.to_owned(),
        kind,
        coverage,
    })
}

/// Whether one of the webhook's rules matches CREATE of `resource`.
pub fn covers(webhook: &MutatingWebhook, resource: &ApiResource) -> bool {
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

// ---------------------------------------------------------------------------------------------
// 2. The annotations are valid (the webhook's rules, default settings).

#[derive(Debug, Clone, PartialEq)]
pub enum AnnotationsOutcome {
    /// Opted in, and the webhook would accept them.
    Valid,
    /// Acceptable, but without the image annotation nothing is injected.
    NotOptedIn,
    /// The webhook would refuse the object: its message.
    Refused(Denial),
    /// The object is not a valid object of its kind: the decoder's message.
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnnotationsCheck {
    pub kind: WorkloadKind,
    pub name: String,
    /// Whether the image annotation is set, whatever the outcome (the dry-run diagnosis uses it).
    pub opted_in: bool,
    pub outcome: AnnotationsOutcome,
    /// The webhook's warnings (unknown keys, ...), when it would accept the object.
    pub warnings: Vec<String>,
}

/// Runs the webhook's own mutation over the target, with the default settings.
pub fn annotations(target: &Target) -> AnnotationsCheck {
    let opted_in = annotation(target, Key::Image).is_some();
    let (outcome, warnings) = match mutate(
        target.kind,
        &target.object.to_string(),
        &InjectorConfig::default(),
        false,
    ) {
        Ok(m) if opted_in => (AnnotationsOutcome::Valid, m.warnings),
        Ok(m) => (AnnotationsOutcome::NotOptedIn, m.warnings),
        Err(MutationError::Denied(d)) => (AnnotationsOutcome::Refused(d), Vec::new()),
        Err(e) => (AnnotationsOutcome::Unreadable(error_chain(&e)), Vec::new()),
    };
    AnnotationsCheck {
        kind: target.kind,
        name: target.name().to_owned(),
        opted_in,
        outcome,
        warnings,
    }
}

/// The annotations that apply to the target, by the webhook's rule (the workload's own over its
/// pod template's), read with the webhook's decoder. An undecodable object has none.
fn with_annotations<R>(target: &Target, read: impl FnOnce(Layered<'_, '_>) -> R) -> R {
    let json = target.object.to_string();
    let empty = MigrationAnnotations::EMPTY;
    let view = WorkloadView::decode(target.kind, &json).unwrap_or_default();
    let template = view
        .template
        .as_ref()
        .and_then(|t| t.annotations.as_ref())
        .unwrap_or(&empty);
    read(Layered {
        workload: &view.annotations,
        template,
    })
}

fn annotation(target: &Target, key: Key) -> Option<String> {
    with_annotations(target, |a| a.get(key).map(str::to_owned))
}

// ---------------------------------------------------------------------------------------------
// 3. The Secret the injected container reads exists, with the expected key.

/// The Secret the injected container reads, and the key it needs (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub name: String,
    pub key: Option<String>,
}

/// Where the target's migration configuration comes from: the `url-secret` key; else the
/// `secret` (default `atlas-project`) holding the config file, unless `args` replaces it.
pub fn secret_reference(target: &Target) -> SecretRef {
    with_annotations(target, |a| {
        match a.get(Key::UrlSecret).and_then(|v| v.split_once('/')) {
            Some((name, key)) => SecretRef {
                name: name.to_owned(),
                key: Some(key.to_owned()),
            },
            None => SecretRef {
                name: a.get(Key::Secret).unwrap_or(defaults::SECRET).to_owned(),
                key: a.get(Key::Args).is_none().then(|| {
                    a.get(Key::ConfigFile)
                        .unwrap_or(defaults::CONFIG_FILE)
                        .to_owned()
                }),
            },
        }
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOutcome {
    Missing,
    MissingKey(String),
    HoldsKey(String),
    /// It exists and no particular key is needed.
    Exists,
    /// It could not be read (typically RBAC): the API error.
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretCheck {
    pub namespace: String,
    pub name: String,
    pub outcome: SecretOutcome,
}

pub async fn secret(client: &Client, namespace: &str, target: &Target) -> SecretCheck {
    let SecretRef { name, key } = secret_reference(target);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let outcome = match secrets.get_opt(&name).await {
        Ok(None) => SecretOutcome::Missing,
        Ok(Some(secret)) => {
            let has = |k: &str| {
                secret.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || secret
                        .string_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(k))
            };
            match key {
                Some(k) if !has(&k) => SecretOutcome::MissingKey(k),
                Some(k) => SecretOutcome::HoldsKey(k),
                None => SecretOutcome::Exists,
            }
        }
        Err(e) => SecretOutcome::Unreadable(e.to_string()),
    };
    SecretCheck {
        namespace: namespace.to_owned(),
        name,
        outcome,
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A server-side dry-run create comes back injected.

/// Why a dry-run create came back without the injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    NotOptedIn,
    /// The namespace's labels, which the webhook's namespaceSelector does not match.
    NamespaceSelector {
        labels: BTreeMap<String, String>,
    },
    /// The object's labels, which the webhook's objectSelector does not match.
    ObjectSelector {
        labels: BTreeMap<String, String>,
    },
    /// The names of the webhook's matchConditions (one of them left the object out).
    MatchConditions(Vec<String>),
    /// None of the above: the webhook was not called, or left the object unchanged.
    Unknown,
}

/// What the API server's error for the dry-run create points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The webhook's certificate is not trusted: the caBundle.
    Untrusted,
    /// The webhook cannot be reached: its Service or pods.
    Unreachable,
    TimedOut,
    /// The webhook refused the object.
    Denied,
    /// Anything else the API server refused.
    Refused,
}

impl Cause {
    /// Classifies the API server's message.
    pub fn of(message: &str) -> Self {
        let m = message.to_ascii_lowercase();
        if m.contains("x509") || m.contains("certificate") {
            Self::Untrusted
        } else if m.contains("connection refused")
            || m.contains("no endpoints available")
            || m.contains("service \"")
            || m.contains("no such host")
        {
            Self::Unreachable
        } else if m.contains("deadline exceeded")
            || m.contains("timeout")
            || m.contains("timed out")
        {
            Self::TimedOut
        } else if m.contains("denied the request") {
            Self::Denied
        } else {
            Self::Refused
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRunOutcome {
    Injected,
    NotInjected(Exclusion),
    Failed { cause: Cause, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunCheck {
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
    /// The webhook configuration's name, for the fixes that point at it.
    pub config: String,
    pub outcome: DryRunOutcome,
}

/// Dry-run creates the target in `namespace` and reads whether the webhook injected it; if not,
/// works out which of the webhook's filters left it out.
pub async fn dry_run(
    client: &Client,
    namespace: &str,
    config: &str,
    target: &Target,
    webhook: Option<&MutatingWebhook>,
    opted_in: bool,
) -> Result<DryRunCheck, CheckError> {
    let object = dry_run_object(target);
    let dry: DynamicObject = serde_json::from_value(object.clone()).map_err(CheckError::Encode)?;
    let params = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let create = |resource: ApiResource| {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let (params, dry) = (&params, &dry);
        async move { api.create(params, dry).await }
    };
    let mut result = create(target.kind.api_resource()).await;
    if let Some(legacy) = target.kind.legacy_api_resource() {
        // A 404 for the resource itself: an older cluster serves the kind only in its legacy
        // version.
        if matches!(&result, Err(kube::Error::Api(s)) if s.code == 404) {
            result = create(legacy).await;
        }
    }
    let outcome = match result {
        Ok(created) => {
            let created = serde_json::to_value(created).map_err(CheckError::Encode)?;
            if carries_record(target.kind, &created) {
                DryRunOutcome::Injected
            } else {
                let namespaces: Api<Namespace> = Api::all(client.clone());
                // Unreadable (RBAC): diagnose with no labels rather than fail the check.
                let namespace_labels = namespaces
                    .get_opt(namespace)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|n| n.metadata.labels)
                    .unwrap_or_default();
                let object_labels: BTreeMap<String, String> = object
                    .pointer("/metadata/labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                DryRunOutcome::NotInjected(exclusion(
                    webhook,
                    opted_in,
                    &namespace_labels,
                    &object_labels,
                ))
            }
        }
        Err(e) => {
            let message = match &e {
                kube::Error::Api(status) => status.message.clone(),
                other => error_chain(other),
            };
            DryRunOutcome::Failed {
                cause: Cause::of(&message),
                message,
            }
        }
    };
    Ok(DryRunCheck {
        kind: target.kind,
        name: target.name().to_owned(),
        namespace: namespace.to_owned(),
        config: config.to_owned(),
        outcome,
    })
}

/// Which filter of the webhook left an object out, checked in the order the API server applies
/// them (the opt-in first: without it the webhook leaves the object alone anyway).
pub fn exclusion(
    webhook: Option<&MutatingWebhook>,
    opted_in: bool,
    namespace_labels: &BTreeMap<String, String>,
    object_labels: &BTreeMap<String, String>,
) -> Exclusion {
    match webhook {
        _ if !opted_in => Exclusion::NotOptedIn,
        Some(w) if !selects(w.namespace_selector.as_ref(), namespace_labels) => {
            Exclusion::NamespaceSelector {
                labels: namespace_labels.clone(),
            }
        }
        Some(w) if !selects(w.object_selector.as_ref(), object_labels) => {
            Exclusion::ObjectSelector {
                labels: object_labels.clone(),
            }
        }
        Some(w) if w.match_conditions.as_ref().is_some_and(|m| !m.is_empty()) => {
            Exclusion::MatchConditions(
                w.match_conditions
                    .iter()
                    .flatten()
                    .map(|m| m.name.clone())
                    .collect(),
            )
        }
        _ => Exclusion::Unknown,
    }
}

/// Whether `labels` satisfy a Kubernetes label selector (an absent selector matches all).
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
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

/// The target as the dry run creates it: without server-set metadata and status; a live object
/// also under a generated name (its own is taken) and as its author wrote it.
pub fn dry_run_object(target: &Target) -> Value {
    let mut object = target.object.clone();
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
        if target.live {
            metadata.remove("name");
            metadata.insert(
                "generateName".into(),
                format!("{}-check-", target.name()).into(),
            );
        }
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    if target.live {
        strip_injection(target.kind, &mut object);
    }
    object
}

/// A live object as its author wrote it: without what the injector added (so the dry run shows
/// whether the webhook is called now) and without what a Job's controller generated.
pub fn strip_injection(kind: WorkloadKind, object: &mut Value) {
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
    let Some(template) = kind
        .template_tokens()
        .iter()
        .try_fold(object, |v, t| v.get_mut(*t))
    else {
        return;
    };
    let annotations = template
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut);
    // The record says what the injector owns; an unreadable one owns nothing.
    let record: Record = annotations
        .and_then(|a| a.remove(Key::Injected.name()))
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    remove_named(spec, "initContainers", record.init_container.as_deref());
    remove_named(spec, "volumes", record.volume.as_deref());
}

fn remove_named(spec: &mut Map<String, Value>, list: &str, name: Option<&str>) {
    if let (Some(name), Some(items)) = (name, spec.get_mut(list).and_then(Value::as_array_mut)) {
        items.retain(|i| i.get("name").and_then(Value::as_str) != Some(name));
    }
}

/// Whether the object's pod template carries the injector's record.
fn carries_record(kind: WorkloadKind, object: &Value) -> bool {
    let json = object.to_string();
    WorkloadView::decode(kind, &json)
        .ok()
        .and_then(|v| v.template)
        .and_then(|t| t.annotations)
        .is_some_and(|a| a.get(Key::Injected).is_some())
}

// ---------------------------------------------------------------------------------------------
// 5. A live workload carries the injection in its stored pod template.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCheck {
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
    pub injected: bool,
}

/// For a live target only: whether its stored pod template carries the injection.
pub fn live_injection(namespace: &str, target: &Target) -> Option<LiveCheck> {
    target.live.then(|| LiveCheck {
        kind: target.kind,
        name: target.name().to_owned(),
        namespace: namespace.to_owned(),
        injected: carries_record(target.kind, &target.object),
    })
}

// ---------------------------------------------------------------------------------------------
// 6. Run-once mode: the migration run of the live revision, and the pods waiting for it.

/// What the MigrationRun of the live revision says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// No run yet: the controller has not seen a waiting pod, or is not running, or (the API
    /// answers both with a 404) the MigrationRun CRD is not installed.
    Missing,
    Found {
        phase: String,
        attempts: i64,
        message: String,
        finished: Option<String>,
    },
    /// It could not be read (typically RBAC): the API error.
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCheck {
    pub namespace: String,
    pub fingerprint: String,
    pub outcome: RunOutcome,
    /// Pods of the revision still in Pending (waiting in Init, or not scheduled yet).
    pub waiting: usize,
}

/// The fingerprint label of a live workload's pod template: run-once mode.
pub fn live_fingerprint(target: &Target) -> Option<String> {
    if !target.live {
        return None;
    }
    let json = target.object.to_string();
    let view = WorkloadView::decode(target.kind, &json).ok()?;
    let labels = view.template?.labels?;
    labels.fingerprint.map(std::borrow::Cow::into_owned)
}

/// For a live workload in run-once mode: its run's status and how many pods wait for it.
pub async fn migration_run(client: &Client, namespace: &str, target: &Target) -> Option<RunCheck> {
    let fingerprint = live_fingerprint(target)?;
    let runs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &migration_run_resource());
    let outcome = match runs.get_opt(&fingerprint).await {
        Ok(None) => RunOutcome::Missing,
        Ok(Some(run)) => {
            let status = |field: &str| run.data.pointer(&format!("/status/{field}")).cloned();
            let text = |field: &str| {
                status(field)
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            RunOutcome::Found {
                phase: Some(text("phase"))
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "Pending".into()),
                attempts: status("attempts").and_then(|v| v.as_i64()).unwrap_or(0),
                message: text("message"),
                finished: Some(text("finishedAt")).filter(|f| !f.is_empty()),
            }
        }
        Err(e) => RunOutcome::Unreadable(e.to_string()),
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={fingerprint}", Key::Fingerprint);
    let waiting = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_none_or(|phase| phase == "Pending")
            })
            .count(),
        Err(_) => 0,
    };
    Some(RunCheck {
        namespace: namespace.to_owned(),
        fingerprint,
        outcome,
        waiting,
    })
}
