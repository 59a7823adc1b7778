//! One accepted WebSocket connection, served by one task: it hands each
//! whole message to the plugin in order and writes the replies, writes what
//! other connections queued for it, pings, and carries out the close
//! handshake. Idle, it holds no plugin instance (`limits.hibernate_after`)
//! and its socket rests without buffers (see `socket`). A resumable
//! session (see `resume`) outlives its socket: the task waits for the
//! client to come back, and carries on with the new socket.

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant as Deadline;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::console::Kind;
use crate::deadlines::{Deadlines, silence_allowed};
use crate::dispatch::{Accepted, Dispatcher, Parts};
use crate::handover::{Packed, pack_timers};
use crate::hub::Connection;
use crate::hub::Outbound;
use crate::hub::Slot;
use crate::inbound::{self, InboundError};
use crate::plugin;
use crate::resume::{self, Keyed, Refused, Session, Sessions, Transfer};
use crate::socket::{Arrival, Socket};
use crate::writer::{WRITE_BATCH, Written};

/// A socket idle this long rests (gives its buffers back) until the client
/// sends again; waking it costs one small allocation and one read.
const SOCKET_REST: Duration = Duration::from_secs(1);

/// A resumable session's part of a connection (see `resume`).
pub struct Resumable {
    pub session: Arc<Session>,
    pub sessions: Arc<Sessions>,
    /// Messages taken from the client in this session: a resume tells it,
    /// so it sends the rest again.
    received: u64,
    /// The mark of the ping whose pong is awaited.
    ack_in_flight: Option<u64>,
    /// When to ask for an acknowledgement of what was written since.
    ack_at: Option<Deadline>,
}

impl Resumable {
    pub fn new(session: Arc<Session>, sessions: Arc<Sessions>) -> Box<Self> {
        Self::moved(session, sessions, 0)
    }

    /// A session that moved here, whose host had taken `received` messages
    /// from its client.
    pub fn moved(session: Arc<Session>, sessions: Arc<Sessions>, received: u64) -> Box<Self> {
        Box::new(Self { session, sessions, received, ack_in_flight: None, ack_at: None })
    }
}

/// How long written messages may wait for a ping that asks the client to
/// acknowledge them, unless they press on the buffers (see
/// `Replay::pressing`) or a keep-alive ping asks first. Each ask costs a
/// ping and a pong that wakes a resting socket, so a busy session is asked
/// once per this much time, not per message; what waits is memory only,
/// bounded by the buffers.
const ACK_DELAY: Duration = Duration::from_secs(5);

/// How a socket's service ended.
enum End {
    /// The connection is over.
    Closed,
    /// The transport dropped without a close: a resumable session waits.
    Lost,
    /// The client resumed on a new socket while this one seemed alive, or
    /// another host takes the session over.
    Handed(Transfer),
}

/// How a connection's task ends.
enum Ended {
    /// The connection is over; why, if its client may still come back to
    /// learn it.
    Closed(Option<Refused>),
    /// Its session carries on on another host.
    Moved,
}

/// How the task starts serving its socket.
enum Start {
    /// Just opened: `hello` goes out first (to a client that opted in to
    /// resumption), then what `on-open` sent.
    Opened(Option<Message>),
    /// A session that moved here from another host, whose client received
    /// this many messages.
    Resumed(u64),
}

/// Serves an accepted WebSocket until it closes, then tells the plugin.
/// `hello` goes out first (a client that opted in to resumption gets it);
/// `resume` is the session when it is resumable.
pub async fn run(accepted: Accepted, socket: Socket, hello: Option<Message>, resume: Option<Box<Resumable>>) {
    let Accepted { parts, instance, slot } = accepted;
    let dispatcher = Dispatcher::new(&parts, instance);
    Box::pin(serve_all(dispatcher, socket, Start::Opened(hello), resume)).await;
    drop(slot);
}

/// Serves a session that moved here from another host (see `takeover`),
/// from its client's `last` message on; it holds no instance until its
/// first event.
pub async fn run_moved(
    parts: Parts,
    slot: Slot,
    version: Arc<plugin::Version>,
    socket: Socket,
    last: u64,
    resume: Box<Resumable>,
) {
    let dispatcher = Dispatcher::asleep(&parts, version);
    Box::pin(serve_all(dispatcher, socket, Start::Resumed(last), Some(resume))).await;
    drop(slot);
}

