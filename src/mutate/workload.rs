//! Workload kinds the injector handles, where each keeps its pod template, and a decoder that
//! reads only the parts of an object the mutation needs.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::core::{ApiResource, GroupVersionKind};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::annotations::{MigrationAnnotations, MigrationLabels};

/// A kind whose pod template the injector mutates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
    Pod,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 7] = [
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::ReplicaSet,
        Self::Job,
        Self::CronJob,
        Self::Pod,
    ];

    /// Maps an API group, version and kind to a handled kind; `None` for everything else.
    pub fn from_gvk(group: &str, version: &str, kind: &str) -> Option<Self> {
        match (group, version, kind) {
            ("apps", "v1", "Deployment") => Some(Self::Deployment),
            ("apps", "v1", "StatefulSet") => Some(Self::StatefulSet),
            ("apps", "v1", "DaemonSet") => Some(Self::DaemonSet),
            ("apps", "v1", "ReplicaSet") => Some(Self::ReplicaSet),
            ("batch", "v1", "Job") => Some(Self::Job),
            // batch/v1beta1 is what Kubernetes < 1.21 serves; the layout is the same.
            ("batch", "v1" | "v1beta1", "CronJob") => Some(Self::CronJob),
            ("", "v1", "Pod") => Some(Self::Pod),
            _ => None,
        }
    }

    /// Same as [`from_gvk`](Self::from_gvk), from a manifest's `apiVersion` and `kind`.
    pub fn from_api_version(api_version: &str, kind: &str) -> Option<Self> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Self::from_gvk(group, version, kind)
    }

    /// JSON pointer tokens from the object root to the pod template (empty for a Pod, whose
    /// metadata and spec are the template's).
    pub fn template_tokens(self) -> &'static [&'static str] {
        match self {
            Self::Pod => &[],
            Self::CronJob => &["spec", "jobTemplate", "spec", "template"],
            _ => &["spec", "template"],
        }
    }

    /// The template's path in the dotted form kubectl users know, for messages.
    pub fn template_field(self) -> &'static str {
        match self {
            Self::Pod => "",
            Self::CronJob => "spec.jobTemplate.spec.template.",
            _ => "spec.template.",
        }
    }

    /// Kinds whose pod template the API server refuses to change after creation.
    pub fn template_immutable(self) -> bool {
        matches!(self, Self::Pod | Self::Job)
    }

    /// The kind as an API resource (group, version, plural), from k8s-openapi's own metadata so
    /// it cannot drift from the API it names.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Self::Deployment => ApiResource::erase::<Deployment>(&()),
            Self::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            Self::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            Self::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
            Self::Job => ApiResource::erase::<Job>(&()),
            Self::CronJob => ApiResource::erase::<CronJob>(&()),
            Self::Pod => ApiResource::erase::<Pod>(&()),
        }
    }

    /// The older API version that also serves the kind, if any: CronJob is batch/v1beta1 before
    /// Kubernetes 1.21 (k8s-openapi has no type for it, hence the literal).
    pub fn legacy_api_resource(self) -> Option<ApiResource> {
        (self == Self::CronJob).then(|| {
            ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("batch", "v1beta1", self.as_str()),
                "cronjobs",
            )
        })
    }

    /// Every API resource serving the kind, preferred first.
    pub fn api_resources(self) -> impl Iterator<Item = ApiResource> {
        std::iter::once(self.api_resource()).chain(self.legacy_api_resource())
    }

    /// A kind as users name it on a command line, as kubectl does: the kind, its plural or its
    /// short name, in any case (`deployment`, `Deployments`, `deploy`).
    pub fn from_cli_name(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        Self::ALL.into_iter().find(|k| {
            name == k.as_str().to_ascii_lowercase()
                || name == k.api_resource().plural
                || Some(name.as_str()) == k.short_name()
        })
    }

    /// kubectl's short name for the kind (`kubectl api-resources`).
    fn short_name(self) -> Option<&'static str> {
        match self {
            Self::Deployment => Some("deploy"),
            Self::StatefulSet => Some("sts"),
            Self::DaemonSet => Some("ds"),
            Self::ReplicaSet => Some("rs"),
            Self::Job => None,
            Self::CronJob => Some("cj"),
            Self::Pod => Some("po"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::ReplicaSet => "ReplicaSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
            Self::Pod => "Pod",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One element of `initContainers`, `containers` or `volumes`: its name, and its JSON left
/// undecoded until the plan needs to compare or inspect it.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub name: Cow<'a, str>,
    pub raw: &'a RawValue,
}

impl<'de: 'a, 'a> Deserialize<'de> for Item<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct NameOnly<'a> {
            #[serde(borrow, default)]
            name: Option<Cow<'a, str>>,
        }
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        let named: NameOnly<'de> = serde_json::from_str(raw.get()).map_err(de::Error::custom)?;
        Ok(Item {
            name: named.name.unwrap_or_default(),
            raw,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct MetaView<'a> {
    #[serde(borrow, default)]
    annotations: Option<MigrationAnnotations<'a>>,
    /// Only the run-once fingerprint label is kept.
    #[serde(borrow, default)]
    labels: Option<MigrationLabels<'a>>,
    #[serde(borrow, default, rename = "ownerReferences")]
    owner_references: Option<Vec<OwnerReference<'a>>>,
}

#[derive(Debug, Deserialize)]
struct OwnerReference<'a> {
    #[serde(borrow, default, rename = "apiVersion")]
    api_version: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
    #[serde(default)]
    controller: Option<bool>,
}

