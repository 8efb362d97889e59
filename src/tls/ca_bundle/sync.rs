//! The caBundle protocol's I/O, thin around [`super::protocol::plan`]: get the webhook
//! configuration, plan, patch; a write in between (a failed `test`, a conflict) is retried at
//! once with a fresh read.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use rustls::pki_types::CertificateDer;

use super::protocol::{plan, Held, Needs};
use super::BundleTarget;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("Kubernetes API request failed")]
    Kube(#[from] kube::Error),
    #[error("the webhook configuration changed while it was being updated; retrying")]
    Conflict,
}

/// The caBundle after a sync, and whether the sync had to add a CA this replica needs (the API
/// server then needs a moment before it trusts a certificate from it).
#[derive(Debug)]
pub(crate) struct Synced {
    pub(crate) bundle: Vec<CertificateDer<'static>>,
    pub(crate) added_mine: bool,
}

/// Retries after a conflict before giving up until the next check.
const CONFLICT_RETRIES: u64 = 4;

/// Brings the caBundle to the CAs still needed and records what this replica needs, in one
/// patch that fails if the configuration changed since it was read. Returns the caBundle's CAs
/// as stored, or `None` when the configuration does not exist (yet).
async fn sync_bundle(
    client: &Client,
    target: &BundleTarget,
    lead_ca: Option<&[u8]>,
    mine: &[Vec<u8>],
    stale_after: i64,
) -> Result<Option<Synced>, SyncError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(current) = api.get_opt(&target.webhook_config).await? else {
        return Ok(None);
    };
    let needs = Needs {
        replica: &target.replica,
        lead_ca,
        mine,
        stale_after,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let plan = plan(&Held::of(&current), &needs, now);
    match api
        .patch(
            &target.webhook_config,
            &PatchParams::default(),
            &Patch::<()>::Json(plan.patch),
        )
        .await
    {
        Ok(_) => {}
        // A failed `test`: someone else wrote in between; the next attempt reads again.
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 409 => {
            return Err(SyncError::Conflict)
        }
        Err(e) => return Err(e.into()),
    }
    if plan.bundle_changed {
        tracing::info!(webhook_config = %target.webhook_config, "updated the caBundle");
    }
    Ok(Some(Synced {
        bundle: plan.bundle,
        added_mine: plan.added_mine,
    }))
}