async fn serve_all(dispatcher: Dispatcher<'_>, socket: Socket, start: Start, resume: Option<Box<Resumable>>) {
    let mut task = ConnectionTask { dispatcher, socket, written: Written::default(), peer_close: None, resume };
    let mut ended = None;
    match start {
        Start::Opened(hello) => {
            if let Some(hello) = hello {
                Box::pin(task.send_hello(hello)).await;
            }
            // What on-open sent goes out first.
            Box::pin(task.write_replies()).await;
            task.dispatcher.rest();
        }
        Start::Resumed(last) => {
            if !Box::pin(task.resumed(last)).await {
                ended = Some(Ended::Closed(Some(Refused::Gap)));
            }
        }
    }
    let ended = match ended {
        Some(ended) => ended,
        None => loop {
            let transfer = match task.serve().await {
                End::Closed => break Ended::Closed(None),
                End::Handed(transfer) => transfer,
                End::Lost => match Box::pin(task.away()).await {
                    Ok(transfer) => transfer,
                    Err(why) => break Ended::Closed(why),
                },
            };
            match transfer {
                Transfer::Resume(socket, last) => {
                    if !Box::pin(task.attach(socket, last)).await {
                        break Ended::Closed(Some(Refused::Gap));
                    }
                }
                Transfer::Export(points, packed) => {
                    let _ = packed.send(task.pack(&points));
                    break Ended::Moved;
                }
                Transfer::Drain => {}
            }
        },
    };
    let conn = task.dispatcher.ctx.conn.clone();
    conn.discard_queued();
    let ConnectionTask { dispatcher, peer_close, resume, .. } = task;
    match ended {
        Ended::Moved => {
            if let Some(r) = resume {
                r.session.handoff.close();
                r.sessions.end(&r.session, None);
                r.sessions.metrics.moved_out.inc();
            }
            dispatcher.ctx.plugin.console.publish(Kind::Session, Some(&conn.id), Some("moved"), || {
                "the session moved to another host, where its client resumed it".to_string()
            });
            dispatcher.moved();
        }
        Ended::Closed(why) => {
            if let Some(r) = resume {
                r.session.handoff.close();
                r.sessions.end(&r.session, why);
            }
            // Boxed, like every step an idle connection is not waiting in, so
            // the task of an idle connection stays small.
            Box::pin(dispatcher.finish(peer_close.as_ref())).await;
        }
    }
}

/// The connection's task.
struct ConnectionTask<'a> {
    dispatcher: Dispatcher<'a>,
    socket: Socket,
    written: Written,
    peer_close: Option<CloseFrame>,
    resume: Option<Box<Resumable>>,
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
    /// A resumable session asks its client to acknowledge what it wrote.
    Ack,
}

