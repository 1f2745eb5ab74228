//! The HTTP server: an accept loop over the listener with a connection cap, optional TLS, a
//! watchdog per connection for its request head and idle time, and a stop bounded by
//! `api.shutdown_grace_s`. hyper parses and answers; this file only decides how long a
//! connection may stay and which one goes when the cap is reached.
//!
//! Why not `axum::serve`: it has no timer and no cap, so ~1,000 idle or half-sent connections
//! locked every register out for as long as they were held.
//!
//! A request body has a deadline for the whole of it, counted from the end of its head
//! (`api.body_timeout_s`; a byte now and then does not restart it), and a connection whose
//! request is still waiting for its body can be shed at the cap like an idle one: a client
//! trickling bodies cannot hold the slots a register needs. Requests in progress are also
//! capped per client address (`api.max_requests_per_address`).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::limits::InProgress;
use crate::logging::Sampler;

/// How the server bounds what clients hold.
#[derive(Clone)]
pub struct ServeOptions {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// hyper's read buffer, and so the largest request head it parses at all. The router
    /// answers heads above `api.max_header_bytes` with a problem; this is kept larger so that
    /// answer can be given (past it hyper closes with a bare 431).
    pub max_buf_size: usize,
    pub grace: Duration,
    pub tls: Option<TlsAcceptor>,
    /// The whole request body must arrive within this, from the end of the head.
    pub body_deadline: Duration,
    /// Requests in progress from one client address (an IPv4-mapped address counts as its
    /// IPv4 address); past it 429 `too_many_requests_in_progress`.
    pub max_requests_per_address: usize,
}

/// The error a request body yields when its deadline passed (the API answers 408).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive whole within api.body_timeout_s")]
pub struct BodyDeadline;

/// What a connection is doing, for its watchdog and for shedding. Times are ms since `epoch`.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// When the first byte of a request head arrived (0: none is being read).
    head_started: AtomicU64,
    last_active: AtomicU64,
    /// Requests started on this connection: before the first, a silent connection gets the
    /// head timeout, not the idle one.
    requests: AtomicU64,
    /// Requests whose body has not arrived whole yet (nothing is written before it has).
    body_pending: AtomicUsize,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let a = Activity {
            epoch,
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            last_active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            body_pending: AtomicUsize::new(0),
        };
        a.last_active.store(a.now(), Ordering::Relaxed);
        a
    }

    /// Never 0, so 0 can mean "not set".
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Which connection the cap sheds first (lowest rank, then oldest): an idle keep-alive
    /// connection, then one whose request still waits for its body, then one that has not
    /// sent a whole head yet (newest last, so a register that just connected is kept). A
    /// request whose handler runs with its whole body is never shed.
    fn shed_rank(&self) -> Option<u8> {
        if self.idle() {
            Some(if self.requests.load(Ordering::Relaxed) > 0 {
                0
            } else {
                2
            })
        } else if self.body_pending.load(Ordering::Relaxed) > 0 {
            Some(1)
        } else {
            None
        }
    }

    /// How long until this connection must go, or `None` while a request is in progress.
    fn left(&self, o: &ServeOptions) -> Option<Duration> {
        if !self.idle() {
            return None;
        }
        let now = self.now();
        let head = self.head_started.load(Ordering::Relaxed);
        let last = self.last_active.load(Ordering::Relaxed);
        let (since, limit) = if head != 0 {
            (head, o.header_timeout)
        } else if self.requests.load(Ordering::Relaxed) == 0 {
            (last, o.header_timeout)
        } else {
            (last, o.idle_timeout)
        };
        let deadline = since + limit.as_millis() as u64;
        Some(Duration::from_millis(deadline.saturating_sub(now)))
    }
}

