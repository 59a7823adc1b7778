//! Prometheus metrics, served at `GET /metrics`, and the types of the
//! series each part of the host keeps.

mod latency;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use latency::{LatencySketch, Quantiles};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

/// Which plugin call a time is of (the `event` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Call {
    Open,
    Message,
    Close,
    Timer,
    RoomTimer,
}

/// Which kind of timer (the `kind` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum TimerKind {
    Connection,
    Room,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimerLabels {
    pub plugin: String,
    pub kind: TimerKind,
}

/// How an outbound HTTP request ended (the `outcome` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum OutboundOutcome {
    /// A response came (whatever its status).
    Response,
    /// Not in `allowed_outbound_hosts`.
    Denied,
    /// Past `http_in_flight`.
    Busy,
    /// No response: connect, TLS or protocol error, or a timeout.
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabels {
    pub plugin: String,
    pub outcome: OutboundOutcome,
}

/// A plugin's outbound HTTP counters.
#[derive(Clone)]
pub struct OutboundMetrics {
    plugin: String,
    requests: Family<OutboundLabels, Counter>,
    /// Time to the response's head.
    pub seconds: Histogram,
}

impl OutboundMetrics {
    pub fn count(&self, outcome: OutboundOutcome) {
        self.requests.get_or_create(&OutboundLabels { plugin: self.plugin.clone(), outcome }).inc();
    }
}

/// A plugin's timer gauges and counters, by kind.
#[derive(Clone)]
pub struct TimerMetrics {
    pub connection_timers: Gauge,
    pub room_timers: Gauge,
    pub connection_fired: Counter,
    pub room_fired: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub plugin: String,
    pub event: Call,
}

/// How a plugin call failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum FaultKind {
    Trap,
    Timeout,
    Memory,
    /// The host ran short (no instance slot, memory refused): not the plugin's doing.
    Resources,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Timeout => "timeout",
            FaultKind::Memory => "memory",
            FaultKind::Resources => "resources",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub plugin: String,
    pub kind: FaultKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    pub plugin: String,
    pub outcome: String,
}

/// What crossed between hosts over Redis.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CrossHost {
    Broadcast,
    Send,
    Close,
    /// A fallback client's post forwarded to its session's host.
    Post,
    /// A resumable session moving to another host (`docs/delivery.md`).
    Move,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: CrossHost,
}

/// Which channel a message from Redis came on: a room's, or this host's own.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Incoming {
    Room,
    Direct,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncomingLabel {
    pub kind: Incoming,
}

/// The Redis backplane's series; registered only when `redis.url` is set.
#[derive(Clone, Default)]
pub struct BackplaneMetrics {
    pub up: Gauge,
    pub connects: Counter,
    pub disconnects: Counter,
    pub errors: Counter,
    published: Family<KindLabel, Counter>,
    received: Family<KindLabel, Counter>,
    dropped: Family<KindLabel, Counter>,
    incoming: Family<IncomingLabel, Counter>,
    /// Broadcasts published while this host listened but never delivered
    /// to it, and messages dropped over its receive queue.
    pub lost: Counter,
    /// Rooms this host is subscribed to.
    pub rooms_listened: Gauge,
    /// Room timers this host took over from a host that stopped or died.
    pub timers_taken_over: Counter,
}

impl BackplaneMetrics {
    pub fn incoming(&self, kind: Incoming) {
        self.incoming.get_or_create(&IncomingLabel { kind }).inc();
    }

