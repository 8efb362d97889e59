//! The controller's admin HTTP server: `/healthz` (the process runs), `/readyz` (its caches are
//! synced), `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub synced: Arc<AtomicBool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.synced.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Binds `listen` (failing the start on a taken port) and serves until the process ends.
pub async fn serve(listen: SocketAddr, state: AdminState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "admin server listening");
    axum::serve(listener, router(state)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn answer(response: impl IntoResponse) -> (StatusCode, String) {
        let response = response.into_response();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ready_once_synced_and_metrics_served() {
        let state = AdminState {
            metrics: Arc::default(),
            synced: Arc::default(),
        };
        let ready = |s: &AdminState| readyz(State(s.clone()));
        assert_eq!(
            answer(ready(&state).await).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.synced.store(true, Ordering::Relaxed);
        assert_eq!(answer(ready(&state).await).await.0, StatusCode::OK);
        let (status, body) = answer(metrics(State(state.clone())).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("migration_injector_controller_leader"),
            "{body}"
        );
    }
}
