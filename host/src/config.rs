//! Settings: a TOML file, then command-line flags over it, then validation.
//! Every setting has a default; an error names the field and what it accepts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// A configured size as a count of bytes in memory.
pub trait InMemory {
    /// Saturates where `usize` is narrower than the size.
    fn in_memory(self) -> usize;
}

impl InMemory for ByteSize {
    fn in_memory(self) -> usize {
        usize::try_from(self.as_u64()).unwrap_or(usize::MAX)
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// The whole configuration of a host.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The file it was read from, if any: watched for changes of the
    /// plugins' grants (variables, allowed hosts).
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// Address to listen on. Loopback unless told otherwise.
    pub listen: SocketAddr,
    /// Directory of `NAME.wasm` plugins, each served at `/ws/NAME`.
    pub plugins_dir: Option<PathBuf>,
    /// The plugin served at `/ws`.
    pub default_plugin: String,
    /// Serve the test page from this directory instead of the copy built into
    /// the binary (handy while editing the page).
    pub static_dir: Option<PathBuf>,
    /// Where compiled plugins are cached; default `$XDG_CACHE_HOME/wasmsocket`
    /// (or `~/.cache/wasmsocket`).
    pub cache_dir: Option<PathBuf>,
    /// Cache compiled plugins on disk, so restarts and reloads of unchanged
    /// files skip compilation.
    pub compile_cache: bool,
    /// How open connections meet a new version of their plugin: `live`
    /// (at their next event) or `drain` (never: they finish on the version
    /// they started with). `[plugins.NAME] reload` overrides it.
    pub reload: ReloadMode,
    /// Plugin instances alive at once, across all plugins and connections.
    /// Idle connections hold none (see `limits.hibernate_after`); when every
    /// one is busy, an event waits for one, within its deadline.
    pub max_instances: u32,
    /// Bytes at the start of each plugin memory that an ended instance
    /// leaves resident for the next instance in its slot, its dirty pages
    /// reset in place (Linux 6.7 and later); past them, pages go back to the
    /// system. 0 (the default) gives every page back: a slot of a
    /// JavaScript or Python plugin would keep megabytes.
    pub keep_resident: ByteSize,
    /// Bearer token for the publish API (`POST /api/rooms/...`,
    /// `POST /api/connections/...`). None: that API is off.
    pub api_token: Option<String>,
    pub http: HttpConfig,
    pub websocket: WebSocketConfig,
    pub fallback: FallbackConfig,
    pub store: StoreConfig,
    pub redis: RedisConfig,
    pub tls: TlsConfig,
    /// Limits for every plugin, unless `[plugins.NAME]` overrides them.
    pub limits: PluginLimits,
    /// Per-plugin overrides, keyed by plugin name.
    pub plugins: BTreeMap<String, PluginOverrides>,
}

/// Socket-level settings, shared by every connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// How often the server pings each client; `0s` turns pings off.
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    /// How long after a ping without any frame from the client it is dropped.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// Size of each connection's socket read buffer.
    pub receive_buffer_size: ByteSize,
    /// Largest message a client may send (after reassembly); larger ones
    /// close the connection with 1009.
    pub max_message_size: ByteSize,
    /// Largest single frame a client may send.
    pub max_frame_size: ByteSize,
    /// Origins allowed to connect. Empty: same-origin browsers and clients
    /// that send no Origin. `["*"]`: any origin.
    pub allowed_origins: Vec<String>,
    /// Open connections across all plugins; more are refused with 503.
    /// Unset: follows the process's open-file limit, less a reserve.
    pub max_connections: Option<usize>,
    /// Messages queued for one client before it is deemed too slow and is
    /// closed with 1008.
    pub send_queue: usize,
    /// Bytes queued for one client (what other connections, broadcasts and
    /// the API sent it, and what a plugin call sent to its own connection)
    /// before it is closed with 1008. At least one largest message always
    /// fits: see [`WebSocketConfig::queue_bytes`].
    pub send_queue_bytes: ByteSize,
    /// A message must arrive whole within this time of its first byte, or
    /// the connection is closed with 1008.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// Bytes of partly received messages held across all connections. A
    /// connection whose message would take the host past it is closed with
    /// 1009; small messages are never refused for it.
    pub receive_budget: ByteSize,
    /// How long to wait for the client's reply to a close frame.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Bytes kept for resumable sessions across the host: messages sent but
    /// not yet acknowledged, and those sent while a session was away
    /// (`limits.resume_buffer` bounds each one).
    pub resume_budget: ByteSize,
    /// Bytes of room history kept in memory across the host, without
    /// Redis (`limits.history_size` bounds each room; scaled out, history
    /// is in Redis).
    pub history_budget: ByteSize,
    /// With Redis, how long a host told to stop (SIGTERM) waits for the
    /// clients of its resumable sessions to resume them on other hosts,
    /// after closing them with 1012. `0s`: no drain; every connection is
    /// closed with 1001 at once.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// The HTTP side of the listener: what a connection may cost before it
/// becomes a WebSocket.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's headers must arrive whole within this time, or the
    /// connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// An HTTP keep-alive connection idle this long between requests is
    /// closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections still speaking HTTP (not yet upgraded) at once; past it
    /// the one pending longest is closed to make room.
    pub max_pending: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(30), max_pending: 1024 }
    }
}

