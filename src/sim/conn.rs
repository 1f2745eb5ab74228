//! Connection handling. The simulator serves with hyper directly (not `axum::serve`) so that it
//! can really refuse (close its listener), cut every open connection, and drop one connection
//! mid-request. Every connection task runs in the simulator's [`TaskTracker`], so
//! [`super::SimHandle::shutdown`] cancels them and waits until they are gone.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Kills the connection a request came in on.
#[derive(Clone)]
pub(super) struct ConnKill(pub CancellationToken);

/// Accepts API connections until `stop`; closes the listener while `refuse` is set (cutting
/// the connections of that epoch) and binds the same port again when it is cleared.
pub(super) async fn serve_api(
    first: TcpListener,
    addr: SocketAddr,
    app: Router,
    mut refuse: tokio::sync::watch::Receiver<bool>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut listener = Some(first);
    loop {
        // Every connection of this epoch is cut when refusing starts.
        let epoch = stop.child_token();
        if let Some(l) = listener.take() {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => { epoch.cancel(); return; }
                    r = refuse.changed() => {
                        if r.is_err() || *refuse.borrow() { break; }
                    }
                    acc = l.accept() => {
                        let Ok((stream, _)) = acc else { continue };
                        let _ = stream.set_nodelay(true);
                        tracker.spawn(serve_conn(stream, app.clone(), epoch.clone()));
                    }
                }
            }
            drop(l);
            epoch.cancel();
        }
        // Refusing: wait until told to serve again, then rebind the same port.
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = refuse.changed() => {
                    if r.is_err() { return; }
                    if !*refuse.borrow() { break; }
                }
            }
        }
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, %addr, "simulator cannot rebind yet");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
    }
}

/// Serves one connection until it ends, its epoch is cut, or a handler kills it.
async fn serve_conn(stream: tokio::net::TcpStream, app: Router, epoch: CancellationToken) {
    let kill = epoch.child_token();
    let k2 = kill.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnKill(k2.clone()));
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection future closes the socket without an answer.
        _ = kill.cancelled() => {}
    }
}
