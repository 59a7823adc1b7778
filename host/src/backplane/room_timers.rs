//! Room timers across hosts: each timer is a hash in Redis (its schedule,
//! the host holding its lease and until when, by Redis's clock), in its
//! room's slot, and listed in one index set. Exactly one host runs a timer:
//! the holder asks for its turn before each tick and renews while it waits
//! (see `hub::room_timers`); a scout on every host looks for timers whose
//! lease ran out, or was given back, and takes them over.

use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::Backplane;
use super::scripts::Keys;
use crate::hub::TimerTurn;
use crate::hub::room_timers::{Key, TIMER_LEASE};
use crate::hub::timers::Schedule;

/// How often each host looks for timers to take over: a timer whose holder
/// stopped is run again within about this long, one whose holder died
/// within its lease plus this.
pub(super) const SCOUT: Duration = Duration::from_millis(500);

/// Index entry of a timer: `PLUGIN:ROOM\nNAME` (timer names have no
/// control characters, so the last newline splits it).
fn entry(plugin: &str, room: &str, name: &str) -> String {
    format!("{}\n{name}", Keys::room_id(plugin, room))
}

fn split(entry: &str) -> Option<(&str, &str, &str)> {
    let (room_id, name) = entry.rsplit_once('\n')?;
    let (plugin, room) = room_id.split_once(':')?;
    Some((plugin, room, name))
}

/// KEYS[1] the timer; ARGV schedule, host, lease in ms. Defines the timer
/// and takes its lease, unless another host runs it with that schedule
/// already: 1 when this host is to run it, 0 when another does.
static DEFINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], 's') == ARGV[1] then
  local owner = redis.call('HGET', KEYS[1], 'o')
  local till = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
  if owner ~= ARGV[2] and till >= now then return 0 end
end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'o', ARGV[2], 'u', now + tonumber(ARGV[3]))
return 1
"#,
    )
});

/// KEYS[1] the timer; ARGV host, lease in ms. {1, schedule} when this host
/// holds the lease now (renewed, or taken over from a holder whose lease
/// ran out); {-1, schedule} when another does; {0, ''} when it is gone.
static TURN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local s = redis.call('HGET', KEYS[1], 's')
if not s then return {0, ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = redis.call('HGET', KEYS[1], 'o')
local till = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
if owner == ARGV[1] or till < now then
  redis.call('HSET', KEYS[1], 'o', ARGV[1], 'u', now + tonumber(ARGV[2]))
  return {1, s}
end
return {-1, s}
"#,
    )
});

/// KEYS[1] the timer; ARGV host. Ends this host's lease now.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'o') == ARGV[1] then redis.call('HSET', KEYS[1], 'u', 0) end
return 0
"#,
    )
});

fn lease_ms() -> u64 {
    TIMER_LEASE.as_millis() as u64
}

impl Backplane {
    pub(super) async fn timer_define(&self, plugin: &str, room: &str, name: &str, schedule: &str) -> Option<bool> {
        let key = self.keys.timer(plugin, room, name);
        let mut script = DEFINE.key(&key);
        script.arg(schedule).arg(&*self.host_id).arg(lease_ms());
        let ours: i64 = self.script(&script).await?.ok()?;
        let index = redis::cmd("SADD").arg(self.keys.timers()).arg(entry(plugin, room, name)).clone();
        self.query::<()>(&index).await;
        Some(ours == 1)
    }

    pub(super) async fn timer_turn(&self, plugin: &str, room: &str, name: &str) -> Option<TimerTurn> {
        let key = self.keys.timer(plugin, room, name);
        let mut script = TURN.key(&key);
        script.arg(&*self.host_id).arg(lease_ms());
        let (state, schedule): (i64, String) = self.script(&script).await?.ok()?;
        Some(match state {
            1 => TimerTurn::Mine(schedule),
            0 => TimerTurn::Gone,
            _ => TimerTurn::Theirs,
        })
    }

    pub(super) async fn timer_cancel(&self, plugin: &str, room: &str, name: &str) -> Option<bool> {
        let removed: u64 = self.query(redis::cmd("DEL").arg(self.keys.timer(plugin, room, name))).await?.ok()?;
        self.query::<()>(redis::cmd("SREM").arg(self.keys.timers()).arg(entry(plugin, room, name))).await;
        Some(removed > 0)
    }

    pub(super) async fn timer_release(&self, timers: &[Key]) {
        for (plugin, room, name) in timers {
            let key = self.keys.timer(plugin, room, name);
            let mut script = RELEASE.key(&key);
            script.arg(&*self.host_id);
            self.script::<i64>(&script).await;
        }
    }
}

/// Every [`SCOUT`]: takes over the timers no live host holds, for plugins
/// this host serves, and forgets index entries of timers that are gone.
pub(super) async fn scout(backplane: Arc<Backplane>) {
    let mut every = tokio::time::interval(SCOUT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = backplane.stop.cancelled() => return,
        }
        let Some(hub) = backplane.hub.upgrade() else { return };
        let Some(Ok(entries)) =
            backplane.query::<Vec<String>>(redis::cmd("SMEMBERS").arg(backplane.keys.timers())).await
        else {
            continue;
        };
        for listed in entries {
            let Some((plugin, room, name)) = split(&listed) else { continue };
            let timers = &hub.room_timers;
            if timers.is_running(plugin, room, name) || !timers.serves(plugin) {
                continue;
            }
            match backplane.timer_turn(plugin, room, name).await {
                Some(TimerTurn::Mine(schedule)) => match Schedule::decode(&schedule) {
                    Some(schedule) => {
                        tracing::info!(plugin, room, timer = name, "room timer taken over");
                        backplane.metrics.timers_taken_over.inc();
                        timers.adopt(plugin, room, name, schedule);
                    }
                    None => {
                        tracing::warn!(plugin, room, timer = name, "room timer with an unknown schedule {schedule:?}")
                    }
                },
                Some(TimerTurn::Gone) => {
                    backplane.query::<()>(redis::cmd("SREM").arg(backplane.keys.timers()).arg(&listed)).await;
                }
                Some(TimerTurn::Theirs) | None => {}
            }
        }
    }
}
