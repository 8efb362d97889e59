//! Pure: what to do for one run (a namespace and a fingerprint), given what the stores hold at
//! `now`. The loop in `run.rs` reads the stores, calls [`decide`] and applies the [`Decision`];
//! every rule of the run's life is here, tested case by case without an API server.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Map;

use super::crd::{MigrationRunSpec, MigrationRunStatus, Phase};
use super::job::{attempt_of, job_name, last_line, Carried, JobState};
use super::owners::Workload;

/// How long a Job the status names may be missing from the store before it counts as gone:
/// the Job watch may deliver a Job just created after the run's own update.
pub const JOB_GRACE: Duration = Duration::from_secs(30);
const FIRST_BACKOFF_SECONDS: u64 = 10;
const MAX_BACKOFF_SECONDS: u64 = 300;

/// A waiting pod (label `migrations.io/fingerprint`, not finished, not being deleted).
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub name: String,
    /// Its top workload (or the pod itself when nothing controls it).
    pub workload: Workload,
    /// What its waiter carries (None: not a waiter this controller understands).
    pub carried: Option<Carried>,
    /// Its pod-level settings (see `job::POD_SETTINGS`).
    pub settings: Map<String, serde_json::Value>,
    /// Its current `run-phase` / `run-message` annotations.
    pub phase: Option<String>,
    pub message: Option<String>,
}

/// The MigrationRun as stored.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub spec: MigrationRunSpec,
    pub status: MigrationRunStatus,
    pub owners: Vec<OwnerReference>,
    /// Its `migrations.io/retry` annotation.
    pub retry: Option<String>,
}

/// One of the run's Jobs (label `migrations.io/run`).
#[derive(Debug, Clone)]
pub struct JobFacts {
    pub name: String,
    pub state: JobState,
    /// Its failed pod's termination message (the tool's last lines).
    pub message: Option<String>,
}

#[derive(Debug)]
pub struct Input<'a> {
    pub now: Timestamp,
    pub fingerprint: &'a str,
    pub run: Option<&'a RunFacts>,
    /// Sorted by name: the first carrying pod gives the run its spec.
    pub pods: &'a [PodFacts],
    pub jobs: &'a [JobFacts],
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Started,
    Succeeded,
    Failed,
    Retrying,
}

impl EventKind {
    pub fn reason(self) -> &'static str {
        match self {
            EventKind::Started => "MigrationStarted",
            EventKind::Succeeded => "MigrationSucceeded",
            EventKind::Failed => "MigrationFailed",
            EventKind::Retrying => "MigrationRetrying",
        }
    }

    pub fn is_warning(self) -> bool {
        self == EventKind::Failed
    }
}

/// What one reconcile does, in the order the fields are listed (a Job before the status that
/// names it; Events after the status they report; pods last).
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Create the MigrationRun with this spec, owned by these workloads.
    pub create_run: Option<(MigrationRunSpec, Vec<Workload>)>,
    /// Replace the run's ownerReferences and spec.workloads (new workloads joined).
    pub set_owners: Option<(Vec<OwnerReference>, Vec<String>)>,
    /// Delete these finished Jobs of attempts from before a manual retry (their names are
    /// about to be used again).
    pub delete_jobs: Vec<String>,
    /// Create the Job of this attempt.
    pub create_job: Option<u32>,
    /// Write this status (only when it changed).
    pub status: Option<MigrationRunStatus>,
    /// (kind, note) on each workload of the run.
    pub events: Vec<(EventKind, String)>,
    /// (pod, phase, message) for each pod whose annotations differ.
    pub annotate: Vec<(String, Phase, String)>,
    /// A run finished successfully after this long (the duration metric).
    pub succeeded_after: Option<Duration>,
}

/// The wait before the attempt after `failed` failed attempts: 10 s doubling, at most 5 min.
pub fn backoff(failed: u32) -> Duration {
    let exponent = failed.saturating_sub(1).min(16);
    Duration::from_secs((FIRST_BACKOFF_SECONDS << exponent).min(MAX_BACKOFF_SECONDS))
}

/// RFC 3339 to the second (what status fields hold).
pub fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn parse(t: Option<&str>) -> Option<Timestamp> {
    t?.parse().ok()
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(t)
}

