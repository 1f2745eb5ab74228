//! The HTTP server: an accept loop over the listener with a connection cap, optional TLS, a
//! watchdog per connection for its request head and idle time, and a stop bounded by
//! `api.shutdown_grace_s`. hyper parses and answers; this file only decides how long a
//! connection may stay and which one goes when the cap is reached.
//!
//! Why not `axum::serve`: it has no timer and no cap, so ~1,000 idle or half-sent connections
//! locked every register out for as long as they were held.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
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
}

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
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let a = Activity {
            epoch,
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            last_active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
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

    /// Closes the oldest connection without a request in progress; false if every one is busy.
    fn shed_oldest_idle(&self) -> bool {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let victim = open
            .iter()
            .find(|(_, (a, _))| a.idle())
            .map(|(id, (_, shed))| (*id, shed.clone()));
        match victim {
            Some((id, shed)) => {
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
                // At the cap: the oldest connection without a request in progress makes room
                // (held half-sent or idle connections go first, a register's request stays).
                let shed = registry.shed_oldest_idle();
                if let Some(n) = shed_log.hit() {
                    tracing::warn!(%peer, max_connections = opts.max_connections, connections_shed_since_last_line = n, "connection cap reached; shedding the oldest idle connection");
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
        let (app, opts, stop, registry) = (
            app.clone(),
            opts.clone(),
            shutdown.clone(),
            registry.clone(),
        );
        conns.spawn(async move {
            match &opts.tls {
                None => serve_conn(stream, app, peer, act, shed, stop, &opts).await,
                Some(tls) => {
                    let accepted = tokio::select! {
                        r = tokio::time::timeout(opts.header_timeout, tls.accept(stream)) => r,
                        () = shed.cancelled() => Ok(Err(io::Error::other("shed"))),
                    };
                    match accepted {
                        Ok(Ok(s)) => serve_conn(s, app, peer, act, shed, stop, &opts).await,
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

async fn serve_conn<I>(
    io: I,
    app: Router,
    peer: SocketAddr,
    act: Arc<Activity>,
    shed: CancellationToken,
    stop: CancellationToken,
    opts: &ServeOptions,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Tracked {
        inner: io,
        act: act.clone(),
    });
    let req_act = act.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = InFlight::start(&req_act);
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let r = app.oneshot(req.map(axum::body::Body::new)).await;
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
