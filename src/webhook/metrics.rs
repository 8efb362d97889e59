//! Prometheus metrics, served on the admin port at `/metrics`.

use std::sync::atomic::AtomicI64;
use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::tls::CertStore;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub kind: &'static str,
    pub operation: &'static str,
    pub verdict: &'static str,
    /// The denial's reason code (`InvalidAnnotation`, `ImageNotAllowed`, `NameClash`,
    /// `MalformedObject`), empty unless denied.
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub duration: Histogram,
    pub cert_not_after: Gauge<i64, AtomicI64>,
    pub overloaded: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("migration_injector");
    let admissions = Family::<AdmissionLabels, Counter>::default();
    registry.register(
        "admission_requests",
        "AdmissionReview requests answered, by workload kind, operation, verdict and denial reason",
        admissions.clone(),
    );
    // 50 µs .. ~0.8 s: the handler itself is sub-millisecond; the tail is what matters.
    let duration = Histogram::new(exponential_buckets(0.00005, 2.0, 15));
    registry.register(
        "admission_duration_seconds",
        "Time to answer an AdmissionReview, body read included",
        duration.clone(),
    );
    let cert_not_after = Gauge::<i64, AtomicI64>::default();
    registry.register(
        "serving_certificate_not_after_seconds",
        "Expiry of the served TLS certificate, as a Unix time",
        cert_not_after.clone(),
    );
    let overloaded = Counter::default();
    registry.register(
        "overloaded_requests",
        "Requests answered 503 because the memory budget for request bodies was spent",
        overloaded.clone(),
    );
    Metrics {
        registry,
        admissions,
        duration,
        cert_not_after,
        overloaded,
    }
});

pub fn get() -> &'static Metrics {
    &METRICS
}

/// The Prometheus text exposition of every metric. The certificate expiry is read from the
/// store at scrape time, so it is right whichever code path loaded the certificate.
pub fn encode(certs: &CertStore) -> String {
    if let Some(t) = certs.not_after() {
        METRICS.cert_not_after.set(t);
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &METRICS.registry).is_err() {
        out.clear();
    }
    out
}
