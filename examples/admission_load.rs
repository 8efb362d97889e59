//! Admission load for the e2e: N concurrent clients create annotated Deployments through the
//! API server (and delete them again), recording every admission with its latency and outcome.
//! A kubectl loop manages 2 to 3 admissions a second, one at a time; the races that matter
//! (a connection reused to a replica going away, endpoints updated late) show only under
//! concurrency.
//!
//! Outcomes: `ok` (stored with the injected init container), `not-injected` (stored without it:
//! the webhook was skipped, which `failurePolicy: Fail` must never allow), `failed` (refused, with
//! the API server's message). Deployments are created with `replicas: 0` and `paused: true`, so
//! the load is on admission, not on the node: a paused Deployment gets no ReplicaSet, which
//! leaves kube-controller-manager's garbage collector nothing to clean up after the load.
//!
//! Usage: admission_load --namespace NS [--clients 8] [--rate R] [--seconds S | --stop-file F]
//!        [--records FILE] [--label PHASE] [--image REF] [--context NAME]
//! Prints one JSON summary line on stdout: admissions, rate, outcomes, p50/p99/max latency (ms),
//! the window in which failures happened, and the first failure messages.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
struct Args {
    /// Namespace the Deployments are created in (it must exist).
    #[arg(long)]
    namespace: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    clients: u32,
    /// Admissions per second across all clients; 0: as fast as the API server answers.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this many seconds (0: only on --stop-file or a signal).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Stop once this file exists (how a shell script ends a phase).
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Append one JSON line per admission here.
    #[arg(long)]
    records: Option<PathBuf>,
    /// A name for the phase, repeated in the summary.
    #[arg(long, default_value = "load")]
    label: String,
    /// The migrations image annotated on each Deployment.
    #[arg(long, default_value = "registry.local/migrations:v1")]
    image: String,
    /// Name of the init container the webhook injects.
    #[arg(long, default_value = "migrate")]
    container: String,
    /// The kubeconfig context (default: the current one); KUBECONFIG picks the file.
    #[arg(long)]
    context: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    NotInjected,
    Failed,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotInjected => "not-injected",
            Outcome::Failed => "failed",
        }
    }
}

/// One admission: when it started (since the run began), how long it took, what came back.
#[derive(Debug, Clone)]
struct Record {
    at: Duration,
    latency: Duration,
    outcome: Outcome,
    message: String,
}

fn deployment(name: &str, image: &str) -> Result<Deployment> {
    let labels = json!({"app": name, "load.migrations.io/generated": "true"});
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"migrations.io/image": image},
        },
        "spec": {
            "replicas": 0,
            "paused": true,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.local/app:v1"}]},
            },
        },
    }))?)
}

fn injected(stored: &Deployment, container: &str) -> bool {
    stored
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == container))
}

/// Hands out start times at a fixed total rate (or none, when unpaced).
struct Pacer {
    next: Mutex<Instant>,
    period: Option<Duration>,
}

