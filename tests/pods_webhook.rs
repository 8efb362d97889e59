//! Run-once mode over the real HTTPS server: `/mutate` gives a once-mode Deployment its waiter;
//! `/mutate-pods` starts a pod of an applied revision without it, and leaves every other pod as
//! it is.

mod support;

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use migration_injector::mutate::InjectorConfig;
use migration_injector::webhook::runs::RunLookup;
use migration_injector::webhook::Limits;
use serde_json::{json, Value};
use support::server::TestServer;

/// Runs that succeeded, as (namespace, fingerprint); records every question asked.
#[derive(Default)]
struct FakeRuns {
    succeeded: Mutex<Vec<(String, String)>>,
    asked: Mutex<Vec<(String, String)>>,
}

impl RunLookup for FakeRuns {
    fn succeeded(&self, namespace: &str, fingerprint: &str) -> bool {
        let key = (namespace.to_owned(), fingerprint.to_owned());
        self.asked.lock().unwrap().push(key.clone());
        self.succeeded.lock().unwrap().contains(&key)
    }
}

fn review(kind: (&str, &str, &str), namespace: &str, object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
            "resource": {"group": kind.0, "version": kind.1, "resource": format!("{}s", kind.2.to_lowercase())},
            "namespace": namespace, "operation": "CREATE", "object": object,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "dryRun": false
        }
    })
}

async fn post(server: &TestServer, path: &str, body: &Value) -> Value {
    let r = server
        .client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let review: Value = r.json().await.unwrap();
    review["response"].clone()
}

fn patched(object: &Value, response: &Value) -> Value {
    let mut out = object.clone();
    if let Some(p) = response["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

/// A pod as the Deployment's ReplicaSet creates it from the (mutated) template.
fn pod_of(deployment: &Value) -> Value {
    let t = &deployment["spec"]["template"];
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "app-5d8f7c9b8-", "namespace": "shop",
            "labels": t["metadata"]["labels"], "annotations": t["metadata"]["annotations"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-5d8f7c9b8",
                                 "uid": "6b1a", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": t["spec"]
    })
}

#[tokio::test]
async fn pods_of_an_applied_revision_start_without_the_waiter() {
    let config = InjectorConfig {
        waiter_image: Some("ghcr.io/org/migration-injector:1.0.0".into()),
        ..InjectorConfig::default()
    };
    let server = TestServer::start(config, Limits::default()).await;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "shop",
                     "annotations": {"migrations.io/image": "ghcr.io/repo/migrations:v0.1.2", "migrations.io/run": "once"}},
        "spec": {"selector": {"matchLabels": {"app": "shop"}},
            "template": {"metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
    });
    let response = post(
        &server,
        "/mutate",
        &review(("apps", "v1", "Deployment"), "shop", &deployment),
    )
    .await;
    let deployment = patched(&deployment, &response);
    let fp = deployment["spec"]["template"]["metadata"]["labels"]["migrations.io/fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let pod = pod_of(&deployment);
    let pod_review = review(("", "v1", "Pod"), "shop", &pod);

    // No run cache yet (the watch has not started): the pod keeps its waiter.
    let response = post(&server, "/mutate-pods", &pod_review).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    // The workload webhook leaves the ReplicaSet's pod alone whatever it carries.
    let response = post(&server, "/mutate", &pod_review).await;
    assert!(response.get("patch").is_none(), "{response}");

    let runs = Arc::new(FakeRuns::default());
    server.state.set_runs(runs.clone());
    // The run has not succeeded: still waiting, and the question named the pod's namespace.
    let response = post(&server, "/mutate-pods", &pod_review).await;
    assert!(response.get("patch").is_none(), "{response}");
    assert_eq!(
        runs.asked.lock().unwrap().as_slice(),
        [("shop".to_owned(), fp.clone())]
    );

    // Succeeded in another namespace only: still waiting.
    runs.succeeded
        .lock()
        .unwrap()
        .push(("other".into(), fp.clone()));
    let response = post(&server, "/mutate-pods", &pod_review).await;
    assert!(response.get("patch").is_none(), "{response}");

    runs.succeeded
        .lock()
        .unwrap()
        .push(("shop".into(), fp.clone()));
    let response = post(&server, "/mutate-pods", &pod_review).await;
    let started = patched(&pod, &response);
    assert!(
        started["spec"]
            .get("initContainers")
            .is_none_or(|l| l == &json!([])),
        "{started}"
    );
    assert!(
        started["spec"]
            .get("volumes")
            .is_none_or(|l| l == &json!([])),
        "{started}"
    );
    assert_eq!(
        started["metadata"]["annotations"]["migrations.io/run-phase"],
        "Succeeded"
    );
    assert_eq!(started["spec"]["containers"], pod["spec"]["containers"]);

    // A pod of another workload, not waiting for anything: never patched.
    let plain = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "x", "namespace": "shop", "labels": {"migrations.io/fingerprint": fp}},
        "spec": {"initContainers": [{"name": "migrate", "image": "mine:1"}], "containers": [{"name": "c", "image": "c:1"}]}});
    let response = post(
        &server,
        "/mutate-pods",
        &review(("", "v1", "Pod"), "shop", &plain),
    )
    .await;
    assert!(response.get("patch").is_none(), "{response}");
    // Other kinds sent to the pods path by mistake: allowed unchanged.
    let response = post(
        &server,
        "/mutate-pods",
        &review(("apps", "v1", "Deployment"), "shop", &deployment),
    )
    .await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    server.stop().await;
}
