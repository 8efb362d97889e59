//! Self-managed certificates (`serve --self-managed`): the replicas agree on one CA kept in a
//! Secret of their namespace (create-if-absent: a replica that loses the race reads the
//! winner's), each issues its own serving certificate from it, and the MutatingWebhookConfiguration's
//! caBundle is kept current. Needs only get/create on that Secret and get/patch on that one
//! webhook configuration.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, TestOperation};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;

use super::ca::{self as certs, Ca, CertError};
use super::store::{self as tls, CertStore};

const CA_CERT_KEY: &str = "ca.crt";
const CA_KEY_KEY: &str = "ca.key";
/// Ten years: rotating the CA means a caBundle overlap, which this mode does not do yet.
const CA_DAYS: u32 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    #[error("Kubernetes API request failed")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("Secret {namespace}/{name} exists but holds no usable {CA_CERT_KEY} and {CA_KEY_KEY}; delete it to have a new CA created")]
    BadCaSecret { namespace: String, name: String },
}

/// Where the self-managed certificate material lives and what it is for.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    pub namespace: String,
    pub service: String,
    pub ca_secret: String,
    pub webhook_config: String,
    pub extra_ips: Vec<IpAddr>,
    pub cert_days: u32,
}

impl SelfManaged {
    fn dns_names(&self) -> Vec<String> {
        certs::service_dns_names(&self.service, &self.namespace)
    }
}

/// The CA every replica shares, read from or created in the Secret.
pub async fn shared_ca(client: &Client, cfg: &SelfManaged) -> Result<Ca, SelfManagedError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    if let Some(existing) = secrets.get_opt(&cfg.ca_secret).await? {
        return ca_from_secret(&existing, cfg);
    }
    let ca = Ca::generate(&format!("{} self-managed CA", cfg.service), CA_DAYS)?;
    let mut data = BTreeMap::new();
    data.insert(
        CA_CERT_KEY.to_owned(),
        ByteString(ca.cert_pem().into_bytes()),
    );
    data.insert(CA_KEY_KEY.to_owned(), ByteString(ca.key_pem().into_bytes()));
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(cfg.ca_secret.clone()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "migration-injector".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %cfg.ca_secret, "created the shared CA");
            Ok(ca)
        }
        // Another replica created it first: use the winner's, so exactly one CA exists.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::info!(secret = %cfg.ca_secret, "another replica created the CA first; using it");
            let winner = secrets.get(&cfg.ca_secret).await?;
            ca_from_secret(&winner, cfg)
        }
        Err(e) => Err(e.into()),
    }
}

fn ca_from_secret(secret: &Secret, cfg: &SelfManaged) -> Result<Ca, SelfManagedError> {
    let bad = || SelfManagedError::BadCaSecret {
        namespace: cfg.namespace.clone(),
        name: cfg.ca_secret.clone(),
    };
    let data = secret.data.as_ref().ok_or_else(bad)?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(bad)
    };
    Ca::from_pem(&text(CA_CERT_KEY)?, &text(CA_KEY_KEY)?).map_err(|_| bad())
}

/// Issues a serving certificate from `ca` and puts it in `store`.
pub fn issue_into(ca: &Ca, cfg: &SelfManaged, store: &CertStore) -> Result<(), SelfManagedError> {
    let pair = ca.issue_server(&cfg.dns_names(), &cfg.extra_ips, cfg.cert_days)?;
    store.set(tls::certified_key(
        pair.cert_pem.as_bytes(),
        pair.key_pem.as_bytes(),
        "self-managed pair",
    )?);
    Ok(())
}

/// Sets the caBundle of every webhook in the configuration to `ca_pem` where it differs.
/// Returns whether anything was patched.
pub async fn ensure_ca_bundle(
    client: &Client,
    cfg: &SelfManaged,
    ca_pem: &str,
) -> Result<bool, SelfManagedError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let current = api.get(&cfg.webhook_config).await?;
    let wanted = ca_pem.as_bytes();
    let mut ops = Vec::new();
    for (i, webhook) in current.webhooks.iter().flatten().enumerate() {
        if webhook
            .client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|b| b.0 == wanted)
        {
            continue;
        }
        // `test` first: if the list changed since we read it, the patch fails instead of
        // writing into the wrong webhook.
        ops.push(PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens([
                "webhooks".to_owned(),
                i.to_string(),
                "name".to_owned(),
            ]),
            value: Value::String(webhook.name.clone()),
        }));
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens([
                "webhooks".to_owned(),
                i.to_string(),
                "clientConfig".to_owned(),
                "caBundle".to_owned(),
            ]),
            value: Value::String(base64::engine::general_purpose::STANDARD.encode(wanted)),
        }));
    }
    if ops.is_empty() {
        return Ok(false);
    }
    api.patch(
        &cfg.webhook_config,
        &PatchParams::default(),
        &Patch::<()>::Json(json_patch::Patch(ops)),
    )
    .await?;
    tracing::info!(webhook_config = %cfg.webhook_config, "updated the caBundle");
    Ok(true)
}

