//! One accepted WebSocket connection, served by one task: it hands each
//! whole message to the plugin in order and writes the replies, writes what
//! other connections queued for it, pings, and carries out the close
//! handshake. Idle, it holds no plugin instance (`limits.hibernate_after`)
//! and its socket rests without buffers (see `socket`).

use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant as Deadline;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::deadlines::{Deadlines, silence_allowed};
use crate::dispatch::{Accepted, Dispatcher, Parts};
use crate::hub::Connection;
use crate::inbound::{self, InboundError};
use crate::plugin;
use crate::socket::{Arrival, Socket};
use crate::writer::{WRITE_BATCH, Written};

/// A socket idle this long rests (gives its buffers back) until the client
/// sends again; waking it costs one small allocation and one read.
const SOCKET_REST: Duration = Duration::from_secs(1);

/// Serves an accepted WebSocket until it closes, then tells the plugin.
pub async fn run(accepted: Accepted, socket: Socket) {
    let Accepted { parts, instance, slot } = accepted;
    let mut task = ConnectionTask {
        dispatcher: Dispatcher::new(&parts, instance),
        socket,
        written: Written::default(),
        peer_close: None,
    };
    // What on-open sent goes out first.
    Box::pin(task.write_replies()).await;
    task.dispatcher.rest();
    task.serve().await;
    parts.conn.discard_queued();
    let ConnectionTask { dispatcher, peer_close, .. } = task;
    // Boxed, like every step an idle connection is not waiting in, so the
    // task of an idle connection stays small.
    Box::pin(dispatcher.finish(peer_close.as_ref())).await;
    drop(slot);
}

/// The connection's task.
struct ConnectionTask<'a> {
    dispatcher: Dispatcher<'a>,
    socket: Socket,
    written: Written,
    peer_close: Option<CloseFrame>,
}

/// Why the next timer is set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Due {
    Close,
    Ping,
    Hibernate,
    Rest,
    /// One of the plugin's timers for this connection.
    Timer,
}