/// The HTTP fallback transport (`docs/transports.md`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// How long a session whose stream dropped waits for its client to
    /// resume before the plugin gets `on-close`.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Bytes of events already written to a session's stream kept so a
    /// resume loses nothing.
    pub replay_bytes: ByteSize,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self { grace: Duration::from_secs(10), replay_bytes: ByteSize::kib(64) }
    }
}

/// Each plugin's key-value store (`kv` in WIT).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Keys one plugin may hold.
    pub max_keys: usize,
    /// Largest value.
    pub value_size: ByteSize,
    /// Bytes of keys and values one plugin may hold.
    pub max_bytes: ByteSize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { max_keys: 100_000, value_size: ByteSize::kib(64), max_bytes: ByteSize::mib(64) }
    }
}

/// Scale-out across hosts (`[redis]`): rooms, directed sends and the
/// key-value store go through Redis. Off unless `url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`; none keeps everything in
    /// this process.
    pub url: Option<String>,
    /// A Redis Cluster instead: some of its nodes, `redis://[user:password@]host:port`
    /// each; any reachable one is enough to discover the rest.
    pub cluster_nodes: Vec<String>,
    /// Prefix of every key and channel, so several clusters can share one
    /// Redis.
    pub prefix: String,
    /// How often this host says it is alive and sweeps out hosts that are not.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How long after its last heartbeat a host counts as gone: its
    /// connections leave every room.
    #[serde(with = "humantime_serde")]
    pub host_timeout: Duration,
    /// Longest wait for Redis to connect or answer one command.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest pause between reconnection attempts (they start at 100ms and
    /// double).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster_nodes: Vec::new(),
            prefix: "wasmsocket".into(),
            heartbeat: Duration::from_secs(2),
            host_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RedisConfig {
    /// Whether this host joins a cluster over Redis.
    pub fn enabled(&self) -> bool {
        self.url.is_some() || !self.cluster_nodes.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.url.is_some() && !self.cluster_nodes.is_empty() {
            return Err(invalid("redis.cluster_nodes", "give either redis.url or redis.cluster_nodes, not both"));
        }
        for node in &self.cluster_nodes {
            if let Err(e) = redis::Client::open(node.as_str()) {
                return Err(invalid(
                    "redis.cluster_nodes",
                    format!("{node:?} is not a Redis URL ({e}): use redis://HOST:PORT, e.g. redis://10.0.0.1:7000"),
                ));
            }
        }
        if let Some(url) = &self.url
            && let Err(e) = redis::Client::open(url.as_str())
        {
            return Err(invalid(
                "redis.url",
                format!("{url:?} is not a Redis URL ({e}): use redis://HOST:PORT[/DB], e.g. redis://127.0.0.1:6379"),
            ));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || !self.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                "redis.prefix",
                format!("{:?} must be 1 to 64 letters, digits, '-', '_' or '.'", self.prefix),
            ));
        }
        let within = |field: &str, value: Duration, min: Duration, max: Duration| {
            if value < min || value > max {
                return Err(invalid(
                    field,
                    format!(
                        "must be from {} to {}, got {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max),
                        humantime::format_duration(value)
                    ),
                ));
            }
            Ok(())
        };
        within("redis.heartbeat", self.heartbeat, Duration::from_millis(50), Duration::from_secs(60))?;
        within("redis.timeout", self.timeout, Duration::from_millis(10), Duration::from_secs(60))?;
        within("redis.max_backoff", self.max_backoff, Duration::from_millis(100), Duration::from_secs(300))?;
        if self.host_timeout < self.heartbeat * 2 || self.host_timeout > Duration::from_secs(600) {
            return Err(invalid(
                "redis.host_timeout",
                format!(
                    "must be at least twice redis.heartbeat ({}) and at most 10m, got {}",
                    humantime::format_duration(self.heartbeat * 2),
                    humantime::format_duration(self.host_timeout)
                ),
            ));
        }
        Ok(())
    }
}

