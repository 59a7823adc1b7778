//! One accepted WebSocket connection: a reader that hands each whole
//! message to the plugin in order, a writer that drains the bounded send
//! queue and pings, and the close handshake between them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::{MissedTickBehavior, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;

use crate::config::WebSocketConfig;
use crate::hub::{Connection, Hub, Outbound, Slot};
use crate::metrics::Event;
use crate::plugin::{self, Fault, Instance, Plugin};

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
        let Session {
            conn,
            plugin,
            instance,
            hub,
            settings,
            outbound,
            slot,
        } = self;
        let (sink, stream) = socket.split();
        let liveness = Arc::new(Liveness::new());
        let finished = CancellationToken::new();
        let writer = tokio::spawn(write_loop(
            sink,
            outbound,
            conn.clone(),
            plugin.clone(),
            settings.clone(),
            liveness.clone(),
            finished.clone(),
        ));
        let mut reader = Reader {
            conn: &conn,
            plugin: &plugin,
            hub: &hub,
            settings: &settings,
            serving: Serving::Ready(instance),
        };
        let peer_close = reader.read_loop(stream, &liveness, &finished).await;
        finished.cancel();
        let _ = writer.await;
        let serving = reader.serving;
        finish(&conn, &plugin, &hub, &settings, serving, peer_close.as_ref()).await;
        drop(slot);
    }

    /// The client went away before the upgrade completed: the plugin said
    /// yes to `on-open`, so it still gets its `on-close`.
    pub async fn abandon(self) {
        let Session {
            conn,
            plugin,
            instance,
            hub,
            settings,
            slot,
            ..
        } = self;
        finish(&conn, &plugin, &hub, &settings, Serving::Ready(instance), None).await;
        drop(slot);
    }
}

struct Reader<'a> {
    conn: &'a Arc<Connection>,
    plugin: &'a Arc<Plugin>,
    hub: &'a Arc<Hub>,
    settings: &'a WebSocketConfig,
    serving: Serving,
}

