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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_mock::{self, ApiServer};
    use crate::tls::ca::Ca;
    use crate::tls::ca_bundle::not_yet_confirmed;
    use crate::tls::ca_bundle::testing::{annotations, apply, bundle, config, CONFIG_PATH};
    use crate::tls::chain::{der_of, fingerprint};
    use http::Method;
    use serde_json::Value;

    const CHECK: Duration = Duration::from_secs(1);
    const R1: &str = "serving.migrations.io/r1";

    /// Writes tls.crt, tls.key and ca.crt as cert-manager's Secret holds them, issued by `ca`;
    /// returns the leaf (DER).
    fn write_files(dir: &Path, ca: &Ca) -> Vec<u8> {
        let pair = ca.issue_server(&["svc.ns.svc".to_owned()], &[], 1).unwrap();
        std::fs::write(dir.join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &pair.key_pem).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
        der_of(&pair.cert_pem)
    }

    /// What `tls::start` does with `--manage-ca-bundle`: the files loaded, not ready yet, the
    /// loop spawned.
    fn start(client: Client, dir: &Path) -> (Arc<CertStore>, tokio::task::JoinHandle<()>) {
        let mut files = CertFiles::new(dir.join("tls.crt"), dir.join("tls.key"));
        let store = CertStore::new(files.reload().unwrap().unwrap());
        store.set_problem(Some(not_yet_confirmed("wh")));
        let cfg = ManagedBundle {
            target: BundleTarget {
                webhook_config: "wh".to_owned(),
                replica: "r1".to_owned(),
            },
            ca_file: dir.join("ca.crt"),
            check_interval: CHECK,
        };
        let task = tokio::spawn(maintain(client, cfg, files, store.clone(), CHECK));
        (store, task)
    }

    async fn serve_round(api: &mut ApiServer, current: &Value) -> Value {
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, current);
        apply(current, api.expect(Method::PATCH, CONFIG_PATH).await)
    }

    #[tokio::test(start_paused = true)]
    async fn the_ca_of_the_file_is_recorded_and_added_then_the_replica_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ca::generate("A", 1).unwrap();
        write_files(dir.path(), &a);
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, dir.path());
        let after = serve_round(&mut api, &config(Value::Null, &[None])).await;
        let a_der = der_of(&a.cert_pem());
        let record = &annotations(&after)[R1];
        assert!(record.ends_with(&format!(" {}", fingerprint(&a_der).unwrap())));
        assert_eq!(bundle(&after, 0), vec![a_der]);
        // The next check's read: the first check is over.
        let _next = api.expect(Method::GET, CONFIG_PATH).await;
        assert_eq!(store.readiness(), Ok(()));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_certificate_of_a_new_ca_is_served_only_once_the_ca_bundle_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Ca::generate("A", 1).unwrap(), Ca::generate("B", 1).unwrap());
        let a_leaf = write_files(dir.path(), &a);
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, dir.path());
        let mut current = serve_round(&mut api, &config(Value::Null, &[None])).await;
        // cert-manager rotates to a new CA: the files change together.
        let b_leaf = write_files(dir.path(), &b);
        // The first attempt to add B fails: A is still served.
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &current);
        api.expect(Method::PATCH, CONFIG_PATH)
            .await
            .status(403, "Forbidden", "forbidden");
        api.expect(Method::GET, CONFIG_PATH)
            .await
            .json(200, &current);
        assert_eq!(store.leaf_der(), Some(a_leaf.clone()));
        current = apply(&current, api.expect(Method::PATCH, CONFIG_PATH).await);
        let (a_der, b_der) = (der_of(&a.cert_pem()), der_of(&b.cert_pem()));
        assert_eq!(bundle(&current, 0), vec![b_der.clone(), a_der.clone()]);
        // Recorded: the CA served and the one about to be, so peers keep both.
        let fps = format!(
            " {},{}",
            fingerprint(&a_der).unwrap(),
            fingerprint(&b_der).unwrap()
        );
        assert!(annotations(&current)[R1].ends_with(&fps), "{current}");
        // B is in the caBundle; the API server gets a moment to load it before B is served.
        tokio::time::sleep(BUNDLE_PICKUP / 2).await;
        assert_eq!(store.leaf_der(), Some(a_leaf));
        tokio::time::sleep(BUNDLE_PICKUP).await;
        assert_eq!(store.leaf_der(), Some(b_leaf));
        assert_eq!(store.readiness(), Ok(()));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_certificate_the_ca_bundle_cannot_trust_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let (a, other) = (
            Ca::generate("A", 1).unwrap(),
            Ca::generate("other", 1).unwrap(),
        );
        let a_leaf = write_files(dir.path(), &a);
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, dir.path());
        let current = serve_round(&mut api, &config(Value::Null, &[None])).await;
        // A certificate of another CA while ca.crt still names A.
        let pair = other.issue_server(&["svc.ns.svc".into()], &[], 1).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &pair.key_pem).unwrap();
        serve_round(&mut api, &current).await;
        let _next = api.expect(Method::GET, CONFIG_PATH).await;
        assert_eq!(store.leaf_der(), Some(a_leaf));
        assert_eq!(store.readiness(), Ok(()));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_api_server_makes_the_replica_unready_after_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &Ca::generate("A", 1).unwrap());
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, dir.path());
        serve_round(&mut api, &config(Value::Null, &[None])).await;
        let _hung = api.expect(Method::GET, CONFIG_PATH).await.hang();
        let started = tokio::time::Instant::now();
        // The record is still fresh for peers: an API hiccup keeps the replica in.
        assert_eq!(store.readiness(), Ok(()));
        // Peers drop a record after three check intervals; the deadline is two.
        let deadline = CHECK * 2;
        tokio::time::sleep_until(started + deadline - Duration::from_millis(100)).await;
        assert_eq!(store.readiness(), Ok(()));
        tokio::time::sleep_until(started + deadline + Duration::from_millis(100)).await;
        assert_eq!(
            store.readiness(),
            Err("cannot record the CAs this replica needs on wh: no answer within 2s".to_owned())
        );
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_absent_configuration_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &Ca::generate("A", 1).unwrap());
        let (client, mut api) = api_mock::pair();
        let (store, task) = start(client, dir.path());
        api.expect(Method::GET, CONFIG_PATH).await.not_found();
        let _next = api.expect(Method::GET, CONFIG_PATH).await;
        assert_eq!(
            store.readiness(),
            Err("the webhook configuration wh does not exist".to_owned())
        );
        task.abort();
    }

    #[test]
    fn the_ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.crt");
        let err = read_cas(&missing).unwrap_err();
        assert!(matches!(err, CaFileError::Read { .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with(&format!("cannot read {}: ", missing.display())));
        std::fs::write(&missing, "not PEM").unwrap();
        let err = read_cas(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no PEM certificate in {}", missing.display())
        );
    }
}
