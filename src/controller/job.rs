//! Pure: the Job of one attempt, built from a MigrationRun; and the facts read back from
//! pods (the run spec the waiter carries, the pod-level settings) and from a failed Job's pod.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::{Resource, ResourceExt};
use serde_json::{json, Map, Value};

use super::crd::{MigrationRun, FINGERPRINT_ENV, FINGERPRINT_LABEL, RUN_ENV, RUN_LABEL};

/// The pod-level settings a Job copies from the waiting pods, so the migration runs with the
/// workload's identity, pull secrets and placement.
pub const POD_SETTINGS: &[&str] = &[
    "serviceAccountName",
    "imagePullSecrets",
    "nodeSelector",
    "tolerations",
    "affinity",
    "securityContext",
    "priorityClassName",
    "runtimeClassName",
    "dnsPolicy",
    "dnsConfig",
    "hostAliases",
    "enableServiceLinks",
    "automountServiceAccountToken",
];

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the MigrationRun has no {0}")]
    Missing(&'static str),
    #[error("the Job built from the MigrationRun is not a valid Job: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// `migrate-<fp[..16]>-<attempt>`: short enough for a Job name (and its pods' names).
pub fn job_name(fingerprint: &str, attempt: u32) -> String {
    let short: String = fingerprint.chars().take(16).collect();
    format!("migrate-{short}-{attempt}")
}

/// The attempt number of a Job named by [`job_name`] for this fingerprint.
pub fn attempt_of(fingerprint: &str, name: &str) -> Option<u32> {
    let prefix = job_name(fingerprint, 0);
    let prefix = prefix.strip_suffix('0')?;
    name.strip_prefix(prefix)?.parse().ok()
}

/// The Job of attempt `attempt`: controller-owned by the run (deleted with it), one pod, never
/// restarted, so a failure is one failed attempt the controller counts.
pub fn build(run: &MigrationRun, attempt: u32, deadline_seconds: i64) -> Result<Job, JobError> {
    let fp = &run.spec.fingerprint;
    let owner = run
        .controller_owner_ref(&())
        .ok_or(JobError::Missing("name or uid"))?;
    let namespace = run.namespace().ok_or(JobError::Missing("namespace"))?;
    let mut container = run.spec.container.clone();
    // A sidecar's `restartPolicy: Always` is for init containers only.
    container.remove("restartPolicy");
    // The tool's last log lines become the termination message the status and Event report.
    container
        .entry("terminationMessagePolicy")
        .or_insert_with(|| json!("FallbackToLogsOnError"));
    let mut pod: Map<String, Value> = settings(&run.spec.pod);
    pod.insert("restartPolicy".into(), json!("Never"));
    pod.insert("containers".into(), json!([container]));
    if let Some(volume) = &run.spec.volume {
        pod.insert("volumes".into(), json!([volume]));
    }
    let labels = json!({ RUN_LABEL: fp });
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(fp, attempt),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    });
    Ok(serde_json::from_value(job)?)
}

/// Only the [`POD_SETTINGS`] keys of `pod`.
fn settings(pod: &Map<String, Value>) -> Map<String, Value> {
    pod.iter()
        .filter(|(k, v)| POD_SETTINGS.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The pod-level settings of a pod spec, as the run's `spec.pod`.
pub fn pod_settings(spec: &PodSpec) -> Map<String, Value> {
    match serde_json::to_value(spec) {
        Ok(Value::Object(all)) => settings(&all),
        _ => Map::new(),
    }
}

/// What the waiter of a pod carries: the migration container and its volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Carried {
    pub container: Map<String, Value>,
    pub volume: Option<Map<String, Value>>,
}

impl Carried {
    pub fn image(&self) -> String {
        self.container
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

/// The run the waiting init container of `pod` carries in its env, if the pod has one for its
/// own fingerprint label and the JSON holds a container.
pub fn carried(pod: &Pod) -> Option<Carried> {
    let fp = pod.labels().get(FINGERPRINT_LABEL)?;
    let spec = pod.spec.as_ref()?;
    spec.init_containers.iter().flatten().find_map(|c| {
        let env = c.env.as_ref()?;
        let var = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.as_deref())
        };
        if var(FINGERPRINT_ENV)? != fp {
            return None;
        }
        let mut run: Map<String, Value> = serde_json::from_str(var(RUN_ENV)?).ok()?;
        let Some(Value::Object(container)) = run.remove("container") else {
            return None;
        };
        let volume = match run.remove("volume") {
            Some(Value::Object(v)) => Some(v),
            _ => None,
        };
        Some(Carried { container, volume })
    })
}

/// How a Job ended, from its status conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Active,
    Succeeded,
    /// The Job's own reason (`BackoffLimitExceeded`, `DeadlineExceeded`) and message.
    Failed(String),
}

