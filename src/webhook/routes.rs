//! The HTTP routes: `POST /mutate` on the webhook port; `/healthz`, `/readyz` and `/metrics` on
//! the admin port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use kube::core::admission::Operation;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::error::ApiError;
use super::metrics::{self, AdmissionLabels};
use super::review::{self, Verdict};
use super::runs::RunLookup;
use super::Limits;
use crate::mutate::denial::Quoted;
use crate::mutate::{error_chain, InjectorConfig};
use crate::readiness::Readiness;
use crate::tls::CertStore;

/// State shared by the handlers.
pub struct AppState {
    pub config: InjectorConfig,
    pub limits: Limits,
    pub certs: Arc<CertStore>,
    /// What `/readyz` reports, and nothing else: the certificate store's handle, which the
    /// server also sets when it starts draining. Never read on `/mutate`.
    pub readiness: Readiness,
    /// The MigrationRun cache for `/mutate-pods` (run-once mode); unset: no pod loses its waiter.
    runs: std::sync::OnceLock<Arc<dyn RunLookup>>,
    budget: Budget,
}

impl AppState {
    pub fn new(config: InjectorConfig, limits: Limits, certs: Arc<CertStore>) -> Arc<Self> {
        Arc::new(AppState {
            budget: Budget::new(limits.memory_budget_bytes),
            config,
            limits,
            readiness: certs.readiness_handle().clone(),
            certs,
            runs: std::sync::OnceLock::new(),
        })
    }

    /// Sets what `/mutate-pods` asks whether a run succeeded (once; later calls are ignored).
    pub fn set_runs(&self, runs: Arc<dyn RunLookup>) {
        let _ = self.runs.set(runs);
    }
}

/// What `/mutate-pods` answers with no run cache: nothing has succeeded.
struct NoRuns;

impl RunLookup for NoRuns {
    fn succeeded(&self, _: &str, _: &str) -> bool {
        false
    }
}

/// Bodies above this size are "large": together they may hold only half the budget, so stalled
/// large uploads can never starve ordinary reviews (tens of kB) of the other half.
const LARGE_BODY: usize = 1024 * 1024;

/// The memory budget: request bytes held at once, reserved before a body is read.
struct Budget {
    all: Semaphore,
    large: Semaphore,
}

/// Bytes reserved for one request, returned when it is answered.
struct Reservation<'a> {
    _all: SemaphorePermit<'a>,
    _large: Option<SemaphorePermit<'a>>,
}

impl Budget {
    fn new(bytes: usize) -> Budget {
        let permits = |n: usize| n.min(Semaphore::MAX_PERMITS);
        Budget {
            all: Semaphore::new(permits(bytes)),
            large: Semaphore::new(permits(bytes / 2)),
        }
    }

    /// Reserves `bytes` at once, or `None` when they do not fit now.
    fn try_reserve(&self, bytes: usize) -> Option<Reservation<'_>> {
        let n = u32::try_from(bytes).ok()?;
        let large = if bytes > LARGE_BODY {
            Some(self.large.try_acquire_many(n).ok()?)
        } else {
            None
        };
        let all = self.all.try_acquire_many(n).ok()?;
        Some(Reservation {
            _all: all,
            _large: large,
        })
    }
}

/// The webhook's routes: `POST /mutate` (workloads) and `POST /mutate-pods` (run-once mode's
/// pods webhook).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate).fallback(method_not_allowed))
        .route(
            "/mutate-pods",
            post(mutate_pods).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads the body into one buffer sized from Content-Length (no second copy), refusing more than
/// `limit` bytes and giving up after `timeout`.
async fn read_body(
    mut body: Body,
    declared: Option<usize>,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, ApiError> {
    let read = async {
        let mut out = Vec::with_capacity(declared.unwrap_or(16 * 1024).min(limit));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::BodyUnreadable)?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(ApiError::BodyTooLarge { limit });
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::BodyTimeout),
    }
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    handle(&state, request, |body| review::review(body, &state.config)).await
}

async fn mutate_pods(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let runs: &dyn RunLookup = match state.runs.get() {
        Some(r) => r.as_ref(),
        None => &NoRuns,
    };
    handle(&state, request, |body| review::review_pod(body, runs)).await
}

/// Reads a review within the limits and budget, answers it with `answer`, counts and logs it.
async fn handle(
    state: &AppState,
    request: Request,
    answer: impl FnOnce(&[u8]) -> Result<review::Reviewed, review::NotAReview>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    if !is_json(&parts.headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let limit = state.limits.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    // Reserve before reading: a request that does not fit in the budget now is turned away at
    // once (the API server retries, or another replica answers), never buffered.
    // The request's headers are held too (up to 64 KiB each): they count against the budget.
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let Some(_reservation) = state
        .budget
        .try_reserve(declared.unwrap_or(limit).saturating_add(header_bytes))
    else {
        metrics::get().overloaded.inc();
        return Err(ApiError::Overloaded);
    };
    let body = read_body(body, declared, limit, state.limits.request_timeout).await?;
    let reviewed = match answer(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "rejected a body that is not an AdmissionReview");
            return Err(e.into());
        }
    };
    let m = metrics::get();
    let kind = reviewed.kind.map_or("other", |k| k.as_str());
    let operation = match &reviewed.operation {
        Some(Operation::Create) => "CREATE",
        Some(Operation::Update) => "UPDATE",
        Some(Operation::Delete) => "DELETE",
        Some(Operation::Connect) => "CONNECT",
        None => "unknown",
    };
    m.admissions
        .get_or_create(&AdmissionLabels {
            kind,
            operation,
            verdict: reviewed.verdict.as_str(),
            reason: reviewed.verdict.reason(),
        })
        .inc();
    m.duration.observe(started.elapsed().as_secs_f64());
    // Refusals are what operators look for; mutations are routine and logged at debug so the
    // write path does not pay for a log line per workload.
    match reviewed.verdict {
        Verdict::Denied(_) | Verdict::Invalid => {
            tracing::info!(uid = %Quoted(&reviewed.uid), kind, operation, verdict = reviewed.verdict.as_str(), message = reviewed.message.as_deref().unwrap_or(""), "admission");
        }
        _ => {
            tracing::debug!(uid = %Quoted(&reviewed.uid), kind, operation, verdict = reviewed.verdict.as_str(), "admission")
        }
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        reviewed.body,
    )
        .into_response())
}

/// The admin routes: `/healthz` (process alive), `/readyz` (what the [`Readiness`] handle says:
/// not draining, an unexpired certificate, no certificate problem) and `/metrics`.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(state): State<Arc<AppState>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics::encode(&state.certs),
                )
            }),
        )
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    state.readiness.check().map_err(ApiError::NotReady)?;
    Ok("ok\n")
}