pub fn decide(input: &Input) -> Decision {
    let mut decision = Decision::default();
    let Some(run) = input.run else {
        if let Some((pod, carried)) = input
            .pods
            .iter()
            .find_map(|p| p.carried.as_ref().map(|c| (p, c)))
        {
            let owners = workloads(input.pods);
            let spec = MigrationRunSpec {
                fingerprint: input.fingerprint.to_owned(),
                image: carried.image(),
                container: carried.container.clone(),
                volume: carried.volume.clone(),
                pod: pod.settings.clone(),
                workloads: owners.iter().map(Workload::label).collect(),
            };
            decision.create_run = Some((spec, owners));
        }
        annotate(
            &mut decision,
            input.pods,
            Phase::Pending,
            &format!("waiting for MigrationRun {}", input.fingerprint),
        );
        return decision;
    };

    decision.set_owners = new_owners(run, input.pods);
    let mut status = run.status.clone();
    retry(&mut decision, run, &mut status);
    step(&mut decision, input, &mut status);
    let message = status
        .message
        .clone()
        .unwrap_or_else(|| status.phase.as_str().to_owned());
    annotate(&mut decision, input.pods, status.phase, &message);
    if status != run.status {
        decision.status = Some(status);
    }
    decision
}

/// A new `migrations.io/retry` value is consumed in any phase; it restarts only a failed run
/// (a succeeded run is never run again, a live one is already trying).
fn retry(decision: &mut Decision, run: &RunFacts, status: &mut MigrationRunStatus) {
    let Some(token) = &run.retry else { return };
    if status.observed_retry.as_ref() == Some(token) {
        return;
    }
    status.observed_retry = Some(token.clone());
    if status.phase == Phase::Failed {
        *status = MigrationRunStatus {
            observed_retry: Some(token.clone()),
            message: Some(format!("retry requested ({RETRY}={token})")),
            ..MigrationRunStatus::default()
        };
        decision.events.push((
            EventKind::Retrying,
            format!("manual retry ({RETRY}={token}): attempts reset"),
        ));
    }
}

const RETRY: &str = super::crd::RETRY_ANNOTATION;

/// One step of the phase machine.
fn step(decision: &mut Decision, input: &Input, status: &mut MigrationRunStatus) {
    let max = input.max_attempts;
    match status.phase {
        Phase::Succeeded | Phase::Failed => {}
        Phase::Pending => {
            if parse(status.next_attempt_at.as_deref()).is_some_and(|at| input.now < at) {
                return;
            }
            let stale: Vec<String> = input
                .jobs
                .iter()
                .filter(|j| j.state != JobState::Active)
                .filter(|j| {
                    attempt_of(input.fingerprint, &j.name).is_some_and(|n| n > status.attempts)
                })
                .map(|j| j.name.clone())
                .collect();
            if !stale.is_empty() {
                // Started again once they are gone, so an old failure is not taken for new.
                decision.delete_jobs = stale;
                return;
            }
            if status.attempts >= max {
                status.phase = Phase::Failed;
                status.finished_at = Some(rfc3339(input.now));
                status.next_attempt_at = None;
                return;
            }
            let attempt = status.attempts + 1;
            let name = job_name(input.fingerprint, attempt);
            // A Job of this attempt already there: created before a status write that failed.
            if !input.jobs.iter().any(|j| j.name == name) {
                decision.create_job = Some(attempt);
            }
            *status = MigrationRunStatus {
                phase: Phase::Running,
                attempts: attempt,
                job: Some(name.clone()),
                started_at: Some(rfc3339(input.now)),
                message: Some(format!("attempt {attempt} of {max} running in Job {name}")),
                observed_retry: status.observed_retry.take(),
                ..MigrationRunStatus::default()
            };
            decision.events.push((
                EventKind::Started,
                format!("attempt {attempt} of {max}: Job {name}"),
            ));
        }
        Phase::Running => {
            let name = status.job.clone().unwrap_or_default();
            match input.jobs.iter().find(|j| j.name == name) {
                None => {
                    let started = parse(status.started_at.as_deref()).unwrap_or(input.now);
                    if input.now >= plus(started, JOB_GRACE) {
                        fail(
                            decision,
                            input,
                            status,
                            "the Job disappeared before it finished",
                        );
                    }
                }
                Some(job) => match &job.state {
                    JobState::Active => {}
                    JobState::Succeeded => {
                        let started = parse(status.started_at.as_deref()).unwrap_or(input.now);
                        let took = Duration::try_from(input.now.duration_since(started))
                            .unwrap_or_default();
                        decision.succeeded_after = Some(took);
                        status.phase = Phase::Succeeded;
                        status.finished_at = Some(rfc3339(input.now));
                        status.next_attempt_at = None;
                        status.message = Some(format!(
                            "Job {name} succeeded (attempt {} of {max}, {}s)",
                            status.attempts,
                            took.as_secs()
                        ));
                        decision.events.push((
                            EventKind::Succeeded,
                            format!("Job {name} succeeded in {}s", took.as_secs()),
                        ));
                    }
                    JobState::Failed(reason) => {
                        let why = job.message.clone().unwrap_or_else(|| reason.clone());
                        fail(decision, input, status, &why);
                    }
                },
            }
        }
    }
}