/// `[tls]`: with both files set, the listener serves `https://` and
/// `wss://` only. Changed files are picked up without a restart.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// What one plugin call may use.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Wall-clock budget of one event (`on-open`, `on-message`, `on-close`).
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Linear memory an instance may grow to.
    pub memory: ByteSize,
    /// Bytes of host-kept state per connection.
    pub state_size: ByteSize,
    /// How long a connection keeps its instance without events before it
    /// is dropped (the socket stays open): `"0s"` for a fresh instance per
    /// event, `"never"` to keep it for the connection's life.
    pub hibernate_after: Hibernate,
    /// Bytes this plugin may have queued for clients at once, over all its
    /// connections; a send past it fails with `queue-full`.
    pub outbound_bytes: ByteSize,
    /// Bytes of log lines (`log`, stdout, stderr) one connection may write
    /// per second, with a burst of twice that; the excess is dropped and
    /// counted.
    pub log_rate: ByteSize,
    /// Wall-clock bound of a call from its first wait on outbound I/O (an
    /// HTTP response, Redis): waiting is not computing, so `deadline` then
    /// bounds only the call's own running time. One shorter than the
    /// deadline changes nothing.
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// Timers one connection may have set at once.
    pub max_timers: usize,
    /// Room timers this plugin may have set at once.
    pub max_room_timers: usize,
    /// The shortest delay or interval of a timer.
    #[serde(with = "humantime_serde")]
    pub min_timer_interval: Duration,
    /// Outbound HTTP requests of this plugin in flight at once, over all
    /// its instances; more fail at once.
    pub http_in_flight: usize,
    /// Largest outbound HTTP response body; a longer one fails the read.
    pub http_response_size: ByteSize,
    /// How long a resumable session whose transport dropped waits for its
    /// client to come back, keeping its id, rooms, state, timers and the
    /// messages sent to it; `"0s"` turns resumption off.
    #[serde(with = "humantime_serde")]
    pub resume_grace: Duration,
    /// Bytes one resumable session keeps: messages its client has not
    /// acknowledged, and those sent while it is away. One away that
    /// overflows it ends with `on-close`.
    pub resume_buffer: ByteSize,
    /// Broadcasts each room keeps in its history, for `rooms.history` and
    /// sessions recovering what they missed; 0 keeps none.
    pub history_size: u32,
    /// How long a room's history keeps a broadcast.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
}

/// When an idle connection's instance is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hibernate {
    After(Duration),
    Never,
}

impl std::str::FromStr for Hibernate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "never" {
            return Ok(Self::Never);
        }
        humantime::parse_duration(s)
            .map(Self::After)
            .map_err(|e| format!("{s:?} is neither a duration (e.g. \"10s\") nor \"never\": {e}"))
    }
}

impl<'de> Deserialize<'de> for Hibernate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a reload does to connections already open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadMode {
    /// Open connections move to the new version at their next event,
    /// keeping their host-kept state.
    #[default]
    Live,
    /// Open connections stay on the version they started with until they
    /// close; only new connections get the new version.
    Drain,
}

impl std::str::FromStr for ReloadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(Self::Live),
            "drain" => Ok(Self::Drain),
            other => Err(format!("{other:?} is not a reload mode: use \"live\" or \"drain\"")),
        }
    }
}

/// `[plugins.NAME]`: anything left out comes from `[limits]` and `reload`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginOverrides {
    pub reload: Option<ReloadMode>,
    #[serde(with = "humantime_serde::option")]
    pub deadline: Option<Duration>,
    pub memory: Option<ByteSize>,
    pub state_size: Option<ByteSize>,
    pub hibernate_after: Option<Hibernate>,
    pub outbound_bytes: Option<ByteSize>,
    pub log_rate: Option<ByteSize>,
    #[serde(with = "humantime_serde::option")]
    pub wait_timeout: Option<Duration>,
    pub max_timers: Option<usize>,
    pub max_room_timers: Option<usize>,
    #[serde(with = "humantime_serde::option")]
    pub min_timer_interval: Option<Duration>,
    pub http_in_flight: Option<usize>,
    pub http_response_size: Option<ByteSize>,
    #[serde(with = "humantime_serde::option")]
    pub resume_grace: Option<Duration>,
    pub resume_buffer: Option<ByteSize>,
    pub history_size: Option<u32>,
    #[serde(with = "humantime_serde::option")]
    pub history_ttl: Option<Duration>,
    /// Where the plugin may send HTTP requests: `scheme://host[:port]`
    /// each. None by default.
    pub allowed_outbound_hosts: Vec<String>,
    /// `[plugins.NAME.variables]`: what the plugin reads through
    /// `wasi:config/store`.
    pub variables: BTreeMap<String, String>,
    /// Names of `variables` whose values never appear in the API, the
    /// console or the log.
    pub secret_variables: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            file: None,
            plugins_dir: None,
            default_plugin: "echo".into(),
            static_dir: None,
            cache_dir: None,
            compile_cache: true,
            reload: ReloadMode::Live,
            api_token: None,
            max_instances: 1024,
            keep_resident: ByteSize::b(0),
            http: HttpConfig::default(),
            tls: TlsConfig::default(),
            store: StoreConfig::default(),
            redis: RedisConfig::default(),
            websocket: WebSocketConfig::default(),
            fallback: FallbackConfig::default(),
            limits: PluginLimits::default(),
            plugins: BTreeMap::new(),
        }
    }
}

