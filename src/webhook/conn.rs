//! Serving connections: TLS handshake, the HTTP/1.1 or HTTP/2 protocol ALPN chose, the
//! connection cap, deadlines, idle connections, and a graceful drain on shutdown.
//!
//! A hand-written accept loop rather than hyper-util's `auto` builder, because it does what that
//! builder does not: picks the protocol from ALPN (not by sniffing the preface), refuses
//! connections over the cap instead of queueing them (after asking the longest-idle connection
//! to make room), and closes connections that stay silent or idle.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::Limits;

/// Per-connection bookkeeping: requests in flight, when the last one ended, and a way to ask
/// the connection to close.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` at which the connection last had a request in flight.
    last_active: AtomicU64,
    epoch: Instant,
    close: Notify,
    /// Set once the connection was asked to close, so it is not picked to make room twice.
    closing: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(0),
            epoch: Instant::now(),
            close: Notify::new(),
            closing: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(now, Ordering::Release);
    }

    /// How long the connection has had no request in flight; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_active.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(last))
    }
}

/// Decrements the in-flight count when a request's response has been sent (its body dropped by
/// hyper), or the request was abandoned.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The app as a hyper service that counts the connection's requests in flight.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<Incoming>,
    >>::Response;
    type Error =
        <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<Incoming>>>::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.activity.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            // The guard rides in the response body, so the request counts as in flight until
            // hyper has written the whole response, not only until the handler returned.
            let response = response.await?;
            Ok(response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _in_flight = &guard;
                    frame
                }))
            }))
        })
    }
}

/// A connection idle for less than this is never asked to make room: its client may be about
/// to send on it.
const MIN_IDLE_TO_SHED: Duration = Duration::from_secs(1);
/// How long a new connection at the cap waits for the slot a shed connection frees.
const SHED_WAIT: Duration = Duration::from_secs(3);

/// The live connections, so that at the cap the longest-idle one can be asked to close.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Registry {
    fn add(&self, activity: Arc<Activity>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, activity);
        }
        id
    }

    fn remove(&self, id: u64) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&id);
        }
    }

    /// Asks the connection idle the longest to close; false when none is idle.
    fn shed_idle(&self) -> bool {
        let Ok(live) = self.live.lock() else {
            return false;
        };
        let idlest = live
            .values()
            .filter(|a| !a.closing.load(Ordering::Acquire))
            .filter_map(|a| a.idle_for().map(|d| (d, a)))
            .filter(|(d, _)| *d >= MIN_IDLE_TO_SHED)
            .max_by_key(|(d, _)| *d);
        match idlest {
            Some((_, activity)) => {
                activity.closing.store(true, Ordering::Release);
                activity.close.notify_one();
                true
            }
            None => false,
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
    idle_timeout: Duration,
}

/// Flow-control windows: how much a client may send before the server reads it. Kept small so
/// unread data per connection stays small; a 6 MiB body still streams at full speed.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 512 * 1024;
/// Request headers per connection: ample for an AdmissionReview POST.
const MAX_HEADER_BYTES: usize = 64 * 1024;

impl Protocols {
    fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_send_buf_size(256 * 1024)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Protocols {
            http1,
            http2,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Serves one connection with the protocol negotiated by ALPN (HTTP/1.1 without TLS).
    async fn serve<IO>(
        &self,
        io: IO,
        h2: bool,
        app: Router,
        activity: Arc<Activity>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = Tracked {
            inner: TowerToHyperService::new(app),
            activity: activity.clone(),
        };
        let io = TokioIo::new(io);
        if h2 {
            let conn = self.http2.serve_connection(io, service);
            drive(conn, &activity, self.idle_timeout, stop).await
        } else {
            let conn = self.http1.serve_connection(io, service);
            drive(conn, &activity, self.idle_timeout, stop).await
        }
    }
}

/// Runs a connection to its end, closing it gracefully when it has been idle too long, when the
/// accept loop asks it to make room, or on shutdown.
async fn drive<C>(
    conn: C,
    activity: &Activity,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    C: GracefulConnection<Error = hyper::Error>,
{
    tokio::pin!(conn);
    let idle = async {
        loop {
            match activity.idle_for() {
                Some(d) if d >= idle_timeout => break,
                Some(d) => tokio::time::sleep(idle_timeout - d).await,
                None => tokio::time::sleep(CLOSE_CHECK).await,
            }
        }
    };
    tokio::pin!(idle);
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopping);
    tokio::select! {
        biased;
        result = conn.as_mut() => return result,
        () = &mut idle => {}
        () = activity.close.notified() => {}
        () = &mut stopping => {}
    }
    // GOAWAY (HTTP/2) or close after the current response (HTTP/1). A client that never
    // acknowledges the GOAWAY's PING would keep the connection forever, so once the client has
    // had time to see the GOAWAY and no request is in flight, the connection is dropped.
    conn.as_mut().graceful_shutdown();
    let closing_since = Instant::now();
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => return result,
            () = tokio::time::sleep(CLOSE_CHECK) => {
                if closing_since.elapsed() >= GOAWAY_GRACE
                    && activity.in_flight.load(Ordering::Acquire) == 0
                {
                    return Ok(());
                }
            }
        }
    }
}

/// Time a client gets to see a GOAWAY before an idle connection is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// How often a closing connection checks whether its last request has finished.
const CLOSE_CHECK: Duration = Duration::from_millis(250);

/// A new connection's place under the cap: held, or being freed by a shed idle connection.
enum Slot {
    Held(tokio::sync::OwnedSemaphorePermit),
    Freeing(Arc<Semaphore>),
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown` completes; then
/// stops accepting, asks every connection to finish, and waits up to `grace` for them.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let protocols = Arc::new(Protocols::new(&limits));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; when all are gone, the drain is over.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
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
        // At the cap, ask the longest-idle connection to close and wait briefly for its slot;
        // with none idle, refuse at once rather than queue: the client retries or fails over.
        let slot = match connections.clone().try_acquire_owned() {
            Ok(p) => Slot::Held(p),
            Err(_) if registry.shed_idle() => Slot::Freeing(connections.clone()),
            Err(_) => {
                tracing::warn!(peer = %peer, max = limits.max_connections, "connection limit reached; refusing");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let protocols = protocols.clone();
        let registry = registry.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        let tls = tls.clone();
        let app = app.clone();
        let (handshake_timeout, first_byte) =
            (limits.handshake_timeout, limits.header_read_timeout);
        tokio::spawn(async move {
            // Waiting for a shed connection's slot happens here, not in the accept loop.
            let _permit = match slot {
                Slot::Held(p) => p,
                Slot::Freeing(connections) => {
                    match tokio::time::timeout(SHED_WAIT, connections.acquire_owned()).await {
                        Ok(Ok(p)) => p,
                        _ => {
                            tracing::warn!(%peer, "connection limit reached; refusing");
                            return;
                        }
                    }
                }
            };
            let _done = done;
            let activity = Arc::new(Activity::new());
            let (io_result, id) =
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
                        let id = registry.add(activity.clone());
                        let io = FirstByteDeadline::new(stream, first_byte);
                        (protocols.serve(io, h2, app, activity, stop).await, id)
                    }
                    None => {
                        let id = registry.add(activity.clone());
                        let io = FirstByteDeadline::new(stream, first_byte);
                        (protocols.serve(io, false, app, activity, stop).await, id)
                    }
                };
            registry.remove(id);
            if let Err(e) = io_result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "in-flight connections did not finish in time"
        );
    }
}