/// The current attempt failed: back off, or give up after the last attempt.
fn fail(decision: &mut Decision, input: &Input, status: &mut MigrationRunStatus, why: &str) {
    let (n, max) = (status.attempts, input.max_attempts);
    let job = status.job.clone().unwrap_or_default();
    decision.events.push((
        EventKind::Failed,
        format!("attempt {n} of {max} (Job {job}) failed:\n{why}"),
    ));
    let line = last_line(why);
    if n >= max {
        status.phase = Phase::Failed;
        status.finished_at = Some(rfc3339(input.now));
        status.next_attempt_at = None;
        status.message = Some(format!(
            "attempt {n} of {max} failed: {line} (annotate the MigrationRun {RETRY}=<new value> to retry)"
        ));
        return;
    }
    let wait = backoff(n);
    let at = rfc3339(plus(input.now, wait));
    status.phase = Phase::Pending;
    status.message = Some(format!(
        "attempt {n} of {max} failed: {line}; next attempt at {at}"
    ));
    status.next_attempt_at = Some(at.clone());
    decision.events.push((
        EventKind::Retrying,
        format!("attempt {} of {max} in {}s ({at})", n + 1, wait.as_secs()),
    ));
}

/// The distinct workloads of the pods, in pod order.
fn workloads(pods: &[PodFacts]) -> Vec<Workload> {
    let mut out: Vec<Workload> = Vec::new();
    for pod in pods {
        if !out.iter().any(|w| w.uid == pod.workload.uid) {
            out.push(pod.workload.clone());
        }
    }
    out
}

/// The owners and workloads list with the pods' workloads the run does not list yet.
fn new_owners(run: &RunFacts, pods: &[PodFacts]) -> Option<(Vec<OwnerReference>, Vec<String>)> {
    let joined: Vec<Workload> = workloads(pods)
        .into_iter()
        .filter(|w| !run.owners.iter().any(|o| o.uid == w.uid))
        .collect();
    if joined.is_empty() {
        return None;
    }
    let mut owners = run.owners.clone();
    let mut listed = run.spec.workloads.clone();
    for w in joined {
        owners.push(w.owner_reference());
        if !listed.contains(&w.label()) {
            listed.push(w.label());
        }
    }
    Some((owners, listed))
}

