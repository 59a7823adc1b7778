//! Key names, and the Lua scripts that keep room membership honest. Each
//! script touches keys of one hash slot only, so it runs on a Redis
//! Cluster as on a single Redis: a room's keys and channel share the hash
//! tag `{PLUGIN:ROOM}`; every other script has one key. Redis's own clock
//! decides who is dead (host clocks may disagree).
//!
//! Layout under the prefix `P` (which cannot contain braces), version
//! [`LAYOUT`]:
//! * `P:layout`: the layout's version, written by the first host; a host
//!   of another layout refuses to start on it.
//! * `P:hosts`: sorted set of live host ids, scored by when each expires.
//! * `P:room:{PLUGIN:ROOM}`: set of the connection ids in a room.
//! * `P:seq:{PLUGIN:ROOM}`: the room's broadcast counter; gone while the
//!   room is empty and keeps no history (it expires with the history).
//! * `P:history:{PLUGIN:ROOM}`: the room's last broadcasts, a stream whose
//!   entry ids are their numbers (`N-0`), for plugins that keep history;
//!   it expires `history_ttl` after the room's last broadcast.
//! * `P:host:HOST:rooms`: set of `PLUGIN:ROOM\nCONNID`, each membership this
//!   host wrote, so it can be removed when the host dies.
//! * `P:kv:PLUGIN:KEY`: the key-value store.
//! * `P:timer:{PLUGIN:ROOM}:NAME`: a room timer, a hash of its schedule
//!   (`s`), the host holding its lease (`o`) and until when (`u`, ms by
//!   Redis's clock); `P:timers`: the index of them (see `room_timers`).
//! * `P:moving:HOST:TICKET`: a resumable session's state on its way from
//!   HOST to another host, for a minute at most (see `moves`).
//! * `P:session:ID`: a resumable session's checkpoint, for its recovery
//!   after its host's crash; `P:host:HOST:sessions`: the ids HOST wrote
//!   (see `checkpoints`).
//! * Channels `P:ch:{PLUGIN:ROOM}` (hosts with members in the room) and
//!   `P:to:HOST` (one host, and the hosts its sessions moved to).

use std::sync::LazyLock;

use redis::Script;

/// The version of this layout and of the messages between hosts. A
/// release that changes either bumps it: hosts of different versions then
/// refuse to share one Redis (under one prefix) instead of misreading each
/// other.
pub(super) const LAYOUT: u32 = 1;

/// Writes the layout version unless one is there; returns the one there.
pub(super) static LAYOUT_CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('SET', KEYS[1], ARGV[1], 'NX')
        return redis.call('GET', KEYS[1])
        ",
    )
});

/// Redis names of everything the backplane stores.
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    pub fn layout(&self) -> String {
        format!("{}:layout", self.prefix)
    }

    pub fn hosts(&self) -> String {
        format!("{}:hosts", self.prefix)
    }

    /// A room's name across the cluster: plugin names cannot contain ':',
    /// so this cannot collide.
    pub fn room_id(plugin: &str, room: &str) -> String {
        format!("{plugin}:{room}")
    }

    /// The room's members. Everything of one room hashes on `{ROOM_ID}`; a
    /// `}` inside the room name cuts the tag short, equally for each of its
    /// keys, so they still share a slot.
    pub fn members(&self, room_id: &str) -> String {
        format!("{}:room:{{{room_id}}}", self.prefix)
    }

    /// The room's broadcast counter: every broadcast takes the next number,
    /// and a join reads it, so a host can tell which broadcasts a new
    /// member joined too late for.
    pub fn seq(&self, room_id: &str) -> String {
        format!("{}:seq:{{{room_id}}}", self.prefix)
    }

    /// The room's history: a stream of its last broadcasts.
    pub fn history(&self, room_id: &str) -> String {
        format!("{}:history:{{{room_id}}}", self.prefix)
    }

    pub fn room_channel(&self, room_id: &str) -> String {
        format!("{}:ch:{{{room_id}}}", self.prefix)
    }

    pub fn host_index(&self, host: &str) -> String {
        format!("{}:host:{host}:rooms", self.prefix)
    }

    /// An entry of a host's index. Connection ids never contain a newline,
    /// so the last one splits it.
    pub fn index_entry(room_id: &str, conn: &str) -> String {
        format!("{room_id}\n{conn}")
    }

    pub fn split_entry(entry: &str) -> Option<(&str, &str)> {
        entry.rsplit_once('\n')
    }

    pub fn kv(&self, plugin: &str, key: &str) -> String {
        format!("{}:kv:{plugin}:{key}", self.prefix)
    }

    /// A room timer, in its room's slot.
    pub fn timer(&self, plugin: &str, room: &str, name: &str) -> String {
        format!("{}:timer:{{{}}}:{name}", self.prefix, Self::room_id(plugin, room))
    }

    pub fn timers(&self) -> String {
        format!("{}:timers", self.prefix)
    }

    pub fn host_channel(&self, host: &str) -> String {
        format!("{}:to:{host}", self.prefix)
    }

    /// Whether `channel` is a host's own (room channels are `P:ch:…`).
    pub fn is_host_channel(&self, channel: &str) -> bool {
        channel.strip_prefix(self.prefix.as_str()).is_some_and(|rest| rest.starts_with(":to:"))
    }

    /// A resumable session's checkpoint (see `checkpoints`).
    pub fn session(&self, id: &str) -> String {
        format!("{}:session:{id}", self.prefix)
    }

    /// The sessions whose checkpoints `host` wrote.
    pub fn host_sessions(&self, host: &str) -> String {
        format!("{}:host:{host}:sessions", self.prefix)
    }

    /// A session's packed state on its way from host `holder` to another,
    /// under the ticket of the offer.
    pub fn moving(&self, ticket: u64, holder: &str) -> String {
        format!("{}:moving:{holder}:{ticket}", self.prefix)
    }
}