impl MetaView<'_> {
    /// Whether a workload controller of a handled kind created this object from its own pod
    /// template (a Deployment's ReplicaSet, a ReplicaSet's Pod, a CronJob's Job...). That
    /// template was mutated already; mutating the copy again would make it differ from its
    /// parent's (a Deployment would then keep creating new ReplicaSets).
    fn controlled_by_workload(&self) -> bool {
        self.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true)
                && WorkloadKind::from_api_version(&o.api_version, &o.kind)
                    .is_some_and(|k| k != WorkloadKind::Pod)
        })
    }
}

/// The lists of a PodSpec the mutation reads, kept raw: most objects never opt in, and for them
/// the lists are skipped without being split into items.
#[derive(Debug, Default, Deserialize)]
pub struct PodSpecView<'a> {
    #[serde(borrow, default, rename = "initContainers")]
    pub init_containers: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub volumes: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub containers: Option<&'a RawValue>,
}

/// The same lists, split into named items (`containers` only on demand: it is read only when
/// an injected volume might still be in use).
#[derive(Debug, Default)]
pub struct PodSpecLists<'a> {
    pub init_containers: Option<Vec<Item<'a>>>,
    pub volumes: Option<Vec<Item<'a>>>,
    pub containers: Option<&'a RawValue>,
}

impl<'a> PodSpecView<'a> {
    /// Splits the lists into items; on error, names the list that is not a list of objects.
    pub fn lists(&self) -> Result<PodSpecLists<'a>, &'static str> {
        fn split<'a>(
            raw: Option<&'a RawValue>,
            field: &'static str,
        ) -> Result<Option<Vec<Item<'a>>>, &'static str> {
            raw.map(|r| serde_json::from_str::<Vec<Item<'a>>>(r.get()).map_err(|_| field))
                .transpose()
        }
        Ok(PodSpecLists {
            init_containers: split(self.init_containers, "initContainers")?,
            volumes: split(self.volumes, "volumes")?,
            containers: self.containers,
        })
    }
}

/// The parts of a pod template the mutation reads.
#[derive(Debug, Default)]
pub struct TemplateView<'a> {
    /// Whether `metadata` exists at all (a CronJob's job template may omit it).
    pub has_metadata: bool,
    /// `None` when `metadata.annotations` is absent or null.
    pub annotations: Option<MigrationAnnotations<'a>>,
    /// The fingerprint label and the label count; `None` when `metadata.labels` is absent or null.
    pub labels: Option<MigrationLabels<'a>>,
    /// `None` when the template has no `spec`.
    pub spec: Option<PodSpecView<'a>>,
}

/// What the mutation needs from a workload.
#[derive(Debug, Default)]
pub struct WorkloadView<'a> {
    pub annotations: MigrationAnnotations<'a>,
    /// `None` when the object has no pod template at all.
    pub template: Option<TemplateView<'a>>,
    /// Created by a handled workload's controller from its (already mutated) pod template.
    pub controlled: bool,
}

#[derive(Deserialize)]
struct PodTemplateShape<'a> {
    #[serde(borrow, default)]
    metadata: Option<MetaView<'a>>,
    #[serde(borrow, default)]
    spec: Option<PodSpecView<'a>>,
}

