//! Certificate files mounted from a Secret, re-read on an interval. Files are polled, not
//! watched: kubelet updates a Secret volume by swapping a `..data` symlink, which inotify on the
//! files misses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;

use super::store::{certified_key, check_validity, CertStore, TlsError};

/// Cert and key files, re-read on an interval; a new pair is taken only when it is complete and
/// consistent, so a half-written rotation keeps the old certificate.
#[derive(Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    last: Option<(Vec<u8>, Vec<u8>)>,
}

impl CertFiles {
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        CertFiles {
            cert,
            key,
            last: None,
        }
    }

    fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    }

    /// Loads the pair if it changed since the last successful load. `Ok(None)`: unchanged.
    pub fn reload(&mut self) -> Result<Option<CertifiedKey>, TlsError> {
        let cert = Self::read(&self.cert)?;
        let key = Self::read(&self.key)?;
        if self
            .last
            .as_ref()
            .is_some_and(|(c, k)| *c == cert && *k == key)
        {
            return Ok(None);
        }
        let what = format!("{} + {}", self.cert.display(), self.key.display());
        let certified = certified_key(&cert, &key, &what)?;
        check_validity(&certified, &what)?;
        self.last = Some((cert, key));
        Ok(Some(certified))
    }
}

/// Polls `files` every `interval` and swaps new pairs into `store`, until the task is dropped.
pub async fn watch(mut files: CertFiles, store: Arc<CertStore>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match files.reload() {
            Ok(Some(key)) => {
                store.set(key);
                tracing::info!(cert = %files.cert.display(), "loaded a new serving certificate");
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "keeping the current serving certificate"),
        }
    }
}
