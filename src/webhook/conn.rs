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
    /// Set by its first request: a connection that never served one may be a client's fresh
    /// connection with the request still on the wire, so shutdown answers it instead of closing.
    used: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(0),
            epoch: Instant::now(),
            close: Notify::new(),
            closing: AtomicBool::new(false),
            used: AtomicBool::new(false),
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

/// The app as a hyper service that counts the connection's requests in flight and, on an
/// HTTP/1.1 connection once the server is stopping, answers with `Connection: close`.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    /// HTTP/1.1 only: true once the listener closed.
    stopping: Option<watch::Receiver<bool>>,
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
        self.activity.used.store(true, Ordering::Release);
        let guard = InFlight(self.activity.clone());
        let response = self.inner.call(request);
        let stopping = self.stopping.clone();
        Box::pin(async move {
            // The guard rides in the response body, so the request counts as in flight until
            // hyper has written the whole response, not only until the handler returned.
            let mut response = response.await?;
            // HTTP/1.1 has no GOAWAY: closing a keep-alive connection while idle races the
            // client's next request on it, which a client cannot tell from a lost one (Go does
            // not retry a POST it wrote: `EOF`). `Connection: close` on a response is the safe
            // signal: the client will not reuse the connection, and hyper closes it once written.
            if stopping.is_some_and(|s| *s.borrow()) {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
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
        signals: Signals,
    ) -> Result<(), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = Tracked {
            inner: TowerToHyperService::new(app),
            activity: activity.clone(),
            stopping: (!h2).then(|| signals.stop.clone()),
        };
        let io = TokioIo::new(io);
        if h2 {
            let conn = self.http2.serve_connection(io, service);
            drive(conn, &activity, self.idle_timeout, false, signals).await
        } else {
            let conn = self.http1.serve_connection(io, service);
            drive(conn, &activity, self.idle_timeout, true, signals).await
        }
    }
}

/// What the accept loop tells every connection: the listener closed (finish, HTTP/1.1 responses
/// say `Connection: close`), the drain deadline passed (drop).
#[derive(Clone)]
struct Signals {
    stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
}

