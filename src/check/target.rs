//! Target selection: from the command line's choice (a manifest file, a live `KIND/NAME`, or
//! nothing) to the one object the checks look at.

use std::path::{Path, PathBuf};

use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{json, Value};

use super::CheckError;
use crate::mutate::annotations::Key;
use crate::mutate::workload::WorkloadKind;

/// Which object to check, as the user chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The first supported object of a manifest file, dry-run created.
    File(PathBuf),
    /// A workload that exists in the cluster.
    Live { kind: WorkloadKind, name: String },
    /// A small annotated Deployment, when the user names nothing.
    Probe { image: String },
}

impl Selection {
    /// The selection the flags make: `-f` wins, then `KIND/NAME`, else the probe.
    pub fn from_flags(
        file: Option<PathBuf>,
        workload: Option<&str>,
        probe_image: &str,
    ) -> Result<Self, CheckError> {
        match (file, workload) {
            (Some(path), _) => Ok(Self::File(path)),
            (None, Some(target)) => Self::parse_workload(target),
            (None, None) => Ok(Self::Probe {
                image: probe_image.to_owned(),
            }),
        }
    }

    /// `KIND/NAME` as kubectl takes it (`deployment/api`, `deploy/api`, `cronjobs/nightly`).
    pub fn parse_workload(target: &str) -> Result<Self, CheckError> {
        let (kind_name, name) = target.split_once('/').ok_or(CheckError::NotKindName)?;
        let kind = WorkloadKind::from_cli_name(kind_name)
            .ok_or_else(|| CheckError::UnknownKind(kind_name.to_owned()))?;
        Ok(Self::Live {
            kind,
            name: name.to_owned(),
        })
    }
}

/// The object the checks look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub kind: WorkloadKind,
    pub object: Value,
    /// Read from the cluster: its name is taken, and it may carry an injection already.
    pub live: bool,
}

impl Target {
    /// `metadata.name`, for messages.
    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("(unnamed)")
    }
}

/// Resolves a selection to its object: reads the file, or gets the live workload from
/// `namespace` (a CronJob from batch/v1beta1 if batch/v1 cannot be read).
pub async fn select(
    client: &Client,
    namespace: &str,
    selection: &Selection,
) -> Result<Target, CheckError> {
    match selection {
        Selection::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CheckError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let (kind, object) = from_manifest(&text, path)?;
            Ok(Target {
                kind,
                object,
                live: false,
            })
        }
        Selection::Live { kind, name } => {
            let object = get_live(client, namespace, *kind, name).await?;
            Ok(Target {
                kind: *kind,
                object,
                live: true,
            })
        }
        Selection::Probe { image } => Ok(Target {
            kind: WorkloadKind::Deployment,
            object: probe(image),
            live: false,
        }),
    }
}

async fn get_live(
    client: &Client,
    namespace: &str,
    kind: WorkloadKind,
    name: &str,
) -> Result<Value, CheckError> {
    let get = |resource: ApiResource| {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        async move { api.get_opt(name).await }
    };
    let mut found = get(kind.api_resource()).await;
    if let Some(legacy) = kind.legacy_api_resource() {
        // Any error: an older cluster may serve the kind only under its legacy version.
        if found.is_err() {
            found = get(legacy).await;
        }
    }
    match found {
        Ok(Some(o)) => serde_json::to_value(o).map_err(CheckError::Encode),
        Ok(None) => Err(CheckError::NotFound {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }),
        Err(source) => Err(CheckError::ReadWorkload {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// The first object of a supported kind in a manifest (multi-document YAML or JSON).
pub fn from_manifest(text: &str, path: &Path) -> Result<(WorkloadKind, Value), CheckError> {
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|source| CheckError::ParseFile {
            path: path.to_owned(),
            source,
        })?;
        let field = |f: &str| value.get(f).and_then(Value::as_str).unwrap_or_default();
        if let Some(kind) = WorkloadKind::from_api_version(field("apiVersion"), field("kind")) {
            return Ok((kind, value));
        }
    }
    Err(CheckError::NoWorkload(path.to_owned()))
}

/// The probe Deployment: opted in with `image`, otherwise the smallest valid workload.
pub fn probe(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "migration-injector-check-probe", "labels": {"app": "migration-injector-check-probe"},
                     "annotations": {Key::Image.name(): image}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "migration-injector-check-probe"}},
            "template": {"metadata": {"labels": {"app": "migration-injector-check-probe"}},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]}}}
    })
}
