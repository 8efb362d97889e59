//! Serving connections: TLS handshake, the HTTP/1.1 or HTTP/2 protocol ALPN chose, the
//! connection cap, deadlines, and a graceful drain on shutdown.
//!
//! A hand-written accept loop rather than hyper-util's `auto` builder, because it does what that
//! builder does not: picks the protocol from ALPN (not by sniffing the preface), refuses
//! connections over the cap instead of queueing them, and closes connections that stay silent.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

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
