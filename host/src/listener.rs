//! The accept loop: every TCP connection is served HTTP/1.1 by hyper until
//! it ends or becomes a WebSocket. Until then it is "pending", and pending
//! connections are bounded in number (`http.max_pending`: past it, the
//! oldest gives way, see [`crate::pending`]) and in time (see
//! [`crate::http_timeouts`]), so half-sent requests can neither pile up and
//! take every file descriptor nor lock new clients out.
//!
//! With TLS ([`crate::tls`]) a connection is pending from accept: its
//! handshake must finish within `http.header_timeout`. One that negotiated
//! `h2` through ALPN is served HTTP/2 (no upgrades: WebSockets stay on
//! HTTP/1.1) and bounded by [`crate::http2_idle`] instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{HttpConfig, WebSocketConfig};
use crate::http_timeouts::{CountReads, HttpTimeouts};
use crate::http2_idle::{StreamCount, Tracked, closed_when_idle};
use crate::metrics::Metrics;
use crate::pending::{Admitted, Pending, PendingSlot};
use crate::tls::Tls;

/// The client's address, put in every request's extensions for the routes
/// (warp's own `addr::remote()` only works under `warp::serve`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// What every request of a connection carries for the routes: its peer and
/// its connection's pending slot.
fn tag(request: &mut http::Request<Incoming>, peer: SocketAddr, slot: &PendingSlot) {
    request.extensions_mut().insert(PeerAddr(peer));
    request.extensions_mut().insert(slot.clone());
}

/// After a failed accept that is not one client's problem (most often out
/// of file descriptors), wait this long: retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Requests one HTTP/2 connection may have in progress at once (each a
/// stream). Browsers open as many as the server allows; this bounds what
/// one connection can cost.
const MAX_H2_STREAMS: u32 = 256;

/// How long a timed-out HTTP/2 connection gets to say goodbye (GOAWAY)
/// before it is dropped.
const H2_GOODBYE: Duration = Duration::from_secs(1);

/// Accepts and serves until `stop` is cancelled; then stops accepting, lets
/// requests in flight finish (idle keep-alive connections close at once)
/// and returns when every HTTP connection has ended or been upgraded.
/// `service` answers every request (the application's routes).
pub async fn serve<S>(
    listener: TcpListener,
    http: HttpConfig,
    ws: Arc<WebSocketConfig>,
    metrics: Arc<Metrics>,
    service: S,
    tls: Option<Arc<Tls>>,
    stop: CancellationToken,
) where
    S: Service<http::Request<Incoming>, Response = warp::reply::Response> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let pending = Pending::new(http.max_pending);
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
        let admitted = pending.admit();
        if admitted.displaced {
            metrics.http_refused("pending");
        }
        let service = service.clone();
        let stop = stop.clone();
        let Some(tls) = tls.clone() else {
            connections.spawn(serve_http1(stream, peer, service, http.clone(), metrics.clone(), admitted, stop));
            continue;
        };
        let (http, ws, metrics) = (http.clone(), ws.clone(), metrics.clone());
        connections.spawn(async move {
            let handshake = tokio::time::timeout(http.header_timeout, tls.acceptor.accept(stream));
            let handshake = tokio::select! {
                done = handshake => done,
                _ = admitted.evicted.cancelled() => return,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    metrics.http_timeout("tls_handshake").inc();
                    tracing::debug!(%peer, "TLS handshake not done within {:?}", http.header_timeout);
                    return;
                }
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_http2(stream, peer, service, &http, &ws, &metrics, admitted, stop).await;
            } else {
                serve_http1(stream, peer, service, http, metrics, admitted, stop).await;
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one HTTP/1.1 connection until it ends, is upgraded, or gives way
/// to a newer one; its pending slot is held until then.
async fn serve_http1<I, S>(
    stream: I,
    peer: SocketAddr,
    service: S,
    http: HttpConfig,
    metrics: Arc<Metrics>,
    admitted: Admitted,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = warp::reply::Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (timer, reads) = HttpTimeouts::new(http.header_timeout, http.idle_timeout, &metrics);
    let io = TokioIo::new(CountReads::new(stream, reads));
    let header_timeout = timer.header_timeout();
    let Admitted { slot, evicted, .. } = admitted;
    let held = slot.clone();
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        tag(&mut request, peer, &slot);
        service.call(request)
    });
    let mut builder = http1::Builder::new();
    builder.timer(timer).header_read_timeout(header_timeout).keep_alive(true);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // Dropped: a connection that gave its slot back is not evicted.
        _ = evicted.cancelled() => Ok(()),
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

/// Serves one HTTP/2 connection until it ends, times out idle, gives way
/// to a newer one, or the host stops; its pending slot is held until then,
/// unless a request hands it back (a fallback stream, bounded by
/// `max_connections` from then on).
#[allow(clippy::too_many_arguments)]
async fn serve_http2<I, S>(
    stream: I,
    peer: SocketAddr,
    service: S,
    http: &HttpConfig,
    ws: &WebSocketConfig,
    metrics: &Metrics,
    admitted: Admitted,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = warp::reply::Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let streams = Arc::new(StreamCount::default());
    let counted = streams.clone();
    let Admitted { slot, evicted, .. } = admitted;
    let held = slot.clone();
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        tag(&mut request, peer, &slot);
        host_from_authority(&mut request);
        let guard = counted.begin();
        let response = service.call(request);
        async move { response.await.map(|r| r.map(|body| Tracked::new(body, guard))) }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_concurrent_streams(MAX_H2_STREAMS);
    // The WebSocket keep-alive settings also find dead HTTP/2 peers, whose
    // long-lived responses would otherwise never end.
    if !ws.keep_alive_interval.is_zero() {
        builder.keep_alive_interval(ws.keep_alive_interval).keep_alive_timeout(ws.keep_alive_timeout);
    }
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = closed_when_idle(streams, http.header_timeout, http.idle_timeout, metrics) => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(H2_GOODBYE, connection.as_mut()).await.unwrap_or(Ok(()))
        }
        _ = evicted.cancelled() => Ok(()),
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    held.release();
    if let Err(e) = result {
        tracing::debug!(%peer, "HTTP/2 connection ended: {e}");
    }
}

/// HTTP/2 requests name their host in `:authority` (hyper puts it in the
/// URI) and browsers send no `Host` header; the routes, the same-origin
/// check and plugins' `on-open` headers read `Host`, so it is filled in
/// from the authority, as RFC 9113 (8.3.1) has a server treat it.
fn host_from_authority<B>(request: &mut http::Request<B>) {
    if request.headers().contains_key(http::header::HOST) {
        return;
    }
    let host = request.uri().authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok());
    if let Some(host) = host {
        request.headers_mut().insert(http::header::HOST, host);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http2_request_gets_its_host_header_from_the_authority() {
        let mut request = http::Request::get("https://127.0.0.1:5000/ws").body(()).unwrap();
        host_from_authority(&mut request);
        assert_eq!(request.headers()[http::header::HOST], "127.0.0.1:5000");
        // One the client sent is kept.
        let mut request =
            http::Request::get("https://a.example/ws").header(http::header::HOST, "b.example").body(()).unwrap();
        host_from_authority(&mut request);
        assert_eq!(request.headers()[http::header::HOST], "b.example");
    }
}
