//! A connection's side of the plugin, whatever its transport: the instance
//! that serves its events (held, hibernating or faulted), each event
//! delivered in order, and `on-close` exactly once at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::config::{Hibernate, InMemory, ReloadMode, WebSocketConfig};
use crate::console::Kind;
use crate::hub::timers::TimerLimits;
use crate::hub::{Connection, Hub, LogBudget, Slot};
use crate::metrics::Call;
use crate::plugin::{self, Event, Fault, HostLimits, Instance, InstancePool, Plugin, Replies};

/// A connection whose plugin instance has said yes in `on-open`, before
/// its transport starts serving it.
pub struct Accepted {
    pub parts: Parts,
    /// The instance that ran `on-open`; kept for the first events.
    pub instance: Box<Instance>,
    /// Held until the connection is gone: counts toward max_connections.
    pub slot: Slot,
}

/// What every step of a connection needs.
pub struct Parts {
    pub conn: Arc<Connection>,
    pub plugin: Arc<Plugin>,
    pub hub: Arc<Hub>,
    pub pool: Arc<InstancePool>,
    pub settings: Arc<WebSocketConfig>,
}

impl Accepted {
    /// The client went away before the transport started: the plugin said
    /// yes to `on-open`, so it still gets its `on-close`.
    pub async fn abandon(self) {
        let Accepted { parts, instance, slot } = self;
        parts.conn.discard_queued();
        Box::pin(Dispatcher::new(&parts, instance).finish(None)).await;
        drop(slot);
    }
}

/// The instance serving a connection: none while it hibernates. Boxed, so
/// a hibernating connection's task does not carry an instance's size.
enum Serving {
    Ready(Box<Instance>),
    Hibernating,
    Faulted,
}

/// The plugin side of one connection.
pub struct Dispatcher<'a> {
    pub ctx: &'a Parts,
    serving: Serving,
    /// The version of the last instance: what drain mode keeps serving.
    version: Arc<plugin::Version>,
}

impl<'a> Dispatcher<'a> {
    /// Starts with the instance that ran `on-open`.
    pub fn new(ctx: &'a Parts, instance: Box<Instance>) -> Self {
        Self { ctx, version: instance.version().clone(), serving: Serving::Ready(instance) }
    }

    /// Starts without an instance, on `version`: a session that moved here
    /// from another host wakes one at its first event.
    pub fn asleep(ctx: &'a Parts, version: Arc<plugin::Version>) -> Self {
        Self { ctx, version, serving: Serving::Hibernating }
    }

    /// How long the plugin keeps an idle instance; `None`: forever.
    pub fn hibernate_after(&self) -> Option<Duration> {
        match self.ctx.plugin.limits.hibernate_after {
            Hibernate::After(after) => Some(after),
            Hibernate::Never => None,
        }
    }

    /// Whether it holds an instance now.
    pub fn holding(&self) -> bool {
        matches!(self.serving, Serving::Ready(_))
    }

    /// Lets the instance go if the pool took its slot back; the pool wakes
    /// the connection (through `wake`) when it does.
    pub fn check_evicted(&mut self) {
        if let Serving::Ready(instance) = &self.serving
            && instance.permit().is_evicted()
        {
            self.hibernate("evicted: every instance slot was taken");
        }
    }

    /// Drops the instance; the next event makes a fresh one.
    pub fn hibernate(&mut self, why: &str) {
        if matches!(self.serving, Serving::Ready(_)) {
            tracing::trace!(conn = &*self.ctx.conn.id, "instance dropped ({why})");
            self.serving = Serving::Hibernating;
        }
    }

    /// After an event: the instance may be taken back, or is dropped at
    /// once when the plugin hibernates after every event.
    pub fn rest(&mut self) {
        if let Serving::Ready(instance) = &self.serving {
            if self.ctx.plugin.limits.hibernate_after == Hibernate::After(Duration::ZERO) {
                self.serving = Serving::Hibernating;
            } else {
                instance.permit().idle();
            }
        }
    }

