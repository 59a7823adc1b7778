//! The HTTP/2 counterpart of [`crate::http_timeouts`]. hyper's HTTP/2
//! server has no header or idle timeout, so a TLS client that negotiated
//! `h2` and then sent no request, or keeps a connection with no request
//! open, would hold a pending slot forever. [`StreamCount`] counts the
//! requests in progress (until their response body is done or dropped);
//! [`closed_when_idle`] ends when the connection has had none for
//! `http.header_timeout` (before its first request) or `http.idle_timeout`
//! (after). Reads do not count as activity: PINGs and half-sent headers
//! must not keep a connection alive.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};

use crate::metrics::Metrics;

/// Requests of one connection in progress, and how many ever began.
#[derive(Debug, Default)]
pub struct StreamCount {
    active: AtomicUsize,
    started: AtomicU64,
}

impl StreamCount {
    /// Counts a request as in progress until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> StreamGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }
}

/// One request in progress; moved into its response body.
#[derive(Debug)]
pub struct StreamGuard(Arc<StreamCount>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // Counted as a start too, so the quiet time runs from the end.
        self.0.started.fetch_add(1, Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`StreamGuard`].
pub struct Tracked<B> {
    body: B,
    _guard: StreamGuard,
}

impl<B> Tracked<B> {
    pub fn new(body: B, guard: StreamGuard) -> Self {
        Self { body, _guard: guard }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Returns once the connection has been without a request in progress for
/// its timeout; counts that as an `header` or `idle` HTTP timeout.
pub async fn closed_when_idle(streams: Arc<StreamCount>, header: Duration, idle: Duration, metrics: &Metrics) {
    // Checked a few times per timeout: closes within a quarter of it late.
    let tick = (header.min(idle) / 4).max(Duration::from_millis(25));
    let mut seen = streams.started.load(Ordering::Relaxed);
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let started = streams.started.load(Ordering::Relaxed);
        if streams.active.load(Ordering::Relaxed) > 0 || started != seen {
            seen = started;
            quiet_since = tokio::time::Instant::now();
            continue;
        }
        let (limit, kind) = if started == 0 { (header, "header") } else { (idle, "idle") };
        if quiet_since.elapsed() >= limit {
            metrics.http_timeout(kind).inc();
            return;
        }
    }
}
