//! One accepted WebSocket connection: a reader that hands each whole
//! message to the plugin in order, a writer that drains the bounded send
//! queue and pings, and the close handshake between them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::sleep_until;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::config::{Hibernate, ReloadMode, WebSocketConfig};
use crate::hub::{Connection, Hub, Outbound, Slot};
use crate::inbound::{self, InboundError, Meter, MeteredIo};
use crate::metrics::Event as EventLabel;
use crate::plugin::{self, Event, Fault, HostLimits, Instance, InstancePool, Plugin};
use crate::writer::{Liveness, Output, write_loop};

pub type Socket = WebSocketStream<MeteredIo<TokioIo<Upgraded>>>;

/// An accepted connection whose plugin instance has said yes in `on-open`,
/// waiting for the HTTP upgrade to complete.
pub struct Session {
    pub conn: Arc<Connection>,
    pub plugin: Arc<Plugin>,
    /// The instance that ran `on-open`; kept for the first events.
    pub instance: Instance,
    pub hub: Arc<Hub>,
    pub pool: Arc<InstancePool>,
    pub settings: Arc<WebSocketConfig>,
    pub outbound: tokio::sync::mpsc::Receiver<Outbound>,
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
        let Session { conn, plugin, instance, hub, pool, settings, outbound, slot } = self;
        let meter = socket.get_ref().meter();
        let (sink, stream) = socket.split();
        let output = Output::new(sink, plugin.metrics.clone());
        let liveness = Arc::new(Liveness::default());
        let finished = CancellationToken::new();
        let writer = tokio::spawn(write_loop(
            output.clone(),
            outbound,
            conn.clone(),
            settings.clone(),
            liveness.clone(),
            finished.clone(),
        ));
        let mut reader = Reader {
            ctx: Ctx { conn: &conn, plugin: &plugin, hub: &hub, pool: &pool, settings: &settings },
            output: &output,
            finished: &finished,
            version: instance.version().clone(),
            serving: Serving::Ready(Box::new(instance)),
        };
        // What on-open sent goes out first.
        reader.write_replies().await;
        reader.rest();
        let peer_close = reader.read_loop(stream, &liveness, &meter).await;
        finished.cancel();
        let _ = writer.await;
        let Reader { ctx, serving, version, .. } = reader;
        ctx.finish(serving, &version, peer_close.as_ref()).await;
        drop(slot);
    }

    /// The client went away before the upgrade completed: the plugin said
    /// yes to `on-open`, so it still gets its `on-close`.
    pub async fn abandon(self) {
        let Session { conn, plugin, instance, hub, pool, settings, slot, .. } = self;
        let ctx = Ctx { conn: &conn, plugin: &plugin, hub: &hub, pool: &pool, settings: &settings };
        let version = instance.version().clone();
        ctx.finish(Serving::Ready(Box::new(instance)), &version, None).await;
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

struct Reader<'a> {
    ctx: Ctx<'a>,
    output: &'a Output,
    finished: &'a CancellationToken,
    serving: Serving,
    /// The version of the last instance: what drain mode keeps serving.
    version: Arc<plugin::Version>,
}