    /// What the last call sent to this connection itself, to write now.
    pub fn take_replies(&mut self) -> Option<Replies> {
        let Serving::Ready(instance) = &mut self.serving else { return None };
        let replies = instance.take_replies();
        (!replies.is_empty()).then_some(replies)
    }

    /// Hands one message to the plugin. False when the plugin faulted (the
    /// connection is then being aborted with 1011).
    pub async fn dispatch(&mut self, message: plugin::Message) -> bool {
        let m = &self.ctx.plugin.metrics;
        m.messages_in.inc();
        m.bytes_in.inc_by(message_len(&message) as u64);
        self.deliver(Event::Message(message), Call::Message, "on-message").await
    }

    /// Delivers the connection's earliest timer that is due, if any (the
    /// serve loop comes back at once for the next). False when there was
    /// none, or the plugin faulted.
    pub async fn timer_due(&mut self) -> bool {
        let conn = &self.ctx.conn;
        let timers = &self.ctx.plugin.metrics.timers;
        let Some((name, gone)) = conn.timers.take_due(tokio::time::Instant::now()) else { return false };
        if gone {
            timers.connection_timers.dec();
        }
        if conn.is_closing() {
            return false;
        }
        timers.connection_fired.inc();
        self.ctx.plugin.console.publish(Kind::Timer, Some(&conn.id), Some("fired"), || format!("timer {name:?} fired"));
        self.deliver(Event::Timer(name.to_string()), Call::Timer, "on-timer").await
    }

