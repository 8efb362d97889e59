//! Whether this replica should receive traffic, with one owner: the admin server's `/readyz`
//! reads a [`Readiness`] and nothing else. Each party holds a clone and sets its own condition:
//! the webhook server when it starts draining, the certificate store when it loads a
//! certificate, and the certificate keepers (`tls`) when they find a problem.
//!
//! A crate-level module because both `webhook` and `tls` set it and `tls` must not import
//! `webhook`. Never consulted per admission request: only the probe reads it.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// A cheap-to-clone handle on the replica's readiness. A fresh one is not ready until a
/// certificate is recorded with [`Readiness::set_serving_until`].
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Conditions>);

#[derive(Debug, Default)]
struct Conditions {
    /// Set once shutdown starts, so the endpoint is taken out of rotation before it closes.
    draining: AtomicBool,
    /// Why the served certificate must not be used now (the CA Secret is refused, the caBundle
    /// does not trust it yet, ...), as the certificate keepers report it.
    problem: ArcSwapOption<String>,
    /// Unix time until which a certificate is served (0: none loaded). Kept as a deadline and
    /// compared with the clock when read, so expiry needs no timer.
    serving_until: AtomicI64,
}

/// Reported while draining. The text `/readyz` has always answered during shutdown.
pub const DRAINING: &str = "shutting down";
/// Reported without an unexpired certificate.
pub const NO_CERTIFICATE: &str = "no valid (unexpired) serving certificate loaded";

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Shutdown has started: fail readiness from now on (there is no way back).
    pub fn set_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// Records (or clears, with `None`) a reason the replica must not receive traffic. Logs
    /// when the reason changes, not on every repeat of the same one.
    pub fn set_problem(&self, problem: Option<String>) {
        let current = self.0.problem.load();
        match &problem {
            Some(p) if current.as_deref() != Some(p) => {
                tracing::error!(problem = %p, "not ready");
            }
            None if current.is_some() => tracing::info!("ready again"),
            _ => {}
        }
        self.0.problem.store(problem.map(Arc::new));
    }

    /// The recorded problem, if any.
    pub fn problem(&self) -> Option<Arc<String>> {
        self.0.problem.load_full()
    }

    /// Records the expiry (Unix time) of the served certificate; `None`: none is served.
    pub fn set_serving_until(&self, not_after: Option<i64>) {
        self.0
            .serving_until
            .store(not_after.unwrap_or(0), Ordering::Relaxed);
    }

    /// Whether an unexpired certificate is served now.
    pub fn serving(&self) -> bool {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.0.serving_until.load(Ordering::Relaxed) > now
    }

    /// Every reason the replica is not ready now, most urgent first; empty when ready.
    pub fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.is_draining() {
            reasons.push(DRAINING.to_owned());
        }
        reasons.extend(self.certificate_reason());
        reasons
    }

    /// The certificate side alone (draining aside): the recorded problem first, else a missing
    /// or expired certificate. What `CertStore::readiness` has always reported.
    pub fn certificate_reason(&self) -> Option<String> {
        if let Some(p) = self.0.problem.load().as_deref() {
            return Some(p.clone());
        }
        (!self.serving()).then(|| NO_CERTIFICATE.to_owned())
    }

    /// `Ok` when ready, else every reason (see [`Readiness::reasons`]).
    pub fn check(&self) -> Result<(), Vec<String>> {
        let reasons = self.reasons();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp() + 3600
    }

    #[test]
    fn not_ready_until_a_certificate_is_served() {
        let r = Readiness::new();
        assert_eq!(r.check(), Err(vec![NO_CERTIFICATE.to_owned()]));
        r.set_serving_until(Some(later()));
        assert_eq!(r.check(), Ok(()));
        // Expired: compared with the clock when read.
        r.set_serving_until(Some(1));
        assert_eq!(r.check(), Err(vec![NO_CERTIFICATE.to_owned()]));
    }

    #[test]
    fn every_party_sets_the_same_handle() {
        let r = Readiness::new();
        let (tls, webhook) = (r.clone(), r.clone());
        tls.set_serving_until(Some(later()));
        tls.set_problem(Some("the caBundle is not yet confirmed".into()));
        assert_eq!(
            r.check(),
            Err(vec!["the caBundle is not yet confirmed".to_owned()])
        );
        webhook.set_draining();
        assert_eq!(
            r.check(),
            Err(vec![
                DRAINING.to_owned(),
                "the caBundle is not yet confirmed".to_owned()
            ])
        );
        tls.set_problem(None);
        assert_eq!(r.check(), Err(vec![DRAINING.to_owned()]));
        assert_eq!(r.certificate_reason(), None);
    }
}