impl WebSocketConfig {
    /// The byte bound of a send queue: `send_queue_bytes`, raised to
    /// `max_message_size` so that one largest message always fits.
    pub fn queue_bytes(&self) -> usize {
        let bytes = self.send_queue_bytes.max(self.max_message_size).as_u64();
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(30),
            // The ASP.NET Core sample's 4 KiB: a small buffer per idle
            // connection instead of tungstenite's 128 KiB.
            receive_buffer_size: ByteSize::kib(4),
            max_message_size: ByteSize::mib(1),
            max_frame_size: ByteSize::mib(1),
            allowed_origins: Vec::new(),
            max_connections: None,
            send_queue: 1024,
            send_queue_bytes: ByteSize::mib(4),
            message_timeout: Duration::from_secs(30),
            receive_budget: ByteSize::mib(256),
            close_timeout: Duration::from_secs(5),
            resume_budget: ByteSize::mib(64),
            history_budget: ByteSize::mib(64),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            memory: ByteSize::mib(64),
            state_size: ByteSize::kib(64),
            hibernate_after: Hibernate::After(Duration::from_secs(10)),
            outbound_bytes: ByteSize::mib(64),
            log_rate: ByteSize::kib(64),
            wait_timeout: Duration::from_secs(5),
            max_timers: 16,
            max_room_timers: 1024,
            min_timer_interval: Duration::from_millis(10),
            http_in_flight: 64,
            http_response_size: ByteSize::mib(1),
            resume_grace: Duration::from_secs(30),
            resume_buffer: ByteSize::kib(256),
            history_size: 0,
            history_ttl: Duration::from_secs(300),
        }
    }
}

/// Bounds that keep a value from disabling a protection by accident.
const MIN_BUFFER: u64 = 256;
const MAX_BUFFER: u64 = 16 << 20;
const MAX_MESSAGE: u64 = 1 << 30;
const MAX_MEMORY: u64 = 4 << 30;
/// Past this, warm slots would hold more than most plugins ever touch.
const MAX_KEEP_RESIDENT: u64 = 64 << 20;
pub const MAX_CONNECTIONS: usize = 1_000_000;