impl ConnectionTask<'_> {
    /// Runs until the connection ends or, for a resumable session, its
    /// socket does.
    async fn serve(&mut self) -> End {
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
            if let Some(r) = &self.resume
                && let Some(transfer) = r.session.handoff.take()
            {
                if let Transfer::Drain = transfer {
                    // Its client reconnects (to another host) and resumes.
                    let frame = CloseFrame { code: CloseCode::Restart, reason: "server restarting: resume".into() };
                    Box::pin(self.send_close(Some(frame))).await;
                    return End::Lost;
                }
                return End::Handed(transfer);
            }
            if conn.is_closing() && close_deadline.is_none() {
                close_deadline = Some(Deadline::now() + settings.close_timeout);
            }
            if conn.is_aborted() && !self.written.close_sent {
                let frame = conn.take_abort_frame();
                Box::pin(self.send_close(frame)).await;
            }
            if !conn.is_aborted() && conn.has_queued() {
                if !Box::pin(self.write_queued()).await {
                    return self.ended();
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
                self.resume.as_ref().and_then(|r| r.ack_at).map(|at| (at, Due::Ack)),
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
                        Some(Due::Close) => return End::Closed,
                        Some(Due::Ping) => {
                            if silence_allowed.is_some_and(|allowed| last_seen.elapsed() > allowed) {
                                tracing::debug!(conn = &*conn.id, "no answer to keep-alive pings; dropping the connection");
                                return self.ended();
                            }
                            next_ping = ping_every.map(|every| Deadline::now() + every);
                            if !self.written.close_sent && !Box::pin(self.ping()).await {
                                return self.ended();
                            }
                        }
                        Some(Due::Hibernate) => self.dispatcher.hibernate("idle"),
                        Some(Due::Ack) if !Box::pin(self.ask_ack(true)).await => return self.ended(),
                        Some(Due::Ack) => {}
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
                Inbound::Ended | Inbound::Frame(None) => return self.ended(),
                Inbound::Frame(Some(Ok(message))) => message,
                Inbound::Frame(Some(Err(e))) => {
                    if let Some(frame) = close_for_error(&e) {
                        tracing::debug!(conn = &*conn.id, "closing with {}: {e}", frame.code);
                        conn.abort(frame.clone());
                        Box::pin(self.send_close(conn.take_abort_frame())).await;
                    }
                    return self.ended();
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
                Message::Pong(payload) => {
                    if let Ok(mark) = <[u8; 8]>::try_from(&payload[..]) {
                        Box::pin(self.acknowledged(u64::from_be_bytes(mark))).await;
                    }
                    continue;
                }
                Message::Ping(_) | Message::Frame(_) => continue,
            };
            if conn.is_closing() {
                continue;
            }
            if let Some(r) = &mut self.resume {
                r.received += 1;
                if conn.is_tracked() {
                    r.session.received.store(r.received, std::sync::atomic::Ordering::Release);
                    r.sessions.changed(&conn.id);
                }
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
        if self.resume.is_some() {
            return self.write_queued_resumable().await;
        }
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
        if self.resume.is_some() {
            // Kept first, so a socket that fails now loses none of them.
            if self.keep(replies.drain()) {
                tokio::select! {
                    biased;
                    _ = aborted(conn) => {}
                    _ = self.flush_replay() => {}
                }
            }
            return;
        }
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

    /// How a socket that ended leaves the connection: a resumable session
    /// that was not closing waits for its client.
    fn ended(&self) -> End {
        if self.resume.is_some() && !self.dispatcher.ctx.conn.is_closing() { End::Lost } else { End::Closed }
    }

    async fn send_hello(&mut self, hello: Message) {
        if let Some(stream) = self.socket.awake().await {
            let _ = stream.send(hello).await;
        }
    }

    /// A keep-alive ping; a resumable session's carries the number of the
    /// last message written, which the pong acknowledges.
    async fn ping(&mut self) -> bool {
        let mark = match &mut self.resume {
            Some(r) => {
                let mark = r.session.replay.lock().map(|replay| replay.written()).unwrap_or(0);
                r.ack_in_flight = Some(mark);
                mark.to_be_bytes().to_vec()
            }
            None => Vec::new(),
        };
        self.socket.ping(&mark).await
    }

    /// The client received every message up to `mark`; if more were
    /// written since, the next ping asks about them.
    async fn acknowledged(&mut self, mark: u64) {
        let Some(r) = &mut self.resume else { return };
        if let Ok(mut replay) = r.session.replay.lock() {
            replay.ack(mark);
        }
        r.session.acked(mark);
        if r.ack_in_flight.is_some_and(|m| m <= mark) {
            r.ack_in_flight = None;
        }
        self.ask_ack(false).await;
    }

    /// Asks the client to acknowledge what was written, with a ping that
    /// carries the last number: `now`, or once a quarter of the buffer is
    /// unacknowledged, else within [`ACK_DELAY`]. Never while a ping is
    /// out: at most one per round trip, however much is written. False
    /// when the socket failed.
    async fn ask_ack(&mut self, now: bool) -> bool {
        let Some(r) = &mut self.resume else { return true };
        if now {
            r.ack_at = None;
        }
        if r.ack_in_flight.is_some() || self.written.close_sent {
            return true;
        }
        let (mark, pressing) = match r.session.replay.lock() {
            Ok(replay) if replay.unacknowledged() => (replay.written(), replay.pressing()),
            _ => return true,
        };
        if !now && !pressing {
            r.ack_at.get_or_insert_with(|| Deadline::now() + ACK_DELAY);
            return true;
        }
        r.ack_at = None;
        r.ack_in_flight = Some(mark);
        self.socket.ping(&mark.to_be_bytes()).await
    }

    /// Numbers and keeps what goes to a resumable session's client. False
    /// when its buffer overflowed, which ends the connection (1008): a
    /// client this far behind cannot be caught up.
    fn keep(&self, items: impl IntoIterator<Item = Outbound>) -> bool {
        let Some(r) = &self.resume else { return true };
        let Ok(mut replay) = r.session.replay.lock() else { return false };
        for item in items {
            match item {
                Outbound::Message(message) => {
                    if replay.push(message).is_err() {
                        self.dispatcher.ctx.conn.abort(CloseFrame {
                            code: CloseCode::Policy,
                            reason: "resume buffer full: client too slow".into(),
                        });
                        return false;
                    }
                }
                Outbound::Close(frame) => replay.close(frame),
            }
        }
        true
    }

    /// Writes what a resumable session kept and has not written, then the
    /// close the plugin asked for, if any. False when the socket failed.
    async fn flush_replay(&mut self) -> bool {
        let Some(r) = &self.resume else { return true };
        let metrics = &self.dispatcher.ctx.plugin.metrics;
        let session = r.session.clone();
        loop {
            let (batch, close) = match session.replay.lock() {
                Ok(mut replay) => {
                    let batch = replay.take_unsent(WRITE_BATCH);
                    let close = if batch.is_empty() { replay.take_close() } else { None };
                    (batch, close)
                }
                Err(_) => return false,
            };
            if batch.is_empty() && close.is_none() {
                break;
            }
            let Some(stream) = self.socket.awake().await else { return false };
            let items = batch.into_iter().map(Outbound::Message).chain(close.map(Outbound::Close));
            if !self.written.write(stream, items, metrics).await {
                return false;
            }
        }
        self.ask_ack(false).await
    }

    /// [`Self::write_queued`] for a resumable session: what was queued is
    /// kept, then written.
    async fn write_queued_resumable(&mut self) -> bool {
        let Parts { settings, conn, .. } = self.dispatcher.ctx;
        if !self.keep_queued() {
            return true;
        }
        let stall = silence_allowed(settings);
        tokio::select! {
            biased;
            _ = aborted(conn) => true,
            ok = async {
                match stall {
                    Some(stall) => tokio::time::timeout(stall, self.flush_replay()).await.unwrap_or(false),
                    None => self.flush_replay().await,
                }
            } => ok,
        }
    }

    /// Moves what other connections queued into the session's buffer, where
    /// it counts against the resume budget instead. False when the buffer
    /// overflowed (see [`Self::keep`]).
    ///
    /// A tracked session notes, for the checkpoint, where it stood in each
    /// room once the batch was queued: every broadcast up to those marks
    /// is numbered at most the last number kept.
    fn keep_queued(&self) -> bool {
        let conn = &self.dispatcher.ctx.conn;
        while conn.has_queued() && !conn.is_aborted() {
            let (batch, bytes, marks) = conn.take_queued_marked(usize::MAX);
            conn.written(bytes);
            if !self.keep(batch) {
                return false;
            }
            if let Some(r) = self.resume.as_ref().filter(|_| conn.is_tracked()) {
                let kept = r.session.replay.lock().map(|replay| replay.last_kept()).unwrap_or(0);
                r.session.note(kept, marks);
                r.sessions.changed(&conn.id);
            }
        }
        true
    }

    /// A resumable session whose socket dropped: it keeps everything sent
    /// to it, and its timers, until its client resumes (the new socket and
    /// the client's count of messages received) or the grace runs out. The
    /// error says why it ended, if its client may be told.
    async fn away(&mut self) -> Result<Transfer, Option<Refused>> {
        let Some(r) = &self.resume else { return Err(None) };
        let session = r.session.clone();
        let metrics = r.sessions.metrics.clone();
        let Parts { conn, plugin, .. } = self.dispatcher.ctx;
        self.socket.drop_transport();
        // Nothing to serve until a timer or the client: an away session
        // holds no instance, as one asleep.
        self.dispatcher.hibernate("away");
        tracing::debug!(conn = &*conn.id, "session away; waiting for its client to resume");
        plugin.console.publish(Kind::Session, Some(&conn.id), Some("away"), || {
            format!(
                "connection dropped; the session waits {} for its client",
                humantime::format_duration(session.grace)
            )
        });
        metrics.away.inc();
        let ended = Box::pin(self.wait_away(&session)).await;
        metrics.away.dec();
        if let Err(why) = &ended {
            let reason = why.map_or("grace", Refused::as_str);
            metrics.lost(reason);
            plugin.console.publish(Kind::Session, Some(&conn.id), Some("lost"), || {
                format!("the session ended while away ({reason}); on-close follows")
            });
        }
        ended
    }

    async fn wait_away(&mut self, session: &Session) -> Result<Transfer, Option<Refused>> {
        let Parts { conn, .. } = self.dispatcher.ctx;
        let hibernate_after = self.dispatcher.hibernate_after();
        let now = Deadline::now();
        let grace_ends = now + session.grace;
        let mut last_event = now;
        let timer = pin!(tokio::time::sleep_until(now));
        let mut deadlines = Deadlines::new(timer);
        loop {
            match session.handoff.take() {
                // Away already.
                Some(Transfer::Drain) | None => {}
                Some(transfer) => return Ok(transfer),
            }
            if conn.is_aborted() || conn.away_frame().is_some() {
                return Err(Some(Refused::Closed));
            }
            if !self.keep_queued() {
                return Err(Some(Refused::Overflow));
            }
            self.dispatcher.check_evicted();
            let holding = self.dispatcher.holding();
            deadlines.set([
                Some((grace_ends, Due::Close)),
                hibernate_after.filter(|_| holding).map(|after| (last_event + after, Due::Hibernate)),
                conn.timers.next_due().filter(|_| !conn.is_closing()).map(|at| (at, Due::Timer)),
            ]);
            tokio::select! {
                biased;
                _ = conn.woken() => {}
                fired = deadlines.fired() => match fired {
                    Some(Due::Close) => return Err(None),
                    Some(Due::Hibernate) => self.dispatcher.hibernate("idle"),
                    Some(Due::Timer) => {
                        if Box::pin(self.dispatcher.timer_due()).await {
                            if let Some(mut replies) = self.dispatcher.take_replies()
                                && !self.keep(replies.drain())
                            {
                                return Err(Some(Refused::Overflow));
                            }
                            self.dispatcher.rest();
                        }
                        last_event = Deadline::now();
                    }
                    _ => {}
                },
            }
        }
    }

    /// Carries on over a resumed socket: the client hears the session
    /// continues, then gets every message after its `last`. False when
    /// those are no longer kept (the session then ends).
    async fn attach(&mut self, socket: Socket, last: u64) -> bool {
        self.socket = socket;
        self.written = Written::default();
        self.resumed(last).await
    }

    /// [`Self::attach`] for the socket in place.
    async fn resumed(&mut self, last: u64) -> bool {
        let Some(r) = &mut self.resume else { return false };
        r.ack_in_flight = None;
        r.ack_at = None;
        let conn = &self.dispatcher.ctx.conn;
        let resumed = r.session.replay.lock().is_ok_and(|mut replay| replay.resume_from(last));
        if !resumed {
            // Checked at the handshake; what was kept since moved on. The
            // client reconnects and learns why.
            tracing::debug!(conn = &*conn.id, last, "resume from a message no longer kept");
            let frame = CloseFrame { code: CloseCode::Restart, reason: "resume failed: reconnect".into() };
            Box::pin(self.send_close(Some(frame))).await;
            return false;
        }
        r.sessions.metrics.resumed.inc();
        tracing::debug!(conn = &*conn.id, last, "session resumed");
        self.dispatcher.ctx.plugin.console.publish(Kind::Session, Some(&conn.id), Some("resumed"), || {
            format!("session resumed; the client had {last} messages")
        });
        let hello = resume::hello(Some(&r.session), true, None, r.received);
        Box::pin(self.send_hello(hello)).await;
        Box::pin(self.flush_replay()).await;
        true
    }
}

impl ConnectionTask<'_> {
    /// Packs the session for the host that takes it over (see `handover`):
    /// everything it keeps and what waits for it, with the broadcasts held
    /// for it numbered up to `points` (the new host has those after).
    fn pack(&mut self, points: &[(String, u64)]) -> Vec<u8> {
        let Some(r) = &self.resume else { return Vec::new() };
        let Parts { conn, plugin, .. } = self.dispatcher.ctx;
        let Ok(mut replay) = r.session.replay.lock() else { return Vec::new() };
        while conn.has_queued() {
            let (items, bytes) = conn.take_queued(usize::MAX);
            conn.written(bytes);
            for item in items {
                match item {
                    Outbound::Message(message) => replay.push_unbounded(message),
                    Outbound::Close(frame) => replay.close(frame),
                }
            }
        }
        for held in conn.take_held() {
            if points.iter().any(|(room, point)| *room == held.room && held.seq <= *point) {
                replay.push_unbounded(held.message);
            }
        }
        let timers = conn.timers.export();
        plugin.metrics.timers.connection_timers.dec_by(i64::try_from(timers.len()).unwrap_or(0));
        Packed {
            id: conn.id.to_string(),
            secret: r.session.secret().to_string(),
            subprotocol: r.session.subprotocol.clone(),
            state: conn.state(),
            rooms: conn.rooms(),
            timers: pack_timers(timers),
            replay: replay.pack(),
            received: r.received,
        }
        .encode()
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
