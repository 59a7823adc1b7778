//! Partly received WebSocket messages, bounded in bytes across the host and
//! in time per message.
//!
//! tungstenite keeps a message's bytes until it is whole, so a client that
//! sends most of a large message and stalls holds up to
//! `websocket.max_message_size` of the host's memory; a thousand such
//! clients hold a gigabyte. [`MeteredIo`] sits under tungstenite and counts
//! what each connection has read since its last whole message; the
//! host-wide [`ReceiveBudget`] sums those counts. The reader calls
//! [`Meter::message_done`] for every message it gets, which returns the
//! message's bytes to the budget.
//!
//! Both rules are enforced inside the read itself, so the reader only maps
//! the error to a close code ([`refusal`]): a read that would take the host
//! past the budget fails with [`InboundError::BudgetExhausted`], and a read
//! that finds the current message older than `websocket.message_timeout`
//! (or waits past that point) fails with [`InboundError::MessageTimeout`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::InboundMetrics;

/// Bytes a connection may hold even when the budget is full, so small
/// messages are never refused for it.
pub const ALLOWANCE: u64 = 64 << 10;

/// A client control frame's header: two bytes and the four-byte mask (its
/// payload is at most 125 bytes, so the length never takes more).
const CONTROL_HEADER: u64 = 6;

/// Why a read from a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("server receive budget exhausted")]
    BudgetExhausted,
    #[error("message not received whole within the message timeout")]
    MessageTimeout,
}

impl From<InboundError> for io::Error {
    fn from(e: InboundError) -> Self {
        io::Error::other(e)
    }
}

/// The [`InboundError`] behind an I/O error, if [`MeteredIo`] raised it.
pub fn refusal(e: &io::Error) -> Option<InboundError> {
    e.get_ref()?.downcast_ref::<InboundError>().copied()
}

/// Bytes of partly received messages held across the host.
pub struct ReceiveBudget {
    limit: u64,
    /// How long one message may take to arrive, from its first byte.
    message_timeout: Duration,
    /// Its gauge is the count itself: one atomic, also what `/metrics` shows.
    metrics: InboundMetrics,
}

impl ReceiveBudget {
    pub fn new(limit: u64, message_timeout: Duration, metrics: InboundMetrics) -> Arc<Self> {
        Arc::new(Self { limit, message_timeout, metrics })
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        self.metrics.in_use.get()
    }

    /// Whether `bytes` more fit. Checked before a read and added after it,
    /// so under a race the budget may be passed by one read per connection.
    fn fits(&self, bytes: u64) -> bool {
        self.in_use().saturating_add(bytes) <= self.limit
    }

    fn take(&self, bytes: u64) {
        self.metrics.in_use.inc_by(bytes);
    }

    /// How long one message may take to arrive.
    pub fn message_timeout(&self) -> Duration {
        self.message_timeout
    }

    /// A hold for one HTTP body (a fallback post): the same budget as a
    /// WebSocket message's bytes, given back when the hold is dropped.
    pub fn hold_body(self: &Arc<Self>) -> BodyHold {
        BodyHold { budget: self.clone(), held: 0 }
    }

    /// Counts a message that did not arrive in time (see `message_timeout`).
    pub fn timed_out(&self) {
        self.metrics.message_timeouts.inc();
    }

    fn give_back(&self, bytes: u64) {
        if bytes > 0 {
            self.metrics.in_use.dec_by(bytes);
        }
    }
}

/// One HTTP body's bytes against the [`ReceiveBudget`], held until the
/// message is handed to its session (or refused).
pub struct BodyHold {
    budget: Arc<ReceiveBudget>,
    held: u64,
}

impl BodyHold {
    /// Counts `bytes` more; refused when they would take the host past the
    /// budget, unless this body holds under [`ALLOWANCE`].
    pub fn add(&mut self, bytes: u64) -> Result<(), InboundError> {
        if self.held.saturating_add(bytes) > ALLOWANCE && !self.budget.fits(bytes) {
            self.budget.metrics.over_budget.inc();
            return Err(InboundError::BudgetExhausted);
        }
        self.budget.take(bytes);
        self.held += bytes;
        Ok(())
    }
}

