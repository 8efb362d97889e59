//! Leader election over a coordination.k8s.io/v1 Lease, as client-go does it: the holder renews
//! every [`RENEW_EVERY`]; another replica takes the Lease over only once it has not been renewed
//! for its whole duration; every write carries the read resourceVersion, so of two replicas
//! racing, one gets a 409 and stays a follower. A leader that cannot renew within
//! [`RENEW_DEADLINE`] stops (the process exits and restarts as a follower).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Shorter than the duration: a leader stops acting before a peer may take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
}

/// What to do with the Lease as read at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create,
    Renew,
    TakeOver,
    /// Someone else holds it.
    Follow(String),
}

/// Pure: the Lease's holder and age decide.
pub fn step(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = match spec.renew_time.or(spec.acquire_time) {
        Some(MicroTime(renewed)) => renewed.checked_add(duration).map_or(true, |end| end < now),
        None => true,
    };
    if expired {
        Step::TakeOver
    } else {
        Step::Follow(holder)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("lost the Lease {0}: stopping so that only one replica acts")]
    Lost(String),
}

impl LeaseConfig {
    fn error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }
}

/// A write of the Lease: Ok(true) when it took; a 409 (another replica wrote first) is Ok(false).
fn written(result: Result<Lease, kube::Error>, config: &LeaseConfig) -> Result<bool, LeaseError> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => Ok(false),
        Err(e) => Err(config.error(e)),
    }
}

