//! The controller's Prometheus metrics (its own registry: the controller is its own process).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub runs_started: Counter,
    pub runs_succeeded: Counter,
    pub runs_failed: Counter,
    pub run_duration: Histogram,
    pub pods_waiting: Gauge<i64, AtomicI64>,
    pub leader: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("migration_injector");
        let runs_started = Counter::default();
        // The registry appends `_total` to counters.
        registry.register(
            "runs_started",
            "Migration attempts started (Jobs created)",
            runs_started.clone(),
        );
        let runs_succeeded = Counter::default();
        registry.register(
            "runs_succeeded",
            "Migration runs that succeeded",
            runs_succeeded.clone(),
        );
        let runs_failed = Counter::default();
        registry.register(
            "runs_failed",
            "Migration attempts that failed",
            runs_failed.clone(),
        );
        // 1 s .. ~2.3 h: migrations take seconds to the Job's deadline.
        let run_duration = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "run_duration_seconds",
            "Time from the start of the successful attempt to its Job's success",
            run_duration.clone(),
        );
        let pods_waiting = Gauge::default();
        registry.register(
            "pods_waiting",
            "Pods waiting for a migration run (label migrations.io/fingerprint, not yet Succeeded)",
            pods_waiting.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "controller_leader",
            "1 while this replica holds the Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            runs_started,
            runs_succeeded,
            runs_failed,
            run_duration,
            pods_waiting,
            leader,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contracts_names_are_exposed() {
        let metrics = Metrics::default();
        metrics.runs_started.inc();
        metrics.leader.set(1);
        let text = metrics.encode();
        for name in [
            "migration_injector_runs_started_total 1",
            "migration_injector_runs_succeeded_total 0",
            "migration_injector_runs_failed_total 0",
            "migration_injector_run_duration_seconds_count 0",
            "migration_injector_pods_waiting 0",
            "migration_injector_controller_leader 1",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
    }
}
