//! The admission webhook server: AdmissionReview in and out ([`review`]), the routes
//! (`routes`) and their errors ([`ApiError`]), the [`Limits`] and the connection handling that
//! enforces them (`conn`), signals ([`shutdown`]) and `metrics`.
//! [`Server`] wires them: the binary, the tests and the benchmarks all run this one type.

mod conn;
mod error;
mod limits;
mod metrics;
pub mod review;
mod routes;
pub mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use error::ApiError;
pub use limits::Limits;
pub use routes::AppState;

use crate::mutate::InjectorConfig;
use crate::readiness::Readiness;
use crate::tls::{self, CertStore, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Where and how the server listens.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// HTTPS webhook endpoint (`POST /mutate`).
    pub listen: SocketAddr,
    /// Plain-HTTP admin endpoint (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    pub limits: Limits,
    /// How long in-flight requests may take to finish once the listeners close.
    pub grace: Duration,
    /// How long readiness fails before the listeners close, so Service endpoints drop the
    /// replica while it still answers.
    pub shutdown_delay: Duration,
}

/// How [`Server::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Shut down and drained (or the grace period ran out).
    Drained,
    /// The abort future fired during the shutdown: stopped without waiting.
    Aborted,
}

/// The webhook and admin servers, bound and ready to run.
pub struct Server {
    webhook: TcpListener,
    admin: TcpListener,
    tls: TlsAcceptor,
    app: Router,
    state: Arc<AppState>,
    options: ServerOptions,
}

impl Server {
    /// Binds both ports. The certificate store must already hold a certificate, so a bad pair
    /// fails the start rather than the first handshake.
    pub async fn bind(
        config: InjectorConfig,
        certs: Arc<CertStore>,
        options: ServerOptions,
    ) -> Result<Server, ServeError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let tls = TlsAcceptor::from(tls::server_config(certs.clone())?);
        let webhook = bind(options.listen).await?;
        let admin = bind(options.admin_listen).await?;
        let state = AppState::new(config, options.limits.clone(), certs);
        Ok(Server {
            webhook,
            admin,
            tls,
            app: routes::router(state.clone()),
            state,
            options,
        })
    }

    /// Serves `app` on the webhook port instead of the injector's routes: the same HTTPS stack
    /// answering something else, for benchmarks that measure the stack's own cost.
    pub fn with_webhook_router(mut self, app: Router) -> Server {
        self.app = app;
        self
    }

    /// The webhook port's address (useful when bound to port 0).
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// The readiness `/readyz` reports (the certificate store's handle): a clone to set.
    pub fn readiness(&self) -> Readiness {
        self.state.readiness.clone()
    }

    /// Serves until `shutdown` completes; then fails readiness, waits the shutdown delay, closes
    /// the listeners and drains. If `abort` completes first, returns at once.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        abort: impl Future<Output = ()>,
    ) -> Stopped {
        let Server {
            webhook,
            admin,
            tls,
            app,
            state,
            options,
        } = self;
        tracing::info!(
            listen = %webhook.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            admin = %admin.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            "migration-injector serving"
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let readiness = state.readiness.clone();
        let delay = options.shutdown_delay;
        let trigger = async move {
            shutdown.await;
            // Fail readiness first and keep serving while endpoints catch up, so the API server
            // is not refused by a replica it still routes to; then stop accepting and drain.
            readiness.set_draining();
            tokio::time::sleep(delay).await;
            let _ = stop_tx.send(true);
        };
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let limits = &options.limits;
        let servers = async {
            tokio::join!(
                conn::serve(
                    webhook,
                    Some(tls),
                    app,
                    limits.clone(),
                    stopped(stop_rx.clone()),
                    options.grace,
                ),
                conn::serve(
                    admin,
                    None,
                    routes::admin_router(state),
                    // Its own small limits: probes answer while the webhook port is flooded.
                    Limits::admin(),
                    stopped(stop_rx),
                    options.grace,
                ),
            )
        };
        tokio::select! {
            _ = async { tokio::join!(trigger, servers) } => {
                tracing::info!("stopped");
                Stopped::Drained
            }
            () = abort => Stopped::Aborted,
        }
    }
}