impl Config {
    /// Reads a TOML file. Unknown keys are errors, so a typo is not ignored.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_owned(), message },
            other => other,
        })?;
        config.file = Some(path.to_owned());
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// The limits that apply to plugin `name`.
    pub fn limits_for(&self, name: &str) -> PluginLimits {
        let mut limits = self.limits;
        if let Some(o) = self.plugins.get(name) {
            limits.deadline = o.deadline.unwrap_or(limits.deadline);
            limits.memory = o.memory.unwrap_or(limits.memory);
            limits.state_size = o.state_size.unwrap_or(limits.state_size);
            limits.hibernate_after = o.hibernate_after.unwrap_or(limits.hibernate_after);
            limits.outbound_bytes = o.outbound_bytes.unwrap_or(limits.outbound_bytes);
            limits.log_rate = o.log_rate.unwrap_or(limits.log_rate);
            limits.wait_timeout = o.wait_timeout.unwrap_or(limits.wait_timeout);
            limits.max_timers = o.max_timers.unwrap_or(limits.max_timers);
            limits.max_room_timers = o.max_room_timers.unwrap_or(limits.max_room_timers);
            limits.min_timer_interval = o.min_timer_interval.unwrap_or(limits.min_timer_interval);
            limits.http_in_flight = o.http_in_flight.unwrap_or(limits.http_in_flight);
            limits.http_response_size = o.http_response_size.unwrap_or(limits.http_response_size);
            limits.resume_grace = o.resume_grace.unwrap_or(limits.resume_grace);
            limits.resume_buffer = o.resume_buffer.unwrap_or(limits.resume_buffer);
            limits.history_size = o.history_size.unwrap_or(limits.history_size);
            limits.history_ttl = o.history_ttl.unwrap_or(limits.history_ttl);
        }
        limits
    }

    /// What plugin `name` is granted: its variables, each overridden by the
    /// environment variable `WASMSOCKET_PLUGIN_<NAME>_<VARIABLE>` (both
    /// upper-cased, `-` written `_`) when set, and where it may send HTTP
    /// requests. Only variables the file declares are overridden.
    pub fn grants_for(&self, name: &str) -> Grants {
        self.grants_with(name, |key| std::env::var(key).ok())
    }

    fn grants_with(&self, name: &str, env: impl Fn(&str) -> Option<String>) -> Grants {
        let Some(o) = self.plugins.get(name) else { return Grants::default() };
        let variables = o
            .variables
            .iter()
            .map(|(key, value)| {
                let value = env(&variable_env_name(name, key)).unwrap_or_else(|| value.clone());
                (key.clone(), value)
            })
            .collect();
        Grants {
            variables,
            secret: o.secret_variables.iter().cloned().collect(),
            outbound: o.allowed_outbound_hosts.iter().filter_map(|h| h.parse().ok()).collect(),
        }
    }

    /// The reload mode of plugin `name`.
    pub fn reload_for(&self, name: &str) -> ReloadMode {
        self.plugins.get(name).and_then(|o| o.reload).unwrap_or(self.reload)
    }

    /// The compile cache directory in use, if the cache is on.
    pub fn compile_cache_dir(&self) -> Option<PathBuf> {
        if !self.compile_cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("wasmsocket").join("compiled"))
    }

    /// The largest memory any plugin may use: the size of a pooled memory slot.
    pub fn largest_memory(&self) -> u64 {
        self.plugins
            .keys()
            .map(|name| self.limits_for(name).memory.as_u64())
            .chain([self.limits.memory.as_u64()])
            .max()
            .unwrap_or(self.limits.memory.as_u64())
    }

    /// Checks every value; the error names the first bad field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ws = &self.websocket;
        check_range("websocket.receive_buffer_size", ws.receive_buffer_size.as_u64(), MIN_BUFFER, MAX_BUFFER)?;
        check_range("websocket.max_frame_size", ws.max_frame_size.as_u64(), 16, MAX_MESSAGE)?;
        check_range("websocket.max_message_size", ws.max_message_size.as_u64(), 16, MAX_MESSAGE)?;
        if ws.max_frame_size > ws.max_message_size {
            return Err(invalid(
                "websocket.max_frame_size",
                format!(
                    "{} is larger than websocket.max_message_size ({}); a frame cannot exceed a message",
                    ws.max_frame_size, ws.max_message_size
                ),
            ));
        }
        if let Some(max) = ws.max_connections
            && (max == 0 || max > MAX_CONNECTIONS)
        {
            return Err(invalid(
                "websocket.max_connections",
                format!("must be from 1 to {MAX_CONNECTIONS}, got {max}"),
            ));
        }
        check_range("websocket.send_queue_bytes", ws.send_queue_bytes.as_u64(), 1 << 10, MAX_MESSAGE)?;
        check_range("websocket.receive_budget", ws.receive_budget.as_u64(), 1 << 20, 64 << 30)?;
        check_range("websocket.resume_budget", ws.resume_budget.as_u64(), 0, 64 << 30)?;
        check_range("websocket.history_budget", ws.history_budget.as_u64(), 0, 64 << 30)?;
        if ws.message_timeout < Duration::from_millis(100) || ws.message_timeout > Duration::from_secs(3600) {
            return Err(invalid(
                "websocket.message_timeout",
                format!("must be from 100ms to 1h, got {}", humantime::format_duration(ws.message_timeout)),
            ));
        }
        if self.max_instances == 0 || self.max_instances > 100_000 {
            return Err(invalid("max_instances", format!("must be from 1 to 100000, got {}", self.max_instances)));
        }
        check_range("keep_resident", self.keep_resident.as_u64(), 0, MAX_KEEP_RESIDENT)?;
        let http = &self.http;
        for (field, value) in [("http.header_timeout", http.header_timeout), ("http.idle_timeout", http.idle_timeout)] {
            if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                return Err(invalid(
                    field,
                    format!("must be from 100ms to 1h, got {}", humantime::format_duration(value)),
                ));
            }
        }
        if http.max_pending == 0 || http.max_pending > MAX_CONNECTIONS {
            return Err(invalid(
                "http.max_pending",
                format!("must be from 1 to {MAX_CONNECTIONS}, got {}", http.max_pending),
            ));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => return Err(invalid("tls.key", "is missing: tls.cert needs the certificate's key")),
            (None, Some(_)) => return Err(invalid("tls.cert", "is missing: tls.key needs its certificate")),
            _ => {}
        }
        if ws.send_queue == 0 || ws.send_queue > 1 << 20 {
            return Err(invalid(
                "websocket.send_queue",
                format!("must be from 1 to 1048576 messages, got {}", ws.send_queue),
            ));
        }
        if !ws.keep_alive_interval.is_zero() && ws.keep_alive_timeout.is_zero() {
            return Err(invalid(
                "websocket.keep_alive_timeout",
                "must be more than 0s while keep_alive_interval is on (set keep_alive_interval = \"0s\" to turn pings off)",
            ));
        }
        if ws.drain_timeout > Duration::from_secs(3600) {
            return Err(invalid("websocket.drain_timeout", "must be at most 1h"));
        }
        if ws.close_timeout.is_zero() {
            return Err(invalid("websocket.close_timeout", "must be more than 0s, e.g. \"5s\""));
        }
        for origin in &ws.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid(
                    "websocket.allowed_origins",
                    format!(
                        "{origin:?} is not an origin: use \"*\" or a scheme and host such as \"https://example.com\""
                    ),
                ));
            }
        }
        if !is_plugin_name(&self.default_plugin) {
            return Err(invalid("default_plugin", format!("{:?} {PLUGIN_NAME_RULE}", self.default_plugin)));
        }
        validate_limits("limits", &self.limits)?;
        if self.store.max_keys == 0 || self.store.max_keys > 100_000_000 {
            return Err(invalid("store.max_keys", format!("must be from 1 to 100000000, got {}", self.store.max_keys)));
        }
        check_range("store.value_size", self.store.value_size.as_u64(), 1, 64 << 20)?;
        check_range("store.max_bytes", self.store.max_bytes.as_u64(), 1 << 10, 64 << 30)?;
        self.redis.validate()?;
        if let Some(token) = &self.api_token
            && token.len() < 16
        {
            return Err(invalid(
                "api_token",
                "must be at least 16 characters (e.g. `openssl rand -hex 32`); leave it unset to turn the publish API off",
            ));
        }
        for name in self.plugins.keys() {
            if !is_plugin_name(name) {
                return Err(invalid(format!("plugins.{name}"), format!("{name:?} {PLUGIN_NAME_RULE}")));
            }
            validate_limits(&format!("plugins.{name}"), &self.limits_for(name))?;
            let o = &self.plugins[name];
            for host in &o.allowed_outbound_hosts {
                host.parse::<OutboundHost>()
                    .map_err(|e| invalid(format!("plugins.{name}.allowed_outbound_hosts"), e))?;
            }
            for secret in &o.secret_variables {
                if !o.variables.contains_key(secret) {
                    return Err(invalid(
                        format!("plugins.{name}.secret_variables"),
                        format!("{secret:?} is not in [plugins.{name}.variables]"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The environment variable that overrides variable `key` of `plugin`.
pub fn variable_env_name(plugin: &str, key: &str) -> String {
    format!("WASMSOCKET_PLUGIN_{}_{}", plugin, key).to_ascii_uppercase().replace('-', "_")
}

/// What a plugin may reach beyond the host API, from `[plugins.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Its variables, after the environment's overrides.
    pub variables: BTreeMap<String, String>,
    /// Names of the variables whose values are never shown.
    pub secret: std::collections::BTreeSet<String>,
    /// Where its HTTP requests may go.
    pub outbound: Vec<OutboundHost>,
}

impl Grants {
    /// The variables as the API and the console may show them: secret
    /// values are masked.
    pub fn shown_variables(&self) -> BTreeMap<String, String> {
        self.variables
            .iter()
            .map(|(k, v)| (k.clone(), if self.secret.contains(k) { "(secret)".into() } else { v.clone() }))
            .collect()
    }

    /// Whether a request to `scheme://host:port` is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.outbound.iter().any(|o| o.scheme == scheme && o.host.eq_ignore_ascii_case(host) && o.port == port)
    }
}

/// One entry of `allowed_outbound_hosts`: a scheme, a host and a port
/// (the scheme's default when left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundHost {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for OutboundHost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rule = "write scheme://host or scheme://host:port, with scheme http or https";
        let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("{s:?}: {rule}"))?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            other => return Err(format!("{s:?}: scheme {other:?} is not http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', '*']) {
            return Err(format!("{s:?}: {rule} (no path, user or wildcard)"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && !rest.ends_with(']') => {
                (host, port.parse::<u16>().map_err(|_| format!("{s:?}: {port:?} is not a port"))?)
            }
            _ => (rest, default_port),
        };
        if host.is_empty() {
            return Err(format!("{s:?}: {rule}"));
        }
        Ok(Self { scheme: scheme.into(), host: host.to_ascii_lowercase(), port })
    }
}

fn validate_limits(table: &str, limits: &PluginLimits) -> Result<(), ConfigError> {
    if limits.deadline < Duration::from_millis(1) || limits.deadline > Duration::from_secs(600) {
        return Err(invalid(
            format!("{table}.deadline"),
            format!("must be from 1ms to 10m, got {}", humantime::format_duration(limits.deadline)),
        ));
    }
    check_range(&format!("{table}.memory"), limits.memory.as_u64(), 1 << 16, MAX_MEMORY)?;
    check_range(&format!("{table}.state_size"), limits.state_size.as_u64(), 0, 64 << 20)?;
    if let Hibernate::After(after) = limits.hibernate_after
        && after > Duration::from_secs(86_400)
    {
        return Err(invalid(
            format!("{table}.hibernate_after"),
            format!("must be at most 1d (or \"never\"), got {}", humantime::format_duration(after)),
        ));
    }
    check_range(&format!("{table}.outbound_bytes"), limits.outbound_bytes.as_u64(), 1 << 16, 64 << 30)?;
    check_range(&format!("{table}.log_rate"), limits.log_rate.as_u64(), 0, 1 << 30)?;
    if limits.wait_timeout > Duration::from_secs(600) {
        return Err(invalid(
            format!("{table}.wait_timeout"),
            format!("must be at most 10m, got {}", humantime::format_duration(limits.wait_timeout)),
        ));
    }
    check_count(&format!("{table}.max_timers"), limits.max_timers, 0, 10_000)?;
    check_count(&format!("{table}.max_room_timers"), limits.max_room_timers, 0, 1_000_000)?;
    if limits.min_timer_interval < Duration::from_millis(1) {
        return Err(invalid(format!("{table}.min_timer_interval"), "must be at least 1ms"));
    }
    check_count(&format!("{table}.http_in_flight"), limits.http_in_flight, 0, 100_000)?;
    check_range(&format!("{table}.http_response_size"), limits.http_response_size.as_u64(), 0, 1 << 30)?;
    if limits.resume_grace > Duration::from_secs(3600) {
        return Err(invalid(
            format!("{table}.resume_grace"),
            format!("must be at most 1h, got {}", humantime::format_duration(limits.resume_grace)),
        ));
    }
    check_range(&format!("{table}.resume_buffer"), limits.resume_buffer.as_u64(), 1 << 10, 1 << 30)?;
    check_count(&format!("{table}.history_size"), limits.history_size as usize, 0, 10_000)?;
    if limits.history_ttl < Duration::from_secs(1) || limits.history_ttl > Duration::from_secs(86_400) {
        return Err(invalid(
            format!("{table}.history_ttl"),
            format!("must be from 1s to 24h, got {}", humantime::format_duration(limits.history_ttl)),
        ));
    }
    Ok(())
}

fn check_count(field: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(field, format!("must be from {min} to {max}, got {value}")));
    }
    Ok(())
}

fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            field,
            format!("must be from {} to {}, got {}", ByteSize(min), ByteSize(max), ByteSize(value)),
        ));
    }
    Ok(())
}

