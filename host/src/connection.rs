//! One accepted WebSocket connection, served by one task: it hands each
//! whole message to the plugin in order and writes the replies, writes what
//! other connections queued for it, pings, and carries out the close
//! handshake. Idle, it holds no plugin instance (`limits.hibernate_after`)
//! and its socket rests without buffers (see `socket`).

use crate::console::Kind;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::time::Instant as Deadline;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::config::{Hibernate, ReloadMode, WebSocketConfig};
use crate::hub::{Connection, Hub, Slot};
use crate::inbound::{self, InboundError};
use crate::metrics::Event as EventLabel;
use crate::plugin::{self, Event, Fault, HostLimits, Instance, InstancePool, Plugin};
use crate::socket::{Arrival, Socket};
use crate::writer::{WRITE_BATCH, Written};

/// A socket idle this long rests (gives its buffers back) until the client
/// sends again; waking it costs one small allocation and one read.
const SOCKET_REST: Duration = Duration::from_secs(1);

/// An accepted connection whose plugin instance has said yes in `on-open`,
/// waiting for the HTTP upgrade to complete.
pub struct Session {
    pub conn: Arc<Connection>,
    pub plugin: Arc<Plugin>,
    /// The instance that ran `on-open`; kept for the first events.
    pub instance: Box<Instance>,
    pub hub: Arc<Hub>,
    pub pool: Arc<InstancePool>,
    pub settings: Arc<WebSocketConfig>,
    /// Held until the connection is gone: counts toward max_connections.
    pub slot: Slot,
}

/// The instance serving a connection: none while it hibernates. Boxed, so
/// a hibernating connection's task does not carry an instance's size.
enum Serving {
    Ready(Box<Instance>),
    Hibernating,
    Faulted,
}

impl Session {
    /// Serves the connection until it closes, then tells the plugin.
    pub async fn run(self, socket: Socket) {
        let Session { conn, plugin, instance, hub, pool, settings, slot } = self;
        let mut task = Task {
            ctx: Ctx { conn: &conn, plugin: &plugin, hub: &hub, pool: &pool, settings: &settings },
            socket,
            written: Written::default(),
            version: instance.version().clone(),
            serving: Serving::Ready(instance),
            peer_close: None,
        };
        // What on-open sent goes out first.
        Box::pin(task.write_replies()).await;
        task.rest();
        task.serve().await;
        conn.discard_queued();
        let Task { ctx, serving, version, peer_close, .. } = task;
        // Boxed, like every step an idle connection is not waiting in, so
        // the task of an idle connection stays small.
        Box::pin(ctx.finish(serving, &version, peer_close.as_ref())).await;
        drop(slot);
    }

    /// The client went away before the upgrade completed: the plugin said
    /// yes to `on-open`, so it still gets its `on-close`.
    pub async fn abandon(self) {
        let Session { conn, plugin, instance, hub, pool, settings, slot } = self;
        let ctx = Ctx { conn: &conn, plugin: &plugin, hub: &hub, pool: &pool, settings: &settings };
        let version = instance.version().clone();
        conn.discard_queued();
        Box::pin(ctx.finish(Serving::Ready(instance), &version, None)).await;
        drop(slot);
    }
}

/// What every step of a connection needs.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub conn: &'a Arc<Connection>,
    pub plugin: &'a Arc<Plugin>,
    pub hub: &'a Arc<Hub>,
    pub pool: &'a Arc<InstancePool>,
    pub settings: &'a WebSocketConfig,
}

/// The connection's task.
struct Task<'a> {
    ctx: Ctx<'a>,
    socket: Socket,
    written: Written,
    serving: Serving,
    /// The version of the last instance: what drain mode keeps serving.
    version: Arc<plugin::Version>,
    peer_close: Option<CloseFrame>,
}

/// Why the next timer is set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Due {
    Close,
    Ping,
    Hibernate,
    Rest,
}