/// KEYS[1] the room's members, KEYS[2] its counter; ARGV[1] the connection.
/// Adds the member and returns the counter (0 if absent): the join point.
/// A counter kept only for the room's history stops expiring: the room
/// has a member again.
pub(super) static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PERSIST', KEYS[2])
return tonumber(redis.call('GET', KEYS[2]) or '0')
"#,
    )
});

/// KEYS[1] the room's members, KEYS[2] its counter, KEYS[3] its history;
/// ARGV[1] the connection. Removes the member; the counter goes with the
/// last one, so an empty room leaves no key behind (a later join reads 0,
/// which is still before any number given afterwards), unless the room
/// keeps history, whose numbering it then keeps until the history expires.
pub(super) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local ttl = redis.call('PTTL', KEYS[3])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) else redis.call('DEL', KEYS[2]) end
end
return 0
"#,
    )
});

/// KEYS[1] a host's index. Takes its entries and deletes it; the caller
/// removes each membership (rooms live in other slots).
pub(super) static TAKE_INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local entries = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return entries
"#,
    )
});

/// KEYS[1] the room's counter, KEYS[2] its members, KEYS[3] its history;
/// ARGV the channel, the envelope, the publish command, the history's size
/// (0: none) and its ttl in ms. Numbers the broadcast, keeps it in the
/// history and publishes it as `NUMBER SPACE ENVELOPE` in one atomic step,
/// so numbers follow the order of publication. Returns the room's size; a
/// room with no member in Redis is not published to (no host listens), and
/// its broadcast is numbered only to be kept.
///
/// A counter found missing beside a history (a host of an earlier release
/// deleted it) restarts after the history's last number: ids only grow.
pub(super) static BROADCAST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local size = redis.call('SCARD', KEYS[2])
local keep = tonumber(ARGV[4])
if size == 0 and keep == 0 then return 0 end
local n = redis.call('INCR', KEYS[1])
if keep > 0 then
  if n == 1 then
    local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
    if last then
      n = tonumber(string.match(last[1], '^(%d+)')) + 1
      redis.call('SET', KEYS[1], n)
    end
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', keep, tostring(n) .. '-0', 'm', ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  if size == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
end
if size > 0 then redis.call(ARGV[3], ARGV[1], tostring(n) .. ' ' .. ARGV[2]) end
return size
"#,
    )
});

/// KEYS[1] `P:hosts`; ARGV host id, timeout in ms. Renews this host's
/// lease, then claims every host whose lease ran out by removing it: the
/// claimer alone sweeps its memberships. Returns {1 if this host was absent
/// (it had been swept), the claimed hosts}.
pub(super) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, host in ipairs(dead) do
  redis.call('ZREM', KEYS[1], host)
end
return {added, dead}
"#,
    )
});