/// Start-up: the shared CA, a serving certificate, and the caBundle. The caBundle patch is
/// retried by [`maintain`] if it fails now (the configuration may be installed after us).
pub async fn bootstrap(
    client: &Client,
    cfg: &SelfManaged,
) -> Result<(Ca, Arc<CertStore>), SelfManagedError> {
    let ca = shared_ca(client, cfg).await?;
    let store = Arc::new(CertStore::default());
    issue_into(&ca, cfg, &store)?;
    if let Err(e) = ensure_ca_bundle(client, cfg, &ca.cert_pem()).await {
        tracing::warn!(error = %e, "could not set the caBundle yet; retrying");
    }
    Ok((ca, store))
}

/// Whether a serving certificate valid for `cert_days` and expiring at `not_after` is due for
/// renewal at `now`: with a third of its life left, so a failing renewal has time to be noticed.
pub fn needs_renewal(not_after: Option<i64>, now: i64, cert_days: u32) -> bool {
    let renew_before = i64::from(cert_days) * 86_400 / 3;
    not_after.is_none_or(|t| t - now < renew_before)
}

/// Keeps the serving certificate fresh and the caBundle current (a `helm upgrade` or someone
/// else may have reset it), checking every `interval`.
pub async fn maintain(
    client: Client,
    cfg: SelfManaged,
    mut ca: Ca,
    store: Arc<CertStore>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Follow the Secret: if it was replaced (or deleted, and re-created by whichever replica
        // got there first), adopt that CA, so every replica and the caBundle converge on one
        // instead of overwriting each other's caBundle.
        let mut reissue = false;
        match shared_ca(&client, &cfg).await {
            Ok(latest) if latest.cert_pem() != ca.cert_pem() => {
                tracing::warn!(secret = %cfg.ca_secret, "the shared CA changed; adopting it");
                ca = latest;
                reissue = true;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the shared CA"),
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if reissue || needs_renewal(store.not_after(), now, cfg.cert_days) {
            match issue_into(&ca, &cfg, &store) {
                Ok(()) => {
                    tracing::info!("issued a new self-managed serving certificate");
                }
                Err(e) => tracing::error!(error = %e, "issuing the serving certificate failed"),
            }
        }
        if let Err(e) = ensure_ca_bundle(&client, &cfg, &ca.cert_pem()).await {
            tracing::warn!(error = %e, "could not update the caBundle");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_with_a_third_of_the_life_left() {
        let day = 86_400;
        assert!(needs_renewal(None, 0, 90));
        assert!(!needs_renewal(Some(90 * day), 0, 90));
        assert!(!needs_renewal(Some(31 * day), 0, 90));
        assert!(needs_renewal(Some(29 * day), 0, 90));
        assert!(
            needs_renewal(Some(-1), 0, 90),
            "an expired certificate is renewed"
        );
    }

    #[test]
    fn a_ca_secret_without_key_is_refused_with_the_fix() {
        let cfg = SelfManaged {
            namespace: "ns".into(),
            service: "svc".into(),
            ca_secret: "ca".into(),
            webhook_config: "wh".into(),
            extra_ips: vec![],
            cert_days: 90,
        };
        let mut data = BTreeMap::new();
        data.insert(CA_CERT_KEY.to_owned(), ByteString(b"not a cert".to_vec()));
        let secret = Secret {
            data: Some(data),
            ..Secret::default()
        };
        let err = ca_from_secret(&secret, &cfg).err().unwrap().to_string();
        assert!(err.contains("ns/ca") && err.contains("delete it"), "{err}");
        // A Secret written by shared_ca round-trips.
        let ca = Ca::generate("t", 1).unwrap();
        let mut data = BTreeMap::new();
        data.insert(
            CA_CERT_KEY.to_owned(),
            ByteString(ca.cert_pem().into_bytes()),
        );
        data.insert(CA_KEY_KEY.to_owned(), ByteString(ca.key_pem().into_bytes()));
        let back = ca_from_secret(
            &Secret {
                data: Some(data),
                ..Secret::default()
            },
            &cfg,
        )
        .unwrap();
        assert_eq!(back.cert_pem(), ca.cert_pem());
        let store = CertStore::default();
        issue_into(&back, &cfg, &store).unwrap();
        assert!(store.is_valid());
    }
}
