//! The controller's loop: reflectors over the waiting pods, the MigrationRuns, their Jobs and
//! the Jobs' pods feed a work queue of (namespace, fingerprint); a resync every
//! [`RESYNC_EVERY`] re-queues every run (missed events); a timer wakes the loop for the soonest
//! retry after a backoff. Only the Lease holder
//! reconciles: read the stores, [`decide`], apply the decision.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::admin::{self, AdminState};
use super::crd::{
    MigrationRun, FINGERPRINT_LABEL, MESSAGE_ANNOTATION, PHASE_ANNOTATION, RETRY_ANNOTATION,
    RUN_LABEL,
};
use super::decide::{decide, Decision, EventKind, Input, JobFacts, PodFacts, RunFacts};
use super::job;
use super::lease::{self, LeaseConfig, LeaseError};
use super::metrics::Metrics;
use super::owners::{OwnerError, Owners};

pub const RESYNC_EVERY: Duration = Duration::from_secs(10);
const RETRY_SLACK: Duration = Duration::from_millis(50);
/// The Events' reporting controller.
pub const REPORTER: &str = "migration-injector-controller";
const FIELD_MANAGER: &str = "migration-injector-controller";
/// events.k8s.io notes are limited to 1 kB; the tool's last lines are the end of the text.
const NOTE_MAX: usize = 1000;

#[derive(Debug, Clone)]
pub struct Options {
    pub lease: LeaseConfig,
    pub admin_listen: SocketAddr,
    pub max_attempts: u32,
    pub job_deadline_seconds: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("admin server on {0}")]
    Admin(SocketAddr, #[source] std::io::Error),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Job(#[from] job::JobError),
    #[error("the run's Job can only be built once the MigrationRun exists")]
    NoRun,
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let what = what.into();
    move |source| ReconcileError::Api { what, source }
}

/// (namespace, fingerprint): one run.
pub type Key = (String, String);

/// What one reconcile reads and writes with.
pub struct Context {
    pub client: Client,
    pub pods: Store<Pod>,
    pub runs: Store<MigrationRun>,
    pub jobs: Store<Job>,
    pub job_pods: Store<Pod>,
    pub owners: Owners,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub max_attempts: u32,
    pub job_deadline_seconds: i64,
}

fn label<'a>(object: &'a impl Resource, key: &str) -> Option<&'a str> {
    object.meta().labels.as_ref()?.get(key).map(String::as_str)
}

fn key_of(object: &impl Resource, label_key: Option<&str>) -> Option<Key> {
    let namespace = object.meta().namespace.clone()?;
    let fp = match label_key {
        Some(k) => label(object, k)?.to_owned(),
        None => object.meta().name.clone()?,
    };
    Some((namespace, fp))
}

/// A pod that still waits: not being deleted, not finished.
fn waiting(pod: &Pod) -> bool {
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    pod.meta().deletion_timestamp.is_none() && !finished
}

fn annotation(object: &impl Resource, key: &str) -> Option<String> {
    object.meta().annotations.as_ref()?.get(key).cloned()
}

/// Reads the stores for one run, decides, applies.
pub async fn reconcile(ctx: &Context, key: &Key) -> Result<(), ReconcileError> {
    let (namespace, fp) = key;
    let run = ctx.runs.get(&ObjectRef::new(fp).within(namespace));
    let mut waiting_pods: Vec<Arc<Pod>> = ctx.pods.state_filter(|p| {
        p.namespace().as_ref() == Some(namespace)
            && label(p, FINGERPRINT_LABEL) == Some(fp)
            && waiting(p)
    });
    waiting_pods.sort_by_key(|p| p.name_any());
    let mut pods = Vec::with_capacity(waiting_pods.len());
    for pod in &waiting_pods {
        pods.push(PodFacts {
            name: pod.name_any(),
            workload: ctx.owners.top_workload(pod).await?,
            carried: job::carried(pod),
            settings: pod.spec.as_ref().map(job::pod_settings).unwrap_or_default(),
            phase: annotation(pod.as_ref(), PHASE_ANNOTATION),
            message: annotation(pod.as_ref(), MESSAGE_ANNOTATION),
        });
    }
    // Only this run's Jobs: a deleted and re-created run must not adopt its predecessor's Job
    // of the same name while the garbage collector removes it.
    let run_uid = run.as_ref().and_then(|r| r.uid());
    let jobs: Vec<JobFacts> = ctx
        .jobs
        .state_filter(|j| {
            j.namespace().as_ref() == Some(namespace)
                && label(j, RUN_LABEL) == Some(fp)
                && j.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && Some(&o.uid) == run_uid.as_ref())
        })
        .iter()
        .map(|j| JobFacts {
            name: j.name_any(),
            state: job::state(j),
            message: failed_pod_message(&ctx.job_pods, j),
        })
        .collect();
    let facts = run.as_ref().map(|r| RunFacts {
        spec: r.spec.clone(),
        status: r.status.clone().unwrap_or_default(),
        owners: r.owner_references().to_vec(),
        retry: annotation(r.as_ref(), RETRY_ANNOTATION),
    });
    let decision = decide(&Input {
        now: Timestamp::now(),
        fingerprint: fp,
        run: facts.as_ref(),
        pods: &pods,
        jobs: &jobs,
        max_attempts: ctx.max_attempts,
    });
    apply(ctx, key, run.as_deref(), decision).await
}