impl Drop for BodyHold {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

/// One connection's share of the budget: what it has read since its last
/// whole message, and since when. Shared by the [`MeteredIo`] under the
/// socket and the reader above it.
pub struct Meter {
    budget: Arc<ReceiveBudget>,
    held: AtomicU64,
    /// Every byte read, for telling whether tungstenite has bytes buffered
    /// (see `socket`).
    read_total: AtomicU64,
    /// Nanoseconds from `epoch` to the first byte of the current message,
    /// plus one; 0 when no message is under way.
    partial_since: AtomicU64,
    epoch: Instant,
}

impl Meter {
    fn new(budget: Arc<ReceiveBudget>) -> Self {
        Self {
            budget,
            held: AtomicU64::new(0),
            read_total: AtomicU64::new(0),
            partial_since: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Bytes this connection holds against the budget.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Bytes read from the client since the connection opened.
    pub fn read_total(&self) -> u64 {
        self.read_total.load(Ordering::Relaxed)
    }

    /// When the first byte of the message under way arrived.
    pub fn partial_since(&self) -> Option<Instant> {
        match self.partial_since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }

    /// The reader got `message`: its bytes go back to the budget. A data
    /// message returns everything counted (no partial message can remain
    /// under it); a control frame, which may arrive between the fragments
    /// of a data message, returns only its own bytes.
    pub fn message_done(&self, message: &Message) {
        let control = |payload: usize| CONTROL_HEADER + payload as u64;
        let own = match message {
            Message::Text(_) | Message::Binary(_) | Message::Frame(_) => None,
            Message::Ping(p) | Message::Pong(p) => Some(control(p.len())),
            Message::Close(frame) => Some(control(frame.as_ref().map_or(0, |f| 2 + f.reason.len()))),
        };
        let released = match own {
            None => self.held.swap(0, Ordering::Relaxed),
            Some(bytes) => {
                let before = self
                    .held
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| Some(held.saturating_sub(bytes)))
                    .unwrap_or_default();
                before.min(bytes)
            }
        };
        self.budget.give_back(released);
        if self.held() == 0 {
            self.partial_since.store(0, Ordering::Relaxed);
        }
    }

    fn counted(&self, bytes: u64) {
        self.read_total.fetch_add(bytes, Ordering::Relaxed);
        if self.held.fetch_add(bytes, Ordering::Relaxed) == 0 {
            let since = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            self.partial_since.store(since + 1, Ordering::Relaxed);
        }
        self.budget.take(bytes);
    }

    fn deadline(&self) -> Option<Instant> {
        self.partial_since().map(|since| since + self.budget.message_timeout)
    }

    fn release_all(&self) {
        self.budget.give_back(self.held.swap(0, Ordering::Relaxed));
        self.partial_since.store(0, Ordering::Relaxed);
    }
}

/// A connection's I/O, counting reads against the [`ReceiveBudget`] and
/// timing each message; writes pass through.
pub struct MeteredIo<T> {
    inner: T,
    meter: Arc<Meter>,
    /// Armed only while a read waits inside a partial message, so an idle
    /// connection holds no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Once refused, always refused (and counted once).
    refused: Option<InboundError>,
}

impl<T> MeteredIo<T> {
    pub fn new(inner: T, budget: Arc<ReceiveBudget>) -> Self {
        Self { inner, meter: Arc::new(Meter::new(budget)), timer: None, refused: None }
    }

    /// The handle the reader reports whole messages to.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    fn refuse(&mut self, why: InboundError) -> Poll<io::Result<()>> {
        if self.refused.is_none() {
            let metrics = &self.meter.budget.metrics;
            match why {
                InboundError::BudgetExhausted => metrics.over_budget.inc(),
                InboundError::MessageTimeout => metrics.message_timeouts.inc(),
            };
            self.refused = Some(why);
        }
        self.timer = None;
        Poll::Ready(Err(why.into()))
    }