impl<'a> From<PodTemplateShape<'a>> for TemplateView<'a> {
    fn from(t: PodTemplateShape<'a>) -> Self {
        let (has_metadata, annotations, labels) = match t.metadata {
            Some(m) => (true, m.annotations, m.labels),
            None => (false, None, None),
        };
        TemplateView {
            has_metadata,
            annotations,
            labels,
            spec: t.spec,
        }
    }
}

#[derive(Deserialize)]
struct TemplateHolder<'a> {
    #[serde(borrow, default)]
    template: Option<PodTemplateShape<'a>>,
}

#[derive(Deserialize)]
struct JobTemplateShape<'a> {
    #[serde(borrow, default)]
    spec: Option<TemplateHolder<'a>>,
}

/// The union of the spec shapes of every handled kind: a Deployment's `template`, a CronJob's
/// `jobTemplate`, a Pod's own lists. Decoding all at once lets the object be read in the same
/// pass as the AdmissionReview around it, before its kind is known.
#[derive(Deserialize)]
struct AnySpec<'a> {
    #[serde(borrow, default)]
    template: Option<PodTemplateShape<'a>>,
    #[serde(borrow, default, rename = "jobTemplate")]
    job_template: Option<JobTemplateShape<'a>>,
    #[serde(borrow, default, rename = "initContainers")]
    init_containers: Option<&'a RawValue>,
    #[serde(borrow, default)]
    volumes: Option<&'a RawValue>,
    #[serde(borrow, default)]
    containers: Option<&'a RawValue>,
}

/// The parts of any handled object the mutation reads, before its kind is applied.
#[derive(Deserialize)]
pub struct ObjectView<'a> {
    #[serde(borrow, default)]
    metadata: Option<MetaView<'a>>,
    #[serde(borrow, default)]
    spec: Option<AnySpec<'a>>,
}

impl<'a> ObjectView<'a> {
    /// Picks the pod template where `kind` keeps it.
    pub fn into_workload(self, kind: WorkloadKind) -> WorkloadView<'a> {
        let controlled = self
            .metadata
            .as_ref()
            .is_some_and(MetaView::controlled_by_workload);
        let annotations = self.metadata.as_ref().and_then(|m| m.annotations.clone());
        let template = match kind {
            WorkloadKind::Pod => Some(TemplateView {
                has_metadata: self.metadata.is_some(),
                annotations: annotations.clone(),
                labels: self.metadata.as_ref().and_then(|m| m.labels.clone()),
                spec: self.spec.map(|s| PodSpecView {
                    init_containers: s.init_containers,
                    volumes: s.volumes,
                    containers: s.containers,
                }),
            }),
            WorkloadKind::CronJob => self
                .spec
                .and_then(|s| s.job_template)
                .and_then(|j| j.spec)
                .and_then(|s| s.template)
                .map(TemplateView::from),
            _ => self.spec.and_then(|s| s.template).map(TemplateView::from),
        };
        WorkloadView {
            annotations: annotations.unwrap_or_default(),
            template,
            controlled,
        }
    }
}