impl Task<'_> {
    /// Runs until the connection ends.
    async fn serve(&mut self) {
        let settings = self.ctx.settings;
        let hibernate_after = match self.ctx.plugin.limits.hibernate_after {
            Hibernate::After(after) => Some(after),
            Hibernate::Never => None,
        };
        let ping_every = (!settings.keep_alive_interval.is_zero()).then_some(settings.keep_alive_interval);
        let silence_allowed = silence_allowed(settings);
        let now = Deadline::now();
        let mut last_seen = now;
        let mut last_event = now;
        // When the socket may rest, if it is awake; moved on by traffic.
        let mut rest_at = Some(now + SOCKET_REST);
        let mut next_ping = ping_every.map(|every| now + every);
        let mut close_deadline: Option<Deadline> = None;
        // One timer for everything this connection waits on. Traffic only
        // pushes deadlines later, so it is moved only when one comes
        // earlier; firing early just re-arms it.
        let mut timer = pin!(tokio::time::sleep_until(now));
        let mut armed: Option<Deadline> = None;
        loop {
            let conn = self.ctx.conn;
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
            let holding = matches!(self.serving, Serving::Ready(_));
            let due = [
                close_deadline.map(|at| (at, Due::Close)),
                next_ping.map(|at| (at, Due::Ping)),
                hibernate_after.filter(|_| holding).map(|after| (last_event + after, Due::Hibernate)),
                rest_at.filter(|_| self.socket.is_awake()).map(|at| (at, Due::Rest)),
            ]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at);
            if let Some((at, _)) = due
                && armed.is_none_or(|armed| at < armed)
            {
                timer.as_mut().reset(at);
                armed = Some(at);
            }
            if let Serving::Ready(instance) = &self.serving
                && instance.permit().is_evicted()
            {
                // The pool wakes us (through `wake`) when it takes the slot.
                self.hibernate("evicted: every instance slot was taken");
            }
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
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    if due.is_none_or(|(at, _)| Deadline::now() < at) {
                        continue;
                    }
                    match due.map(|(_, why)| why) {
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
                        Some(Due::Hibernate) => self.hibernate("idle"),
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
            let m = &self.ctx.plugin.metrics;
            m.messages_in.inc();
            m.bytes_in.inc_by(message_len(&message) as u64);
            Box::pin(self.dispatch(message)).await;
            last_event = Deadline::now();
        }
    }

    /// Sends a close frame (an abort's, or one owed for bad input), unless
    /// ours is already out, waiting at most `close_timeout`.
    async fn send_close(&mut self, frame: Option<CloseFrame>) {
        let within = self.ctx.settings.close_timeout;
        if let Some(stream) = self.socket.awake().await {
            let _ = tokio::time::timeout(within, self.written.close(stream, frame)).await;
        }
    }

    /// Writes what other connections queued, a batch per flush. False when
    /// the socket failed or stalled past keep-alive.
    async fn write_queued(&mut self) -> bool {
        let settings = self.ctx.settings;
        let conn = self.ctx.conn;
        let metrics = &self.ctx.plugin.metrics;
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

    /// Drops the instance; the next event makes a fresh one.
    fn hibernate(&mut self, why: &str) {
        if matches!(self.serving, Serving::Ready(_)) {
            tracing::trace!(conn = &*self.ctx.conn.id, "instance dropped ({why})");
            self.serving = Serving::Hibernating;
        }
    }

    /// After an event: the instance may be taken back, or is dropped at
    /// once when the plugin hibernates after every event.
    fn rest(&mut self) {
        if let Serving::Ready(instance) = &self.serving {
            if self.ctx.plugin.limits.hibernate_after == Hibernate::After(Duration::ZERO) {
                self.serving = Serving::Hibernating;
            } else {
                instance.permit().idle();
            }
        }
    }

    async fn dispatch(&mut self, message: plugin::Message) {
        let Some(instance) = self.instance_for_event().await else {
            return;
        };
        let started = Instant::now();
        let (instance, result) = instance.handle(Event::Message(message)).await;
        self.ctx.plugin.metrics.observe_call(EventLabel::Message, started.elapsed());
        if let Err(fault) = result {
            fault_closes(self.ctx.conn, self.ctx.plugin, &instance.version().short, &fault, "on-message");
            self.serving = Serving::Faulted;
            return;
        }
        self.serving = Serving::Ready(Box::new(instance));
        self.write_replies().await;
        self.rest();
    }

    /// Writes what the last call sent to this connection, right here: a
    /// reply costs no hand-off to another task.
    async fn write_replies(&mut self) {
        let Serving::Ready(instance) = &mut self.serving else { return };
        let mut replies = instance.take_replies();
        if replies.is_empty() {
            return;
        }
        let conn = self.ctx.conn;
        let Some(stream) = self.socket.awake().await else { return };
        // A client that does not read makes this wait; an abort interrupts it.
        let written = tokio::select! {
            biased;
            _ = aborted(conn) => return,
            ok = self.written.write(stream, replies.drain(), &self.ctx.plugin.metrics) => ok,
        };
        if !written {
            conn.abort(CloseFrame { code: CloseCode::Away, reason: "write failed".into() });
        }
    }

    /// The instance for the next event: the one it holds, unless the pool
    /// took it back or (live reload) a newer version serves; otherwise a
    /// fresh one. Host-kept state never lived in the instance, so nothing
    /// is lost either way.
    async fn instance_for_event(&mut self) -> Option<Instance> {
        let serving = std::mem::replace(&mut self.serving, Serving::Hibernating);
        let held = match serving {
            Serving::Faulted => {
                self.serving = Serving::Faulted;
                return None;
            }
            Serving::Ready(instance) if instance.permit().resume() => Some(*instance),
            // Dropped here, so its slot is free for the fresh one.
            Serving::Ready(evicted) => {
                drop(evicted);
                None
            }
            Serving::Hibernating => None,
        };
        let version = match held {
            Some(instance) => {
                let stale =
                    self.ctx.plugin.reload == ReloadMode::Live && !self.ctx.plugin.is_current(instance.version());
                if !stale {
                    return Some(instance);
                }
                match self.ctx.plugin.current() {
                    Some(current) => {
                        tracing::debug!(
                            plugin = &*self.ctx.plugin.name,
                            conn = &*self.ctx.conn.id,
                            from = &*instance.version().short,
                            to = &*current.short,
                            "connection moves to the new version"
                        );
                        current
                    }
                    None => return Some(instance),
                }
            }
            None => self.ctx.version_for_wake(&self.version),
        };
        match Box::pin(self.ctx.new_instance(version)).await {
            Ok(fresh) => {
                self.version = fresh.version().clone();
                Some(fresh)
            }
            Err(_) => {
                self.serving = Serving::Faulted;
                None
            }
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

/// How long a client may go without a sign of life (reading or writing)
/// before it counts as gone; none while keep-alive is off.
fn silence_allowed(settings: &WebSocketConfig) -> Option<Duration> {
    (!settings.keep_alive_interval.is_zero()).then(|| settings.keep_alive_interval + settings.keep_alive_timeout)
}

/// Completes once the connection is aborted.
async fn aborted(conn: &Connection) {
    while !conn.is_aborted() {
        conn.woken().await;
    }
}

impl Ctx<'_> {
    /// The version a hibernated connection wakes on: the current one, or in
    /// drain mode the one it last ran (and while no version serves).
    fn version_for_wake(&self, last: &Arc<plugin::Version>) -> Arc<plugin::Version> {
        match self.plugin.reload {
            ReloadMode::Drain => last.clone(),
            ReloadMode::Live => self.plugin.current().unwrap_or_else(|| last.clone()),
        }
    }

    /// After the socket is gone: `on-close` exactly once, then forget the
    /// connection. A faulted or hibernated instance is replaced so the
    /// plugin can clean up.
    async fn finish(&self, serving: Serving, last: &Arc<plugin::Version>, peer_close: Option<&CloseFrame>) {
        let (conn, plugin) = (self.conn, self.plugin);
        let close =
            peer_close.map(|f| plugin::CloseFrame { code: f.code.into(), reason: f.reason.as_str().to_owned() });
        let instance = match serving {
            Serving::Ready(instance) if instance.permit().resume() => Some(*instance),
            other => {
                // Its slot (if any) is free before the fresh one is made.
                drop(other);
                self.new_instance(self.version_for_wake(last)).await.ok()
            }
        };
        if let Some(instance) = instance {
            let started = Instant::now();
            let (instance, result) = instance.handle(Event::Close(close)).await;
            plugin.metrics.observe_call(EventLabel::Close, started.elapsed());
            if let Err(fault) = result {
                plugin.metrics.fault(fault.kind());
                plugin.console.publish(Kind::Fault, Some(&conn.id), Some(fault.kind().as_str()), || {
                    format!("plugin {fault} in on-close")
                });
                tracing::warn!(
                    plugin = &*plugin.name,
                    conn = &*conn.id,
                    version = &*instance.version().short,
                    "plugin {fault} in on-close"
                );
            }
        }
        self.hub.remove(&conn.id);
        plugin.metrics.connections_open.dec();
        tracing::debug!(plugin = &*plugin.name, conn = &*conn.id, "connection closed");
    }

    /// Instantiates `version` for the connection, waiting for a pool slot
    /// within the plugin's deadline; a failure closes the connection.
    pub async fn new_instance(&self, version: Arc<plugin::Version>) -> Result<Instance, Fault> {
        let (conn, plugin) = (self.conn, self.plugin);
        let short = version.short.clone();
        let made = async {
            let weak = Arc::downgrade(conn);
            let wake = move || {
                if let Some(conn) = weak.upgrade() {
                    conn.wake();
                }
            };
            let permit =
                self.pool.acquire(plugin.limits.deadline, wake).await.map_err(|e| Fault::Resources(e.to_string()))?;
            let limits = HostLimits {
                max_message: usize::try_from(self.settings.max_message_size.as_u64()).unwrap_or(usize::MAX),
                max_state: usize::try_from(plugin.limits.state_size.as_u64()).unwrap_or(usize::MAX),
                max_replies: self.settings.send_queue,
            };
            let log_budget = plugin::LogBudget::of(conn, plugin);
            let host = plugin::HostApi::new(
                self.hub.clone(),
                conn.clone(),
                version.short.clone(),
                limits,
                log_budget,
                plugin.console.clone(),
            );
            Instance::new(version, host, plugin.limits, permit).await
        };
        made.await.inspect_err(|fault| fault_closes(conn, plugin, &short, fault, "instantiation"))
    }
}

/// A plugin fault ends only its own connection, with 1011. So does a
/// host that ran short of instances, logged as such.
pub fn fault_closes(conn: &Connection, plugin: &Plugin, version: &str, fault: &Fault, during: &str) {
    plugin.metrics.fault(fault.kind());
    plugin.console.publish(Kind::Fault, Some(&conn.id), Some(fault.kind().as_str()), || {
        format!("during {during}, connection closed with 1011: plugin {fault}")
    });
    let reason = match fault {
        Fault::Resources(_) => {
            tracing::error!(
                plugin = &*plugin.name,
                conn = &*conn.id,
                version,
                "host out of resources during {during}: plugin {fault}; refusing (503) or closing (1011) the connection"
            );
            "server busy"
        }
        _ => {
            tracing::warn!(
                plugin = &*plugin.name,
                conn = &*conn.id,
                version,
                "plugin fault during {during}; closing the connection with 1011: plugin {fault}"
            );
            "plugin error"
        }
    };
    conn.abort(CloseFrame { code: CloseCode::Error, reason: reason.into() });
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

fn message_len(m: &plugin::Message) -> usize {
    match m {
        plugin::Message::Text(t) => t.len(),
        plugin::Message::Binary(b) => b.len(),
    }
}