impl Reader<'_> {
    /// Reads until the connection ends; returns the peer's close frame.
    async fn read_loop(
        &mut self,
        mut stream: SplitStream<Socket>,
        liveness: &Liveness,
        finished: &CancellationToken,
    ) -> Option<CloseFrame> {
        let mut peer_close = None;
        // Once a close is under way, the peer has close_timeout to answer.
        let mut close_deadline: Option<tokio::time::Instant> = None;
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            let item = tokio::select! {
                biased;
                _ = finished.cancelled() => break,
                _ = self.conn.close_started().cancelled(), if close_deadline.is_none() => {
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
        plugin
            .metrics
            .call(Event::Message)
            .observe(started.elapsed().as_secs_f64());
        if let Err(fault) = result {
            fault_closes(conn, plugin, &instance.version().short, &fault, "on-message");
            self.serving = Serving::Faulted;
        }
    }

    /// The instance for the next event. In live reload, a connection moves
    /// to the plugin's current version at its next event; its host-kept
    /// state comes along because the state never lived in the instance.
    async fn instance_for_event(&mut self) -> Option<&mut Instance> {
        let Serving::Ready(instance) = &mut self.serving else {
            return None;
        };
        if let Some(current) = self.plugin.current()
            && !Arc::ptr_eq(&current, instance.version())
        {
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
    let close = peer_close.map(|f| plugin::CloseFrame {
        code: f.code.into(),
        reason: f.reason.as_str().to_owned(),
    });
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
        plugin
            .metrics
            .call(Event::Close)
            .observe(started.elapsed().as_secs_f64());
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
    let host = plugin::HostApi::new(
        hub.clone(),
        conn.clone(),
        version.short.clone(),
        usize::try_from(settings.max_message_size.as_u64()).unwrap_or(usize::MAX),
        usize::try_from(plugin.limits.state_size.as_u64()).unwrap_or(usize::MAX),
    );
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
    conn.abort(CloseFrame {
        code: CloseCode::Error,
        reason: "plugin error".into(),
    });
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
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

fn message_len(m: &plugin::Message) -> usize {
    match m {
        plugin::Message::Text(t) => t.len(),
        plugin::Message::Binary(b) => b.len(),
    }
}

/// When the peer last sent anything, for keep-alive.
struct Liveness {
    start: Instant,
    last_seen_ms: AtomicU64,
}

impl Liveness {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Most messages written before one flush: batches under load, without
/// holding a message back when the queue is quiet.
const WRITE_BATCH: usize = 64;

/// What the writer does after one step.
enum Step {
    Continue,
    Stop,
}

/// Owns the socket's write half: drains the queue in order and pings.
struct Writer {
    sink: SplitSink<Socket, Message>,
    outbound: tokio::sync::mpsc::Receiver<Outbound>,
    conn: Arc<Connection>,
    plugin: Arc<Plugin>,
    settings: Arc<WebSocketConfig>,
    liveness: Arc<Liveness>,
    pings: Option<tokio::time::Interval>,
    close_sent: bool,
}

impl Writer {
    /// Writes the next batch, or the next ping. Cancel-safe at every await:
    /// tungstenite keeps whole frames in its buffer.
    async fn step(&mut self) -> Step {
        let ping_due = async {
            match &mut self.pings {
                Some(pings) => pings.tick().await,
                None => std::future::pending().await,
            }
        };
        let item = tokio::select! {
            item = self.outbound.recv(), if !self.close_sent => item,
            _ = ping_due, if !self.close_sent => {
                let silent = self.liveness.silent_for();
                if silent > self.settings.keep_alive_interval + self.settings.keep_alive_timeout {
                    tracing::debug!(conn = &*self.conn.id, "no answer to keep-alive pings; dropping the connection");
                    return Step::Stop;
                }
                return if self.sink.send(Message::Ping(Bytes::new())).await.is_ok() { Step::Continue } else { Step::Stop };
            }
            // After our close frame nothing more is written; wait to be stopped.
            _ = std::future::pending::<()>(), if self.close_sent => return Step::Continue,
        };
        let Some(first) = item else { return Step::Stop };
        let metrics = &self.plugin.metrics;
        let mut next = Some(first);
        let mut written = 0;
        while let Some(item) = next.take() {
            let fed = match item {
                Outbound::Message(message) => {
                    metrics.messages_out.inc();
                    metrics.bytes_out.inc_by(message.len() as u64);
                    self.sink.feed(message).await
                }
                Outbound::Close(frame) => {
                    self.close_sent = true;
                    self.sink.feed(Message::Close(Some(frame))).await
                }
            };
            written += 1;
            if fed.is_err() {
                return Step::Stop;
            }
            if self.close_sent || written >= WRITE_BATCH {
                break;
            }
            next = self.outbound.try_recv().ok();
        }
        if self.sink.flush().await.is_err() {
            Step::Stop
        } else {
            Step::Continue
        }
    }
}

async fn write_loop(
    sink: SplitSink<Socket, Message>,
    outbound: tokio::sync::mpsc::Receiver<Outbound>,
    conn: Arc<Connection>,
    plugin: Arc<Plugin>,
    settings: Arc<WebSocketConfig>,
    liveness: Arc<Liveness>,
    finished: CancellationToken,
) {
    let period = settings.keep_alive_interval;
    let pings = (!period.is_zero()).then(|| {
        let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        pings
    });
    let aborted = conn.aborted().clone();
    let mut writer = Writer {
        sink,
        outbound,
        conn,
        plugin,
        settings,
        liveness,
        pings,
        close_sent: false,
    };
    loop {
        // A write to a client that does not read can wait forever: an abort
        // or the end of the connection must be able to interrupt it.
        let step = tokio::select! {
            biased;
            _ = aborted.cancelled() => None,
            _ = finished.cancelled() => Some(Step::Stop),
            step = writer.step() => Some(step),
        };
        match step {
            Some(Step::Continue) => continue,
            Some(Step::Stop) => break,
            None => {
                if !writer.close_sent {
                    let close = writer.sink.send(Message::Close(writer.conn.take_abort_frame()));
                    let _ = timeout(writer.settings.close_timeout, close).await;
                }
                break;
            }
        }
    }
    // The socket cannot be written any more: make the reader stop too.
    finished.cancel();
}
