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