    async fn deliver(&mut self, event: Event, call: Call, during: &str) -> bool {
        let Some(instance) = self.instance_for_event().await else {
            return false;
        };
        let started = Instant::now();
        let (instance, result) = instance.handle(event).await;
        self.ctx.plugin.metrics.observe_call(call, started.elapsed());
        if let Err(fault) = result {
            fault_closes(&self.ctx.conn, &self.ctx.plugin, &instance.version().short, &fault, during);
            self.serving = Serving::Faulted;
            return false;
        }
        self.serving = Serving::Ready(Box::new(instance));
        true
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

    /// After the transport is gone: `on-close` exactly once, then forget
    /// the connection. A faulted or hibernated instance is replaced so the
    /// plugin can clean up.
    pub async fn finish(self, peer_close: Option<&CloseFrame>) {
        let Dispatcher { ctx, serving, version } = self;
        let (conn, plugin) = (&ctx.conn, &ctx.plugin);
        // Its timers end with it.
        let timers = conn.timers.end();
        plugin.metrics.timers.connection_timers.dec_by(i64::try_from(timers).unwrap_or(0));
        let close =
            peer_close.map(|f| plugin::CloseFrame { code: f.code.into(), reason: f.reason.as_str().to_owned() });
        let instance = match serving {
            Serving::Ready(instance) if instance.permit().resume() => Some(*instance),
            other => {
                // Its slot (if any) is free before the fresh one is made.
                drop(other);
                ctx.new_instance(ctx.version_for_wake(&version)).await.ok()
            }
        };
        if let Some(instance) = instance {
            let started = Instant::now();
            let (instance, result) = instance.handle(Event::Close(close)).await;
            plugin.metrics.observe_call(Call::Close, started.elapsed());
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
        ctx.hub.remove(&conn.id);
        plugin.metrics.connections_open.dec();
        tracing::debug!(plugin = &*plugin.name, conn = &*conn.id, "connection closed");
    }

    /// The connection's session moved to another host, which carries on
    /// with it: no `on-close` here, and it stays in its rooms cluster-wide.
    pub fn moved(self) {
        let Dispatcher { ctx, serving, .. } = self;
        drop(serving);
        let (conn, plugin) = (&ctx.conn, &ctx.plugin);
        let timers = conn.timers.end();
        plugin.metrics.timers.connection_timers.dec_by(i64::try_from(timers).unwrap_or(0));
        ctx.hub.hand_over(&conn.id);
        plugin.metrics.connections_open.dec();
        tracing::debug!(plugin = &*plugin.name, conn = &*conn.id, "session moved to another host");
    }
}

impl Parts {
    /// The version a hibernated connection wakes on: the current one, or in
    /// drain mode the one it last ran (and while no version serves).
    fn version_for_wake(&self, last: &Arc<plugin::Version>) -> Arc<plugin::Version> {
        match self.plugin.reload {
            ReloadMode::Drain => last.clone(),
            ReloadMode::Live => self.plugin.current().unwrap_or_else(|| last.clone()),
        }
    }

    /// Instantiates `version` for the connection, waiting for a pool slot
    /// within the plugin's deadline; a failure closes the connection.
    pub async fn new_instance(&self, version: Arc<plugin::Version>) -> Result<Instance, Fault> {
        let (conn, plugin) = (&self.conn, &self.plugin);
        let short = version.short.clone();
        let deadline = plugin.limits.deadline;
        let give_up = tokio::time::Instant::now() + deadline;
        let made = async {
            // As the docs promise: an event that finds the pools full waits
            // for a slot within its deadline instead of failing.
            let mut pause = POOL_RETRY_FIRST;
            loop {
                let within = give_up.saturating_duration_since(tokio::time::Instant::now());
                match self.try_instance(version.clone(), within).await {
                    Err(Fault::PoolFull(_)) if tokio::time::Instant::now() + pause < give_up => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(POOL_RETRY_MAX);
                    }
                    made => return made,
                }
            }
        };
        made.await.inspect_err(|fault| fault_closes(conn, plugin, &short, fault, "instantiation"))
    }

    async fn try_instance(&self, version: Arc<plugin::Version>, within: Duration) -> Result<Instance, Fault> {
        let (conn, plugin) = (&self.conn, &self.plugin);
        let weak = Arc::downgrade(conn);
        let wake = move || {
            if let Some(conn) = weak.upgrade() {
                conn.wake();
            }
        };
        let permit = self.pool.acquire(within, wake).await.map_err(|e| Fault::Resources(e.to_string()))?;
        let limits = HostLimits {
            max_message: self.settings.max_message_size.in_memory(),
            max_state: plugin.limits.state_size.in_memory(),
            max_replies: self.settings.send_queue,
            timers: TimerLimits {
                per_connection: plugin.limits.max_timers,
                min_interval: plugin.limits.min_timer_interval,
            },
            max_room_timers: plugin.limits.max_room_timers,
        };
        let log_budget = conn
            .log_budget
            .get_or_init(|| {
                let m = &plugin.metrics;
                let (lines, bytes) = (m.log_dropped_lines.clone(), m.log_dropped_bytes.clone());
                LogBudget::new(plugin.limits.log_rate, conn.plugin.clone(), conn.id.clone(), lines, bytes)
            })
            .clone();
        let host = plugin::HostApi::new(
            self.hub.clone(),
            conn.clone(),
            version.short.clone(),
            limits,
            log_budget,
            plugin.console.clone(),
            plugin.metrics.timers.clone(),
        );
        Instance::new(version, host, plugin.limits, permit).await
    }
}

/// The first pause before another try at a full pool, doubled up to
/// [`POOL_RETRY_MAX`]: a slot frees as soon as the instance holding it is
/// torn down, typically within microseconds.
const POOL_RETRY_FIRST: Duration = Duration::from_millis(1);
const POOL_RETRY_MAX: Duration = Duration::from_millis(50);

/// A plugin fault ends only its own connection, with 1011. So does a
/// host that ran short of instances, logged as such.
pub fn fault_closes(conn: &Connection, plugin: &Plugin, version: &str, fault: &Fault, during: &str) {
    plugin.metrics.fault(fault.kind());
    plugin.console.publish(Kind::Fault, Some(&conn.id), Some(fault.kind().as_str()), || {
        format!("during {during}, connection closed with 1011: plugin {fault}")
    });
    let reason = match fault {
        Fault::Resources(_) | Fault::PoolFull(_) => {
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

fn message_len(m: &plugin::Message) -> usize {
    match m {
        plugin::Message::Text(t) => t.len(),
        plugin::Message::Binary(b) => b.len(),
    }
}