impl Pacer {
    async fn wait(&self) {
        let Some(period) = self.period else { return };
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + period;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

struct Shared {
    api: Api<Deployment>,
    args: Args,
    start: Instant,
    stop: AtomicBool,
    seq: AtomicU64,
    pacer: Pacer,
    records: Mutex<Vec<Record>>,
}

async fn client_loop(shared: Arc<Shared>, client: u32) {
    let run = std::process::id();
    while !shared.stop.load(Ordering::Relaxed) {
        shared.pacer.wait().await;
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let n = shared.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("load-{run}-{client}-{n}");
        let object = match deployment(&name, &shared.args.image) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("admission_load: {e}");
                break;
            }
        };
        let begun = Instant::now();
        let result = shared.api.create(&PostParams::default(), &object).await;
        let latency = begun.elapsed();
        let (outcome, message) = match &result {
            Ok(stored) if injected(stored, &shared.args.container) => (Outcome::Ok, String::new()),
            Ok(_) => (Outcome::NotInjected, String::new()),
            // The API server's own message, as `kubectl` prints it.
            Err(kube::Error::Api(status)) => (Outcome::Failed, status.message.clone()),
            Err(e) => (Outcome::Failed, e.to_string()),
        };
        shared.records.lock().await.push(Record {
            at: begun - shared.start,
            latency,
            outcome,
            message,
        });
        if result.is_ok() {
            // Deleting keeps the namespace small; its outcome is not an admission.
            let _ = shared.api.delete(&name, &DeleteParams::background()).await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn summary(label: &str, records: &[Record], elapsed: Duration) -> serde_json::Value {
    let count = |o: Outcome| records.iter().filter(|r| r.outcome == o).count();
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency).collect();
    latencies.sort();
    let bad: Vec<&Record> = records
        .iter()
        .filter(|r| r.outcome != Outcome::Ok)
        .collect();
    let window = match (bad.first(), bad.iter().map(|r| r.at + r.latency).max()) {
        (Some(first), Some(last)) => json!({
            "first_s": first.at.as_secs_f64(),
            "last_s": last.as_secs_f64(),
            "span_s": (last.saturating_sub(first.at)).as_secs_f64(),
        }),
        _ => json!(null),
    };
    let mut messages: Vec<&str> = Vec::new();
    for r in &bad {
        let m = if r.message.is_empty() {
            r.outcome.name()
        } else {
            r.message.as_str()
        };
        if !messages.contains(&m) && messages.len() < 5 {
            messages.push(m);
        }
    }
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    json!({
        "label": label,
        "admissions": records.len(),
        "seconds": (secs * 10.0).round() / 10.0,
        "rate_per_s": ((records.len() as f64 / secs) * 10.0).round() / 10.0,
        "ok": count(Outcome::Ok),
        "not_injected": count(Outcome::NotInjected),
        "failed": count(Outcome::Failed),
        "p50_ms": percentile(&latencies, 50.0),
        "p99_ms": percentile(&latencies, 99.0),
        "max_ms": percentile(&latencies, 100.0),
        "failure_window": window,
        "failure_messages": messages,
    })
}

async fn write_records(path: &PathBuf, label: &str, records: &[Record]) -> Result<()> {
    let mut out = String::new();
    for r in records {
        out.push_str(
            &json!({
                "label": label,
                "at_ms": r.at.as_secs_f64() * 1000.0,
                "latency_ms": r.latency.as_secs_f64() * 1000.0,
                "outcome": r.outcome.name(),
                "message": r.message,
            })
            .to_string(),
        );
        out.push('\n');
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(out.as_bytes()).await?;
    Ok(())
}

/// Resolves when the run should end: the deadline, the stop file, or SIGTERM/SIGINT.
async fn until_stopped(args: &Args) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let deadline = async {
        if args.seconds > 0 {
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let stop_file = async {
        match &args.stop_file {
            Some(path) => {
                while !path.exists() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = deadline => {}
        _ = stop_file => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if args.seconds == 0 && args.stop_file.is_none() {
        anyhow::bail!("give --seconds or --stop-file: the load must end");
    }
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.context {
        Some(_) => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    let client = Client::try_from(config).context("no Kubernetes client (KUBECONFIG)")?;
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let shared = Arc::new(Shared {
        api: Api::namespaced(client, &args.namespace),
        start: Instant::now(),
        stop: AtomicBool::new(false),
        seq: AtomicU64::new(0),
        pacer: Pacer {
            next: Mutex::new(Instant::now()),
            period,
        },
        records: Mutex::new(Vec::new()),
        args,
    });
    let tasks: Vec<_> = (0..shared.args.clients)
        .map(|c| tokio::spawn(client_loop(shared.clone(), c)))
        .collect();
    until_stopped(&shared.args).await?;
    shared.stop.store(true, Ordering::Relaxed);
    // In-flight creates finish and are recorded: a fault's failures are counted, not cut off.
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = shared.start.elapsed();
    let records = shared.records.lock().await;
    if let Some(path) = &shared.args.records {
        write_records(path, &shared.args.label, &records).await?;
    }
    println!("{}", summary(&shared.args.label, &records, elapsed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: u64, latency_ms: u64, outcome: Outcome) -> Record {
        Record {
            at: Duration::from_millis(at_ms),
            latency: Duration::from_millis(latency_ms),
            outcome,
            message: String::new(),
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn the_summary_counts_outcomes_and_bounds_the_failure_window() {
        let records = [
            record(0, 10, Outcome::Ok),
            record(1000, 20, Outcome::Failed),
            record(1500, 700, Outcome::NotInjected),
            record(3000, 10, Outcome::Ok),
        ];
        let s = summary("t", &records, Duration::from_secs(4));
        assert_eq!(s["admissions"], 4);
        assert_eq!(s["ok"], 2);
        assert_eq!(s["failed"], 1);
        assert_eq!(s["not_injected"], 1);
        assert_eq!(s["rate_per_s"], 1.0);
        assert_eq!(s["failure_window"]["first_s"], 1.0);
        assert_eq!(s["failure_window"]["last_s"], 2.2);
        assert_eq!(s["failure_messages"], json!(["failed", "not-injected"]));
    }

    #[test]
    fn a_clean_run_has_no_failure_window() {
        let s = summary("t", &[record(0, 5, Outcome::Ok)], Duration::from_secs(1));
        assert_eq!(s["failure_window"], json!(null));
        assert_eq!(s["p50_ms"], 5.0);
    }

    #[test]
    fn injection_is_read_from_the_stored_template() {
        let mut d = deployment("a", "img:v1").unwrap();
        assert!(!injected(&d, "migrate"));
        d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .init_containers = Some(vec![k8s_openapi::api::core::v1::Container {
            name: "migrate".into(),
            ..Default::default()
        }]);
        assert!(injected(&d, "migrate"));
        assert!(!injected(&d, "other"));
    }
}