impl Reader<'_> {
    /// Reads until the connection ends; returns the peer's close frame.
    async fn read_loop(
        &mut self,
        mut stream: SplitStream<Socket>,
        liveness: &Liveness,
        meter: &Meter,
    ) -> Option<CloseFrame> {
        let mut peer_close = None;
        // Once a close is under way, the peer has close_timeout to answer.
        let mut close_deadline: Option<tokio::time::Instant> = None;
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        // Made once, not per message: registering a waiter costs a lock.
        let finished = self.finished.clone();
        let finished = finished.cancelled();
        tokio::pin!(finished);
        let close_started = self.ctx.conn.close_started().clone();
        let close_started = close_started.cancelled();
        tokio::pin!(close_started);
        let hibernate_after = match self.ctx.plugin.limits.hibernate_after {
            Hibernate::After(after) => Some(after),
            Hibernate::Never => None,
        };
        let mut idle_since = tokio::time::Instant::now();
        loop {
            let holding = matches!(self.serving, Serving::Ready(_));
            let hibernate_at = match hibernate_after {
                Some(after) if holding => idle_since + after,
                _ => far(),
            };
            let eviction = match &self.serving {
                Serving::Ready(instance) => Some(instance.permit().watch()),
                _ => None,
            };
            let evicted = async {
                match &eviction {
                    Some(eviction) => eviction.evicted().await,
                    None => std::future::pending().await,
                }
            };
            let item = tokio::select! {
                biased;
                _ = &mut finished => break,
                _ = &mut close_started, if close_deadline.is_none() => {
                    close_deadline = Some(tokio::time::Instant::now() + self.ctx.settings.close_timeout);
                    continue;
                }
                _ = sleep_until(close_deadline.unwrap_or_else(far)), if close_deadline.is_some() => break,
                _ = sleep_until(hibernate_at), if hibernate_after.is_some() && holding => {
                    self.hibernate("idle");
                    continue;
                }
                _ = evicted, if holding => {
                    self.hibernate("evicted: every instance slot was taken");
                    continue;
                }
                item = stream.next() => item,
            };
            let message = match item {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    if let Some(frame) = close_for_error(&e) {
                        tracing::debug!(conn = &*self.ctx.conn.id, "closing with {}: {e}", frame.code);
                        self.ctx.conn.abort(frame);
                    }
                    break;
                }
            };
            liveness.touch();
            meter.message_done(&message);
            let message = match message {
                Message::Text(text) => plugin::Message::Text(text.as_str().to_owned()),
                Message::Binary(bytes) => plugin::Message::Binary(bytes.into()),
                Message::Close(frame) => {
                    // tungstenite has queued the reply with the same code;
                    // reading on flushes it and ends the stream.
                    peer_close = frame;
                    continue;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if self.ctx.conn.is_closing() {
                continue;
            }
            let m = &self.ctx.plugin.metrics;
            m.messages_in.inc();
            m.bytes_in.inc_by(message_len(&message) as u64);
            self.dispatch(message).await;
            idle_since = tokio::time::Instant::now();
        }
        peer_close
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
        self.ctx.plugin.metrics.call(EventLabel::Message).observe(started.elapsed().as_secs_f64());
        if let Err(fault) = result {
            fault_closes(self.ctx.conn, self.ctx.plugin, &instance.version().short, &fault, "on-message");
            self.serving = Serving::Faulted;
            return;
        }
        self.serving = Serving::Ready(Box::new(instance));
        self.write_replies().await;
        self.rest();
    }

    /// Writes what the last call sent to this connection, right here.
    async fn write_replies(&mut self) {
        let Serving::Ready(instance) = &mut self.serving else { return };
        let mut replies = instance.take_replies();
        if replies.is_empty() {
            return;
        }
        // A client that does not read makes this wait; an abort or the end
        // of the connection (keep-alive) interrupts it.
        let written = tokio::select! {
            biased;
            _ = self.ctx.conn.aborted().cancelled() => return,
            _ = self.finished.cancelled() => return,
            ok = self.output.write(replies.drain()) => ok,
        };
        if !written {
            self.finished.cancel();
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
        match self.ctx.new_instance(version).await {
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
            plugin.metrics.call(EventLabel::Close).observe(started.elapsed().as_secs_f64());
            if let Err(fault) = result {
                plugin.metrics.fault(fault.kind());
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
            let permit =
                self.pool.acquire(plugin.limits.deadline).await.map_err(|e| Fault::Resources(e.to_string()))?;
            let limits = HostLimits {
                max_message: usize::try_from(self.settings.max_message_size.as_u64()).unwrap_or(usize::MAX),
                max_state: usize::try_from(plugin.limits.state_size.as_u64()).unwrap_or(usize::MAX),
                max_replies: self.settings.send_queue,
            };
            let host = plugin::HostApi::new(self.hub.clone(), conn.clone(), version.short.clone(), limits);
            Instance::new(version, host, plugin.limits, permit).await
        };
        made.await.inspect_err(|fault| fault_closes(conn, plugin, &short, fault, "instantiation"))
    }
}

/// A plugin fault ends only its own connection, with 1011. So does a
/// host that ran short of instances, logged as such.
pub fn fault_closes(conn: &Connection, plugin: &Plugin, version: &str, fault: &Fault, during: &str) {
    plugin.metrics.fault(fault.kind());
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
                "plugin {fault} during {during}; closing the connection with 1011"
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
