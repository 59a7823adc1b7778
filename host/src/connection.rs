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

use crate::config::{ReloadMode, WebSocketConfig};
use crate::hub::{Connection, Hub, Outbound, Slot};
use crate::metrics::Event;
use crate::plugin::{self, Fault, HostLimits, Instance, Plugin};
use crate::writer::{Liveness, Output, write_loop};

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// An accepted connection whose plugin instance has said yes in `on-open`,
/// waiting for the HTTP upgrade to complete.
pub struct Session {
    pub conn: Arc<Connection>,
    pub plugin: Arc<Plugin>,
    pub instance: Instance,
    pub hub: Arc<Hub>,
    pub settings: Arc<WebSocketConfig>,
    pub outbound: tokio::sync::mpsc::Receiver<Outbound>,
    /// Held until the connection is gone: counts toward max_connections.
    pub slot: Slot,
}

/// The instance serving a connection, or why there is none.
enum Serving {
    Ready(Instance),
    Faulted,
}

impl Session {
    /// Serves the connection until it closes, then tells the plugin.
    pub async fn run(self, socket: Socket) {
        let Session { conn, plugin, instance, hub, settings, outbound, slot } = self;
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
            conn: &conn,
            plugin: &plugin,
            hub: &hub,
            settings: &settings,
            output: &output,
            finished: &finished,
            serving: Serving::Ready(instance),
        };
        // What on-open sent goes out first.
        reader.write_replies().await;
        let peer_close = reader.read_loop(stream, &liveness).await;
        finished.cancel();
        let _ = writer.await;
        let serving = reader.serving;
        finish(&conn, &plugin, &hub, &settings, serving, peer_close.as_ref()).await;
        drop(slot);
    }

    /// The client went away before the upgrade completed: the plugin said
    /// yes to `on-open`, so it still gets its `on-close`.
    pub async fn abandon(self) {
        let Session { conn, plugin, instance, hub, settings, slot, .. } = self;
        finish(&conn, &plugin, &hub, &settings, Serving::Ready(instance), None).await;
        drop(slot);
    }
}

struct Reader<'a> {
    conn: &'a Arc<Connection>,
    plugin: &'a Arc<Plugin>,
    hub: &'a Arc<Hub>,
    settings: &'a WebSocketConfig,
    output: &'a Output,
    finished: &'a CancellationToken,
    serving: Serving,
}

impl Reader<'_> {
    /// Reads until the connection ends; returns the peer's close frame.
    async fn read_loop(&mut self, mut stream: SplitStream<Socket>, liveness: &Liveness) -> Option<CloseFrame> {
        let mut peer_close = None;
        // Once a close is under way, the peer has close_timeout to answer.
        let mut close_deadline: Option<tokio::time::Instant> = None;
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        // Made once, not per message: registering a waiter costs a lock.
        let finished = self.finished.clone();
        let finished = finished.cancelled();
        tokio::pin!(finished);
        let close_started = self.conn.close_started().clone();
        let close_started = close_started.cancelled();
        tokio::pin!(close_started);
        loop {
            let item = tokio::select! {
                biased;
                _ = &mut finished => break,
                _ = &mut close_started, if close_deadline.is_none() => {
                    close_deadline = Some(tokio::time::Instant::now() + self.settings.close_timeout);
                    continue;
                }
                _ = sleep_until(close_deadline.unwrap_or_else(far)), if close_deadline.is_some() => break,
                item = stream.next() => item,
            };
            let message = match item {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    if let Some(frame) = close_for_error(&e) {
                        tracing::debug!(conn = &*self.conn.id, "closing with {}: {e}", frame.code);
                        self.conn.abort(frame);
                    }
                    break;
                }
            };
            liveness.touch();
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
            if self.conn.is_closing() {
                continue;
            }
            let m = &self.plugin.metrics;
            m.messages_in.inc();
            m.bytes_in.inc_by(message_len(&message) as u64);
            self.dispatch(&message).await;
        }
        peer_close
    }

    async fn dispatch(&mut self, message: &plugin::Message) {
        let (conn, plugin) = (self.conn, self.plugin);
        let Some(instance) = self.instance_for_event().await else {
            return;
        };
        let started = Instant::now();
        let result = instance.on_message(message).await;
        plugin.metrics.call(Event::Message).observe(started.elapsed().as_secs_f64());
        if let Err(fault) = result {
            fault_closes(conn, plugin, &instance.version().short, &fault, "on-message");
            self.serving = Serving::Faulted;
            return;
        }
        self.write_replies().await;
    }

    /// Writes what the last call sent to this connection, right here.
    async fn write_replies(&mut self) {
        let Serving::Ready(instance) = &mut self.serving else { return };
        let replies = instance.take_replies();
        if replies.is_empty() {
            return;
        }
        // A client that does not read makes this wait; an abort or the end
        // of the connection (keep-alive) interrupts it.
        let written = tokio::select! {
            biased;
            _ = self.conn.aborted().cancelled() => return,
            _ = self.finished.cancelled() => return,
            ok = self.output.write(replies) => ok,
        };
        if !written {
            self.finished.cancel();
        }
    }

    /// The instance for the next event. In live reload, a connection moves
    /// to the plugin's current version at its next event; its host-kept
    /// state comes along because the state never lived in the instance.
    async fn instance_for_event(&mut self) -> Option<&mut Instance> {
        let Serving::Ready(instance) = &mut self.serving else {
            return None;
        };
        if self.plugin.reload == ReloadMode::Live
            && !self.plugin.is_current(instance.version())
            && let Some(current) = self.plugin.current()
        {
            tracing::debug!(
                plugin = &*self.plugin.name,
                conn = &*self.conn.id,
                from = &*instance.version().short,
                to = &*current.short,
                "connection moves to the new version"
            );
            match new_instance(self.conn, self.plugin, self.hub, self.settings, current).await {
                Ok(fresh) => *instance = fresh,
                Err(_) => {
                    self.serving = Serving::Faulted;
                    return None;
                }
            }
        }
        match &mut self.serving {
            Serving::Ready(instance) => Some(instance),
            Serving::Faulted => None,
        }
    }
}