    /// Ready when the message under way has run past its deadline.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.meter.deadline() else {
            self.timer = None;
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MeteredIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.refused {
            return this.refuse(why);
        }
        if this.meter.deadline().is_some_and(|d| Instant::now() >= d) {
            return this.refuse(InboundError::MessageTimeout);
        }
        if this.meter.held() >= ALLOWANCE && !this.meter.budget.fits(buf.remaining() as u64) {
            return this.refuse(InboundError::BudgetExhausted);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = (buf.filled().len() - before) as u64;
                if read > 0 {
                    this.meter.counted(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Ready(()) => this.refuse(InboundError::MessageTimeout),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

crate::passthrough::pass_writes_through!(MeteredIo);

impl<T> Drop for MeteredIo<T> {
    /// A closed connection's partial message is gone: so are its bytes.
    fn drop(&mut self) {
        self.meter.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Bytes;

    fn budget(limit: u64) -> Arc<ReceiveBudget> {
        ReceiveBudget::new(limit, Duration::from_secs(30), InboundMetrics::default())
    }

    /// A metered end of an in-memory pipe, and the client's end.
    fn pipe(budget: &Arc<ReceiveBudget>) -> (MeteredIo<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(1 << 20);
        (MeteredIo::new(server, budget.clone()), client)
    }

    async fn read_n(io: &mut MeteredIo<tokio::io::DuplexStream>, n: usize) -> io::Result<()> {
        let mut buf = vec![0; n];
        io.read_exact(&mut buf).await.map(|_| ())
    }

    #[tokio::test]
    async fn reads_count_until_the_message_is_done() {
        let budget = budget(1 << 20);
        let (mut io, mut client) = pipe(&budget);
        let meter = io.meter();
        client.write_all(&[0; 1000]).await.unwrap();
        read_n(&mut io, 1000).await.unwrap();
        assert_eq!((meter.held(), budget.in_use()), (1000, 1000));
        assert!(meter.partial_since().is_some());
        meter.message_done(&Message::Binary(Bytes::from_static(&[0; 990])));
        assert_eq!((meter.held(), budget.in_use()), (0, 0));
        assert!(meter.partial_since().is_none());
    }

    #[tokio::test]
    async fn a_control_frame_returns_only_its_own_bytes() {
        let budget = budget(1 << 20);
        let (mut io, mut client) = pipe(&budget);
        let meter = io.meter();
        // 500 bytes of a fragmented message, then a ping with 10 bytes.
        client.write_all(&[0; 516]).await.unwrap();
        read_n(&mut io, 516).await.unwrap();
        meter.message_done(&Message::Ping(Bytes::from_static(&[0; 10])));
        assert_eq!((meter.held(), budget.in_use()), (500, 500));
        assert!(meter.partial_since().is_some(), "the data message is still under way");
        meter.message_done(&Message::Pong(Bytes::from_static(&[0; 1000])));
        assert_eq!((meter.held(), budget.in_use()), (0, 0), "never returns more than it holds");
    }

    #[tokio::test]
    async fn past_the_budget_a_large_holder_is_refused_a_small_one_is_not() {
        let budget = budget(1 << 20);
        let (mut big, mut big_client) = pipe(&budget);
        let (mut small, mut small_client) = pipe(&budget);
        big_client.write_all(&vec![0; 1 << 20]).await.unwrap();
        read_n(&mut big, 1 << 20).await.unwrap();
        assert_eq!(budget.in_use(), 1 << 20);

        big_client.write_all(&[0; 100]).await.unwrap();
        let err = read_n(&mut big, 100).await.unwrap_err();
        assert_eq!(refusal(&err), Some(InboundError::BudgetExhausted));
        assert_eq!(budget.metrics.over_budget.get(), 1);

        // Under its allowance, a connection still reads.
        small_client.write_all(&[0; 1000]).await.unwrap();
        read_n(&mut small, 1000).await.unwrap();
        assert_eq!(budget.in_use(), (1 << 20) + 1000);

        drop(big);
        assert_eq!(budget.in_use(), 1000, "dropping the I/O returns its bytes");
        drop(small);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_stalled_message_times_out() {
        let budget = ReceiveBudget::new(1 << 20, Duration::from_millis(50), InboundMetrics::default());
        let (mut io, mut client) = pipe(&budget);
        client.write_all(&[0; 10]).await.unwrap();
        read_n(&mut io, 10).await.unwrap();
        // Waits for more, past the deadline: the timer wakes the read.
        let err = read_n(&mut io, 1).await.unwrap_err();
        assert_eq!(refusal(&err), Some(InboundError::MessageTimeout));
        assert_eq!(budget.metrics.message_timeouts.get(), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_never_times_out() {
        let budget = ReceiveBudget::new(1 << 20, Duration::from_millis(50), InboundMetrics::default());
        let (mut io, _client) = pipe(&budget);
        let read = tokio::time::timeout(Duration::from_millis(300), read_n(&mut io, 1)).await;
        assert!(read.is_err(), "still waiting: no message was under way");
        assert!(io.timer.is_none());
    }

    #[test]
    fn other_io_errors_are_not_refusals() {
        assert_eq!(refusal(&io::Error::other("x")), None);
        assert_eq!(refusal(&io::ErrorKind::ConnectionReset.into()), None);
        assert_eq!(refusal(&InboundError::MessageTimeout.into()), Some(InboundError::MessageTimeout));
    }
}