/// The termination message of the Job's failed pod (its controller uid is the Job's).
fn failed_pod_message(job_pods: &Store<Pod>, job: &Job) -> Option<String> {
    let uid = job.uid()?;
    job_pods
        .state_filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .iter()
        .find_map(|p| job::termination_message(p))
}

async fn apply(
    ctx: &Context,
    (namespace, fp): &Key,
    run: Option<&MigrationRun>,
    decision: Decision,
) -> Result<(), ReconcileError> {
    let runs = Api::<MigrationRun>::namespaced(ctx.client.clone(), namespace);
    if let Some((spec, owners)) = decision.create_run {
        let mut object = MigrationRun::new(fp, spec);
        object.metadata.namespace = Some(namespace.clone());
        object.metadata.owner_references =
            Some(owners.iter().map(|w| w.owner_reference()).collect());
        match runs.create(&post_params(), &object).await {
            Ok(_) => tracing::info!(%namespace, run = %fp, "created MigrationRun"),
            // Created by a previous pass the store has not shown yet.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(api_error(format!("creating MigrationRun {namespace}/{fp}"))(e)),
        }
    }
    let mut current = run.cloned();
    if let (Some((owners, workloads)), Some(run)) = (&decision.set_owners, &current) {
        // The read resourceVersion makes a write over a newer version a 409 (retried later).
        let patch = json!({
            "metadata": {"ownerReferences": owners, "resourceVersion": run.resource_version()},
            "spec": {"workloads": workloads},
        });
        let patched = runs
            .patch(fp, &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(api_error(format!(
                "adding owners to MigrationRun {namespace}/{fp}"
            )))?;
        current = Some(patched);
    }
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), namespace);
    for name in &decision.delete_jobs {
        // Background: the Job goes at once (its pods after), freeing the name.
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(%namespace, run = %fp, job = %name, "deleted an old attempt's Job")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_error(format!("deleting Job {namespace}/{name}"))(e)),
        }
    }
    if let Some(attempt) = decision.create_job {
        let run = current.as_ref().ok_or(ReconcileError::NoRun)?;
        let job = job::build(run, attempt, ctx.job_deadline_seconds)?;
        let name = job.name_any();
        match jobs.create(&post_params(), &job).await {
            Ok(_) => {
                ctx.metrics.runs_started.inc();
                tracing::info!(%namespace, run = %fp, job = %name, attempt, "started migration Job");
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(api_error(format!("creating Job {namespace}/{name}"))(e)),
        }
    }
    if let (Some(status), Some(run)) = (&decision.status, &current) {
        let patch = json!({
            "metadata": {"resourceVersion": run.resource_version()},
            "status": status,
        });
        let patched = runs
            .patch_status(fp, &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(api_error(format!(
                "writing the status of MigrationRun {namespace}/{fp}"
            )))?;
        tracing::info!(%namespace, run = %fp, phase = status.phase.as_str(),
            message = status.message.as_deref().unwrap_or_default(), "run status");
        current = Some(patched);
    }
    if let Some(run) = &current {
        for (kind, note) in &decision.events {
            count(ctx, *kind, decision.succeeded_after);
            publish(ctx, run, *kind, note).await;
        }
    }
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    for (pod, phase, message) in &decision.annotate {
        let patch = json!({"metadata": {"annotations": {
            PHASE_ANNOTATION: phase.as_str(),
            MESSAGE_ANNOTATION: message,
        }}});
        match pods
            .patch(pod, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_error(format!("annotating pod {namespace}/{pod}"))(e)),
        }
    }
    Ok(())
}