/// Completes once the signal is raised, or its sender is gone: `serve` itself was dropped (an
/// aborted shutdown), and its connections go with it.
async fn raised(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Why a connection is being closed.
enum Closing {
    /// Idle too long, or asked to make room at the cap: its client has no request on it.
    Idle,
    /// The server is shutting down.
    Stop,
}

/// Runs a connection to its end, closing it gracefully when it has been idle too long, when the
/// accept loop asks it to make room, or on shutdown.
async fn drive<C>(
    conn: C,
    activity: &Activity,
    idle_timeout: Duration,
    http1: bool,
    signals: Signals,
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
    let stopping = raised(signals.stop);
    tokio::pin!(stopping);
    let aborted = raised(signals.abort);
    tokio::pin!(aborted);
    let why = tokio::select! {
        biased;
        result = conn.as_mut() => return result,
        () = &mut idle => Closing::Idle,
        () = activity.close.notified() => Closing::Idle,
        () = &mut stopping => Closing::Stop,
    };
    match why {
        Closing::Stop => {
            if http1 {
                // HTTP/1.1 has no GOAWAY: closing an idle keep-alive connection races the
                // client's next request on it. So a connection is closed only when that race is
                // unlikely: after a response saying `Connection: close` (hyper then closes it),
                // or once its client has left it unused for `RETIRE_QUIET`. One that never
                // served a request (a client that just connected: the kernel's backlog is
                // drained at shutdown) has its first request on the wire and is answered; a
                // silent one meets the first-byte deadline. A request in progress is left alone
                // too: a response written before the shutdown lacks the header, and closing
                // after it would race the next request.
                loop {
                    let used = activity.used.load(Ordering::Acquire);
                    if used && activity.idle_for().is_some_and(|d| d >= RETIRE_QUIET) {
                        conn.as_mut().graceful_shutdown();
                        break;
                    }
                    tokio::select! {
                        biased;
                        result = conn.as_mut() => return result,
                        () = &mut aborted => return Ok(()),
                        () = tokio::time::sleep(CLOSE_CHECK) => {}
                    }
                }
            } else {
                // GOAWAY, then (after the client's PING ack) the final GOAWAY naming the last
                // stream served; hyper closes once those streams are answered, so no stream is
                // cut.
                conn.as_mut().graceful_shutdown();
            }
            // Not dropped while the client may still be sending on it: only at the drain
            // deadline (a client that never acknowledges the GOAWAY's PING).
            tokio::select! {
                biased;
                result = conn.as_mut() => result,
                () = &mut aborted => Ok(()),
            }
        }
        Closing::Idle => {
            // GOAWAY (HTTP/2) or close after the current response (HTTP/1). A client that
            // never acknowledges the GOAWAY's PING would keep the connection forever, so once
            // the client has had time to see the GOAWAY and no request is in flight, the
            // connection is dropped.
            conn.as_mut().graceful_shutdown();
            let closing_since = Instant::now();
            loop {
                tokio::select! {
                    biased;
                    result = conn.as_mut() => return result,
                    () = &mut aborted => return Ok(()),
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
    }
}

/// Time a client gets to see a GOAWAY before an idle connection is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// How often a closing connection checks whether its last request has finished.
const CLOSE_CHECK: Duration = Duration::from_millis(250);
/// At shutdown, an idle HTTP/1.1 connection used more recently than this is kept until its next
/// request (answered with `Connection: close`): a pooling client such as the API server (whose
/// pool is keyed by the Service's name, so it keeps reusing connections to a pod that left the
/// endpoints) is likely to send on it at any moment. One left unused this long is closed.
const RETIRE_QUIET: Duration = Duration::from_secs(1);

/// A new connection's place under the cap: held, or being freed by a shed idle connection.
enum Slot {
    Held(tokio::sync::OwnedSemaphorePermit),
    Freeing(Arc<Semaphore>),
}

/// What every connection task shares.
struct Acceptor {
    protocols: Arc<Protocols>,
    connections: Arc<Semaphore>,
    registry: Arc<Registry>,
    signals: Signals,
    /// Every connection task holds a clone; when all are gone, the drain is over.
    done: mpsc::Sender<()>,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
}

impl Acceptor {
    /// Serves one accepted connection on its own task, or refuses it at the cap.
    fn spawn(&self, stream: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        // At the cap, ask the longest-idle connection to close and wait briefly for its slot;
        // with none idle, refuse at once rather than queue: the client retries or fails over.
        let slot = match self.connections.clone().try_acquire_owned() {
            Ok(p) => Slot::Held(p),
            Err(_) if self.registry.shed_idle() => Slot::Freeing(self.connections.clone()),
            Err(_) => {
                tracing::warn!(peer = %peer, max = self.limits.max_connections, "connection limit reached; refusing");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let protocols = self.protocols.clone();
        let registry = self.registry.clone();
        let signals = self.signals.clone();
        let done = self.done.clone();
        let tls = self.tls.clone();
        let app = self.app.clone();
        let (handshake_timeout, first_byte) = (
            self.limits.handshake_timeout,
            self.limits.header_read_timeout,
        );
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
                        (protocols.serve(io, h2, app, activity, signals).await, id)
                    }
                    None => {
                        let id = registry.add(activity.clone());
                        let io = FirstByteDeadline::new(stream, first_byte);
                        (protocols.serve(io, false, app, activity, signals).await, id)
                    }
                };
            registry.remove(id);
            if let Err(e) = io_result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// A connection the kernel has completed and queued, if one is ready now.
fn accept_ready(
    listener: &TcpListener,
) -> Option<io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>> {
    let waker = std::task::Waker::noop();
    match listener.poll_accept(&mut Context::from_waker(waker)) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown` completes; then
/// stops accepting, asks every connection to finish, and waits up to `grace` for them, dropping
/// those left at that deadline.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let acceptor = Acceptor {
        protocols: Arc::new(Protocols::new(&limits)),
        connections: Arc::new(Semaphore::new(limits.max_connections)),
        registry: Arc::new(Registry::default()),
        signals: Signals {
            stop: stop_rx,
            abort: abort_rx,
        },
        done: done_tx,
        tls,
        app,
        limits,
    };
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
        acceptor.spawn(stream, peer);
    }
    // From now on HTTP/1.1 responses say `Connection: close`.
    let _ = stop_tx.send(true);
    // Closing the listener resets the connections the kernel completed but nobody accepted
    // yet, after their client sent its request: accept and serve those first (as many as the
    // cap, so a flood of new ones cannot keep the listener open).
    for _ in 0..acceptor.limits.max_connections {
        match accept_ready(&listener) {
            Some(Ok((stream, peer))) => acceptor.spawn(stream, peer),
            _ => break,
        }
    }
    drop(listener);
    drop(acceptor);
    if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "in-flight connections did not finish in time"
        );
        // The connections still open are dropped now, not when the runtime ends.
        let _ = abort_tx.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections the kernel completed before the shutdown but the loop never accepted are
    /// served, not reset by closing the listener: their clients already sent a request.
    #[tokio::test]
    async fn connections_in_the_backlog_at_shutdown_are_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            clients.push(c);
        }
        // Clients whose request comes later, as after a TLS handshake: a connection that never
        // served a request is not closed under it.
        let mut late = Vec::new();
        for _ in 0..2 {
            late.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        // Already shut down when the loop first runs: at most one connection is accepted
        // before the shutdown wins, the others are still in the backlog.
        let server = tokio::spawn(serve(
            listener,
            None,
            app,
            Limits::default(),
            std::future::ready(()),
            Duration::from_secs(5),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        for mut c in late {
            c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            clients.push(c);
        }
        for (i, mut c) in clients.into_iter().enumerate() {
            let mut response = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut response))
                .await
                .expect("connection neither answered nor closed");
            let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
            assert!(
                read.is_ok()
                    && text.starts_with("http/1.1 200")
                    && text.contains("connection: close"),
                "connection {i}: {read:?} {text:?}"
            );
        }
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve did not return")
            .unwrap();
    }
}
