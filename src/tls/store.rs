//! The served certificate: rustls (TLS 1.2 and 1.3 only, ring provider) with a store whose
//! certificate is swapped atomically while connections are accepted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::readiness::Readiness;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} holds no usable PEM {expected}")]
    NoPem {
        what: String,
        expected: &'static str,
    },
    #[error("{what}: the certificate is not valid now (valid from {not_before} to {not_after})")]
    NotValidNow {
        what: String,
        not_before: String,
        not_after: String,
    },
    #[error("the certificate and key do not form a usable pair")]
    Pair(#[source] rustls::Error),
    #[error("TLS configuration failed")]
    Config(#[source] rustls::Error),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a certified key from PEM text, checking that the key matches the certificate.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoPem {
            what: what.to_owned(),
            expected: "certificate",
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoPem {
            what: what.to_owned(),
            expected: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoPem {
        what: what.to_owned(),
        expected: "private key",
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Pair)
}

/// Refuses a leaf certificate that is expired or not yet valid (a minute of clock skew allowed).
pub fn check_validity(key: &CertifiedKey, what: &str) -> Result<(), TlsError> {
    let leaf = key.cert.first().ok_or_else(|| TlsError::NoPem {
        what: what.to_owned(),
        expected: "certificate",
    })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|_| TlsError::NoPem {
            what: what.to_owned(),
            expected: "X.509 certificate",
        })?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    super::chain::check_window(&cert, now).map_err(|w| TlsError::NotValidNow {
        what: what.to_owned(),
        not_before: w.not_before,
        not_after: w.not_after,
    })
}

/// Unix time at which the leaf certificate of `key` expires.
pub fn not_after(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The serving certificate, replaceable while connections are being accepted.
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwapOption<CertifiedKey>,
    /// Expiry of `current` as a Unix time (0: unknown).
    not_after: AtomicI64,
    /// The replica's readiness, which this store keeps told of the served certificate's expiry
    /// and which the certificate keepers set through [`CertStore::set_problem`]. The admin
    /// server takes a clone ([`CertStore::readiness_handle`]) and `/readyz` reads only that.
    readiness: Readiness,
}

impl CertStore {
    pub fn new(initial: CertifiedKey) -> Arc<Self> {
        let store = Arc::new(CertStore::default());
        store.set(initial);
        store
    }

    /// A store that reports to `readiness` (shared with others) instead of a fresh handle.
    pub fn with_readiness(initial: CertifiedKey, readiness: Readiness) -> Arc<Self> {
        let store = Arc::new(CertStore {
            readiness,
            ..CertStore::default()
        });
        store.set(initial);
        store
    }

    /// The readiness handle this store reports to, for the admin server and other parties.
    pub fn readiness_handle(&self) -> &Readiness {
        &self.readiness
    }

    pub fn set(&self, key: CertifiedKey) {
        let expiry = not_after(&key).unwrap_or(0);
        self.not_after.store(expiry, Ordering::Relaxed);
        self.current.store(Some(Arc::new(key)));
        self.readiness.set_serving_until(Some(expiry));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        tracing::info!(
            not_after_unix = expiry,
            days_left = (expiry - now) / 86_400,
            "serving certificate loaded"
        );
    }

    /// Whether a certificate is loaded and has not expired: what readiness reports.
    pub fn is_valid(&self) -> bool {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.current.load().is_some() && self.not_after.load(Ordering::Relaxed) > now
    }

    /// Records (or clears, with `None`) a reason the replica must not receive traffic: kept on
    /// the shared [`Readiness`], which logs the change.
    pub fn set_problem(&self, problem: Option<String>) {
        self.readiness.set_problem(problem);
    }

    /// Why the replica is not ready as far as its certificate goes, if it is not: a recorded
    /// problem, or no valid certificate. (Draining is reported by `/readyz`, not here.)
    pub fn readiness(&self) -> Result<(), String> {
        match self.readiness.certificate_reason() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// The served leaf certificate (DER), if one is loaded.
    pub fn leaf_der(&self) -> Option<Vec<u8>> {
        self.current
            .load()
            .as_ref()?
            .cert
            .first()
            .map(|c| c.to_vec())
    }

    /// The served chain (leaf first), empty if none is loaded.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .load()
            .as_ref()
            .map(|k| k.cert.clone())
            .unwrap_or_default()
    }

    /// Unix time at which the served certificate expires, if one is loaded.
    pub fn not_after(&self) -> Option<i64> {
        self.current.load().as_ref()?;
        Some(self.not_after.load(Ordering::Relaxed))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// A rustls server config serving whatever `store` holds, HTTP/2 and HTTP/1.1.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