/// One round: read the Lease and create, renew or take it over. Ok(true): this replica leads
/// until `now + LEASE_DURATION`.
pub async fn try_lead(
    client: &Client,
    config: &LeaseConfig,
    now: Timestamp,
) -> Result<bool, LeaseError> {
    let api = Api::<Lease>::namespaced(client.clone(), &config.namespace);
    let wrap = |source| config.error(source);
    let current = api.get_opt(&config.name).await.map_err(wrap)?;
    let seconds = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
    let result = match step(current.as_ref(), &config.identity, now) {
        Step::Follow(_) => return Ok(false),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
        step @ (Step::Renew | Step::TakeOver) => {
            let mut lease = current.unwrap_or_default();
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if step == Step::TakeOver {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(MicroTime(now));
            // The read resourceVersion travels in the object: a concurrent write wins, we 409.
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    written(result, config)
}

/// On shutdown: hand the Lease back if this replica holds it, as client-go's ReleaseOnCancel
/// does, so a standby takes over at its next try instead of after the whole duration.
/// Ok(true): released; Ok(false): held by another (or absent), left alone. The write carries the
/// read resourceVersion: a Lease taken over meanwhile is not touched.
pub async fn release(
    client: &Client,
    config: &LeaseConfig,
    now: Timestamp,
) -> Result<bool, LeaseError> {
    let api = Api::<Lease>::namespaced(client.clone(), &config.namespace);
    let wrap = |source| config.error(source);
    let Some(mut lease) = api.get_opt(&config.name).await.map_err(wrap)? else {
        return Ok(false);
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(false);
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(now));
    let result = api
        .replace(&config.name, &PostParams::default(), &lease)
        .await;
    written(result, config)
}

/// Keeps trying to lead, publishing whether this replica leads; returns an error once a leader
/// could not renew in time or found the Lease held by another.
pub async fn keep(client: Client, config: LeaseConfig, leader: watch::Sender<bool>) -> LeaseError {
    keep_every(client, config, leader, RENEW_EVERY).await
}

async fn keep_every(
    client: Client,
    config: LeaseConfig,
    leader: watch::Sender<bool>,
    every: Duration,
) -> LeaseError {
    let mut renewed: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(every);
    // After a slow API call, wait a full period rather than renewing in a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = try_lead(&client, &config, Timestamp::now()).await;
        match (result, renewed) {
            (Ok(true), previous) => {
                if previous.is_none() {
                    tracing::info!(lease = %config.name, identity = %config.identity, "leading");
                }
                renewed = Some(tokio::time::Instant::now());
                leader.send_replace(true);
            }
            (Ok(false), None) => {}
            (Ok(false), Some(_)) => {
                leader.send_replace(false);
                return LeaseError::Lost(format!("{}: another replica holds it", config.name));
            }
            (Err(e), Some(at)) if at.elapsed() >= RENEW_DEADLINE => {
                leader.send_replace(false);
                return LeaseError::Lost(format!("{}: {}", config.name, crate::error_chain(&e)));
            }
            (Err(e), _) => tracing::warn!(error = %crate::error_chain(&e), "leader election"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_mock;
    use http::Method;
    use serde_json::{json, Value};

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/mi/leases/ctl";

    fn now() -> Timestamp {
        "2026-01-01T00:00:30Z".parse().unwrap()
    }

    fn lease(holder: &str, renewed: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "ctl", "namespace": "mi", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                "renewTime": renewed, "leaseTransitions": 2}})
    }

    fn parsed(v: Value) -> Lease {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn steps() {
        let me = "pod-a";
        assert_eq!(step(None, me, now()), Step::Create);
        let mine = parsed(lease(me, "2026-01-01T00:00:00.000000Z"));
        assert_eq!(step(Some(&mine), me, now()), Step::Renew);
        // Renewed 10 s ago with 15 s duration: held.
        let fresh = parsed(lease("pod-b", "2026-01-01T00:00:20.000000Z"));
        assert_eq!(step(Some(&fresh), me, now()), Step::Follow("pod-b".into()));
        // Exactly at the end: still held; one second later: expired.
        let edge = parsed(lease("pod-b", "2026-01-01T00:00:15.000000Z"));
        assert_eq!(step(Some(&edge), me, now()), Step::Follow("pod-b".into()));
        let stale = parsed(lease("pod-b", "2026-01-01T00:00:14.000000Z"));
        assert_eq!(step(Some(&stale), me, now()), Step::TakeOver);
        let released = parsed(lease("", "2026-01-01T00:00:29.000000Z"));
        assert_eq!(step(Some(&released), me, now()), Step::TakeOver);
    }

    fn config() -> LeaseConfig {
        LeaseConfig {
            namespace: "mi".into(),
            name: "ctl".into(),
            identity: "pod-a".into(),
        }
    }

    fn spawn(client: Client) -> tokio::task::JoinHandle<Result<bool, LeaseError>> {
        tokio::spawn(async move { try_lead(&client, &config(), now()).await })
    }

    #[tokio::test]
    async fn an_absent_lease_is_created_held_by_this_pod() {
        let (client, mut api) = api_mock::pair();
        let task = spawn(client);
        api.expect(Method::GET, PATH).await.not_found();
        let call = api
            .expect(
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/mi/leases",
            )
            .await;
        assert_eq!(call.body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(call.body["spec"]["leaseDurationSeconds"], 15);
        let body = call.body.clone();
        call.json(201, &body);
        assert!(api_mock::finish(task).await.unwrap());
    }

    #[tokio::test]
    async fn the_holder_renews_with_the_read_resource_version() {
        let (client, mut api) = api_mock::pair();
        let task = spawn(client);
        api.expect(Method::GET, PATH)
            .await
            .json(200, &lease("pod-a", "2026-01-01T00:00:25.000000Z"));
        let call = api.expect(Method::PUT, PATH).await;
        assert_eq!(call.body["metadata"]["resourceVersion"], "7");
        assert_eq!(
            call.body["spec"]["renewTime"],
            "2026-01-01T00:00:30.000000Z"
        );
        assert_eq!(call.body["spec"]["leaseTransitions"], 2);
        let body = call.body.clone();
        call.json(200, &body);
        assert!(api_mock::finish(task).await.unwrap());
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_a_conflict_means_follow() {
        let (client, mut api) = api_mock::pair();
        let task = spawn(client);
        api.expect(Method::GET, PATH)
            .await
            .json(200, &lease("pod-b", "2026-01-01T00:00:01.000000Z"));
        let call = api.expect(Method::PUT, PATH).await;
        assert_eq!(call.body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(call.body["spec"]["leaseTransitions"], 3);
        call.conflict();
        assert!(!api_mock::finish(task).await.unwrap());
    }

    #[tokio::test]
    async fn a_lease_held_by_another_is_left_alone() {
        let (client, mut api) = api_mock::pair();
        let task = spawn(client);
        api.expect(Method::GET, PATH)
            .await
            .json(200, &lease("pod-b", "2026-01-01T00:00:29.000000Z"));
        assert!(!api_mock::finish(task).await.unwrap());
    }

    #[tokio::test]
    async fn a_leader_whose_lease_was_taken_over_stops() {
        let (client, mut api) = api_mock::pair();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(keep_every(client, config(), tx, Duration::from_millis(10)));
        api.expect(Method::GET, PATH).await.not_found();
        let call = api
            .expect(
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/mi/leases",
            )
            .await;
        let body = call.body.clone();
        call.json(201, &body);
        // Another replica took it over (this one paused longer than the duration).
        api.expect(Method::GET, PATH)
            .await
            .json(200, &lease("pod-b", &rfc_now()));
        let error = api_mock::finish(task).await;
        assert!(matches!(error, LeaseError::Lost(_)), "{error}");
        assert!(!*rx.borrow());
    }

    #[tokio::test]
    async fn release_hands_back_only_a_lease_this_replica_holds() {
        let (client, mut api) = api_mock::pair();
        let task = tokio::spawn(async move { release(&client, &config(), now()).await });
        api.expect(Method::GET, PATH)
            .await
            .json(200, &lease("pod-a", "2026-01-01T00:00:28.000000Z"));
        let call = api.expect(Method::PUT, PATH).await;
        assert_eq!(call.body["metadata"]["resourceVersion"], "7");
        assert!(
            call.body["spec"].get("holderIdentity").is_none(),
            "{}",
            call.body
        );
        assert_eq!(call.body["spec"]["leaseDurationSeconds"], 1);
        // A standby reading it now takes it over at once.
        let released: Lease = serde_json::from_value(call.body.clone()).unwrap();
        assert_eq!(step(Some(&released), "pod-b", now()), Step::TakeOver);
        let body = call.body.clone();
        call.json(200, &body);
        assert!(api_mock::finish(task).await.unwrap());

        // Held by another: no write.
        let (client, mut api) = api_mock::pair();
        let task = tokio::spawn(async move { release(&client, &config(), now()).await });
        api.expect(Method::GET, PATH)
            .await
            .json(200, &lease("pod-b", "2026-01-01T00:00:28.000000Z"));
        assert!(!api_mock::finish(task).await.unwrap());

        // Taken over between the read and the write: the 409 leaves it alone.
        let (client, mut api) = api_mock::pair();
        let task = tokio::spawn(async move { release(&client, &config(), now()).await });
        api.expect(Method::GET, PATH)
            .await
            .json(200, &lease("pod-a", "2026-01-01T00:00:28.000000Z"));
        api.expect(Method::PUT, PATH).await.conflict();
        assert!(!api_mock::finish(task).await.unwrap());
    }

    fn rfc_now() -> String {
        Timestamp::now().to_string()
    }
}