/// After the socket is gone: `on-close` exactly once, then forget the
/// connection. A faulted instance is replaced so the plugin can clean up.
async fn finish(
    conn: &Arc<Connection>,
    plugin: &Arc<Plugin>,
    hub: &Arc<Hub>,
    settings: &WebSocketConfig,
    serving: Serving,
    peer_close: Option<&CloseFrame>,
) {
    let close = peer_close.map(|f| plugin::CloseFrame { code: f.code.into(), reason: f.reason.as_str().to_owned() });
    let instance = match serving {
        Serving::Ready(instance) => Some(instance),
        Serving::Faulted => match plugin.current() {
            Some(version) => new_instance(conn, plugin, hub, settings, version).await.ok(),
            None => None,
        },
    };
    if let Some(mut instance) = instance {
        let started = Instant::now();
        let result = instance.on_close(close.as_ref()).await;
        plugin.metrics.call(Event::Close).observe(started.elapsed().as_secs_f64());
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
    hub.remove(&conn.id);
    plugin.metrics.connections_open.dec();
    tracing::debug!(plugin = &*plugin.name, conn = &*conn.id, "connection closed");
}

/// Instantiates `version` for `conn`; a failure closes the connection.
pub async fn new_instance(
    conn: &Arc<Connection>,
    plugin: &Arc<Plugin>,
    hub: &Arc<Hub>,
    settings: &WebSocketConfig,
    version: Arc<plugin::Version>,
) -> Result<Instance, Fault> {
    let limits = HostLimits {
        max_message: usize::try_from(settings.max_message_size.as_u64()).unwrap_or(usize::MAX),
        max_state: usize::try_from(plugin.limits.state_size.as_u64()).unwrap_or(usize::MAX),
        max_replies: settings.send_queue,
    };
    let log_budget = plugin::LogBudget::of(conn, plugin);
    let host = plugin::HostApi::new(hub.clone(), conn.clone(), version.short.clone(), limits, log_budget);
    let short = version.short.clone();
    Instance::new(version, host, plugin.limits)
        .await
        .inspect_err(|fault| fault_closes(conn, plugin, &short, fault, "instantiation"))
}

/// A plugin fault ends only its own connection, with 1011.
pub fn fault_closes(conn: &Connection, plugin: &Plugin, version: &str, fault: &Fault, during: &str) {
    plugin.metrics.fault(fault.kind());
    tracing::warn!(
        plugin = &*plugin.name,
        conn = &*conn.id,
        version,
        "plugin {fault} during {during}; closing the connection with 1011"
    );
    conn.abort(CloseFrame { code: CloseCode::Error, reason: "plugin error".into() });
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
