//! The webhook's TLS. [`start`] turns a [`CertSource`] into a [`CertStore`] and spawns what
//! keeps it current.
//!
//! - [`store`]: the served certificate, swapped atomically; the rustls config; readiness.
//! - [`files`]: certificate files and their reload.
//! - [`ca`]: CA and serving certificate generation.
//! - `chain`: PEM ⇄ DER, CA fingerprints, which CA a served chain leads to, and the one
//!   validity-window check (crate-internal).
//! - [`ca_secret`]: the CA the self-managed replicas share, in a Secret (read, create, refuse).
//! - [`ca_bundle`]: the caBundle kept by the replicas through records on the webhook
//!   configuration: [`ca_bundle::protocol`] is the rule, pure (configuration + needs + now →
//!   JSON patch), [`ca_bundle::sync`] the I/O around it.
//! - [`self_managed`]: `--self-managed`, start-up and the check loop (CA Secret → certificate →
//!   caBundle → readiness).
//! - [`managed_bundle`]: `--manage-ca-bundle`, the check loop for certificates from files.

pub mod ca;
pub mod ca_bundle;
pub mod ca_secret;
mod chain;
pub mod files;
pub mod managed_bundle;
pub mod self_managed;
pub mod store;

pub use ca::{service_dns_names, Ca, CertError, PemPair};
pub use files::{watch, CertFiles};
pub use store::{certified_key, check_validity, provider, server_config, CertStore, TlsError};

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the served certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files (a mounted Secret), re-read every `reload_interval`; with `managed_bundle`, the
    /// caBundle is kept trusting their CA and a certificate of a new CA waits until it does.
    Files {
        cert: PathBuf,
        key: PathBuf,
        reload_interval: Duration,
        managed_bundle: Option<managed_bundle::ManagedBundle>,
    },
    /// An in-memory CA and a certificate for localhost, 127.0.0.1 and ::1; the CA is written to
    /// `ca_out` for clients.
    SelfSigned { ca_out: Option<PathBuf> },
    /// A CA shared through a Secret, a certificate per replica, the caBundle kept current.
    SelfManaged {
        config: self_managed::SelfManaged,
        check_interval: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    SelfManaged(#[from] self_managed::SelfManagedError),
    #[error("no certificate loaded from {0}")]
    Empty(String),
    #[error("--manage-ca-bundle: {0} (the Secret must hold the issuing CA as ca.crt)")]
    CaFile(managed_bundle::CaFileError),
    #[error("cannot write the CA to {path}")]
    WriteCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to the Kubernetes API (self-managed certificates, or the caBundle kept by the replicas)")]
    Client(#[source] kube::Error),
}

/// Loads the first certificate (so a bad one fails the start) and spawns whatever keeps it
/// current. Must be called inside a Tokio runtime.
pub async fn start(source: CertSource) -> Result<Arc<CertStore>, StartError> {
    match source {
        CertSource::Files {
            cert,
            key,
            reload_interval,
            managed_bundle,
        } => {
            let mut files = CertFiles::new(cert, key);
            let loaded = files.reload()?.ok_or_else(|| {
                StartError::Empty(format!(
                    "{} + {}",
                    files.cert.display(),
                    files.key.display()
                ))
            })?;
            let store = CertStore::new(loaded);
            match managed_bundle {
                None => {
                    tokio::spawn(watch(files, store.clone(), reload_interval));
                }
                Some(cfg) => {
                    // Without the CA there is nothing to put in the caBundle: fail at start.
                    managed_bundle::read_cas(&cfg.ca_file).map_err(StartError::CaFile)?;
                    let client = kube::Client::try_default()
                        .await
                        .map_err(StartError::Client)?;
                    // Not ready until a check has seen the caBundle trust what is served.
                    store.set_problem(Some(ca_bundle::not_yet_confirmed(
                        &cfg.target.webhook_config,
                    )));
                    tokio::spawn(managed_bundle::maintain(
                        client,
                        cfg,
                        files,
                        store.clone(),
                        reload_interval,
                    ));
                }
            }
            Ok(store)
        }
        CertSource::SelfSigned { ca_out } => {
            let ca = Ca::generate("migration-injector self-signed CA", 365)?;
            let ips = [
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ];
            let pair = ca.issue_server(&["localhost".to_owned()], &ips, 365)?;
            if let Some(path) = ca_out {
                std::fs::write(&path, ca.cert_pem()).map_err(|source| StartError::WriteCa {
                    path: path.clone(),
                    source,
                })?;
                tracing::info!(path = %path.display(), "wrote the self-signed CA");
            }
            let key = certified_key(
                pair.cert_pem.as_bytes(),
                pair.key_pem.as_bytes(),
                "self-signed pair",
            )?;
            Ok(CertStore::new(key))
        }
        CertSource::SelfManaged {
            config,
            check_interval,
        } => {
            let client = kube::Client::try_default()
                .await
                .map_err(StartError::Client)?;
            let (ca, store) = self_managed::bootstrap(&client, &config).await;
            tokio::spawn(self_managed::maintain(
                client,
                config,
                ca,
                store.clone(),
                check_interval,
            ));
            Ok(store)
        }
    }
}
