//! Self-managed certificates (`serve --self-managed`): the replicas agree on one CA kept in a
//! Secret of their namespace (create-if-absent: a replica that loses the race reads the
//! winner's), each issues its own serving certificate from it, and the MutatingWebhookConfiguration's
//! caBundle is kept current. Needs only get/create on that Secret and get/patch on that one
//! webhook configuration.
//!
//! A CA change loses no request: each replica records on the webhook configuration (annotation
//! `serving.migrations.io/<replica>`) the CAs it needs trusted — the one it serves, and the one
//! it is about to serve — and the caBundle keeps every CA some live replica needs. A replica
//! puts a new CA into the caBundle before it serves a certificate from it, and an old CA leaves
//! the caBundle only when no replica has needed it for a few check intervals.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, TestOperation};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rustls::pki_types::CertificateDer;
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
    #[error("the webhook configuration changed while it was being updated; retrying")]
    Conflict,
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("Secret {namespace}/{name} is refused as the CA: {reason}; fix it, or delete it to have a new CA created")]
    BadCaSecret {
        namespace: String,
        name: String,
        reason: String,
    },
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
    /// This replica's name (the pod name), unique among the replicas.
    pub replica: String,
}

impl SelfManaged {
    fn dns_names(&self) -> Vec<String> {
        certs::service_dns_names(&self.service, &self.namespace)
    }

    fn target(&self) -> BundleTarget {
        BundleTarget {
            webhook_config: self.webhook_config.clone(),
            replica: self.replica.clone(),
        }
    }
}

/// The webhook configuration whose caBundle a replica keeps, and the replica's unique name,
/// under which it records the CAs it needs trusted.
#[derive(Debug, Clone)]
pub struct BundleTarget {
    pub webhook_config: String,
    pub replica: String,
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
    let bad = |reason: &str| SelfManagedError::BadCaSecret {
        namespace: cfg.namespace.clone(),
        name: cfg.ca_secret.clone(),
        reason: reason.to_owned(),
    };
    let data = secret.data.as_ref().ok_or_else(|| bad("it has no data"))?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| bad(&format!("it holds no {k}")))
    };
    let (cert_pem, key_pem) = (text(CA_CERT_KEY)?, text(CA_KEY_KEY)?);
    check_ca(&cert_pem, &key_pem).map_err(|reason| bad(&reason))?;
    Ca::from_pem(&cert_pem, &key_pem).map_err(|e| bad(&e.to_string()))
}