fn count(ctx: &Context, kind: EventKind, succeeded_after: Option<Duration>) {
    match kind {
        EventKind::Failed => {
            ctx.metrics.runs_failed.inc();
        }
        EventKind::Succeeded => {
            ctx.metrics.runs_succeeded.inc();
            if let Some(took) = succeeded_after {
                ctx.metrics.run_duration.observe(took.as_secs_f64());
            }
        }
        // Started is counted when the Job is created (a 409 is not a start).
        EventKind::Started | EventKind::Retrying => {}
    }
}

/// The end of `text` within `max` bytes (the tool's last lines matter most).
fn tail(text: &str, max: usize) -> &str {
    let mut from = text.len().saturating_sub(max);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..]
}

/// One Event on each workload of the run (what users `kubectl describe`), the run as related
/// object. A failed Event is logged, never fatal.
async fn publish(ctx: &Context, run: &MigrationRun, kind: EventKind, note: &str) {
    let event = Event {
        type_: if kind.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: kind.reason().to_owned(),
        note: Some(tail(note, NOTE_MAX).to_owned()),
        action: "Migrate".to_owned(),
        secondary: Some(run.object_ref(&())),
    };
    for owner in run.owner_references() {
        let regarding = ObjectReference {
            api_version: Some(owner.api_version.clone()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: run.namespace(),
            uid: Some(owner.uid.clone()),
            ..ObjectReference::default()
        };
        if let Err(e) = ctx.recorder.publish(&event, &regarding).await {
            tracing::warn!(error = %crate::error_chain(&e), reason = kind.reason(), workload = %owner.name, "event");
        }
    }
}

/// Runs a reflector, sending the key of every object it sees change.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    label_key: Option<&'static str>,
    queue: mpsc::UnboundedSender<Key>,
) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let task = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(object) => {
                    if let Some(key) = key_of(&object, label_key) {
                        let _ = queue.send(key);
                    }
                }
                Err(e) => tracing::warn!(error = %crate::error_chain(&e), "watch"),
            }
        }
    };
    (store, task)
}

/// Every run the stores know of (the resync).
fn all_keys(ctx: &Context) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    keys.extend(
        ctx.pods
            .state()
            .iter()
            .filter_map(|p| key_of(p.as_ref(), Some(FINGERPRINT_LABEL))),
    );
    keys.extend(
        ctx.runs
            .state()
            .iter()
            .filter_map(|r| key_of(r.as_ref(), None)),
    );
    keys.extend(
        ctx.jobs
            .state()
            .iter()
            .filter_map(|j| key_of(j.as_ref(), Some(RUN_LABEL))),
    );
    keys
}

/// How long until the soonest retry (a run's `nextAttemptAt`) after `now`, and the runs due by
/// then: the loop wakes for it rather than at the next resync, which could be 10 s late for a
/// backoff of 10 s.
fn next_attempt(runs: &Store<MigrationRun>, now: Timestamp) -> Option<(Duration, Vec<Key>)> {
    let mut due: Vec<(Timestamp, Key)> = runs
        .state()
        .iter()
        .filter_map(|r| {
            let at = r
                .status
                .as_ref()?
                .next_attempt_at
                .as_deref()?
                .parse()
                .ok()?;
            Some((at, key_of(r.as_ref(), None)?))
        })
        .filter(|(at, _)| *at > now)
        .collect();
    let soonest = due.iter().map(|(at, _)| *at).min()?;
    due.retain(|(at, _)| *at == soonest);
    let wait = Duration::try_from(soonest.duration_since(now)).ok()?;
    let mut keys: Vec<Key> = due.into_iter().map(|(_, k)| k).collect();
    keys.sort();
    Some((wait, keys))
}

