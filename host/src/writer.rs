//! The write half of a connection, shared by two writers: the connection's
//! own task, which writes the plugin's replies inline right after each call
//! (no hand-off, no extra wake-up), and a writer task that drains the queue
//! of messages other connections send, and pings.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::Mutex;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;

use crate::config::WebSocketConfig;
use crate::connection::Socket;
use crate::hub::{Connection, Outbound};
use crate::metrics::PluginMetrics;

/// Most queued messages written before one flush: batches under load,
/// without holding a message back when the queue is quiet.
const WRITE_BATCH: usize = 64;

/// The socket's write half and what both writers must agree on.
pub struct Output {
    sink: Mutex<SplitSink<Socket, Message>>,
    /// Once our close frame is out, nothing more may be written.
    close_sent: AtomicBool,
    metrics: PluginMetrics,
}

impl Output {
    pub fn new(sink: SplitSink<Socket, Message>, metrics: PluginMetrics) -> Arc<Self> {
        Arc::new(Self { sink: Mutex::new(sink), close_sent: AtomicBool::new(false), metrics })
    }

    /// Writes `items` in order and flushes. False when the socket failed.
    /// Cancel-safe: tungstenite keeps whole frames in its buffer.
    pub async fn write(&self, items: impl IntoIterator<Item = Outbound>) -> bool {
        let mut sink = self.sink.lock().await;
        for item in items {
            if self.close_sent.load(Ordering::Acquire) {
                break;
            }
            let fed = match item {
                Outbound::Message(message) => {
                    self.metrics.messages_out.inc();
                    self.metrics.bytes_out.inc_by(message.len() as u64);
                    sink.feed(message).await
                }
                Outbound::Close(frame) => {
                    self.close_sent.store(true, Ordering::Release);
                    sink.feed(Message::Close(Some(frame))).await
                }
            };
            if fed.is_err() {
                return false;
            }
        }
        sink.flush().await.is_ok()
    }

    async fn ping(&self) -> bool {
        if self.close_sent.load(Ordering::Acquire) {
            return true;
        }
        self.sink.lock().await.send(Message::Ping(Bytes::new())).await.is_ok()
    }

    /// Sends the close frame an abort asked for, unless one is already out.
    async fn close_now(&self, conn: &Connection, within: Duration) {
        if self.close_sent.swap(true, Ordering::AcqRel) {
            return;
        }
        let frame = conn.take_abort_frame();
        let _ = timeout(within, async { self.sink.lock().await.send(Message::Close(frame)).await }).await;
    }
}

/// When the peer last sent anything, for keep-alive.
pub struct Liveness {
    start: Instant,
    last_seen_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self { start: Instant::now(), last_seen_ms: AtomicU64::new(0) }
    }
}

impl Liveness {
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// The writer task: queued messages from other connections, keep-alive
/// pings, and the close frame of an abort. Ends when `finished` is
/// cancelled, and cancels it when the socket can no longer be written.
pub async fn write_loop(
    output: Arc<Output>,
    mut queue: tokio::sync::mpsc::Receiver<Outbound>,
    conn: Arc<Connection>,
    settings: Arc<WebSocketConfig>,
    liveness: Arc<Liveness>,
    finished: CancellationToken,
) {
    let period = settings.keep_alive_interval;
    let mut pings = (!period.is_zero()).then(|| {
        let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        pings
    });
    let silence_allowed = period + settings.keep_alive_timeout;
    // Made once, not per wake-up: registering a waiter costs a lock.
    let aborted = conn.aborted().clone();
    let aborted = aborted.cancelled();
    tokio::pin!(aborted);
    let stopped = finished.clone();
    let stopped = stopped.cancelled();
    tokio::pin!(stopped);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let ping_due = async {
            match &mut pings {
                Some(p) => p.tick().await,
                None => std::future::pending().await,
            }
        };
        // A write to a client that does not read can wait forever: an abort
        // or the end of the connection must interrupt it.
        let ok = tokio::select! {
            biased;
            _ = &mut aborted => {
                output.close_now(&conn, settings.close_timeout).await;
                break;
            }
            _ = &mut stopped => break,
            ok = async {
                tokio::select! {
                    n = queue.recv_many(&mut batch, WRITE_BATCH) => {
                        let bytes = batch.iter().map(Outbound::len).sum();
                        let ok = n > 0 && output.write(batch.drain(..)).await;
                        conn.release(bytes);
                        ok
                    }
                    _ = ping_due => {
                        if liveness.silent_for() > silence_allowed {
                            tracing::debug!(conn = &*conn.id, "no answer to keep-alive pings; dropping the connection");
                            false
                        } else {
                            output.ping().await
                        }
                    }
                }
            } => ok,
        };
        if !ok {
            break;
        }
    }
    finished.cancel();
    // What is still queued will never be written: give its bytes back.
    batch.clear();
    queue.close();
    while let Ok(item) = queue.try_recv() {
        conn.release(item.len());
    }
}