fn annotate(decision: &mut Decision, pods: &[PodFacts], phase: Phase, message: &str) {
    for pod in pods {
        let same_phase = pod.phase.as_deref() == Some(phase.as_str());
        // A pod the pods webhook admitted as Succeeded has no waiter left to read a message.
        if same_phase && (phase == Phase::Succeeded || pod.message.as_deref() == Some(message)) {
            continue;
        }
        decision
            .annotate
            .push((pod.name.clone(), phase, message.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FP: &str = "0123456789abcdef0123456789abcdef01234567";
    const JOB1: &str = "migrate-0123456789abcdef-1";
    const JOB2: &str = "migrate-0123456789abcdef-2";

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().unwrap()
    }

    fn at(offset: i64) -> String {
        rfc3339(
            now()
                .checked_add(SignedDuration::from_secs(offset))
                .unwrap(),
        )
    }

    fn workload(kind: &str, name: &str) -> Workload {
        Workload {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn pod(name: &str, owner: &str) -> PodFacts {
        PodFacts {
            name: name.into(),
            workload: workload("Deployment", owner),
            carried: Some(Carried {
                container: json!({"name": "migrate", "image": "atlas:1"})
                    .as_object()
                    .unwrap()
                    .clone(),
                volume: None,
            }),
            settings: json!({"serviceAccountName": owner})
                .as_object()
                .unwrap()
                .clone(),
            phase: None,
            message: None,
        }
    }

    fn run(status: MigrationRunStatus) -> RunFacts {
        RunFacts {
            spec: MigrationRunSpec {
                fingerprint: FP.into(),
                image: "atlas:1".into(),
                container: Map::new(),
                volume: None,
                pod: Map::new(),
                workloads: vec!["Deployment/api".into()],
            },
            status,
            owners: vec![workload("Deployment", "api").owner_reference()],
            retry: None,
        }
    }

    fn running(attempts: u32, started: i64) -> MigrationRunStatus {
        MigrationRunStatus {
            phase: Phase::Running,
            attempts,
            job: Some(job_name(FP, attempts)),
            started_at: Some(at(started)),
            ..Default::default()
        }
    }

    fn job(name: &str, state: JobState) -> JobFacts {
        JobFacts {
            name: name.into(),
            state,
            message: None,
        }
    }

    fn decide_with(run: Option<&RunFacts>, pods: &[PodFacts], jobs: &[JobFacts]) -> Decision {
        decide(&Input {
            now: now(),
            fingerprint: FP,
            run,
            pods,
            jobs,
            max_attempts: 3,
        })
    }

    fn kinds(d: &Decision) -> Vec<EventKind> {
        d.events.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn no_run_and_no_pods_does_nothing() {
        assert_eq!(decide_with(None, &[], &[]), Decision::default());
    }

    #[test]
    fn waiting_pods_create_the_run_from_the_first_one_owned_by_every_workload() {
        // Two workloads sharing a fingerprint share one run.
        let pods = [pod("a-1", "api"), pod("a-2", "api"), pod("w-1", "worker")];
        let d = decide_with(None, &pods, &[]);
        let (spec, owners) = d.create_run.unwrap();
        assert_eq!(spec.fingerprint, FP);
        assert_eq!(spec.image, "atlas:1");
        assert_eq!(spec.pod["serviceAccountName"], "api");
        assert_eq!(spec.workloads, ["Deployment/api", "Deployment/worker"]);
        assert_eq!(owners.len(), 2);
        assert_eq!(d.annotate.len(), 3);
        assert!(d.annotate.iter().all(|(_, p, _)| *p == Phase::Pending));
        assert_eq!(d.create_job, None);
    }

    #[test]
    fn pods_that_carry_nothing_create_no_run() {
        let mut p = pod("a-1", "api");
        p.carried = None;
        assert_eq!(decide_with(None, &[p], &[]).create_run, None);
    }

    #[test]
    fn a_new_run_starts_attempt_one() {
        let r = run(MigrationRunStatus::default());
        let d = decide_with(Some(&r), &[pod("a-1", "api")], &[]);
        assert_eq!(d.create_job, Some(1));
        let status = d.status.clone().unwrap();
        assert_eq!(
            (status.phase, status.attempts, status.job.as_deref()),
            (Phase::Running, 1, Some(JOB1))
        );
        assert_eq!(status.started_at, Some(at(0)));
        assert_eq!(kinds(&d), [EventKind::Started]);
        assert_eq!(d.annotate[0].1, Phase::Running);
        assert_eq!(d.set_owners, None);
    }

    #[test]
    fn a_job_left_by_a_failed_status_write_is_adopted_not_created_again() {
        let r = run(MigrationRunStatus::default());
        let d = decide_with(Some(&r), &[], &[job(JOB1, JobState::Active)]);
        assert_eq!(d.create_job, None);
        assert_eq!(d.status.unwrap().job.as_deref(), Some(JOB1));
    }

    #[test]
    fn an_active_job_changes_nothing_but_pod_annotations() {
        let mut status = running(1, -5);
        status.message = Some("attempt 1 of 3 running".into());
        let r = run(status);
        let mut p = pod("a-1", "api");
        let d = decide_with(
            Some(&r),
            std::slice::from_ref(&p),
            &[job(JOB1, JobState::Active)],
        );
        assert_eq!((d.status.as_ref(), d.create_job), (None, None));
        assert_eq!(
            d.annotate,
            [(
                "a-1".into(),
                Phase::Running,
                "attempt 1 of 3 running".into()
            )]
        );
        // Already annotated: nothing at all.
        p.phase = Some("Running".into());
        p.message = Some("attempt 1 of 3 running".into());
        assert_eq!(
            decide_with(Some(&r), &[p], &[job(JOB1, JobState::Active)]),
            Decision::default()
        );
    }

    #[test]
    fn a_succeeded_job_succeeds_the_run() {
        let r = run(running(2, -90));
        let d = decide_with(
            Some(&r),
            &[pod("a-1", "api")],
            &[job(JOB2, JobState::Succeeded)],
        );
        let status = d.status.clone().unwrap();
        assert_eq!(status.phase, Phase::Succeeded);
        assert_eq!(status.finished_at, Some(at(0)));
        assert_eq!(d.succeeded_after, Some(Duration::from_secs(90)));
        assert_eq!(kinds(&d), [EventKind::Succeeded]);
        assert_eq!(d.annotate[0].1, Phase::Succeeded);
    }

    #[test]
    fn a_failed_attempt_backs_off_with_the_tools_last_line() {
        let r = run(running(2, -30));
        let mut failed = job(JOB2, JobState::Failed("BackoffLimitExceeded".into()));
        failed.message = Some("applying 3\nError: column exists".into());
        let d = decide_with(Some(&r), &[pod("a-1", "api")], &[failed]);
        let status = d.status.clone().unwrap();
        assert_eq!(status.phase, Phase::Pending);
        assert_eq!(status.attempts, 2);
        assert_eq!(status.next_attempt_at, Some(at(20)));
        assert!(status
            .message
            .as_deref()
            .unwrap()
            .contains("Error: column exists"));
        assert_eq!(kinds(&d), [EventKind::Failed, EventKind::Retrying]);
        assert!(d.events[0].1.contains("applying 3\nError: column exists"));
        assert_eq!(d.annotate[0].1, Phase::Pending);
        assert_eq!(d.create_job, None);
    }

    #[test]
    fn the_next_attempt_waits_for_its_time_then_starts() {
        let mut status = MigrationRunStatus {
            attempts: 1,
            next_attempt_at: Some(at(5)),
            message: Some("attempt 1 failed".into()),
            ..Default::default()
        };
        let d = decide_with(
            Some(&run(status.clone())),
            &[],
            &[job(JOB1, JobState::Failed("x".into()))],
        );
        assert_eq!((d.create_job, d.status), (None, None));
        status.next_attempt_at = Some(at(0));
        let d = decide_with(Some(&run(status)), &[], &[]);
        assert_eq!(d.create_job, Some(2));
        assert_eq!(d.status.unwrap().next_attempt_at, None);
    }

    #[test]
    fn the_last_attempt_failing_fails_the_run() {
        let r = run(running(3, -30));
        let d = decide_with(
            Some(&r),
            &[pod("a-1", "api")],
            &[job(
                &job_name(FP, 3),
                JobState::Failed("DeadlineExceeded".into()),
            )],
        );
        let status = d.status.clone().unwrap();
        assert_eq!(status.phase, Phase::Failed);
        assert_eq!(status.next_attempt_at, None);
        assert!(status.message.unwrap().contains("DeadlineExceeded"));
        assert_eq!(kinds(&d), [EventKind::Failed]);
        assert_eq!(d.annotate[0].1, Phase::Failed);
        // And it stays failed: no new Job.
        let failed = run(d.status.unwrap());
        let again = decide_with(Some(&failed), &[], &[]);
        assert_eq!((again.create_job, again.status), (None, None));
    }

    #[test]
    fn a_new_retry_token_restarts_a_failed_run_with_attempts_reset() {
        let mut r = run(MigrationRunStatus {
            phase: Phase::Failed,
            attempts: 3,
            observed_retry: Some("1".into()),
            ..Default::default()
        });
        r.retry = Some("1".into());
        assert_eq!(
            decide_with(Some(&r), &[], &[]).status,
            None,
            "token already seen"
        );
        r.retry = Some("2".into());
        let d = decide_with(Some(&r), &[], &[]);
        assert_eq!(d.create_job, Some(1));
        let status = d.status.clone().unwrap();
        assert_eq!((status.phase, status.attempts), (Phase::Running, 1));
        assert_eq!(status.observed_retry.as_deref(), Some("2"));
        assert_eq!(kinds(&d), [EventKind::Retrying, EventKind::Started]);
    }

    #[test]
    fn a_retry_deletes_the_old_attempts_jobs_before_starting_again() {
        let mut r = run(MigrationRunStatus {
            phase: Phase::Failed,
            attempts: 2,
            ..Default::default()
        });
        r.retry = Some("again".into());
        let old = [
            job(JOB1, JobState::Failed("x".into())),
            job(JOB2, JobState::Failed("y".into())),
        ];
        let d = decide_with(Some(&r), &[], &old);
        assert_eq!(d.delete_jobs, [JOB1, JOB2]);
        assert_eq!(d.create_job, None);
        let status = d.status.clone().unwrap();
        assert_eq!((status.phase, status.attempts), (Phase::Pending, 0));
        // Next pass, the Jobs gone: attempt 1.
        let reset = run(status);
        assert_eq!(decide_with(Some(&reset), &[], &[]).create_job, Some(1));
        // An active Job of attempt 1 at attempt 0 (its status write failed) is adopted instead.
        let adopted = decide_with(Some(&reset), &[], &[job(JOB1, JobState::Active)]);
        assert_eq!((adopted.delete_jobs.len(), adopted.create_job), (0, None));
    }

    #[test]
    fn a_retry_token_on_a_succeeded_run_is_only_recorded() {
        let mut r = run(MigrationRunStatus {
            phase: Phase::Succeeded,
            attempts: 1,
            ..Default::default()
        });
        r.retry = Some("now".into());
        let d = decide_with(Some(&r), &[], &[]);
        assert_eq!(d.create_job, None);
        let status = d.status.clone().unwrap();
        assert_eq!(
            (status.phase, status.observed_retry.as_deref()),
            (Phase::Succeeded, Some("now"))
        );
    }

    #[test]
    fn a_job_missing_just_after_creation_is_waited_for_then_counted_as_failed() {
        let r = run(running(1, -5));
        assert_eq!(decide_with(Some(&r), &[], &[]).status, None);
        let r = run(running(1, -31));
        let d = decide_with(Some(&r), &[], &[]);
        let status = d.status.clone().unwrap();
        assert_eq!((status.phase, status.attempts), (Phase::Pending, 1));
        assert!(status.message.unwrap().contains("disappeared"));
        assert_eq!(kinds(&d), [EventKind::Failed, EventKind::Retrying]);
    }

    #[test]
    fn a_succeeded_run_only_annotates_new_pods_and_never_starts_a_job() {
        let mut status = running(1, -100);
        status.phase = Phase::Succeeded;
        status.message = Some("done".into());
        let r = run(status);
        let d = decide_with(Some(&r), &[pod("a-9", "api")], &[]);
        assert_eq!(d.create_job, None);
        assert_eq!(d.status, None);
        assert!(d.events.is_empty());
        assert_eq!(
            d.annotate,
            [("a-9".into(), Phase::Succeeded, "done".into())]
        );
        // Admitted as Succeeded by the pods webhook (no message): left alone.
        let mut admitted = pod("a-10", "api");
        admitted.phase = Some("Succeeded".into());
        assert!(decide_with(Some(&r), &[admitted], &[]).annotate.is_empty());
    }

    #[test]
    fn a_second_workload_joins_the_owners_and_workloads() {
        let mut status = running(1, -5);
        status.phase = Phase::Succeeded;
        let r = run(status);
        let d = decide_with(Some(&r), &[pod("a-1", "api"), pod("w-1", "worker")], &[]);
        let (owners, listed) = d.set_owners.unwrap();
        let uids: Vec<_> = owners.iter().map(|o| o.uid.as_str()).collect();
        assert_eq!(uids, ["uid-api", "uid-worker"]);
        assert!(owners.iter().all(|o| o.controller != Some(true)));
        assert_eq!(listed, ["Deployment/api", "Deployment/worker"]);
    }

    #[test]
    fn lowering_max_attempts_below_the_count_fails_a_pending_run() {
        let r = run(MigrationRunStatus {
            attempts: 3,
            ..Default::default()
        });
        let d = decide_with(Some(&r), &[], &[]);
        assert_eq!(d.create_job, None);
        assert_eq!(d.status.unwrap().phase, Phase::Failed);
    }
}