    pub fn published(&self, kind: CrossHost) {
        self.published.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn received(&self, kind: CrossHost) {
        self.received.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn dropped(&self, kind: CrossHost) {
        self.dropped.get_or_create(&KindLabel { kind }).inc();
    }
}

/// The receive budget's series, handed to [`crate::inbound::ReceiveBudget`],
/// whose byte count lives in the gauge itself.
#[derive(Clone, Default)]
pub struct InboundMetrics {
    pub in_use: Gauge<u64, AtomicU64>,
    pub over_budget: Counter,
    pub message_timeouts: Counter,
}

/// What room history reports ([`Metrics::register_history`]).
#[derive(Clone, Default)]
pub struct HistoryMetrics {
    /// Bytes rooms keep in memory (`websocket.history_budget`).
    pub bytes: Gauge,
    /// Broadcasts not kept because the budget was spent.
    pub not_kept: Counter,
}

/// What resumable sessions report ([`Metrics::register_resume`]).
#[derive(Clone, Default)]
pub struct ResumeMetrics {
    /// Sessions whose transport dropped, waiting for their client.
    pub away: Gauge,
    /// Bytes resumable sessions keep (`websocket.resume_budget`).
    pub buffered: Gauge,
    /// Sessions a client resumed.
    pub resumed: Counter,
    /// Resumes refused (a fresh session began instead), by reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// Sessions that ended while away, by reason: `grace`, `overflow`,
    /// `closed`, `drain`.
    pub lost: Family<ReasonLabel, Counter>,
    /// Sessions handed over to another host, where their client resumed.
    pub moved_out: Counter,
    /// Sessions taken over from another host.
    pub moved_in: Counter,
    /// Sessions recovered from their checkpoint after their host crashed.
    pub recovered: Counter,
    /// Broadcasts a recovered session got again from room history.
    pub recovered_broadcasts: Counter,
    /// At most how many of those its client may have had already (messages
    /// it received after the checkpoint recovered from).
    pub recovery_repeats_at_most: Counter,
    /// Broadcasts a recovered session missed: its room's history no longer
    /// held them.
    pub recovery_lost: Counter,
    /// Checkpoints written to Redis.
    pub checkpoints_written: Counter,
}

impl ResumeMetrics {
    pub fn refused(&self, reason: &str) {
        self.refused.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    pub fn lost(&self, reason: &str) {
        self.lost.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }
}

/// A gauge whose value is read when scraped (`Metrics::register_sampled`).
struct Sampled {
    name: &'static str,
    help: &'static str,
    read: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled").field("name", &self.name).finish()
    }
}

impl prometheus_client::collector::Collector for Sampled {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new((self.read)());
        let metric = encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

/// What the instance pool reports.
#[derive(Clone, Default)]
pub struct PoolMetrics {
    /// Instances alive now.
    pub live: Gauge,
    /// Idle instances given up because another connection needed a slot.
    pub evictions: Counter,
    /// Events that found no slot within their deadline.
    pub exhausted: Counter,
}

/// The size of each plugin's key-value store, set by the store as it
/// changes.
#[derive(Clone, Default)]
pub struct StoreGauges {
    bytes: Family<PluginLabel, Gauge>,
    keys: Family<PluginLabel, Gauge>,
}

impl StoreGauges {
    /// Handles on `plugin`'s bytes and keys gauges.
    pub fn for_plugin(&self, plugin: &str) -> (Gauge, Gauge) {
        let label = PluginLabel { plugin: plugin.to_string() };
        (self.bytes.get_or_create_owned(&label), self.keys.get_or_create_owned(&label))
    }
}

fn call_histogram() -> Histogram {
    // 1 µs to about 4 s: a reused instance answers in microseconds, a
    // scripting-language one in milliseconds, a runaway one at its deadline.
    Histogram::new(exponential_buckets(1e-6, 4.0, 12))
}

/// Every metric the host keeps.
pub struct Metrics {
    registry: Registry,
    connections_open: Family<PluginLabel, Gauge>,
    connections_total: Family<PluginLabel, Counter>,
    messages_in: Family<PluginLabel, Counter>,
    messages_out: Family<PluginLabel, Counter>,
    bytes_in: Family<PluginLabel, Counter>,
    bytes_out: Family<PluginLabel, Counter>,
    call_seconds: Family<CallLabels, Histogram, fn() -> Histogram>,
    faults: Family<FaultLabels, Counter>,
    handshakes_refused: Family<ReasonLabel, Counter>,
    plugin_loads: Family<LoadLabels, Counter>,
    http_refused: Family<ReasonLabel, Counter>,
    http_timeouts: Family<ReasonLabel, Counter>,
    accept_errors: Counter,
    inbound: InboundMetrics,
    inbound_closed: Family<ReasonLabel, Counter>,
    log_dropped_lines: Family<PluginLabel, Counter>,
    log_dropped_bytes: Family<PluginLabel, Counter>,
    store: StoreGauges,
    sockets_resting: Gauge,
    timers: Family<TimerLabels, Gauge>,
    timers_fired: Family<TimerLabels, Counter>,
    outbound_requests: Family<OutboundLabels, Counter>,
    outbound_seconds: Family<PluginLabel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wasmsocket");
        let m = Self {
            connections_open: Family::default(),
            connections_total: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            call_seconds: Family::new_with_constructor(call_histogram),
            faults: Family::default(),
            handshakes_refused: Family::default(),
            plugin_loads: Family::default(),
            http_refused: Family::default(),
            http_timeouts: Family::default(),
            accept_errors: Counter::default(),
            inbound: InboundMetrics::default(),
            inbound_closed: Family::default(),
            log_dropped_lines: Family::default(),
            log_dropped_bytes: Family::default(),
            store: StoreGauges::default(),
            sockets_resting: Gauge::default(),
            timers: Family::default(),
            timers_fired: Family::default(),
            outbound_requests: Family::default(),
            outbound_seconds: Family::new_with_constructor(call_histogram),
            registry: Registry::default(),
        };
        registry.register("timers", "Timers set, by kind (connection, room)", m.timers.clone());
        registry.register("timers_fired", "Timer events delivered to plugins, by kind", m.timers_fired.clone());
        registry.register(
            "outbound_requests",
            "Outbound HTTP requests of plugins, by outcome (response, denied, busy, failed)",
            m.outbound_requests.clone(),
        );
        registry.register(
            "outbound_seconds",
            "Time from an outbound HTTP request to its response's head",
            m.outbound_seconds.clone(),
        );
        registry.register("connections_open", "Open WebSocket connections", m.connections_open.clone());
        registry.register("connections", "WebSocket connections accepted", m.connections_total.clone());
        registry.register("messages_received", "Messages received from clients", m.messages_in.clone());
        registry.register("messages_sent", "Messages sent to clients", m.messages_out.clone());
        registry.register("received_bytes", "Payload bytes received from clients", m.bytes_in.clone());
        registry.register("sent_bytes", "Payload bytes sent to clients", m.bytes_out.clone());
        registry.register("plugin_call_seconds", "Time spent in one plugin call, by event", m.call_seconds.clone());
        registry.register(
            "plugin_faults",
            "Plugin calls that trapped, ran past their deadline or exhausted their memory",
            m.faults.clone(),
        );
        registry.register(
            "handshakes_refused",
            "WebSocket handshakes refused, by reason",
            m.handshakes_refused.clone(),
        );
        registry.register("plugin_loads", "Plugin loads, by outcome", m.plugin_loads.clone());
        registry.register(
            "http_refused",
            "HTTP connections closed to make room, by reason (pending: the oldest still in its HTTP phase, when max_pending newer ones arrived)",
            m.http_refused.clone(),
        );
        registry.register(
            "http_timeouts",
            "HTTP connections closed for taking too long to send a request, by reason (header, idle)",
            m.http_timeouts.clone(),
        );
        registry.register(
            "http_accept_errors",
            "Failed accepts (e.g. out of file descriptors)",
            m.accept_errors.clone(),
        );
        registry.register(
            "receive_budget_bytes",
            "Bytes of partly received WebSocket messages held across all connections",
            m.inbound.in_use.clone(),
        );
        registry.register(
            "receive_refused",
            "WebSocket connections closed for a partly received message, by reason (budget: 1009, message_timeout: 1008)",
            m.inbound_closed.clone(),
        );
        registry.register(
            "plugin_log_dropped_lines",
            "Plugin log lines (log, stdout, stderr) dropped over limits.log_rate",
            m.log_dropped_lines.clone(),
        );
        registry.register(
            "plugin_log_dropped_bytes",
            "Bytes of the plugin log lines dropped over limits.log_rate",
            m.log_dropped_bytes.clone(),
        );
        registry.register("store_bytes", "Bytes of keys and values in each plugin's store", m.store.bytes.clone());
        registry.register("store_keys", "Keys in each plugin's store", m.store.keys.clone());
        registry.register(
            "sockets_resting",
            "Idle connections whose socket holds no buffers until the client sends again",
            m.sockets_resting.clone(),
        );
        let inbound = InboundMetrics {
            in_use: m.inbound.in_use.clone(),
            over_budget: m.inbound_closed.get_or_create_owned(&ReasonLabel { reason: "budget".into() }),
            message_timeouts: m.inbound_closed.get_or_create_owned(&ReasonLabel { reason: "message_timeout".into() }),
        };
        Self { registry, inbound, ..m }
    }

    /// Registers the instance pool's series and returns handles on them.
    pub fn register_pool(&mut self) -> PoolMetrics {
        let p = PoolMetrics::default();
        let r = &mut self.registry;
        r.register(
            "instances",
            "Plugin instances alive (at most max_instances; idle connections hold none)",
            p.live.clone(),
        );
        r.register("instance_evictions", "Idle instances given up because every slot was taken", p.evictions.clone());
        r.register(
            "instance_waits_exhausted",
            "Events that found no instance slot within their deadline (503 or close 1011)",
            p.exhausted.clone(),
        );
        p
    }

    /// Registers room history's series and returns handles on them.
    pub fn register_history(&mut self) -> HistoryMetrics {
        let m = HistoryMetrics::default();
        let r = self.registry.sub_registry_with_prefix("history");
        r.register("bytes", "Bytes of room history kept in this host's memory (without Redis)", m.bytes.clone());
        r.register(
            "not_kept",
            "Broadcasts left out of their room's history because websocket.history_budget was spent",
            m.not_kept.clone(),
        );
        m
    }

    /// Registers the series of resumable sessions and returns handles on them.
    pub fn register_resume(&mut self) -> ResumeMetrics {
        let m = ResumeMetrics::default();
        let r = self.registry.sub_registry_with_prefix("sessions");
        r.register("away", "Resumable sessions whose transport dropped, waiting for their client", m.away.clone());
        r.register(
            "buffered_bytes",
            "Bytes resumable sessions keep: unacknowledged messages and those sent while away",
            m.buffered.clone(),
        );
        r.register("resumed", "Sessions a client resumed", m.resumed.clone());
        r.register("resume_refused", "Resumes refused (a fresh session began instead), by reason", m.refused.clone());
        r.register("lost", "Resumable sessions that ended while away, by reason", m.lost.clone());
        r.register(
            "moved_out",
            "Sessions handed over to another host, where their client resumed",
            m.moved_out.clone(),
        );
        r.register("moved_in", "Sessions taken over from another host", m.moved_in.clone());
        r.register(
            "recovered",
            "Sessions recovered from their checkpoint after their host crashed",
            m.recovered.clone(),
        );
        r.register(
            "recovered_broadcasts",
            "Broadcasts recovered sessions got again from room history",
            m.recovered_broadcasts.clone(),
        );
        r.register(
            "recovery_repeats_at_most",
            "Upper bound of recovered broadcasts a client may have had already (received after the checkpoint used)",
            m.recovery_repeats_at_most.clone(),
        );
        r.register(
            "recovery_lost",
            "Broadcasts recovered sessions missed because their room's history no longer held them",
            m.recovery_lost.clone(),
        );
        r.register("checkpoints_written", "Session checkpoints written to Redis", m.checkpoints_written.clone());
        m
    }

    /// Registers the backplane's series and returns handles on them.
    pub fn register_backplane(&mut self) -> BackplaneMetrics {
        let b = BackplaneMetrics::default();
        let r = self.registry.sub_registry_with_prefix("redis");
        r.register("up", "1 while Redis is reachable and this host's memberships are written", b.up.clone());
        r.register("connects", "Successful (re)connections to Redis", b.connects.clone());
        r.register("disconnects", "Times the link to Redis was lost", b.disconnects.clone());
        r.register("errors", "Redis commands that failed", b.errors.clone());
        r.register("published", "Messages published to other hosts, by kind", b.published.clone());
        r.register("received", "Messages received from other hosts, by kind", b.received.clone());
        r.register(
            "dropped",
            "Messages for other hosts lost because Redis was unreachable, by kind",
            b.dropped.clone(),
        );
        r.register(
            "incoming",
            "Messages Redis delivered to this host (its own broadcasts included), by channel: room or direct",
            b.incoming.clone(),
        );
        r.register(
            "lost",
            "Broadcasts to rooms this host listens on that Redis never delivered (an outage, a failover)",
            b.lost.clone(),
        );
        r.register(
            "rooms_listened",
            "Rooms this host is subscribed to (it has members there)",
            b.rooms_listened.clone(),
        );
        r.register(
            "timers_taken_over",
            "Room timers this host took over from a host that stopped or died",
            b.timers_taken_over.clone(),
        );
        b
    }

    /// The store's gauges, for the store to keep up to date.
    /// The gauge of sockets resting (see `socket`), shared by every one.
    pub fn sockets_resting(&self) -> Gauge {
        self.sockets_resting.clone()
    }

    pub fn store_gauges(&self) -> StoreGauges {
        self.store.clone()
    }

    /// A gauge read from `read` at each scrape, for a figure another part
    /// already keeps (so nothing has to copy it into a gauge).
    pub fn register_sampled(
        &mut self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.registry.register_collector(Box::new(Sampled { name, help, read: Box::new(read) }));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Handles on one plugin's series, resolved once per connection so the
    /// message path touches only atomics.
    pub fn for_plugin(&self, plugin: &str) -> PluginMetrics {
        let label = PluginLabel { plugin: plugin.to_string() };
        let call = |event| self.call_seconds.get_or_create_owned(&CallLabels { plugin: plugin.to_string(), event });
        PluginMetrics {
            plugin: plugin.to_string(),
            connections_open: self.connections_open.get_or_create_owned(&label),
            connections_total: self.connections_total.get_or_create_owned(&label),
            messages_in: self.messages_in.get_or_create_owned(&label),
            messages_out: self.messages_out.get_or_create_owned(&label),
            bytes_in: self.bytes_in.get_or_create_owned(&label),
            bytes_out: self.bytes_out.get_or_create_owned(&label),
            call_open: call(Call::Open),
            call_message: call(Call::Message),
            call_close: call(Call::Close),
            call_timer: call(Call::Timer),
            call_room_timer: call(Call::RoomTimer),
            faults: self.faults.clone(),
            log_dropped_lines: self.log_dropped_lines.get_or_create_owned(&label),
            log_dropped_bytes: self.log_dropped_bytes.get_or_create_owned(&label),
            latency: Default::default(),
            timers: {
                let kind = |kind| TimerLabels { plugin: plugin.to_string(), kind };
                TimerMetrics {
                    connection_timers: self.timers.get_or_create_owned(&kind(TimerKind::Connection)),
                    room_timers: self.timers.get_or_create_owned(&kind(TimerKind::Room)),
                    connection_fired: self.timers_fired.get_or_create_owned(&kind(TimerKind::Connection)),
                    room_fired: self.timers_fired.get_or_create_owned(&kind(TimerKind::Room)),
                }
            },
            outbound: OutboundMetrics {
                plugin: plugin.to_string(),
                requests: self.outbound_requests.clone(),
                seconds: self.outbound_seconds.get_or_create_owned(&label),
            },
        }
    }

    pub fn handshake_refused(&self, reason: &str) {
        self.handshakes_refused.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    /// A pending connection closed to make room for a newer one.
    pub fn http_refused(&self, reason: &str) {
        self.http_refused.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    /// The counter of one kind of HTTP timeout (`header`, `idle`).
    pub fn http_timeout(&self, reason: &str) -> Counter {
        self.http_timeouts.get_or_create_owned(&ReasonLabel { reason: reason.to_string() })
    }

    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// Handles on the receive budget's series.
    pub fn inbound(&self) -> InboundMetrics {
        self.inbound.clone()
    }

    pub fn plugin_loaded(&self, plugin: &str, outcome: &str) {
        self.plugin_loads.get_or_create(&LoadLabels { plugin: plugin.to_string(), outcome: outcome.to_string() }).inc();
    }
}

/// One plugin's series.
#[derive(Clone)]
pub struct PluginMetrics {
    plugin: String,
    pub connections_open: Gauge,
    pub connections_total: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    call_open: Histogram,
    call_message: Histogram,
    call_close: Histogram,
    call_timer: Histogram,
    call_room_timer: Histogram,
    faults: Family<FaultLabels, Counter>,
    pub log_dropped_lines: Counter,
    pub log_dropped_bytes: Counter,
    /// Recent call times in fine buckets, for the console's chart.
    pub latency: std::sync::Arc<LatencySketch>,
    pub timers: TimerMetrics,
    pub outbound: OutboundMetrics,
}

impl PluginMetrics {
    /// Records one plugin call's time.
    pub fn observe_call(&self, event: Call, took: std::time::Duration) {
        self.call(event).observe(took.as_secs_f64());
        self.latency.observe(took);
    }

    pub fn call(&self, event: Call) -> &Histogram {
        match event {
            Call::Open => &self.call_open,
            Call::Message => &self.call_message,
            Call::Close => &self.call_close,
            Call::Timer => &self.call_timer,
            Call::RoomTimer => &self.call_room_timer,
        }
    }

    pub fn fault(&self, kind: FaultKind) {
        self.faults.get_or_create(&FaultLabels { plugin: self.plugin.clone(), kind }).inc();
    }
}