fn pods_waiting(pods: &Store<Pod>) -> i64 {
    let count = pods
        .state()
        .iter()
        .filter(|p| {
            waiting(p) && annotation(p.as_ref(), PHASE_ANNOTATION).as_deref() != Some("Succeeded")
        })
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Runs the controller until a watch ends, the admin server fails or the Lease is lost.
pub async fn run(client: Client, options: Options) -> Result<(), ControllerError> {
    let (queue, mut keys) = mpsc::unbounded_channel::<Key>();
    let fp_pods = watcher::Config::default().labels(FINGERPRINT_LABEL);
    let run_objects = watcher::Config::default().labels(RUN_LABEL);
    let (pods, pods_task) = reflect(
        Api::<Pod>::all(client.clone()),
        fp_pods,
        Some(FINGERPRINT_LABEL),
        queue.clone(),
    );
    let (runs, runs_task) = reflect(
        Api::<MigrationRun>::all(client.clone()),
        watcher::Config::default(),
        None,
        queue.clone(),
    );
    let (jobs, jobs_task) = reflect(
        Api::<Job>::all(client.clone()),
        run_objects.clone(),
        Some(RUN_LABEL),
        queue.clone(),
    );
    let (job_pods, job_pods_task) = reflect(
        Api::<Pod>::all(client.clone()),
        run_objects,
        Some(RUN_LABEL),
        queue,
    );
    let metrics = Arc::new(Metrics::default());
    let synced = Arc::new(AtomicBool::new(false));
    let ctx = Context {
        client: client.clone(),
        owners: Owners::new(client.clone()),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTER.to_owned(),
                instance: Some(options.lease.identity.clone()),
            },
        ),
        pods,
        runs,
        jobs,
        job_pods,
        metrics: metrics.clone(),
        max_attempts: options.max_attempts,
        job_deadline_seconds: options.job_deadline_seconds,
    };
    let admin_state = AdminState {
        metrics: metrics.clone(),
        synced: synced.clone(),
    };
    let listen = options.admin_listen;
    let mut admin = tokio::spawn(admin::serve(listen, admin_state));
    let (leader_tx, mut leader) = watch::channel(false);
    let mut lease_task = tokio::spawn(lease::keep(client, options.lease.clone(), leader_tx));
    let stores = (
        ctx.pods.clone(),
        ctx.runs.clone(),
        ctx.jobs.clone(),
        ctx.job_pods.clone(),
    );
    let mut ready = tokio::spawn(async move {
        let (a, b, c, d) = stores;
        let _ = tokio::join!(
            a.wait_until_ready(),
            b.wait_until_ready(),
            c.wait_until_ready(),
            d.wait_until_ready()
        );
    });
    let watches = async {
        tokio::select! {
            () = pods_task => "pods",
            () = runs_task => "migrationruns",
            () = jobs_task => "jobs",
            () = job_pods_task => "Job pods",
        }
    };
    let mut watches = std::pin::pin!(watches);
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    let mut pending: BTreeSet<Key> = BTreeSet::new();
    loop {
        let (retry_in, retries) =
            next_attempt(&ctx.runs, Timestamp::now()).unwrap_or((RESYNC_EVERY, Vec::new()));
        tokio::select! {
            Some(key) = keys.recv() => { pending.insert(key); }
            // A little after the instant: decide() compares with its own clock read.
            () = tokio::time::sleep(retry_in + RETRY_SLACK) => { pending.extend(retries); }
            _ = resync.tick() => {
                pending.extend(all_keys(&ctx));
                metrics.pods_waiting.set(pods_waiting(&ctx.pods));
            }
            _ = &mut ready, if !synced.load(Ordering::Relaxed) => {
                synced.store(true, Ordering::Relaxed);
                tracing::info!("caches synced");
            }
            _ = leader.changed() => {}
            which = &mut watches => return Err(ControllerError::WatchEnded(which)),
            result = &mut admin => return Err(match result {
                Ok(Err(e)) => ControllerError::Admin(listen, e),
                _ => ControllerError::WatchEnded("admin server"),
            }),
            result = &mut lease_task => return Err(match result {
                Ok(e) => ControllerError::Lease(e),
                Err(_) => ControllerError::WatchEnded("leader election"),
            }),
        }
        while let Ok(key) = keys.try_recv() {
            pending.insert(key);
        }
        let leading = *leader.borrow();
        metrics.leader.set(i64::from(leading));
        if !leading || !synced.load(Ordering::Relaxed) {
            continue;
        }
        for key in std::mem::take(&mut pending) {
            if let Err(e) = reconcile(&ctx, &key).await {
                // Retried at the next event or resync.
                tracing::warn!(namespace = %key.0, run = %key.1, error = %crate::error_chain(&e), "reconcile");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_mock;
    use crate::controller::crd::{FINGERPRINT_ENV, RUN_ENV};
    use http::Method;
    use serde_json::Value;

    const FP: &str = "0123456789abcdef0123456789abcdef01234567";

    fn store_of<K>(objects: Vec<K>) -> Store<K>
    where
        K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (store, mut writer) = reflector::store();
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        store
    }

    fn context(client: Client, pods: Vec<Pod>, runs: Vec<MigrationRun>) -> Context {
        Context {
            owners: Owners::new(client.clone()),
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: REPORTER.into(),
                    instance: None,
                },
            ),
            client,
            pods: store_of(pods),
            runs: store_of(runs),
            jobs: store_of(vec![]),
            job_pods: store_of(vec![]),
            metrics: Arc::default(),
            max_attempts: 5,
            job_deadline_seconds: 600,
        }
    }

    fn waiting_pod() -> Pod {
        let carried = json!({"container": {"name": "migrate", "image": "atlas:1"}, "volume": null});
        serde_json::from_value(json!({
            "metadata": {"name": "api-5d-x", "namespace": "shop", "uid": "pod-uid",
                "labels": {FINGERPRINT_LABEL: FP},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "api-5d", "uid": "rs-uid", "controller": true}]},
            "spec": {"serviceAccountName": "api", "nodeName": "n1",
                "initContainers": [{"name": "migrate", "image": "mi", "args": ["wait"], "env": [
                    {"name": FINGERPRINT_ENV, "value": FP},
                    {"name": RUN_ENV, "value": carried.to_string()}]}],
                "containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Pending"},
        }))
        .unwrap()
    }

    /// One pass with a waiting pod and no run: the owner is resolved, the run created with the
    /// pod's migration, settings and workload, and the pod marked Pending.
    #[tokio::test]
    async fn waiting_pods_without_a_run_create_it() {
        let (client, mut api) = api_mock::pair();
        let ctx = context(client, vec![waiting_pod()], vec![]);
        let task = tokio::spawn(async move {
            reconcile(&ctx, &("shop".into(), FP.into()))
                .await
                .map_err(|e| e.to_string())
        });
        api.expect(
            Method::GET,
            "/apis/apps/v1/namespaces/shop/replicasets/api-5d",
        )
        .await
        .json(
            200,
            &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "api-5d", "namespace": "shop", "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api",
                     "uid": "deploy-uid", "controller": true}]}}),
        );
        let create = api
            .expect(
                Method::POST,
                "/apis/migrations.io/v1alpha1/namespaces/shop/migrationruns",
            )
            .await;
        let mut body = create.body.clone();
        assert_eq!(
            body,
            json!({
                "apiVersion": "migrations.io/v1alpha1",
                "kind": "MigrationRun",
                "metadata": {"name": FP, "namespace": "shop", "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api",
                     "uid": "deploy-uid"}]},
                "spec": {
                    "fingerprint": FP,
                    "image": "atlas:1",
                    "container": {"name": "migrate", "image": "atlas:1"},
                    "volume": null,
                    "pod": {"serviceAccountName": "api"},
                    "workloads": ["Deployment/api"],
                },
            })
        );
        body["metadata"]["uid"] = json!("run-uid");
        create.json(201, &body);
        let annotate = api
            .expect(Method::PATCH, "/api/v1/namespaces/shop/pods/api-5d-x")
            .await;
        assert_eq!(annotate.content_type, "application/merge-patch+json");
        assert_eq!(
            annotate.body["metadata"]["annotations"],
            json!({PHASE_ANNOTATION: "Pending", MESSAGE_ANNOTATION: format!("waiting for MigrationRun {FP}")})
        );
        annotate.json(200, &serde_json::to_value(waiting_pod()).unwrap());
        api_mock::finish(task).await.unwrap();
    }

    /// A stored run with no status: attempt 1's Job is created, then the status (with the read
    /// resourceVersion), the Event on the workload, the pod's annotation.
    #[tokio::test]
    async fn a_new_run_creates_its_first_job_then_its_status() {
        let (client, mut api) = api_mock::pair();
        let mut run: MigrationRun = serde_json::from_value(json!({
            "apiVersion": "migrations.io/v1alpha1", "kind": "MigrationRun",
            "metadata": {"name": FP, "namespace": "shop", "uid": "run-uid", "resourceVersion": "3",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api",
                    "uid": "deploy-uid"}]},
            "spec": {"fingerprint": FP, "image": "atlas:1",
                "container": {"name": "migrate", "image": "atlas:1"}, "volume": null,
                "pod": {}, "workloads": ["Deployment/api"]},
        }))
        .unwrap();
        run.status = None;
        let ctx = context(client, vec![], vec![run.clone()]);
        let metrics = ctx.metrics.clone();
        let task = tokio::spawn(async move {
            reconcile(&ctx, &("shop".into(), FP.into()))
                .await
                .map_err(|e| e.to_string())
        });
        let job = api
            .expect(Method::POST, "/apis/batch/v1/namespaces/shop/jobs")
            .await;
        assert_eq!(job.body["metadata"]["name"], "migrate-0123456789abcdef-1");
        let body = job.body.clone();
        job.json(201, &body);
        let status = api
            .expect(
                Method::PATCH,
                &format!("/apis/migrations.io/v1alpha1/namespaces/shop/migrationruns/{FP}/status"),
            )
            .await;
        assert_eq!(status.body["metadata"]["resourceVersion"], "3");
        assert_eq!(status.body["status"]["phase"], "Running");
        assert_eq!(status.body["status"]["attempts"], 1);
        assert_eq!(status.body["status"]["nextAttemptAt"], Value::Null);
        let mut updated = serde_json::to_value(&run).unwrap();
        updated["status"] = status.body["status"].clone();
        status.json(200, &updated);
        let event = api
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/shop/events",
            )
            .await;
        assert_eq!(event.body["reason"], "MigrationStarted");
        assert_eq!(event.body["regarding"]["name"], "api");
        let body = event.body.clone();
        event.json(201, &body);
        api_mock::finish(task).await.unwrap();
        assert_eq!(metrics.runs_started.get(), 1);
    }

    #[tokio::test]
    async fn the_resync_queues_every_run_the_stores_know_and_counts_waiting_pods() {
        let (client, _api) = api_mock::pair();
        let mut done = waiting_pod();
        done.metadata.name = Some("done".into());
        done.metadata.namespace = Some("other".into());
        done.metadata.annotations =
            Some([(PHASE_ANNOTATION.to_owned(), "Succeeded".to_owned())].into());
        let mut finished = waiting_pod();
        finished.metadata.name = Some("finished".into());
        finished.status = serde_json::from_value(json!({"phase": "Succeeded"})).unwrap();
        let run: MigrationRun = serde_json::from_value(json!({
            "apiVersion": "migrations.io/v1alpha1", "kind": "MigrationRun",
            "metadata": {"name": "f2", "namespace": "ops"},
            "spec": {"fingerprint": "f2", "image": "i", "container": {}, "volume": null},
        }))
        .unwrap();
        let ctx = context(client, vec![waiting_pod(), done, finished], vec![run]);
        let keys: Vec<Key> = all_keys(&ctx).into_iter().collect();
        let key = |ns: &str, fp: &str| (ns.to_owned(), fp.to_owned());
        assert_eq!(keys, [key("ops", "f2"), key("other", FP), key("shop", FP)]);
        // Only the first still waits: one is admitted Succeeded, one has finished.
        assert_eq!(pods_waiting(&ctx.pods), 1);
    }

    #[tokio::test]
    async fn the_soonest_retry_wakes_the_loop_for_its_runs_only() {
        let (client, _api) = api_mock::pair();
        let run = |ns: &str, name: &str, next: Option<&str>| -> MigrationRun {
            serde_json::from_value(json!({
                "apiVersion": "migrations.io/v1alpha1", "kind": "MigrationRun",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"fingerprint": name, "image": "i", "container": {}, "volume": null},
                "status": {"phase": "Pending", "attempts": 1, "nextAttemptAt": next},
            }))
            .unwrap()
        };
        let now: Timestamp = "2026-01-01T00:00:00.500Z".parse().unwrap();
        let ctx = context(
            client,
            vec![],
            vec![
                run("a", "later", Some("2026-01-01T00:00:40Z")),
                run("a", "soon", Some("2026-01-01T00:00:10Z")),
                run("b", "soon", Some("2026-01-01T00:00:10Z")),
                // Already due (the next reconcile starts it) or no backoff: no timer.
                run("a", "due", Some("2026-01-01T00:00:00Z")),
                run("a", "none", None),
            ],
        );
        let (wait, keys) = next_attempt(&ctx.runs, now).unwrap();
        assert_eq!(wait, Duration::from_millis(9_500));
        let key = |ns: &str, fp: &str| (ns.to_owned(), fp.to_owned());
        assert_eq!(keys, [key("a", "soon"), key("b", "soon")]);

        let (client, _api) = api_mock::pair();
        let idle = context(
            client,
            vec![],
            vec![run("a", "due", Some("2026-01-01T00:00:00Z"))],
        );
        assert_eq!(next_attempt(&idle.runs, now), None);
    }

    #[test]
    fn a_long_note_keeps_its_end_on_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
    }
}
