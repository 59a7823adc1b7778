//! How long an HTTP connection may take to send a request:
//! `http.header_timeout` for a request's headers, `http.idle_timeout` for a
//! keep-alive connection between requests (Go's `ReadHeaderTimeout` and
//! `IdleTimeout`).
//!
//! hyper has one such timer, `header_read_timeout`, and starts it whenever it
//! begins waiting for a request head: at accept, and again each time a
//! keep-alive connection goes idle, so on its own it would close idle
//! connections after the header timeout. [`HttpTimeouts`] is the timer hyper
//! gets: after the first request, the wait it hands out lasts the idle
//! timeout until the next request's first bytes arrive ([`CountReads`] tells
//! it), then the header timeout from there.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, ReadBuf};

use crate::metrics::Metrics;

/// The timer of one HTTP connection.
pub struct HttpTimeouts {
    header: Duration,
    idle: Duration,
    /// Reads that returned bytes, counted by [`CountReads`].
    reads: Arc<AtomicU64>,
    /// Set once the first request head is being waited for.
    first_done: AtomicBool,
    header_timeouts: Counter,
    idle_timeouts: Counter,
}

impl HttpTimeouts {
    /// The timer for one connection, and the counter its I/O must feed.
    pub fn new(header: Duration, idle: Duration, metrics: &Metrics) -> (Self, Arc<AtomicU64>) {
        let reads = Arc::new(AtomicU64::new(0));
        let timer = Self {
            header,
            idle,
            reads: reads.clone(),
            first_done: AtomicBool::new(false),
            header_timeouts: metrics.http_timeout("header"),
            idle_timeouts: metrics.http_timeout("idle"),
        };
        (timer, reads)
    }

    /// What hyper's `header_read_timeout` must be set to.
    pub fn header_timeout(&self) -> Duration {
        self.header
    }
}

impl Timer for HttpTimeouts {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    /// hyper asks for this only when it starts waiting for a request head.
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let first = !self.first_done.swap(true, Ordering::Relaxed);
        let (wait, until) = if first { (Wait::Header, deadline) } else { (Wait::Idle, Instant::now() + self.idle) };
        Box::pin(HeadWait {
            sleep: Box::pin(tokio::time::sleep_until(until.into())),
            wait,
            reads: self.reads.clone(),
            reads_at_start: self.reads.load(Ordering::Relaxed),
            header: self.header,
            header_timeouts: self.header_timeouts.clone(),
            idle_timeouts: self.idle_timeouts.clone(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Header,
    Idle,
}

/// Waits for a request head. hyper polls it after every read that leaves
/// the head incomplete, so it sees the first bytes of a new request as they
/// arrive.
struct HeadWait {
    sleep: Pin<Box<tokio::time::Sleep>>,
    wait: Wait,
    reads: Arc<AtomicU64>,
    reads_at_start: u64,
    header: Duration,
    header_timeouts: Counter,
    idle_timeouts: Counter,
}

impl Future for HeadWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.wait == Wait::Idle && self.reads.load(Ordering::Relaxed) != self.reads_at_start {
            self.wait = Wait::Header;
            let deadline = tokio::time::Instant::now() + self.header;
            self.sleep.as_mut().reset(deadline);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match self.wait {
            Wait::Header => self.header_timeouts.inc(),
            Wait::Idle => self.idle_timeouts.inc(),
        };
        Poll::Ready(())
    }
}

impl Sleep for HeadWait {}

/// Counts the reads that bring bytes, for [`HttpTimeouts`]; otherwise the
/// I/O unchanged.
pub struct CountReads<T> {
    inner: T,
    reads: Arc<AtomicU64>,
}

impl<T> CountReads<T> {
    pub fn new(inner: T, reads: Arc<AtomicU64>) -> Self {
        Self { inner, reads }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountReads<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.reads.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

crate::passthrough::pass_writes_through!(CountReads);
