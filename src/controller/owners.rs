//! The top workload of a pod, which owns the MigrationRun (so the run is deleted with the last
//! workload using it): a ReplicaSet's controller Deployment, a Job's CronJob, else the pod's
//! controller, else the pod itself. One GET of the ReplicaSet or Job, cached by its uid (an
//! owner never changes for a uid).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Api, Client, Resource, ResourceExt};

/// A workload a run belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Workload {
    /// `Kind/name`, as `spec.workloads` lists it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// A plain (not controller) owner reference: several workloads may own one run.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            ..OwnerReference::default()
        }
    }

    fn from_owner(owner: &OwnerReference) -> Self {
        Workload {
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("reading {kind} {namespace}/{name}, the owner of pod {pod}")]
pub struct OwnerError {
    kind: &'static str,
    namespace: String,
    name: String,
    pod: String,
    #[source]
    source: kube::Error,
}

/// Resolves top workloads, remembering each ReplicaSet's or Job's answer.
pub struct Owners {
    client: Client,
    cache: Mutex<HashMap<String, Workload>>,
}

fn controller_of(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs?.iter().find(|o| o.controller == Some(true))
}

impl Owners {
    pub fn new(client: Client) -> Self {
        Owners {
            client,
            cache: Mutex::default(),
        }
    }

    pub async fn top_workload(&self, pod: &Pod) -> Result<Workload, OwnerError> {
        let namespace = pod.namespace().unwrap_or_default();
        let Some(owner) = controller_of(pod.meta().owner_references.as_ref()) else {
            return Ok(Workload {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.name_any(),
                uid: pod.uid().unwrap_or_default(),
            });
        };
        let direct = Workload::from_owner(owner);
        let kind = match (owner.api_version.as_str(), owner.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => "ReplicaSet",
            ("batch/v1", "Job") => "Job",
            _ => return Ok(direct),
        };
        if let Some(hit) = self.cached(&owner.uid) {
            return Ok(hit);
        }
        let found = if kind == "ReplicaSet" {
            Api::<ReplicaSet>::namespaced(self.client.clone(), &namespace)
                .get_opt(&owner.name)
                .await
                .map(|rs| {
                    rs.and_then(|rs| controller_of(rs.meta().owner_references.as_ref()).cloned())
                })
        } else {
            Api::<Job>::namespaced(self.client.clone(), &namespace)
                .get_opt(&owner.name)
                .await
                .map(|job| {
                    job.and_then(|j| controller_of(j.meta().owner_references.as_ref()).cloned())
                })
        }
        .map_err(|source| OwnerError {
            kind,
            namespace,
            name: owner.name.clone(),
            pod: pod.name_any(),
            source,
        })?;
        // Gone or not controlled: the ReplicaSet or Job is the top workload.
        let top = found.map_or(direct, |o| Workload::from_owner(&o));
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(owner.uid.clone(), top.clone());
        }
        Ok(top)
    }

    fn cached(&self, uid: &str) -> Option<Workload> {
        self.cache.lock().ok()?.get(uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_mock;
    use http::Method;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn pod(owner: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {
            "name": "p", "namespace": "ns", "uid": "pod-uid", "ownerReferences": owner}}))
        .unwrap()
    }

    fn owner(api_version: &str, kind: &str, name: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "name": name,
            "uid": format!("uid-{name}"), "controller": true})
    }

    #[tokio::test]
    async fn a_replicasets_deployment_is_read_once_then_cached() {
        let (client, mut api) = api_mock::pair();
        let owners = Arc::new(Owners::new(client));
        let p = pod(json!([owner("apps/v1", "ReplicaSet", "api-5d")]));
        let task = {
            let (owners, p) = (owners.clone(), p.clone());
            tokio::spawn(async move {
                let first = owners.top_workload(&p).await.unwrap();
                let second = owners.top_workload(&p).await.unwrap();
                (first, second)
            })
        };
        api.expect(
            Method::GET,
            "/apis/apps/v1/namespaces/ns/replicasets/api-5d",
        )
        .await
        .json(
            200,
            &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "api-5d", "namespace": "ns",
                    "ownerReferences": [owner("apps/v1", "Deployment", "api")]}}),
        );
        let (first, second) = api_mock::finish(task).await;
        assert_eq!(first.label(), "Deployment/api");
        assert_eq!(first.uid, "uid-api");
        assert_eq!(second, first);
        api.expect_silence(std::time::Duration::from_millis(50))
            .await;
    }

    #[tokio::test]
    async fn a_jobs_cronjob_is_the_top_and_a_gone_job_is_its_own_top() {
        let (client, mut api) = api_mock::pair();
        let owners = Owners::new(client);
        let task = tokio::spawn(async move {
            let cron = owners
                .top_workload(&pod(json!([owner("batch/v1", "Job", "nightly-1")])))
                .await
                .unwrap();
            let gone = owners
                .top_workload(&pod(json!([owner("batch/v1", "Job", "once")])))
                .await
                .unwrap();
            (cron, gone)
        });
        api.expect(Method::GET, "/apis/batch/v1/namespaces/ns/jobs/nightly-1")
            .await
            .json(
                200,
                &json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "nightly-1", "namespace": "ns",
                    "ownerReferences": [owner("batch/v1", "CronJob", "nightly")]}}),
            );
        api.expect(Method::GET, "/apis/batch/v1/namespaces/ns/jobs/once")
            .await
            .not_found();
        let (cron, gone) = api_mock::finish(task).await;
        assert_eq!(cron.label(), "CronJob/nightly");
        assert_eq!(gone.label(), "Job/once");
    }

    #[tokio::test]
    async fn other_owners_and_bare_pods_need_no_request() {
        let (client, mut api) = api_mock::pair();
        let owners = Owners::new(client);
        let sts = owners
            .top_workload(&pod(json!([owner("apps/v1", "StatefulSet", "db")])))
            .await
            .unwrap();
        assert_eq!(sts.label(), "StatefulSet/db");
        let bare = owners.top_workload(&pod(json!([]))).await.unwrap();
        assert_eq!(
            (bare.label(), bare.uid.as_str()),
            ("Pod/p".into(), "pod-uid")
        );
        api.expect_silence(std::time::Duration::from_millis(50))
            .await;
    }

    #[tokio::test]
    async fn an_api_error_names_the_owner_and_is_not_cached() {
        let (client, mut api) = api_mock::pair();
        let owners = Owners::new(client);
        let p = pod(json!([owner("apps/v1", "ReplicaSet", "api-5d")]));
        let task =
            tokio::spawn(async move { owners.top_workload(&p).await.map_err(|e| e.to_string()) });
        api.expect(
            Method::GET,
            "/apis/apps/v1/namespaces/ns/replicasets/api-5d",
        )
        .await
        .status(403, "Forbidden", "no");
        let err = api_mock::finish(task).await.unwrap_err();
        assert_eq!(err, "reading ReplicaSet ns/api-5d, the owner of pod p");
    }
}