/// Counts a request as in progress for as long as its handler runs.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.requests.fetch_add(1, Ordering::Relaxed);
        a.head_started.store(0, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_active.store(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's byte stream, noting when a request head starts to arrive.
struct Tracked<I> {
    inner: I,
    act: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.act.idle() {
            let now = self.act.now();
            let _ = self.act.head_started.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
}

/// The open connections, oldest first, so the cap can shed the oldest one that is not in
/// the middle of a request.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, (Arc<Activity>, CancellationToken)>>,
}

impl Registry {
    fn add(&self, act: Arc<Activity>) -> (u64, CancellationToken) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let shed = CancellationToken::new();
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, (act, shed.clone()));
        (id, shed)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// Closes one connection to make room (see `Activity::shed_rank`); false if every one is
    /// busy with a request that has its whole body.
    fn shed_one(&self) -> bool {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let victim = open
            .iter()
            .filter_map(|(id, (a, shed))| a.shed_rank().map(|r| (r, *id, shed.clone())))
            .min_by_key(|(r, id, _)| (*r, *id));
        match victim {
            Some((_, id, shed)) => {
                open.remove(&id);
                shed.cancel();
                true
            }
            None => false,
        }
    }

    fn shed_all(&self) {
        for (_, (_, shed)) in std::mem::take(
            &mut *self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            shed.cancel();
        }
    }
}

/// Serves `app` on `listener` until `shutdown`; then stops accepting, lets requests in
/// progress finish within the grace and closes whatever is left. Returns when the stop began.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> Instant {
    let opts = Arc::new(opts);
    let cap = Arc::new(Semaphore::new(opts.max_connections));
    let registry = Arc::new(Registry::default());
    let per_addr: Arc<InProgress<IpAddr>> = Arc::new(InProgress::default());
    let conns = TaskTracker::new();
    let epoch = Instant::now();
    let mut accept_errors = Sampler::new(Duration::from_secs(60));
    let mut shed_log = Sampler::new(Duration::from_secs(60));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: say so once a minute, and give the system a moment
                    // instead of spinning on the error.
                    if let Some(n) = accept_errors.hit() {
                        tracing::warn!(error = %e, errors_since_last_line = n, "accept error; check the open-file limit (api.max_connections needs about as many)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let permit = match cap.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At the cap one connection makes room: idle ones first, then ones still
                // waiting for a body, then half-sent heads; a register's request stays.
                let shed = registry.shed_one();
                if let Some(n) = shed_log.hit() {
                    tracing::warn!(%peer, max_connections = opts.max_connections, connections_shed_since_last_line = n, "connection cap reached; shedding an idle or stalled connection");
                }
                let p = if shed {
                    tokio::time::timeout(Duration::from_secs(1), cap.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                match p {
                    Some(p) => p,
                    // Every connection is busy with a request: refuse this one at once.
                    None => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let act = Arc::new(Activity::new(epoch));
        let (id, shed) = registry.add(act.clone());
        let (app, opts, registry) = (app.clone(), opts.clone(), registry.clone());
        let conn = Conn {
            peer,
            act,
            shed: shed.clone(),
            stop: shutdown.clone(),
            per_addr: per_addr.clone(),
        };
        conns.spawn(async move {
            match &opts.tls {
                None => serve_conn(stream, app, conn, &opts).await,
                Some(tls) => {
                    let accepted = tokio::select! {
                        r = tokio::time::timeout(opts.header_timeout, tls.accept(stream)) => r,
                        () = shed.cancelled() => Ok(Err(io::Error::other("shed"))),
                    };
                    match accepted {
                        Ok(Ok(s)) => serve_conn(s, app, conn, &opts).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            registry.remove(id);
            drop(permit);
        });
    }
    let stopped = Instant::now();
    drop(listener);
    conns.close();
    if tokio::time::timeout(opts.grace, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = opts.grace.as_secs(),
            "requests still open after api.shutdown_grace_s; stopping without them"
        );
        registry.shed_all();
        let _ = tokio::time::timeout(Duration::from_secs(1), conns.wait()).await;
    }
    stopped
}

/// One accepted connection: who, what it is doing, and what ends it.
struct Conn {
    peer: SocketAddr,
    act: Arc<Activity>,
    shed: CancellationToken,
    stop: CancellationToken,
    per_addr: Arc<InProgress<IpAddr>>,
}

async fn serve_conn<I>(io: I, app: Router, conn: Conn, opts: &ServeOptions)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        act,
        shed,
        stop,
        per_addr,
    } = conn;
    let io = TokioIo::new(Tracked {
        inner: io,
        act: act.clone(),
    });
    let req_act = act.clone();
    let (deadline, addr_cap) = (opts.body_deadline, opts.max_requests_per_address);
    let addr = client_unit(peer.ip());
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = InFlight::start(&req_act);
        let slot = per_addr.enter(addr, addr_cap);
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        // The head has arrived: from now the body has `deadline` to arrive whole.
        let req = req.map(|b| axum::body::Body::new(DeadlineBody::new(b, deadline, &req_act)));
        async move {
            let r = match slot {
                Some(_) => app.oneshot(req).await,
                None => Ok(too_many_in_progress()),
            };
            drop(slot);
            drop(guard);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper's head timer also runs while a keep-alive connection waits for its next
        // request, which would make the idle timeout the head timeout; the watchdog below
        // keeps the two apart.
        .header_read_timeout(None)
        .max_buf_size(opts.max_buf_size)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        // Re-checked at least every second: a head may start arriving on an idle connection.
        let wait = act
            .left(opts)
            .map_or(Duration::from_secs(1), |d| d.min(Duration::from_secs(1)));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = shed.cancelled() => return,
            () = stop.cancelled(), if !draining => {
                // Idle and half-sent connections close now; a request in progress finishes
                // first.
                if act.idle() {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            () = tokio::time::sleep(wait) => {
                if act.left(opts).is_some_and(|d| d.is_zero()) {
                    tracing::debug!(%peer, "connection closed: header or idle timeout");
                    return;
                }
            }
        }
    }
}

/// The unit requests in progress are counted in: an IPv4-mapped IPv6 address is its IPv4
/// address (a dual-stack listener sees IPv4 clients so).
pub(crate) fn client_unit(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn too_many_in_progress() -> axum::response::Response {
    use axum::response::IntoResponse;
    super::ApiError::Http {
        status: axum::http::StatusCode::TOO_MANY_REQUESTS,
        code: "too_many_requests_in_progress",
        detail: "Too many requests from this address are in progress (api.max_requests_per_address); wait for them to finish.".into(),
    }
    .into_response()
}

/// A request body with a deadline for the whole of it; while it has not arrived whole, its
/// connection counts as stalled for shedding (`Activity::body_pending`).
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    act: Option<Arc<Activity>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration, act: &Arc<Activity>) -> DeadlineBody {
        let mut b = DeadlineBody {
            deadline: Box::pin(tokio::time::sleep(limit)),
            act: None,
            inner,
        };
        if !http_body::Body::is_end_stream(&b.inner) {
            act.body_pending.fetch_add(1, Ordering::Relaxed);
            b.act = Some(act.clone());
        }
        b
    }

    /// The body arrived whole (or will not arrive): the connection is no longer stalled.
    fn settle(&mut self) {
        if let Some(a) = self.act.take() {
            a.body_pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for DeadlineBody {
    fn drop(&mut self) {
        self.settle();
    }
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.act.is_none() && self.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if frame.is_none() || self.inner.is_end_stream() || matches!(frame, Some(Err(_))) {
                self.settle();
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.settle();
            return Poll::Ready(Some(Err(Box::new(BodyDeadline))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
