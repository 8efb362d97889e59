//! A caBundle kept by the replicas for certificates they read from files (cert-manager's Secret,
//! an existing Secret), instead of cert-manager's cainjector or a value fixed at install.
//! cainjector writes the new CA alone, so pods still serving a certificate of the old CA are
//! distrusted until they are replaced: every TLS mode switch to cert-manager and every CA
//! rotation loses admissions. Here each replica records on the webhook configuration the CAs it
//! needs (as self-managed replicas do, [`super::self_managed`]): the one it serves and, when the
//! files bring a certificate of a new CA, that one, which it serves only once the caBundle holds
//! it. A CA that no replica ever recorded (another TLS mode's) stays for ten minutes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use super::files::CertFiles;
use super::self_managed::{
    pem_ders, signed_by, sync_with_retries, trusted_by, BundleTarget, BUNDLE_PICKUP,
};
use super::store::CertStore;

/// What a replica needs to keep the caBundle trusting the CA of its certificate files.
#[derive(Debug, Clone)]
pub struct ManagedBundle {
    pub target: BundleTarget,
    /// PEM of the CA(s) that signed the served certificate (a `kubernetes.io/tls` Secret's
    /// `ca.crt`).
    pub ca_file: PathBuf,
    /// Time between records on the webhook configuration (a changed certificate is handled at
    /// the next file check).
    pub check_interval: Duration,
}

fn read_cas(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let cas = pem_ders(&pem);
    if cas.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(cas)
}

fn leaf(key: &CertifiedKey) -> &[u8] {
    key.cert.first().map(|c| c.as_ref()).unwrap_or_default()
}

/// Replaces [`super::files::watch`] when the replicas keep the caBundle: polls the files every
/// `reload_interval`, records the needed CAs every `cfg.check_interval` (and at once when the
/// files change), serves a new pair only when the caBundle trusts it, and reports ready only
/// when the caBundle trusts what is served. Runs until the task is dropped.
pub async fn maintain(
    client: Client,
    cfg: ManagedBundle,
    mut files: CertFiles,
    store: Arc<CertStore>,
    reload_interval: Duration,
) {
    let stale_after = i64::try_from(cfg.check_interval.as_secs().max(1) * 3).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(reload_interval.min(cfg.check_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The CAs of what is served now (the files as loaded at start).
    let mut serving: Vec<CertificateDer<'static>> = read_cas(&cfg.ca_file).unwrap_or_default();
    let mut pending: Option<CertifiedKey> = None;
    let mut last_sync: Option<Instant> = None;
    loop {
        tick.tick().await;
        match files.reload() {
            Ok(Some(key)) => pending = Some(key),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "keeping the current serving certificate"),
        }
        let due = pending.is_some() || last_sync.is_none_or(|t| t.elapsed() >= cfg.check_interval);
        if !due {
            continue;
        }
        // Unreadable CA file: only this replica's record is refreshed, the caBundle left alone.
        let file_cas = match read_cas(&cfg.ca_file) {
            Ok(cas) => Some(cas),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the CA file; leaving the caBundle alone");
                None
            }
        };
        let mut mine: Vec<Vec<u8>> = serving.iter().map(|c| c.to_vec()).collect();
        for ca in file_cas.iter().flatten() {
            if !mine.iter().any(|m| m.as_slice() == ca.as_ref()) {
                mine.push(ca.to_vec());
            }
        }
        let first = file_cas
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let synced = match sync_with_retries(
            &client,
            &cfg.target,
            first.as_deref(),
            &mine,
            stale_after,
        )
        .await
        {
            Ok(Some(synced)) => synced,
            Ok(None) => {
                store.set_problem(Some(format!(
                    "the webhook configuration {} does not exist",
                    cfg.target.webhook_config
                )));
                continue;
            }
            Err(e) => {
                // Readiness is left as it was: an API hiccup must not take every replica out.
                tracing::warn!(error = %crate::error_chain(&e), "could not update the caBundle; retrying");
                continue;
            }
        };
        last_sync = Some(Instant::now());
        if let Some(key) = pending.take() {
            if signed_by(leaf(&key), &synced.bundle) {
                if synced.added_mine {
                    // Give the API server time to load the new CA before serving from it.
                    tokio::time::sleep(BUNDLE_PICKUP).await;
                }
                store.set(key);
                serving = file_cas.unwrap_or_default();
                tracing::info!(cert = %files.cert.display(), "loaded a new serving certificate, its CA trusted by the caBundle");
            } else {
                tracing::warn!(cert = %files.cert.display(), ca = %cfg.ca_file.display(),
                    "the new certificate is not signed by a CA of the caBundle (is it signed by the CA file's CA?); keeping the current one");
                pending = Some(key);
            }
        }
        store.set_problem(if trusted_by(&store, &synced.bundle) {
            None
        } else {
            Some(format!(
                "the caBundle of {} does not trust the served certificate yet (is {} its CA?)",
                cfg.target.webhook_config,
                cfg.ca_file.display()
            ))
        });
    }
}
