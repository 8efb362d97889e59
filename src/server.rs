//! The HTTPS admission server and the plain-HTTP admin server: routing, body limits, timeouts,
//! and a graceful shutdown that stops accepting, drains in-flight requests and returns.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::admission;
use crate::config::InjectorConfig;
use crate::metrics::{self, AdmissionLabels};
use crate::tls::CertStore;

/// Limits applied to every connection and request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest AdmissionReview accepted. It carries object and oldObject, each up to etcd's
    /// 1.5 MiB (more as JSON than as stored protobuf): the default 6 MiB leaves headroom.
    pub max_body_bytes: usize,
    /// Time to read a request's headers (slow-loris guard).
    pub header_read_timeout: Duration,
    /// Time to finish a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to read the body and answer.
    pub request_timeout: Duration,
    /// Connections served at once; more are refused.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 6 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

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
    let reviewed = match admission::review(&body, &state.config) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "rejected a body that is not an AdmissionReview");
            return json_error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let m = metrics::get();
    let kind = reviewed.kind.map_or("other", |k| k.as_str());
    let operation = match &reviewed.operation {
        Some(kube::core::admission::Operation::Create) => "CREATE",
        Some(kube::core::admission::Operation::Update) => "UPDATE",
        Some(kube::core::admission::Operation::Delete) => "DELETE",
        Some(kube::core::admission::Operation::Connect) => "CONNECT",
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
        admission::Verdict::Denied | admission::Verdict::Invalid => {
            tracing::info!(uid = %reviewed.uid, kind, operation, verdict = reviewed.verdict.as_str(), message = reviewed.message.as_deref().unwrap_or(""), "admission");
        }
        _ => {
            tracing::debug!(uid = %reviewed.uid, kind, operation, verdict = reviewed.verdict.as_str(), "admission")
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
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics::encode(),
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

/// Closes a connection whose client sends nothing within the deadline: hyper's header timeout
/// covers HTTP/1 requests, but nothing covers a client that connects and stays silent (or stalls
/// before the HTTP/2 preface), which would hold a connection forever.
struct FirstByteDeadline<IO> {
    inner: IO,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FirstByteDeadline<IO> {
    fn new(inner: IO, within: Duration) -> Self {
        FirstByteDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client sent nothing in time",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// HTTP/1.1 and HTTP/2 connection settings.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(250)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Protocols { http1, http2 }
    }

    /// Serves one connection with the protocol negotiated by ALPN (HTTP/1.1 without TLS).
    async fn serve<IO>(
        &self,
        io: IO,
        h2: bool,
        app: Router,
        watcher: Watcher,
    ) -> Result<(), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(app);
        if h2 {
            watcher
                .watch(self.http2.serve_connection(TokioIo::new(io), service))
                .await
        } else {
            watcher
                .watch(self.http1.serve_connection(TokioIo::new(io), service))
                .await
        }
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown` completes; then
/// stops accepting and waits up to `grace` for in-flight connections to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let protocols = Arc::new(Protocols::new(&limits));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the connection cap, refuse at once rather than queue: the client retries or fails
        // over to another replica.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; refusing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let protocols = protocols.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let app = app.clone();
        let (handshake_timeout, first_byte) =
            (limits.handshake_timeout, limits.header_read_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let result =
                match tls {
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        protocols
                            .serve(FirstByteDeadline::new(stream, first_byte), h2, app, watcher)
                            .await
                    }
                    None => {
                        protocols
                            .serve(
                                FirstByteDeadline::new(stream, first_byte),
                                false,
                                app,
                                watcher,
                            )
                            .await
                    }
                };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "in-flight connections did not finish in time"
        );
    }
}

/// Resolves on the first SIGTERM or Ctrl-C. A second signal exits at once.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutdown signal received: draining");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