/// Refuses a CA that cannot sign what the replicas serve: not a certificate, not a CA, not valid
/// now, or a key that is not the certificate's.
fn check_ca(cert_pem: &str, key_pem: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| format!("{CA_CERT_KEY} is not a PEM certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| format!("{CA_CERT_KEY} is not an X.509 certificate"))?;
    if !cert.is_ca() {
        return Err(format!(
            "{CA_CERT_KEY} is not a CA certificate (basicConstraints CA:false)"
        ));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let validity = cert.validity();
    if validity.not_after.timestamp() <= now || validity.not_before.timestamp() > now + 60 {
        return Err(format!(
            "{CA_CERT_KEY} is not valid now (valid from {} to {})",
            validity.not_before, validity.not_after
        ));
    }
    let key = rcgen::KeyPair::from_pem(key_pem)
        .map_err(|_| format!("{CA_KEY_KEY} is not a PEM private key"))?;
    if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(format!("{CA_KEY_KEY} is not the key of {CA_CERT_KEY}"));
    }
    Ok(())
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

/// Annotation prefix, on the webhook configuration, of each replica's needed CAs.
const NEEDS_PREFIX: &str = "serving.migrations.io/";
/// Annotation recording CAs found in the caBundle that no replica claims (those of the pods of
/// another TLS mode, during a switch to selfManaged), with when they were first seen.
const PREVIOUS_KEY: &str = "previous.serving.migrations.io/cas";
/// Annotation listing the CAs replicas have recorded, most recent last.
const CLAIMED_KEY: &str = "claimed.serving.migrations.io/cas";
const MAX_CLAIMED: usize = 16;
/// How long unclaimed CAs stay trusted: longer than any rollout of the old pods.
const PREVIOUS_TTL_SECONDS: i64 = 600;
/// Time for the API server to load a changed caBundle before a certificate from a new CA is
/// served (its webhook configuration informer takes well under a second).
pub(crate) const BUNDLE_PICKUP: Duration = Duration::from_secs(2);

/// A short stable identifier of a CA: the end of its public key.
fn fingerprint(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let key = cert.public_key().subject_public_key.data.as_ref();
    let tail = &key[key.len().saturating_sub(16)..];
    Some(tail.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn pem_ders(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

fn to_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The annotation key of a replica's record (annotation names are at most 63 characters).
fn needs_key(replica: &str) -> String {
    let name: String = replica
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    format!(
        "{NEEDS_PREFIX}{}",
        name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

/// The CAs a caBundle should hold: the Secret's CA and the ones this replica needs first, then
/// every CA already trusted that a replica still needs (fingerprints in `needed`), once each.
pub fn wanted_bundle(
    secret_ca: &[u8],
    mine: &[Vec<u8>],
    existing: &[CertificateDer<'_>],
    needed: &HashSet<String>,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut seen = HashSet::new();
    let ours = std::iter::once(secret_ca.to_vec()).chain(mine.iter().cloned());
    let kept = existing
        .iter()
        .filter(|d| fingerprint(d).is_some_and(|f| needed.contains(&f)))
        .map(|d| d.to_vec());
    for der in ours.chain(kept) {
        if let Some(f) = fingerprint(&der) {
            if seen.insert(f) {
                out.push(der);
            }
        }
    }
    out
}

/// Brings the caBundle to the CAs still needed and records what this replica needs, in one
/// patch that fails if the configuration changed since it was read. Returns the caBundle's CAs
/// as stored, or `None` when the configuration does not exist (yet).
async fn sync_bundle(
    client: &Client,
    cfg: &BundleTarget,
    secret_ca: Option<&[u8]>,
    mine: &[Vec<u8>],
    stale_after: i64,
) -> Result<Option<Synced>, SelfManagedError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(current) = api.get_opt(&cfg.webhook_config).await? else {
        return Ok(None);
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let my_key = needs_key(&cfg.replica);
    let annotations = current.metadata.annotations.clone().unwrap_or_default();
    let mut needed: HashSet<String> = HashSet::new();
    let mut stale = Vec::new();
    // Every CA a replica has ever recorded (recent ones): those are this mode's own CAs.
    let recorded_claimed = annotations.get(CLAIMED_KEY).cloned().unwrap_or_default();
    let mut claimed: Vec<String> = recorded_claimed
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    for (key, value) in annotations
        .iter()
        .filter(|(k, _)| k.starts_with(NEEDS_PREFIX))
    {
        let (time, fps) = value.split_once(' ').unwrap_or((value, ""));
        let fps: Vec<String> = fps
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        let fresh = time.parse::<i64>().is_ok_and(|t| now - t <= stale_after);
        for f in &fps {
            if !claimed.contains(f) {
                claimed.push(f.clone());
            }
        }
        if *key == my_key {
            continue;
        }
        if fresh {
            needed.extend(fps);
        } else {
            stale.push(key.clone());
        }
    }
    let my_fps: Vec<String> = mine.iter().filter_map(|d| fingerprint(d)).collect();
    for f in my_fps
        .iter()
        .cloned()
        .chain(secret_ca.and_then(fingerprint))
    {
        if !claimed.contains(&f) {
            claimed.push(f);
        }
    }
    let excess = claimed.len().saturating_sub(MAX_CLAIMED);
    claimed.drain(..excess);
    let claimed_value = claimed.join(",");
    // A CA trusted now that no replica ever recorded was put there by another TLS mode (a
    // switch from helm, or back to it): its pods may still serve during the rollout, so it is
    // kept for a while from when it was first seen. A CA some replica once recorded and none
    // needs now is a retired one, and goes.
    let recorded_previous = annotations.get(PREVIOUS_KEY).cloned().unwrap_or_default();
    let mut previous: BTreeMap<String, i64> = recorded_previous
        .split(',')
        .filter_map(|e| e.split_once('='))
        .filter_map(|(f, t)| Some((f.to_owned(), t.parse().ok()?)))
        .collect();
    for webhook in current.webhooks.iter().flatten() {
        let existing = webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| pem_ders(&b.0));
        for f in existing.iter().flatten().filter_map(|d| fingerprint(d)) {
            if secret_ca.is_some() && !claimed.contains(&f) {
                previous.entry(f).or_insert(now);
            }
        }
    }
    previous.retain(|_, t| now - *t <= PREVIOUS_TTL_SECONDS);
    needed.extend(previous.keys().cloned());
    let previous_value = previous
        .iter()
        .map(|(f, t)| format!("{f}={t}"))
        .collect::<Vec<_>>()
        .join(",");
    let record = format!("{now} {}", my_fps.join(","));

    let pointer = |tokens: &[&str]| PointerBuf::from_tokens(tokens.iter().copied());
    let mut ops = vec![PatchOperation::Test(TestOperation {
        path: pointer(&["metadata", "resourceVersion"]),
        value: Value::String(
            current
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default(),
        ),
    })];
    if current.metadata.annotations.is_none() {
        ops.push(PatchOperation::Add(AddOperation {
            path: pointer(&["metadata", "annotations"]),
            value: serde_json::json!({}),
        }));
    }
    ops.push(PatchOperation::Add(AddOperation {
        path: pointer(&["metadata", "annotations", &my_key]),
        value: Value::String(record),
    }));
    for key in &stale {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: pointer(&["metadata", "annotations", key]),
        }));
    }
    if secret_ca.is_some() && claimed_value != recorded_claimed {
        ops.push(PatchOperation::Add(AddOperation {
            path: pointer(&["metadata", "annotations", CLAIMED_KEY]),
            value: Value::String(claimed_value),
        }));
    }
    if secret_ca.is_some() && previous_value != recorded_previous {
        ops.push(if previous_value.is_empty() {
            PatchOperation::Remove(RemoveOperation {
                path: pointer(&["metadata", "annotations", PREVIOUS_KEY]),
            })
        } else {
            PatchOperation::Add(AddOperation {
                path: pointer(&["metadata", "annotations", PREVIOUS_KEY]),
                value: Value::String(previous_value),
            })
        });
    }
    let mut stored = None;
    let mut bundle_changed = false;
    let mut added_mine = false;
    for (i, webhook) in current.webhooks.iter().flatten().enumerate() {
        let existing = webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| pem_ders(&b.0))
            .unwrap_or_default();
        // Without the Secret's CA (unreadable), only this replica's record is refreshed.
        let Some(secret_ca) = secret_ca else {
            stored.get_or_insert(existing);
            continue;
        };
        let trusted: HashSet<String> = existing.iter().filter_map(|d| fingerprint(d)).collect();
        added_mine |= my_fps.iter().any(|f| !trusted.contains(f));
        let wanted = wanted_bundle(secret_ca, mine, &existing, &needed);
        let pem: String = wanted.iter().map(|d| to_pem(d)).collect();
        if webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            != Some(pem.as_bytes())
        {
            bundle_changed = true;
            let index = i.to_string();
            // `test` first: if the list changed since we read it, the patch fails instead of
            // writing into the wrong webhook.
            ops.push(PatchOperation::Test(TestOperation {
                path: pointer(&["webhooks", &index, "name"]),
                value: Value::String(webhook.name.clone()),
            }));
            ops.push(PatchOperation::Add(AddOperation {
                path: pointer(&["webhooks", &index, "clientConfig", "caBundle"]),
                value: Value::String(base64::engine::general_purpose::STANDARD.encode(&pem)),
            }));
        }
        stored.get_or_insert_with(|| {
            wanted
                .into_iter()
                .map(CertificateDer::from)
                .collect::<Vec<_>>()
        });
    }
    match api
        .patch(
            &cfg.webhook_config,
            &PatchParams::default(),
            &Patch::<()>::Json(json_patch::Patch(ops)),
        )
        .await
    {
        Ok(_) => {}
        // A failed `test`: someone else wrote in between; the next check reads again.
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 409 => {
            return Err(SelfManagedError::Conflict)
        }
        Err(e) => return Err(e.into()),
    }
    if bundle_changed {
        tracing::info!(webhook_config = %cfg.webhook_config, "updated the caBundle");
    }
    Ok(Some(Synced {
        bundle: stored.unwrap_or_default(),
        added_mine,
    }))
}

/// The caBundle after a sync, and whether the sync had to add a CA this replica needs (the API
/// server then needs a moment before it trusts a certificate from it).
pub(crate) struct Synced {
    pub(crate) bundle: Vec<CertificateDer<'static>>,
    pub(crate) added_mine: bool,
}

/// Syncs, retrying at once (with a little jitter) when another replica wrote in between, so
/// replicas started together do not each lose a whole interval.
pub(crate) async fn sync_with_retries(
    client: &Client,
    cfg: &BundleTarget,
    secret_ca: Option<&[u8]>,
    mine: &[Vec<u8>],
    stale_after: i64,
) -> Result<Option<Synced>, SelfManagedError> {
    let mut attempt = 0u64;
    loop {
        match sync_bundle(client, cfg, secret_ca, mine, stale_after).await {
            Err(SelfManagedError::Conflict) if attempt < 4 => {
                attempt += 1;
                let jitter = u64::from(std::process::id() % 97)
                    + u64::from(time::OffsetDateTime::now_utc().nanosecond() % 101);
                tokio::time::sleep(Duration::from_millis(50 * attempt + jitter)).await;
            }
            other => return other,
        }
    }
}

/// Whether the served chain leads to one of `bundle`'s CAs: what the API server checks.
pub(crate) fn trusted_by(store: &CertStore, bundle: &[CertificateDer<'_>]) -> bool {
    !anchors(&store.chain(), bundle).is_empty()
}

/// The CAs of `bundle` that the certificate chain `chain` (leaf first, then the intermediates a
/// server sends) leads to, by signatures: what a TLS client with `bundle` as its roots accepts.
/// Expiry is not checked here (the store refuses expired certificates).
pub(crate) fn anchors(chain: &[CertificateDer<'_>], bundle: &[CertificateDer<'_>]) -> Vec<Vec<u8>> {
    use x509_parser::certificate::X509Certificate;
    fn parse(d: &[u8]) -> Option<X509Certificate<'_>> {
        x509_parser::parse_x509_certificate(d).ok().map(|(_, c)| c)
    }
    let chain: Vec<X509Certificate<'_>> = chain.iter().filter_map(|c| parse(c.as_ref())).collect();
    let roots: Vec<(&[u8], X509Certificate<'_>)> = bundle
        .iter()
        .filter_map(|c| Some((c.as_ref(), parse(c.as_ref())?)))
        .collect();
    let Some(mut current) = chain.first() else {
        return Vec::new();
    };
    // At most one step per certificate of the chain: a chain that loops ends here.
    for _ in 0..=chain.len() {
        let signed = |issuer: &X509Certificate<'_>| {
            current.verify_signature(Some(issuer.public_key())).is_ok()
        };
        let found: Vec<Vec<u8>> = roots
            .iter()
            .filter(|(_, ca)| signed(ca))
            .map(|(der, _)| der.to_vec())
            .collect();
        if !found.is_empty() {
            return found;
        }
        match chain[1..].iter().find(|c| signed(c)) {
            Some(next) if !std::ptr::eq(next, current) => current = next,
            _ => return Vec::new(),
        }
    }
    Vec::new()
}

fn der_of(pem: &str) -> Vec<u8> {
    pem_ders(pem.as_bytes())
        .into_iter()
        .next()
        .map(|d| d.to_vec())
        .unwrap_or_default()
}

/// Start-up: the shared CA and a serving certificate. The caBundle is set by [`maintain`]'s first
/// check. A CA Secret that is refused (or unreadable) does not stop the process: the replica
/// reports not ready, says why, and keeps retrying.
pub async fn bootstrap(client: &Client, cfg: &SelfManaged) -> (Option<Ca>, Arc<CertStore>) {
    let store = Arc::new(CertStore::default());
    // Not ready until a check has seen the caBundle trust what this replica serves.
    store.set_problem(Some(format!(
        "the caBundle of {} is not yet confirmed to trust the served certificate",
        cfg.webhook_config
    )));
    match shared_ca(client, cfg).await {
        Ok(ca) => match issue_into(&ca, cfg, &store) {
            Ok(()) => (Some(ca), store),
            Err(e) => {
                store.set_problem(Some(format!("issuing the serving certificate failed: {e}")));
                (None, store)
            }
        },
        Err(e) => {
            store.set_problem(Some(crate::error_chain(&e)));
            (None, store)
        }
    }
}

/// Whether a serving certificate valid for `cert_days` and expiring at `not_after` is due for
/// renewal at `now`: with a third of its life left, so a failing renewal has time to be noticed.
pub fn needs_renewal(not_after: Option<i64>, now: i64, cert_days: u32) -> bool {
    let renew_before = i64::from(cert_days) * 86_400 / 3;
    not_after.is_none_or(|t| t - now < renew_before)
}

/// Keeps the serving certificate fresh, follows a replaced CA Secret without losing a request,
/// and keeps the caBundle current (a `helm upgrade` or someone else may have reset it), checking
/// every `interval`.
pub async fn maintain(
    client: Client,
    cfg: SelfManaged,
    mut ca: Option<Ca>,
    store: Arc<CertStore>,
    interval: Duration,
) {
    let stale_after = i64::try_from(interval.as_secs().max(1) * 3).unwrap_or(i64::MAX);
    let target = cfg.target();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A replica that cannot read the Secret leaves the caBundle alone (its view may be old)
        // and only renews its record, so the CA it serves stays trusted.
        let mut secret_problem = None;
        let latest = match shared_ca(&client, &cfg).await {
            Ok(latest) => Some(latest),
            Err(e) => {
                let e = crate::error_chain(&e);
                tracing::error!(error = %e, "cannot use the shared CA; keeping the current certificate and leaving the caBundle alone");
                secret_problem = Some(e);
                None
            }
        };
        let switching = match (&latest, &ca) {
            (Some(l), Some(c)) => c.cert_pem() != l.cert_pem(),
            (Some(_), None) => true,
            (None, _) => false,
        };
        // The CAs this replica needs trusted: the one it serves and, while switching, the next.
        let mut mine: Vec<Vec<u8>> = ca.iter().map(|c| der_of(&c.cert_pem())).collect();
        if let Some(l) = latest.as_ref().filter(|_| switching) {
            mine.push(der_of(&l.cert_pem()));
        }
        let secret_ca = latest.as_ref().map(|l| der_of(&l.cert_pem()));
        let synced = match sync_with_retries(
            &client,
            &target,
            secret_ca.as_deref(),
            &mine,
            stale_after,
        )
        .await
        {
            Ok(synced) => synced,
            Err(e) => {
                // Readiness is left as it was: an API hiccup must not take every replica out.
                tracing::warn!(error = %crate::error_chain(&e), "could not update the caBundle; retrying");
                continue;
            }
        };
        if synced.as_ref().is_some_and(|s| s.added_mine) || (switching && ca.is_some()) {
            // A CA this replica needs was just added (by it or a peer): give the API server time
            // to load it before serving from it.
            tokio::time::sleep(BUNDLE_PICKUP).await;
        }
        if let Some(latest) = latest.filter(|_| switching) {
            if ca.is_some() {
                tracing::warn!(secret = %cfg.ca_secret, "the shared CA changed; adopting it");
            }
            ca = Some(latest);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(current) = &ca {
            if switching || needs_renewal(store.not_after(), now, cfg.cert_days) {
                match issue_into(current, &cfg, &store) {
                    Ok(()) => tracing::info!("issued a new self-managed serving certificate"),
                    Err(e) => tracing::error!(error = %e, "issuing the serving certificate failed"),
                }
            }
        }
        // Ready only when the API server will trust what this replica serves.
        store.set_problem(match &synced {
            // Nothing served yet because the CA Secret is refused: say so.
            _ if ca.is_none() => secret_problem,
            Some(s) if !trusted_by(&store, &s.bundle) => Some(format!(
                "the caBundle of {} does not trust the served certificate yet",
                cfg.webhook_config
            )),
            _ if store.leaf_der().is_none() => Some("no serving certificate issued yet".to_owned()),
            _ => None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, signed by `parent` or self-signed.
    fn ca(
        name: &str,
        parent: Option<&rcgen::Issuer<'static, rcgen::KeyPair>>,
    ) -> (Vec<u8>, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = match parent {
            Some(p) => params.signed_by(&key, p),
            None => params.self_signed(&key),
        }
        .expect("cert");
        (cert.der().to_vec(), rcgen::Issuer::new(params, key))
    }

    fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["svc.ns.svc".to_owned()]).expect("params");
        params.signed_by(&key, issuer).expect("leaf").der().to_vec()
    }

    fn der(d: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from(d.to_vec())
    }

    #[test]
    fn a_chain_leads_to_the_root_through_the_intermediates_it_carries() {
        let (root, root_issuer) = ca("root", None);
        let (inter, inter_issuer) = ca("intermediate", Some(&root_issuer));
        let (other, _) = ca("other", None);
        let served = leaf(&inter_issuer);
        // cert-manager with an intermediate CA: ca.crt is the root, tls.crt is leaf + intermediate.
        let bundle = [der(&other), der(&root)];
        assert_eq!(
            anchors(&[der(&served), der(&inter)], &bundle),
            vec![root.clone()]
        );
        // Without the intermediate the chain does not lead anywhere (a client could not build it).
        assert!(anchors(&[der(&served)], &bundle).is_empty());
        // Directly under a CA of the bundle.
        assert_eq!(
            anchors(&[der(&served)], &[der(&inter)]),
            vec![inter.clone()]
        );
        // A bundle without its CAs.
        assert!(anchors(&[der(&served), der(&inter)], &[der(&other)]).is_empty());
        assert!(anchors(&[], &bundle).is_empty());
    }

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
            replica: "r".into(),
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

    #[test]
    fn the_bundle_keeps_what_a_replica_needs_and_drops_the_rest() {
        let ders: Vec<Vec<u8>> = (0..4)
            .map(|i| der_of(&Ca::generate(&format!("ca{i}"), 1).unwrap().cert_pem()))
            .collect();
        let fp = |i: usize| fingerprint(&ders[i]).unwrap();
        let existing: Vec<CertificateDer<'_>> = ders[1..]
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        // The Secret's CA (0) first, then this replica's (2), then others' still needed (3);
        // 1 is needed by nobody and goes.
        let needed = HashSet::from([fp(3)]);
        let bundle = wanted_bundle(&ders[0], &[ders[2].clone()], &existing, &needed);
        assert_eq!(
            bundle,
            vec![ders[0].clone(), ders[2].clone(), ders[3].clone()]
        );
        // No duplicates when the Secret's CA is also this replica's and already trusted.
        let bundle = wanted_bundle(&ders[1], &[ders[1].clone()], &existing, &HashSet::new());
        assert_eq!(bundle, vec![ders[1].clone()]);
        // PEM round trip of the written bundle.
        let pem: String = bundle.iter().map(|d| to_pem(d)).collect();
        assert_eq!(pem_ders(pem.as_bytes())[0].as_ref(), ders[1].as_slice());
        assert!(needs_key("migration-injector-7d9f-abcde").starts_with(NEEDS_PREFIX));
    }

    #[test]
    fn a_ca_secret_that_is_not_a_ca_is_refused() {
        let ca = Ca::generate("t", 1).unwrap();
        let leaf = ca.issue_server(&["x".into()], &[], 1).unwrap();
        let err = check_ca(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
        assert!(err.contains("not a CA certificate"), "{err}");
        let other = Ca::generate("u", 1).unwrap();
        let err = check_ca(&ca.cert_pem(), &other.key_pem()).unwrap_err();
        assert!(err.contains("is not the key of"), "{err}");
        assert!(check_ca(&ca.cert_pem(), &ca.key_pem()).is_ok());
    }
}
