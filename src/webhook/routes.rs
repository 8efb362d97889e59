//! The HTTP routes: `POST /mutate` on the webhook port; `/healthz`, `/readyz` and `/metrics` on
//! the admin port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kube::core::admission::Operation;

use super::conn::Limits;
use super::metrics::{self, AdmissionLabels};
use super::review::{self, Verdict};
use crate::mutate::denial::Quoted;
use crate::mutate::{error_chain, InjectorConfig};
use crate::tls::CertStore;

/// State shared by the handlers.
pub struct AppState {
    pub config: InjectorConfig,
    pub limits: Limits,
    pub certs: Arc<CertStore>,
    /// False once shutdown starts, so readiness fails and the endpoint is taken out of rotation.
    pub accepting: AtomicBool,
}

impl AppState {
    pub fn new(config: InjectorConfig, limits: Limits, certs: Arc<CertStore>) -> Arc<Self> {
        Arc::new(AppState {
            config,
            limits,
            certs,
            accepting: AtomicBool::new(true),
        })
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": message, "code": status.as_u16()}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The webhook's routes: `POST /mutate`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(state)
}

async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "use POST with an AdmissionReview body",
    )
}

async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not found; the webhook path is POST /mutate",
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, Response> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body exceeds {limit} bytes"),
                )
            } else {
                json_error(StatusCode::BAD_REQUEST, "request body could not be read")
            })
        }
        Err(_) => Err(json_error(
            StatusCode::REQUEST_TIMEOUT,
            "request body was not received in time",
        )),
    }
}

async fn mutate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    if !is_json(&parts.headers) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let limit = state.limits.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body exceeds {limit} bytes"),
        );
    }
    let body = match read_body(body, limit, state.limits.request_timeout).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let reviewed = match review::review(&body, &state.config) {
        Ok(r) => r,
        Err(e) => {
            let message = error_chain(&e);
            tracing::warn!(error = %message, "rejected a body that is not an AdmissionReview");
            return json_error(StatusCode::BAD_REQUEST, &message);
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
        })
        .inc();
    m.duration.observe(started.elapsed().as_secs_f64());
    // Refusals are what operators look for; mutations are routine and logged at debug so the
    // write path does not pay for a log line per workload.
    match reviewed.verdict {
        Verdict::Denied | Verdict::Invalid => {
            tracing::info!(uid = %Quoted(&reviewed.uid), kind, operation, verdict = reviewed.verdict.as_str(), message = reviewed.message.as_deref().unwrap_or(""), "admission");
        }
        _ => {
            tracing::debug!(uid = %Quoted(&reviewed.uid), kind, operation, verdict = reviewed.verdict.as_str(), "admission")
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        reviewed.body,
    )
        .into_response()
}

/// The admin routes: `/healthz` (process alive), `/readyz` (a certificate is loaded and the
/// server accepts connections) and `/metrics`.
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

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.accepting.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if !state.certs.is_valid() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid (unexpired) serving certificate loaded\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}
