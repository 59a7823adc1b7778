//! Key names, and the Lua scripts that keep room membership honest when a
//! host goes away. Scripts run atomically in Redis, so two hosts sweeping
//! the same dead host cannot interleave, and Redis's own clock decides who
//! is dead (host clocks may disagree).
//!
//! Layout under the prefix `P`:
//! * `P:hosts`: sorted set of live host ids, scored by when each expires.
//! * `P:room:PLUGIN:ROOM`: set of the connection ids in a room, cluster-wide.
//! * `P:host:HOST:rooms`: set of `ROOMKEY\nCONNID`, each membership this
//!   host wrote, so it can be removed when the host dies.
//! * `P:kv:PLUGIN:KEY`: the key-value store.
//! * Channels `P:broadcast` (every host) and `P:to:HOST` (one host).

use std::sync::LazyLock;

use redis::Script;

/// Redis names of everything the backplane stores.
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    pub fn hosts(&self) -> String {
        format!("{}:hosts", self.prefix)
    }

    pub fn room(&self, plugin: &str, room: &str) -> String {
        // Plugin names cannot contain ':', so this cannot collide.
        format!("{}:room:{plugin}:{room}", self.prefix)
    }

    /// Where a host's memberships are indexed: `before` + host + `after`.
    pub fn host_index_parts(&self) -> (String, &'static str) {
        (format!("{}:host:", self.prefix), ":rooms")
    }

    pub fn host_index(&self, host: &str) -> String {
        let (before, after) = self.host_index_parts();
        format!("{before}{host}{after}")
    }

    /// An entry of a host's index. Connection ids never contain a newline,
    /// so the last one splits it.
    pub fn index_entry(room_key: &str, conn: &str) -> String {
        format!("{room_key}\n{conn}")
    }

    pub fn kv(&self, plugin: &str, key: &str) -> String {
        format!("{}:kv:{plugin}:{key}", self.prefix)
    }

    /// The cluster's broadcast counter: every broadcast takes the next
    /// number, and a join reads it, so a host can tell which broadcasts a
    /// new member joined too late for.
    pub fn broadcast_seq(&self) -> String {
        format!("{}:broadcast-seq", self.prefix)
    }

    pub fn broadcast_channel(&self) -> String {
        format!("{}:broadcast", self.prefix)
    }

    pub fn host_channel(&self, host: &str) -> String {
        format!("{}:to:{host}", self.prefix)
    }
}

/// Removes every membership listed in a host's index, then the index.
const FORGET_FN: &str = r#"
local function forget(index)
  local n = 0
  for _, entry in ipairs(redis.call('SMEMBERS', index)) do
    local room, conn = string.match(entry, '^(.*)\n([^\n]*)$')
    if room then
      redis.call('SREM', room, conn)
      n = n + 1
    end
  end
  redis.call('DEL', index)
  return n
end
"#;

/// KEYS[1] the index. Used when this host rewrites its own memberships
/// after reconnecting, and when it shuts down.
pub(super) static FORGET: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{FORGET_FN}\nreturn forget(KEYS[1])")));

/// KEYS[1] the broadcast counter, KEYS[2] the room's members; ARGV the
/// channel and the envelope. Numbers the broadcast and publishes it as
/// `NUMBER SPACE ENVELOPE` in one atomic step, so numbers follow the order
/// of publication. Returns the room's size.
pub(super) static BROADCAST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], tostring(n) .. ' ' .. ARGV[2])
return redis.call('SCARD', KEYS[2])
"#,
    )
});

/// KEYS[1] `P:hosts`; ARGV host id, timeout in ms, index prefix and suffix.
/// Renews this host's lease, then sweeps every host whose lease ran out.
/// Returns {1 if this host was absent (it had been swept), memberships
/// removed}.
pub(super) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{FORGET_FN}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local swept = 0
for _, host in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  swept = swept + forget(ARGV[3] .. host .. ARGV[4])
  redis.call('ZREM', KEYS[1], host)
end
return {{added, swept}}
"#
    ))
});
