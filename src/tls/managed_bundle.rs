//! A caBundle kept by the replicas for certificates they read from files (cert-manager's Secret,
//! an existing Secret), instead of cert-manager's cainjector or a value fixed at install.
//! cainjector writes the new CA alone, so pods still serving a certificate of the old CA are
//! distrusted until they are replaced: every TLS mode switch to cert-manager and every CA
//! rotation loses admissions. Here each replica records on the webhook configuration the CAs it
//! needs (as self-managed replicas do, [`super::ca_bundle`]): the one it serves and, when the
//! files bring a certificate of a new CA, that one, which it serves only once the caBundle holds
//! it. A CA that no replica ever recorded (another TLS mode's) stays for ten minutes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
// Tokio's clock (the real one outside tests) so the deadlines follow a paused test clock.
use tokio::time::Instant;

use super::ca_bundle::sync::sync_with_retries;
use super::ca_bundle::{BundleTarget, BUNDLE_PICKUP};
use super::chain::{anchors, pem_ders};
use super::files::CertFiles;
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

/// Why the CA file gives no CA; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    // The I/O error in the message (not as a source): the message is logged and nested whole.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no PEM certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
}

/// The CAs in a PEM file (a Secret's `ca.crt`).
pub fn read_cas(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let pem = std::fs::read(path).map_err(|error| CaFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    let cas = pem_ders(&pem);
    if cas.is_empty() {
        return Err(CaFileError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(cas)
}

/// Replaces [`super::files::watch`] when the replicas keep the caBundle: polls the files every
/// `reload_interval`, records the needed CAs every `cfg.check_interval` (and at once when the
/// files change), serves a new pair only when the caBundle trusts it, and reports ready only
/// when the caBundle trusts what is served and the record is fresh. Runs until dropped.
pub async fn maintain(
    client: Client,
    cfg: ManagedBundle,
    mut files: CertFiles,
    store: Arc<CertStore>,
    reload_interval: Duration,
) {
    let interval_secs = cfg.check_interval.as_secs().max(1);
    let stale_after = i64::try_from(interval_secs * 3).unwrap_or(i64::MAX);
    // Peers drop this replica's CAs once its record is older than `stale_after`: it must not
    // stay ready that long without a successful record.
    let record_deadline = Duration::from_secs(interval_secs * 2);
    let mut tick = tokio::time::interval(reload_interval.min(cfg.check_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The CAs the served chain leads to; until the first sync, the CA file's (what was loaded).
    let mut serving: Vec<Vec<u8>> = read_cas(&cfg.ca_file)
        .unwrap_or_default()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    let mut pending: Option<CertifiedKey> = None;
    let mut last_sync: Option<Instant> = None;
    let mut last_attempt: Option<Instant> = None;
    loop {
        tick.tick().await;
        let mut fresh = false;
        match files.reload() {
            Ok(Some(key)) => {
                pending = Some(key);
                fresh = true;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "keeping the current serving certificate"),
        }
        // New files are handled at once; otherwise (a pending certificate the caBundle cannot
        // trust included) once per check interval, not a patch per tick.
        let due = fresh || last_attempt.is_none_or(|t| t.elapsed() >= cfg.check_interval);
        if !due {
            continue;
        }
        last_attempt = Some(Instant::now());
        // Unreadable CA file: only this replica's record is refreshed, the caBundle left alone.
        let file_cas = match read_cas(&cfg.ca_file) {
            Ok(cas) => Some(cas),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the CA file; leaving the caBundle alone");
                None
            }
        };
        let mut mine = serving.clone();
        for ca in file_cas.iter().flatten() {
            if !mine.iter().any(|m| m.as_slice() == ca.as_ref()) {
                mine.push(ca.to_vec());
            }
        }
        let first = file_cas
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let sync = sync_with_retries(&client, &cfg.target, first.as_deref(), &mine, stale_after);
        let synced = match tokio::time::timeout(record_deadline, sync).await {
            Ok(Ok(Some(synced))) => synced,
            Ok(Ok(None)) => {
                store.set_problem(Some(format!(
                    "the webhook configuration {} does not exist",
                    cfg.target.webhook_config
                )));
                continue;
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => crate::error_chain(&e),
                    _ => format!("no answer within {}s", record_deadline.as_secs()),
                };
                tracing::warn!(error = %error, "could not update the caBundle; retrying");
                // An API hiccup must not take every replica out, but a record older than
                // `stale_after` lets peers retire the CA this replica serves.
                if last_sync.is_none_or(|t| t.elapsed() >= record_deadline) {
                    store.set_problem(Some(format!(
                        "cannot record the CAs this replica needs on {}: {error}",
                        cfg.target.webhook_config
                    )));
                }
                continue;
            }
        };
        last_sync = Some(Instant::now());
        if let Some(key) = pending.take() {
            let leads_to = anchors(&key.cert, &synced.bundle);
            if leads_to.is_empty() {
                tracing::warn!(cert = %files.cert.display(), ca = %cfg.ca_file.display(),
                    "the new certificate does not lead to a CA of the caBundle (is it issued by the CA file's CA?); keeping the current one");
                pending = Some(key);
            } else {
                if synced.added_mine || leads_to.iter().any(|ca| !serving.contains(ca)) {
                    // A CA new to this replica (added by it or a peer): give the API server time
                    // to load it before serving from it.
                    tokio::time::sleep(BUNDLE_PICKUP).await;
                }
                store.set(key);
                serving = leads_to;
                tracing::info!(cert = %files.cert.display(), "loaded a new serving certificate, its CA trusted by the caBundle");
            }
        }
        let served = anchors(&store.chain(), &synced.bundle);
        if served.is_empty() {
            store.set_problem(Some(format!(
                "the caBundle of {} does not trust the served certificate yet (is {} its CA?)",
                cfg.target.webhook_config,
                cfg.ca_file.display()
            )));
        } else {
            serving = served;
            store.set_problem(None);
        }
    }
}
