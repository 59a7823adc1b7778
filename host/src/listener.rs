//! The accept loop: every TCP connection is served HTTP/1.1 by hyper until
//! it ends or becomes a WebSocket. Until then it is "pending", and pending
//! connections are bounded in number (`http.max_pending`: past it, new ones
//! are closed at accept) and in time (see [`crate::http_timeouts`]), so
//! half-sent requests cannot pile up and take every file descriptor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http_timeouts::{CountReads, HttpTimeouts};
use crate::metrics::Metrics;
use crate::server::{AppState, routes};

/// The client's address, put in every request's extensions for the routes
/// (warp's own `addr::remote()` only works under `warp::serve`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The pending slot of the HTTP connection a request came on, in every
/// request's extensions: a request that turns its connection into a
/// long-lived stream (the HTTP fallback) gives the slot back, since
/// `max_connections` bounds it from then on.
#[derive(Clone)]
pub struct PendingSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl PendingSlot {
    pub fn release(&self) {
        if let Ok(mut slot) = self.0.lock() {
            slot.take();
        }
    }
}

/// After a failed accept that is not one client's problem (most often out
/// of file descriptors), wait this long: retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts and serves until `stop` is cancelled; then stops accepting, lets
/// requests in flight finish (idle keep-alive connections close at once)
/// and returns when every HTTP connection has ended or been upgraded.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, stop: CancellationToken) {
    let http = state.config.http.clone();
    let metrics = state.metrics.clone();
    let pending = Arc::new(Semaphore::new(http.max_pending));
    let service = TowerToHyperService::new(warp::service(routes(state)));
    let connections = TaskTracker::new();
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                errors.handle(&e, &metrics).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            metrics.http_refused("pending");
            drop(stream);
            continue;
        };
        let service = service.clone();
        let (timer, reads) = HttpTimeouts::new(http.header_timeout, http.idle_timeout, &metrics);
        let stop = stop.clone();
        connections.spawn(async move {
            let io = TokioIo::new(CountReads::new(stream, reads));
            serve_connection(io, peer, service, timer, permit, stop).await;
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection until it ends or is upgraded; `permit` (a pending
/// slot) is held until then.
async fn serve_connection<S>(
    io: TokioIo<CountReads<TcpStream>>,
    peer: SocketAddr,
    service: S,
    timer: HttpTimeouts,
    permit: OwnedSemaphorePermit,
    stop: CancellationToken,
) where
    S: Service<http::Request<Incoming>, Response = warp::reply::Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let header_timeout = timer.header_timeout();
    let slot = PendingSlot(Arc::new(std::sync::Mutex::new(Some(permit))));
    let held = slot.clone();
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        request.extensions_mut().insert(slot.clone());
        service.call(request)
    });
    let mut builder = http1::Builder::new();
    builder.timer(timer).header_read_timeout(header_timeout).keep_alive(true);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    held.release();
    if let Err(e) = result {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}

/// Accept failures: counted, logged at most once a second, and followed by
/// a short pause unless they concern one client only.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    async fn handle(&mut self, e: &std::io::Error, metrics: &Metrics) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        metrics.accept_error();
        // The client gave up between SYN and accept: nothing to wait for.
        let one_client = matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset);
        if self.last_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            let also = std::mem::take(&mut self.unlogged);
            if one_client {
                tracing::debug!("accept failed: {e} ({also} more since the last report)");
            } else {
                tracing::warn!("accept failed: {e} ({also} more since the last report); pausing {ACCEPT_BACKOFF:?}");
            }
            self.last_logged = Some(Instant::now());
        } else {
            self.unlogged += 1;
        }
        if !one_client {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
    }
}