pub(crate) const PLUGIN_NAME_RULE: &str =
    "is not a plugin name: use 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter or digit";

/// Plugin names become URL path segments and file names.
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.listen.ip().is_loopback());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[websocket]\nmax_mesage_size = 10\n").unwrap_err().to_string();
        assert!(err.contains("max_mesage_size"), "{err}");
    }

    #[test]
    fn bad_value_names_field_and_range() {
        let c = Config::from_toml("[websocket]\nreceive_buffer_size = \"10B\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("websocket.receive_buffer_size") && err.contains("must be from"), "{err}");
    }

    #[test]
    fn frame_larger_than_message_is_refused() {
        let c = Config::from_toml("[websocket]\nmax_frame_size = \"2MiB\"\nmax_message_size = \"1MiB\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("websocket.max_frame_size"), "{err}");
    }

    #[test]
    fn variables_come_from_the_file_and_the_environment_overrides_them() {
        let c = Config::from_toml(
            "[plugins.js-fetch]\nsecret_variables = [\"api_key\"]\n[plugins.js-fetch.variables]\nbase_url = \"http://a\"\napi_key = \"k\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(variable_env_name("js-fetch", "base_url"), "WASMSOCKET_PLUGIN_JS_FETCH_BASE_URL");
        let g = c.grants_with("js-fetch", |k| (k == "WASMSOCKET_PLUGIN_JS_FETCH_API_KEY").then(|| "env".into()));
        assert_eq!(g.variables["base_url"], "http://a");
        assert_eq!(g.variables["api_key"], "env");
        assert_eq!(g.shown_variables()["api_key"], "(secret)");
        let bad = Config::from_toml("[plugins.a]\nsecret_variables = [\"nope\"]\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("plugins.a.secret_variables"));
    }

    #[test]
    fn outbound_hosts_are_scheme_host_and_port() {
        let h: OutboundHost = "https://API.example.com".parse().unwrap();
        assert_eq!((h.scheme.as_str(), h.host.as_str(), h.port), ("https", "api.example.com", 443));
        let h: OutboundHost = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("127.0.0.1", 8080));
        for bad in ["api.example.com", "ftp://x", "https://x/path", "https://*.x.com", "http://x:port"] {
            assert!(bad.parse::<OutboundHost>().is_err(), "{bad}");
        }
        let c = Config::from_toml("[plugins.a]\nallowed_outbound_hosts = [\"x.com\"]\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("plugins.a.allowed_outbound_hosts"));
    }

    #[test]
    fn reload_modes() {
        let c = Config::from_toml("reload = \"drain\"\n[plugins.a]\nreload = \"live\"\n").unwrap();
        assert_eq!(c.reload_for("a"), ReloadMode::Live);
        assert_eq!(c.reload_for("b"), ReloadMode::Drain);
        let err = Config::from_toml("reload = \"hot\"\n").unwrap_err().to_string();
        assert!(err.contains("reload") && err.contains("live"), "{err}");
    }

    #[test]
    fn plugin_overrides_fall_back_to_defaults() {
        let c = Config::from_toml("[limits]\ndeadline = \"50ms\"\n[plugins.big]\nmemory = \"256MiB\"\n").unwrap();
        c.validate().unwrap();
        let big = c.limits_for("big");
        assert_eq!(big.memory, ByteSize::mib(256));
        assert_eq!(big.deadline, Duration::from_millis(50));
        assert_eq!(c.limits_for("other").memory, ByteSize::mib(64));
        assert_eq!(c.largest_memory(), 256 << 20);
    }

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        let c = Config::from_toml(
            "[websocket]\nkeep_alive_interval = \"2m\"\nmax_message_size = \"16 MiB\"\nmax_frame_size = \"64KiB\"\n",
        )
        .unwrap();
        assert_eq!(c.websocket.keep_alive_interval, Duration::from_secs(120));
        assert_eq!(c.websocket.max_message_size, ByteSize::mib(16));
        c.validate().unwrap();
    }

    #[test]
    fn redis_settings_name_the_field() {
        let c = Config::from_toml("[redis]\nurl = \"http://x\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("redis.url") && err.contains("redis://"), "{err}");
        let c =
            Config::from_toml("[redis]\nurl = \"redis://127.0.0.1:1\"\nheartbeat = \"5s\"\nhost_timeout = \"6s\"\n")
                .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("redis.host_timeout") && err.contains("twice"), "{err}");
        let c = Config::from_toml("[redis]\nurl = \"redis://127.0.0.1:6379/2\"\nprefix = \"chat-eu\"\n").unwrap();
        c.validate().unwrap();
        let c = Config::from_toml("[redis]\ncluster_nodes = [\"redis://10.0.0.1:7000\", \"http://x\"]\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("redis.cluster_nodes") && err.contains("http://x"), "{err}");
        let c = Config::from_toml("[redis]\nurl = \"redis://a:1\"\ncluster_nodes = [\"redis://b:2\"]\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("not both"));
        let c = Config::from_toml("[redis]\ncluster_nodes = [\"redis://:pw@10.0.0.1:7000\"]\n").unwrap();
        c.validate().unwrap();
        assert!(c.redis.enabled());
    }

    #[test]
    fn hibernation_reads_durations_and_never() {
        let c = Config::from_toml("[limits]\nhibernate_after = \"0s\"\n[plugins.py]\nhibernate_after = \"never\"\n")
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.limits_for("other").hibernate_after, Hibernate::After(Duration::ZERO));
        assert_eq!(c.limits_for("py").hibernate_after, Hibernate::Never);
        let err = Config::from_toml("[limits]\nhibernate_after = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("hibernate_after") && err.contains("never"), "{err}");
    }

    #[test]
    fn byte_bounds_name_the_field() {
        let c = Config::from_toml("[websocket]\nsend_queue_bytes = \"1B\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("websocket.send_queue_bytes"));
        let c = Config::from_toml("[websocket]\nsend_queue_bytes = \"64KiB\"\n").unwrap();
        assert_eq!(c.websocket.queue_bytes(), 1 << 20, "one largest message always fits");
        let c = Config::from_toml("[store]\nmax_bytes = \"1B\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("store.max_bytes"));
        let c = Config::from_toml("max_instances = 0\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("max_instances"));
        let c = Config::from_toml("keep_resident = \"1GiB\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("keep_resident"));
        let c = Config::from_toml("keep_resident = \"1280KiB\"\n").unwrap();
        assert_eq!(c.keep_resident.as_u64(), 1280 << 10);
        assert_eq!(Config::default().keep_resident.as_u64(), 0, "every page goes back unless asked");
    }

    #[test]
    fn room_history_is_off_by_default_and_bounded_per_plugin() {
        let c = Config::from_toml("[plugins.chat]\nhistory_size = 50\nhistory_ttl = \"1h\"\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.limits_for("other").history_size, 0);
        assert_eq!(
            (c.limits_for("chat").history_size, c.limits_for("chat").history_ttl),
            (50, Duration::from_secs(3600))
        );
        let c = Config::from_toml("[plugins.chat]\nhistory_size = 20000\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("plugins.chat.history_size"));
        let c = Config::from_toml("[limits]\nhistory_ttl = \"0s\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("limits.history_ttl"));
    }

    #[test]
    fn tls_needs_both_files() {
        let c = Config::from_toml("[tls]\ncert = \"c.pem\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("tls.key"));
        let c = Config::from_toml("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").unwrap();
        c.validate().unwrap();
        assert!(c.tls.enabled());
    }

    #[test]
    fn plugin_names() {
        assert!(is_plugin_name("echo"));
        assert!(is_plugin_name("chat-2_x"));
        assert!(!is_plugin_name(""));
        assert!(!is_plugin_name("Echo"));
        assert!(!is_plugin_name("../x"));
        assert!(!is_plugin_name("-x"));
    }
}