impl<'a> WorkloadView<'a> {
    /// Decodes the parts of `json` (an object of `kind`) that the mutation needs, skipping the
    /// rest of the object without allocating it.
    pub fn decode(kind: WorkloadKind, json: &'a str) -> Result<Self, serde_json::Error> {
        Ok(serde_json::from_str::<ObjectView<'a>>(json)?.into_workload(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::annotations::Key;

    #[test]
    fn kinds_from_gvk() {
        assert_eq!(
            WorkloadKind::from_api_version("apps/v1", "Deployment"),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(
            WorkloadKind::from_api_version("batch/v1beta1", "CronJob"),
            Some(WorkloadKind::CronJob)
        );
        assert_eq!(
            WorkloadKind::from_api_version("v1", "Pod"),
            Some(WorkloadKind::Pod)
        );
        assert_eq!(WorkloadKind::from_api_version("v1", "Service"), None);
        assert_eq!(
            WorkloadKind::from_api_version("apps/v1beta1", "Deployment"),
            None
        );
    }

    #[test]
    fn api_resources_of_every_kind() {
        let want = |kind, group, version, plural| (kind, group, version, plural);
        let expected = [
            want(WorkloadKind::Deployment, "apps", "v1", "deployments"),
            want(WorkloadKind::StatefulSet, "apps", "v1", "statefulsets"),
            want(WorkloadKind::DaemonSet, "apps", "v1", "daemonsets"),
            want(WorkloadKind::ReplicaSet, "apps", "v1", "replicasets"),
            want(WorkloadKind::Job, "batch", "v1", "jobs"),
            want(WorkloadKind::CronJob, "batch", "v1", "cronjobs"),
            want(WorkloadKind::Pod, "", "v1", "pods"),
        ];
        assert_eq!(expected.map(|e| e.0), WorkloadKind::ALL, "one row per kind");
        for (kind, group, version, plural) in expected {
            let r = kind.api_resource();
            assert_eq!(
                (r.group.as_str(), r.version.as_str(), r.plural.as_str()),
                (group, version, plural),
                "{kind}"
            );
            assert_eq!(r.kind, kind.as_str());
            // The mapping and its inverse agree.
            assert_eq!(
                WorkloadKind::from_api_version(&r.api_version, &r.kind),
                Some(kind)
            );
        }
    }

    #[test]
    fn cronjob_is_also_served_by_batch_v1beta1() {
        let all: Vec<_> = WorkloadKind::CronJob.api_resources().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].api_version, "batch/v1", "batch/v1 is preferred");
        let legacy = &all[1];
        assert_eq!(
            (
                legacy.group.as_str(),
                legacy.version.as_str(),
                legacy.api_version.as_str(),
                legacy.kind.as_str(),
                legacy.plural.as_str()
            ),
            ("batch", "v1beta1", "batch/v1beta1", "CronJob", "cronjobs")
        );
        assert_eq!(
            WorkloadKind::from_api_version(&legacy.api_version, &legacy.kind),
            Some(WorkloadKind::CronJob)
        );
        for kind in WorkloadKind::ALL {
            if kind != WorkloadKind::CronJob {
                assert_eq!(kind.legacy_api_resource(), None, "{kind}");
                assert_eq!(kind.api_resources().count(), 1, "{kind}");
            }
        }
    }

    #[test]
    fn kinds_from_cli_names() {
        for (names, kind) in [
            (
                &["deployment", "Deployments", "deploy"][..],
                WorkloadKind::Deployment,
            ),
            (
                &["statefulset", "statefulsets", "sts"],
                WorkloadKind::StatefulSet,
            ),
            (&["daemonset", "daemonsets", "ds"], WorkloadKind::DaemonSet),
            (
                &["replicaset", "replicasets", "rs"],
                WorkloadKind::ReplicaSet,
            ),
            (&["job", "JOBS"], WorkloadKind::Job),
            (&["cronjob", "cronjobs", "cj"], WorkloadKind::CronJob),
            (&["pod", "pods", "po"], WorkloadKind::Pod),
        ] {
            for name in names {
                assert_eq!(WorkloadKind::from_cli_name(name), Some(kind), "{name}");
            }
        }
        for name in ["service", "svc", "", "deployment/api", "jo"] {
            assert_eq!(WorkloadKind::from_cli_name(name), None, "{name}");
        }
    }

    #[test]
    fn decodes_cronjob_template() {
        let json = r#"{"metadata":{"annotations":{"migrations.io/image":"a:1"}},
            "spec":{"schedule":"* * * * *","jobTemplate":{"spec":{"template":{"spec":{
            "containers":[{"name":"c","image":"x"}],"volumes":[{"name":"v","emptyDir":{}}]}}}}}}"#;
        let v = WorkloadView::decode(WorkloadKind::CronJob, json).unwrap();
        assert_eq!(v.annotations.get(Key::Image), Some("a:1"));
        let t = v.template.unwrap();
        assert!(!t.has_metadata);
        let spec = t.spec.unwrap().lists().unwrap();
        assert_eq!(spec.volumes.unwrap()[0].name, "v");
        assert!(spec.init_containers.is_none());
    }

    #[test]
    fn pod_metadata_is_both_levels() {
        let json = r#"{"metadata":{"annotations":{"migrations.io/image":"a:1"}},"spec":{"containers":[]}}"#;
        let v = WorkloadView::decode(WorkloadKind::Pod, json).unwrap();
        assert_eq!(v.annotations.get(Key::Image), Some("a:1"));
        let t = v.template.unwrap();
        assert_eq!(t.annotations.unwrap().get(Key::Image), Some("a:1"));
    }

    #[test]
    fn nulls_are_absent() {
        let json = r#"{"metadata":{"annotations":null},"spec":{"template":{"metadata":null,"spec":{"initContainers":null}}}}"#;
        let v = WorkloadView::decode(WorkloadKind::Deployment, json).unwrap();
        let t = v.template.unwrap();
        assert!(!t.has_metadata);
        assert!(t.spec.unwrap().init_containers.is_none());
    }
}