impl ConnectionTask<'_> {
    /// Runs until the connection ends.
    async fn serve(&mut self) {
        let settings = &self.dispatcher.ctx.settings;
        let hibernate_after = self.dispatcher.hibernate_after();
        let ping_every = (!settings.keep_alive_interval.is_zero()).then_some(settings.keep_alive_interval);
        let silence_allowed = silence_allowed(settings);
        let now = Deadline::now();
        let mut last_seen = now;
        let mut last_event = now;
        // When the socket may rest, if it is awake; moved on by traffic.
        let mut rest_at = Some(now + SOCKET_REST);
        let mut next_ping = ping_every.map(|every| now + every);
        let mut close_deadline: Option<Deadline> = None;
        let timer = pin!(tokio::time::sleep_until(now));
        let mut deadlines = Deadlines::new(timer);
        loop {
            let conn = &self.dispatcher.ctx.conn;
            if conn.is_closing() && close_deadline.is_none() {
                close_deadline = Some(Deadline::now() + settings.close_timeout);
            }
            if conn.is_aborted() && !self.written.close_sent {
                let frame = conn.take_abort_frame();
                Box::pin(self.send_close(frame)).await;
            }
            if !conn.is_aborted() && conn.has_queued() {
                if !Box::pin(self.write_queued()).await {
                    break;
                }
                rest_at = Some(Deadline::now() + SOCKET_REST);
            }
            let holding = self.dispatcher.holding();
            deadlines.set([
                close_deadline.map(|at| (at, Due::Close)),
                next_ping.map(|at| (at, Due::Ping)),
                hibernate_after.filter(|_| holding).map(|after| (last_event + after, Due::Hibernate)),
                rest_at.filter(|_| self.socket.is_awake()).map(|at| (at, Due::Rest)),
                conn.timers.next_due().filter(|_| !conn.is_closing()).map(|at| (at, Due::Timer)),
            ]);
            self.dispatcher.check_evicted();
            let inbound = async {
                if self.socket.is_awake() {
                    match self.socket.stream() {
                        Some(stream) => Inbound::Frame(stream.next().await),
                        None => Inbound::Ended,
                    }
                } else {
                    match self.socket.arrival().await {
                        Arrival::Woke => Inbound::Woke,
                        Arrival::Ended => Inbound::Ended,
                    }
                }
            };
            let item = tokio::select! {
                biased;
                _ = conn.woken() => continue,
                fired = deadlines.fired() => {
                    match fired {
                        Some(Due::Close) => break,
                        Some(Due::Ping) => {
                            if silence_allowed.is_some_and(|allowed| last_seen.elapsed() > allowed) {
                                tracing::debug!(conn = &*conn.id, "no answer to keep-alive pings; dropping the connection");
                                break;
                            }
                            next_ping = ping_every.map(|every| Deadline::now() + every);
                            if !self.written.close_sent && !Box::pin(self.socket.ping()).await {
                                break;
                            }
                        }
                        Some(Due::Hibernate) => self.dispatcher.hibernate("idle"),
                        Some(Due::Timer) => {
                            Box::pin(self.timers_due()).await;
                            last_event = Deadline::now();
                        }
                        Some(Due::Rest) => {
                            // Tried once per quiet spell: a socket that
                            // cannot rest now waits for more traffic.
                            rest_at = None;
                            if !self.written.close_sent && !conn.is_closing() {
                                Box::pin(self.socket.rest()).await;
                            }
                        }
                        None => {}
                    }
                    continue;
                }
                item = inbound => item,
            };
            let message = match item {
                Inbound::Woke => {
                    last_seen = Deadline::now();
                    rest_at = Some(last_seen + SOCKET_REST);
                    continue;
                }
                Inbound::Ended | Inbound::Frame(None) => break,
                Inbound::Frame(Some(Ok(message))) => message,
                Inbound::Frame(Some(Err(e))) => {
                    if let Some(frame) = close_for_error(&e) {
                        tracing::debug!(conn = &*conn.id, "closing with {}: {e}", frame.code);
                        conn.abort(frame.clone());
                        Box::pin(self.send_close(conn.take_abort_frame())).await;
                    }
                    break;
                }
            };
            last_seen = Deadline::now();
            if message.is_text() || message.is_binary() {
                // Pings and pongs do not keep a socket awake.
                rest_at = Some(last_seen + SOCKET_REST);
            } else if rest_at.is_none() {
                rest_at = Some(last_seen);
            }
            self.socket.received(&message);
            let message = match message {
                Message::Text(text) => plugin::Message::Text(text.as_str().to_owned()),
                Message::Binary(bytes) => plugin::Message::Binary(bytes.into()),
                Message::Close(frame) => {
                    // tungstenite has queued the reply with the same code;
                    // reading on flushes it and ends the stream.
                    self.peer_close = frame;
                    conn.begin_close();
                    continue;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if conn.is_closing() {
                continue;
            }
            Box::pin(self.dispatch(message)).await;
            last_event = Deadline::now();
        }
    }

    /// Sends a close frame (an abort's, or one owed for bad input), unless
    /// ours is already out, waiting at most `close_timeout`.
    async fn send_close(&mut self, frame: Option<CloseFrame>) {
        let within = self.dispatcher.ctx.settings.close_timeout;
        if let Some(stream) = self.socket.awake().await {
            let _ = tokio::time::timeout(within, self.written.close(stream, frame)).await;
        }
    }

    /// Writes what other connections queued, a batch per flush. False when
    /// the socket failed or stalled past keep-alive.
    async fn write_queued(&mut self) -> bool {
        let Parts { settings, conn, plugin, .. } = self.dispatcher.ctx;
        let metrics = &plugin.metrics;
        let stall = silence_allowed(settings);
        while conn.has_queued() && !conn.is_aborted() {
            let (batch, bytes) = conn.take_queued(WRITE_BATCH);
            let Some(stream) = self.socket.awake().await else {
                conn.written(bytes);
                return false;
            };
            let write = self.written.write(stream, batch, metrics);
            let ok = tokio::select! {
                biased;
                // A write to a client that does not read can wait long: an
                // abort interrupts it, and so does a stall past keep-alive.
                _ = aborted(conn) => true,
                ok = async {
                    match stall {
                        Some(stall) => tokio::time::timeout(stall, write).await.unwrap_or(false),
                        None => write.await,
                    }
                } => ok,
            };
            conn.written(bytes);
            if !ok {
                return false;
            }
        }
        true
    }

    async fn dispatch(&mut self, message: plugin::Message) {
        let conn = &self.dispatcher.ctx.conn;
        let close_timeout = self.dispatcher.ctx.settings.close_timeout;
        let answered = {
            let mut call = pin!(self.dispatcher.dispatch(message));
            // The call, unless the host starts to stop first.
            let first = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
                Poll::Ready(answered) => Poll::Ready(Ok(answered)),
                Poll::Pending => conn.poll_away(cx).map(Err),
            })
            .await;
            match first {
                Ok(answered) => answered,
                Err(frame) => {
                    // The host is stopping: the client hears so now, not
                    // when a long call ends (its replies are then dropped).
                    if let Some(stream) = self.socket.awake().await {
                        let _ = tokio::time::timeout(close_timeout, self.written.close(stream, Some(frame))).await;
                    }
                    call.await
                }
            }
        };
        if answered {
            self.write_replies().await;
            self.dispatcher.rest();
        }
    }

    /// Delivers a timer that is due, like a message: its replies are
    /// written before the next event.
    async fn timers_due(&mut self) {
        if self.dispatcher.timer_due().await {
            self.write_replies().await;
            self.dispatcher.rest();
        }
    }

    /// Writes what the last call sent to this connection, right here: a
    /// reply costs no hand-off to another task.
    async fn write_replies(&mut self) {
        let Some(mut replies) = self.dispatcher.take_replies() else { return };
        let Parts { conn, plugin, .. } = self.dispatcher.ctx;
        let Some(stream) = self.socket.awake().await else { return };
        // A client that does not read makes this wait; an abort interrupts it.
        let written = tokio::select! {
            biased;
            _ = aborted(conn) => return,
            ok = self.written.write(stream, replies.drain(), &plugin.metrics) => ok,
        };
        if !written {
            conn.abort(CloseFrame { code: CloseCode::Away, reason: "write failed".into() });
        }
    }
}

/// What came from the client.
enum Inbound {
    Frame(Option<Result<Message, WsError>>),
    /// A resting socket got bytes and is awake again.
    Woke,
    Ended,
}

/// Completes once the connection is aborted.
pub async fn aborted(conn: &Connection) {
    while !conn.is_aborted() {
        conn.woken().await;
    }
}

/// The close code owed to a peer whose input broke a rule; `None` when the
/// socket itself is gone.
fn close_for_error(e: &WsError) -> Option<CloseFrame> {
    let (code, reason) = match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => (CloseCode::Size, "message too big"),
        WsError::Capacity(_) => (CloseCode::Size, "frame too big"),
        WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8 in text message"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return None,
        WsError::Protocol(_) => (CloseCode::Protocol, "protocol error"),
        WsError::Io(e) => match inbound::refusal(e) {
            Some(InboundError::BudgetExhausted) => (CloseCode::Size, "server receive budget exhausted"),
            Some(InboundError::MessageTimeout) => (CloseCode::Policy, "message timeout"),
            None => return None,
        },
        _ => return None,
    };
    Some(CloseFrame { code, reason: reason.into() })
}