pub fn state(job: &Job) -> JobState {
    let status = job.status.as_ref();
    let condition = |kind: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if condition("Complete").is_some() || status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        return JobState::Succeeded;
    }
    if let Some(failed) = condition("Failed") {
        let reason = failed.reason.clone().unwrap_or_else(|| "Failed".into());
        return JobState::Failed(match &failed.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason,
        });
    }
    JobState::Active
}

/// The termination message of a failed Job pod's container: the tool's last log lines (the
/// container has `terminationMessagePolicy: FallbackToLogsOnError`), else its exit code.
pub fn termination_message(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|s| {
        let t = s.state.as_ref()?.terminated.as_ref()?;
        if t.exit_code == 0 {
            return None;
        }
        let text = t.message.as_deref().map(str::trim).unwrap_or_default();
        Some(if text.is_empty() {
            format!("exit code {}", t.exit_code)
        } else {
            text.to_owned()
        })
    })
}

/// The last non-empty line of a message (the one for annotations and one-line status).
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::MigrationRunSpec;
    use kube::api::ObjectMeta;

    const FP: &str = "0123456789abcdef0123456789abcdef01234567";

    fn run() -> MigrationRun {
        let mut run = MigrationRun::new(
            FP,
            MigrationRunSpec {
                fingerprint: FP.into(),
                image: "arigaio/atlas:0.30".into(),
                container: json!({"name": "migrate", "image": "arigaio/atlas:0.30",
                    "restartPolicy": "Always",
                    "volumeMounts": [{"name": "db", "mountPath": "/db"}]})
                .as_object()
                .unwrap()
                .clone(),
                volume: json!({"name": "db", "secret": {"secretName": "db"}})
                    .as_object()
                    .cloned(),
                pod: json!({"serviceAccountName": "api", "nodeName": "n1",
                    "imagePullSecrets": [{"name": "reg"}]})
                .as_object()
                .unwrap()
                .clone(),
                workloads: vec!["Deployment/api".into()],
            },
        );
        run.metadata = ObjectMeta {
            name: Some(FP.into()),
            namespace: Some("shop".into()),
            uid: Some("run-uid".into()),
            ..Default::default()
        };
        run
    }

    #[test]
    fn the_job_runs_the_container_once_owned_by_the_run() {
        let job = serde_json::to_value(build(&run(), 2, 600).unwrap()).unwrap();
        assert_eq!(job["metadata"]["name"], "migrate-0123456789abcdef-2");
        assert_eq!(job["metadata"]["namespace"], "shop");
        let owner = &job["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["uid"], &owner["controller"]),
            (&json!("MigrationRun"), &json!("run-uid"), &json!(true))
        );
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
        let template = &job["spec"]["template"];
        assert_eq!(template["metadata"]["labels"], json!({RUN_LABEL: FP}));
        assert!(template["metadata"]["labels"][FINGERPRINT_LABEL].is_null());
        let pod = &template["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "api");
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "reg"}]));
        assert!(pod["nodeName"].is_null(), "only the listed settings: {pod}");
        assert_eq!(pod["containers"][0]["image"], "arigaio/atlas:0.30");
        assert!(pod["containers"][0]["restartPolicy"].is_null());
        assert_eq!(
            pod["containers"][0]["terminationMessagePolicy"],
            "FallbackToLogsOnError"
        );
        assert_eq!(pod["volumes"][0]["secret"]["secretName"], "db");
    }

    #[test]
    fn without_a_volume_the_job_has_none() {
        let mut run = run();
        run.spec.volume = None;
        let job = serde_json::to_value(build(&run, 1, 60).unwrap()).unwrap();
        assert!(job["spec"]["template"]["spec"]["volumes"].is_null());
    }

    #[test]
    fn a_run_without_a_uid_cannot_own_a_job() {
        let mut run = run();
        run.metadata.uid = None;
        assert!(matches!(build(&run, 1, 60), Err(JobError::Missing(_))));
    }

    #[test]
    fn job_names_round_trip_to_attempts() {
        let name = job_name(FP, 12);
        assert_eq!(name, "migrate-0123456789abcdef-12");
        assert_eq!(attempt_of(FP, &name), Some(12));
        assert_eq!(attempt_of("ffffffffffffffff0000", &name), None);
        assert_eq!(attempt_of(FP, "migrate-0123456789abcdef-x"), None);
    }

    fn waiting_pod(fp_env: &str, run_env: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "api-1", "labels": {FINGERPRINT_LABEL: FP}},
            "spec": {
                "serviceAccountName": "api",
                "nodeName": "n1",
                "initContainers": [{"name": "migrate", "image": "mi", "env": [
                    {"name": FINGERPRINT_ENV, "value": fp_env},
                    {"name": RUN_ENV, "value": run_env},
                ]}],
                "containers": [{"name": "app", "image": "app"}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_waiter_env_gives_the_container_and_volume() {
        let pod = waiting_pod(
            FP,
            r#"{"container":{"name":"migrate","image":"atlas"},"volume":null}"#,
        );
        let carried = carried(&pod).unwrap();
        assert_eq!(carried.image(), "atlas");
        assert_eq!(carried.volume, None);
        let settings = pod_settings(pod.spec.as_ref().unwrap());
        assert_eq!(
            Value::Object(settings),
            json!({"serviceAccountName": "api"})
        );
    }

    #[test]
    fn a_waiter_for_another_fingerprint_or_bad_json_carries_nothing() {
        assert_eq!(carried(&waiting_pod("other", r#"{"container":{}}"#)), None);
        assert_eq!(carried(&waiting_pod(FP, "not json")), None);
        assert_eq!(carried(&waiting_pod(FP, r#"{"volume":null}"#)), None);
    }

    #[test]
    fn job_states_come_from_conditions() {
        let job = |status: Value| -> Job {
            serde_json::from_value(json!({"metadata": {"name": "j"}, "status": status})).unwrap()
        };
        assert_eq!(state(&job(json!({"active": 1}))), JobState::Active);
        assert_eq!(
            state(&job(
                json!({"conditions": [{"type": "Complete", "status": "True"}]})
            )),
            JobState::Succeeded
        );
        assert_eq!(
            state(&job(
                json!({"conditions": [{"type": "Failed", "status": "True",
                "reason": "DeadlineExceeded", "message": "Job was active longer"}]})
            )),
            JobState::Failed("DeadlineExceeded: Job was active longer".into())
        );
    }

    #[test]
    fn a_failed_pod_gives_its_last_lines_or_exit_code() {
        let pod = |terminated: Value| -> Pod {
            serde_json::from_value(json!({"status": {"containerStatuses": [{
                "name": "migrate", "image": "a", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": terminated}}]}}))
            .unwrap()
        };
        let failed = pod(json!({"exitCode": 1, "message": "applying 2\nError: relation exists\n"}));
        assert_eq!(
            termination_message(&failed).as_deref(),
            Some("applying 2\nError: relation exists")
        );
        assert_eq!(
            last_line("applying 2\nError: relation exists\n\n"),
            "Error: relation exists"
        );
        assert_eq!(
            termination_message(&pod(json!({"exitCode": 137}))).as_deref(),
            Some("exit code 137")
        );
        assert_eq!(termination_message(&pod(json!({"exitCode": 0}))), None);
    }
}