/// Syncs, retrying at once (with a little jitter) when another replica wrote in between, so
/// replicas started together do not each lose a whole interval.
pub(crate) async fn sync_with_retries(
    client: &Client,
    target: &BundleTarget,
    lead_ca: Option<&[u8]>,
    mine: &[Vec<u8>],
    stale_after: i64,
) -> Result<Option<Synced>, SyncError> {
    let mut attempt = 0u64;
    loop {
        match sync_bundle(client, target, lead_ca, mine, stale_after).await {
            Err(SyncError::Conflict) if attempt < CONFLICT_RETRIES => {
                attempt += 1;
                let jitter = u64::from(std::process::id() % 97)
                    + u64::from(time::OffsetDateTime::now_utc().nanosecond() % 101);
                tokio::time::sleep(Duration::from_millis(50 * attempt + jitter)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_mock::{self, ApiServer};
    use crate::tls::ca::Ca;
    use crate::tls::ca_bundle::testing::{annotations, apply, bundle, config, CONFIG_PATH};
    use crate::tls::chain::{der_of, fingerprint};
    use http::Method;
    use serde_json::{json, Value};

    const STALE_AFTER: i64 = 30;
    const R1: &str = "serving.migrations.io/r1";
    const R2: &str = "serving.migrations.io/r2";
    const PREVIOUS: &str = "previous.serving.migrations.io/cas";

    fn ca(name: &str) -> Vec<u8> {
        der_of(&Ca::generate(name, 1).unwrap().cert_pem())
    }

    fn fp(der: &[u8]) -> String {
        fingerprint(der).unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// Replica r1 syncs, leading with `lead` and needing `mine`.
    fn spawn_sync(
        client: Client,
        lead: Option<Vec<u8>>,
        mine: Vec<Vec<u8>>,
    ) -> tokio::task::JoinHandle<Result<Option<Synced>, SyncError>> {
        let target = BundleTarget {
            webhook_config: "wh".to_owned(),
            replica: "r1".to_owned(),
        };
        tokio::spawn(async move {
            sync_with_retries(&client, &target, lead.as_deref(), &mine, STALE_AFTER).await
        })
    }

    /// Serves `current` to the GET and applies the PATCH to it; returns the result.
    async fn serve_round(api: &mut ApiServer, current: &Value) -> Value {
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, current);
        apply(current, api.expect(Method::PATCH, CONFIG_PATH).await)
    }

    #[tokio::test]
    async fn the_first_record_on_an_empty_configuration_adds_the_ca() {
        let a = ca("A");
        let (client, mut api) = api_mock::pair();
        let task = spawn_sync(client, Some(a.clone()), vec![a.clone()]);
        let before = now();
        let after = serve_round(&mut api, &config(Value::Null, &[None])).await;
        let synced = api_mock::finish(task).await.unwrap().unwrap();
        let record = &annotations(&after)[R1];
        let (time, fps) = record.split_once(' ').unwrap();
        assert!(
            (before..=now()).contains(&time.parse().unwrap()),
            "{record}"
        );
        assert_eq!(fps, fp(&a));
        assert_eq!(bundle(&after, 0), vec![a.clone()]);
        assert_eq!(synced.bundle, vec![CertificateDer::from(a)]);
        assert!(synced.added_mine);
    }

    #[tokio::test]
    async fn a_peers_record_and_its_ca_are_kept() {
        let (a, b) = (ca("A"), ca("B"));
        let (client, mut api) = api_mock::pair();
        let task = spawn_sync(client, Some(a.clone()), vec![a.clone()]);
        let peer = format!("{} {}", now() - 5, fp(&b));
        let current = config(json!({ R2: peer }), &[Some(std::slice::from_ref(&b))]);
        let after = serve_round(&mut api, &current).await;
        api_mock::finish(task).await.unwrap().unwrap();
        assert_eq!(annotations(&after)[R2], peer);
        assert_eq!(bundle(&after, 0), vec![a, b]);
    }

    #[tokio::test]
    async fn a_replica_gone_longer_than_the_threshold_is_dropped_with_its_ca() {
        let (a, b) = (ca("A"), ca("B"));
        let (client, mut api) = api_mock::pair();
        let task = spawn_sync(client, Some(a.clone()), vec![a.clone()]);
        let gone = format!("{} {}", now() - STALE_AFTER - 5, fp(&b));
        let claimed = format!("{},{}", fp(&a), fp(&b));
        let current = config(
            json!({ R2: gone, "claimed.serving.migrations.io/cas": claimed }),
            &[Some(&[a.clone(), b.clone()])],
        );
        let after = serve_round(&mut api, &current).await;
        api_mock::finish(task).await.unwrap().unwrap();
        assert!(!annotations(&after).contains_key(R2), "{after}");
        assert_eq!(bundle(&after, 0), vec![a]);
    }

    #[tokio::test]
    async fn a_ca_no_replica_recorded_is_kept_ten_minutes_then_dropped() {
        let (a, helm) = (ca("A"), ca("helm"));
        let (client, mut api) = api_mock::pair();
        // A switch from another TLS mode: its CA is in the caBundle, no record names it.
        let task = spawn_sync(client.clone(), Some(a.clone()), vec![a.clone()]);
        let after = serve_round(
            &mut api,
            &config(Value::Null, &[Some(std::slice::from_ref(&helm))]),
        )
        .await;
        api_mock::finish(task).await.unwrap().unwrap();
        assert_eq!(bundle(&after, 0), vec![a.clone(), helm.clone()]);
        let seen = &annotations(&after)[PREVIOUS];
        let (f, t) = seen.split_once('=').unwrap();
        assert_eq!(f, fp(&helm));
        // Still there just under ten minutes later…
        let first_seen: i64 = t.parse().unwrap();
        let mut current = after;
        current["metadata"]["annotations"][PREVIOUS] = json!(format!("{f}={}", now() - 590));
        let task = spawn_sync(client.clone(), Some(a.clone()), vec![a.clone()]);
        let after = serve_round(&mut api, &current).await;
        api_mock::finish(task).await.unwrap().unwrap();
        assert_eq!(bundle(&after, 0), vec![a.clone(), helm.clone()]);
        assert!(first_seen >= now() - 5);
        // …and gone after.
        let mut current = after;
        current["metadata"]["annotations"][PREVIOUS] = json!(format!("{f}={}", now() - 610));
        let task = spawn_sync(client, Some(a.clone()), vec![a.clone()]);
        let after = serve_round(&mut api, &current).await;
        api_mock::finish(task).await.unwrap().unwrap();
        assert_eq!(bundle(&after, 0), vec![a]);
        assert!(!annotations(&after).contains_key(PREVIOUS), "{after}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflict_is_retried_with_a_fresh_read() {
        let (a, b) = (ca("A"), ca("B"));
        let (client, mut api) = api_mock::pair();
        let task = spawn_sync(client, Some(a.clone()), vec![a.clone()]);
        let first = config(Value::Null, &[None]);
        api.expect(Method::GET, CONFIG_PATH).await.json(200, &first);
        api.expect(Method::PATCH, CONFIG_PATH).await.conflict();
        // A peer wrote in between: the retry reads its record and keeps it.
        let peer = format!("{} {}", now(), fp(&b));
        let second = config(json!({ R2: peer }), &[Some(std::slice::from_ref(&b))]);
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &second);
        // A failed `test` is a conflict too.
        api.expect(Method::PATCH, CONFIG_PATH).await.status(
            422,
            "Invalid",
            "the test operation failed",
        );
        let after = serve_round(&mut api, &second).await;
        let synced = api_mock::finish(task).await.unwrap().unwrap();
        assert_eq!(annotations(&after)[R2], peer);
        assert_eq!(bundle(&after, 0), vec![a.clone(), b.clone()]);
        assert_eq!(synced.bundle.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn conflicts_give_up_after_the_retries() {
        let a = ca("A");
        let (client, mut api) = api_mock::pair();
        let task = spawn_sync(client, Some(a.clone()), vec![a]);
        let current = config(Value::Null, &[None]);
        for _ in 0..=CONFLICT_RETRIES {
            api.expect(Method::GET, CONFIG_PATH)
                .await
                .json(200, &current);
            api.expect(Method::PATCH, CONFIG_PATH).await.conflict();
        }
        let result = api_mock::finish(task).await;
        assert!(matches!(result, Err(SyncError::Conflict)), "{result:?}");
    }

    #[tokio::test]
    async fn an_absent_configuration_is_not_created() {
        let a = ca("A");
        let (client, mut api) = api_mock::pair();
        let task = spawn_sync(client, Some(a.clone()), vec![a]);
        api.expect(Method::GET, CONFIG_PATH).await.not_found();
        assert!(api_mock::finish(task).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn another_api_error_is_not_retried() {
        let a = ca("A");
        let (client, mut api) = api_mock::pair();
        let task = spawn_sync(client, Some(a.clone()), vec![a]);
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &config(Value::Null, &[None]));
        api.expect(Method::PATCH, CONFIG_PATH)
            .await
            .status(403, "Forbidden", "forbidden");
        let result = api_mock::finish(task).await;
        assert!(matches!(result, Err(SyncError::Kube(_))), "{result:?}");
    }
}
