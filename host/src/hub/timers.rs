//! A connection's timers (`timers.set` in WIT): named, one-shot or
//! repeating, bounded in number and in rate. The connection's task waits
//! for the earliest and delivers it in order with its other events; the
//! timers live on the connection, not in an instance, so hibernation and
//! reloads keep them, and its end drops them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// When a timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Once(Duration),
    Every(Duration),
}

impl Schedule {
    pub fn delay(self) -> Duration {
        match self {
            Schedule::Once(d) | Schedule::Every(d) => d,
        }
    }

    /// As the cluster stores it: `once:MS` or `every:MS`.
    pub fn encode(self) -> String {
        match self {
            Schedule::Once(d) => format!("once:{}", d.as_millis()),
            Schedule::Every(d) => format!("every:{}", d.as_millis()),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (kind, ms) = text.split_once(':')?;
        let delay = Duration::from_millis(ms.parse().ok()?);
        match kind {
            "once" => Some(Schedule::Once(delay)),
            "every" => Some(Schedule::Every(delay)),
            _ => None,
        }
    }
}

/// Bounds on a plugin's timers.
#[derive(Debug, Clone, Copy)]
pub struct TimerLimits {
    /// Timers one connection may have set at once.
    pub per_connection: usize,
    /// The shortest delay or interval.
    pub min_interval: Duration,
}

/// The next time of a repeating timer that was due at `due`: one interval
/// later, or the first after `now` when it fell behind (missed ticks are
/// skipped, not queued).
pub fn next_tick(due: Instant, every: Duration, now: Instant) -> Instant {
    let next = due + every;
    if next > now {
        return next;
    }
    let behind = (now - next).as_nanos() / every.as_nanos().max(1) + 1;
    next + every * u32::try_from(behind).unwrap_or(u32::MAX)
}

/// Longest timer name, in bytes.
pub const MAX_NAME: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimerError {
    #[error("timer names are 1 to {MAX_NAME} bytes without control characters, got {0} bytes")]
    BadName(usize),
    #[error("a timer's delay must be at least limits.min_timer_interval ({}), got {}", humantime::format_duration(*.min), humantime::format_duration(*.got))]
    TooSoon { min: Duration, got: Duration },
    #[error("a connection may have at most limits.max_timers ({0}) timers set")]
    TooMany(usize),
    #[error("a plugin may have at most limits.max_room_timers ({0}) room timers set")]
    TooManyRoom(usize),
    #[error("the connection has ended")]
    Ended,
}

/// Checks a name and a schedule against `limits`.
pub fn check(name: &str, schedule: Schedule, limits: &TimerLimits) -> Result<(), TimerError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(TimerError::BadName(name.len()));
    }
    if schedule.delay() < limits.min_interval {
        return Err(TimerError::TooSoon { min: limits.min_interval, got: schedule.delay() });
    }
    Ok(())
}

struct Timer {
    name: Arc<str>,
    schedule: Schedule,
    due: Instant,
}

/// The timers of one connection. Empty, it is one empty `Vec`.
pub struct ConnTimers {
    /// `None` once the connection ended: no timer may be set any more.
    set: Mutex<Option<Vec<Timer>>>,
}

impl Default for ConnTimers {
    fn default() -> Self {
        Self { set: Mutex::new(Some(Vec::new())) }
    }
}

/// What `set` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Set {
    /// A new timer: one more is counted.
    Added,
    /// An existing one of that name got a new schedule (and restarts).
    Replaced,
    /// It was already set with that schedule and keeps running.
    Unchanged,
}

impl ConnTimers {
    /// Sets timer `name`, checked against `limits`.
    pub fn set(&self, name: &str, schedule: Schedule, limits: &TimerLimits) -> Result<Set, TimerError> {
        check(name, schedule, limits)?;
        let Ok(mut set) = self.set.lock() else { return Err(TimerError::Ended) };
        let Some(set) = set.as_mut() else { return Err(TimerError::Ended) };
        let due = Instant::now() + schedule.delay();
        if let Some(timer) = set.iter_mut().find(|t| &*t.name == name) {
            if timer.schedule == schedule {
                return Ok(Set::Unchanged);
            }
            timer.schedule = schedule;
            timer.due = due;
            return Ok(Set::Replaced);
        }
        if set.len() >= limits.per_connection {
            return Err(TimerError::TooMany(limits.per_connection));
        }
        set.push(Timer { name: name.into(), schedule, due });
        Ok(Set::Added)
    }

    /// Cancels timer `name`; true if it was set.
    pub fn cancel(&self, name: &str) -> bool {
        let Ok(mut set) = self.set.lock() else { return false };
        let Some(set) = set.as_mut() else { return false };
        let before = set.len();
        set.retain(|t| &*t.name != name);
        let removed = set.len() < before;
        if set.is_empty() {
            *set = Vec::new();
        }
        removed
    }

    /// When the earliest timer is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.set.lock().ok()?.as_ref()?.iter().map(|t| t.due).min()
    }

    /// The earliest timer due by `now`, if any: a one-shot is removed (one
    /// fewer counted: the bool), a repeating one moves to its next time
    /// after `now` (ticks missed while the connection was busy are skipped,
    /// not queued).
    pub fn take_due(&self, now: Instant) -> Option<(Arc<str>, bool)> {
        let mut set = self.set.lock().ok()?;
        let set = set.as_mut()?;
        let (i, _) = set.iter().enumerate().filter(|(_, t)| t.due <= now).min_by_key(|(_, t)| t.due)?;
        match set[i].schedule {
            Schedule::Once(_) => {
                let timer = set.swap_remove(i);
                if set.is_empty() {
                    *set = Vec::new();
                }
                Some((timer.name, true))
            }
            Schedule::Every(every) => {
                let timer = &mut set[i];
                timer.due = next_tick(timer.due, every, now);
                Some((timer.name.clone(), false))
            }
        }
    }

    /// Every timer as `(name, schedule, due in)`, for a session that moves
    /// to another host; they stop here.
    pub fn export(&self) -> Vec<(String, Schedule, Duration)> {
        let now = Instant::now();
        let Some(set) = self.set.lock().ok().and_then(|mut set| set.take()) else { return Vec::new() };
        set.into_iter().map(|t| (t.name.to_string(), t.schedule, t.due.saturating_duration_since(now))).collect()
    }

    /// The timers set, as [`Self::export`] gives them, left in place (a
    /// session's checkpoint).
    pub fn list(&self) -> Vec<(String, Schedule, Duration)> {
        let now = Instant::now();
        let Ok(set) = self.set.lock() else { return Vec::new() };
        set.iter().flatten().map(|t| (t.name.to_string(), t.schedule, t.due.saturating_duration_since(now))).collect()
    }

    /// Sets the timers a session brought from another host (at most
    /// `limit`); how many.
    pub fn import(&self, timers: Vec<(String, Schedule, Duration)>, limit: usize) -> usize {
        let Ok(mut set) = self.set.lock() else { return 0 };
        let Some(set) = set.as_mut() else { return 0 };
        let now = Instant::now();
        for (name, schedule, due_in) in timers.into_iter().take(limit) {
            set.push(Timer { name: name.into(), schedule, due: now + due_in });
        }
        set.len()
    }

    /// Drops every timer and refuses new ones (the connection ended); how
    /// many there were.
    pub fn end(&self) -> usize {
        self.set.lock().ok().and_then(|mut set| set.take()).map_or(0, |set| set.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const LIMITS: TimerLimits = TimerLimits { per_connection: 2, min_interval: Duration::from_millis(10) };

    #[tokio::test(start_paused = true)]
    async fn timers_fire_earliest_first_and_repeat_without_piling_up() {
        let t = ConnTimers::default();
        assert_eq!(t.set("slow", Schedule::Once(50 * MS), &LIMITS), Ok(Set::Added));
        assert_eq!(t.set("tick", Schedule::Every(20 * MS), &LIMITS), Ok(Set::Added));
        let start = Instant::now();
        assert_eq!(t.next_due(), Some(start + 20 * MS));
        assert!(t.take_due(start).is_none());
        // 65 ms later: "tick" was due three times, "slow" once; the tick comes
        // first, once, and its next time is after now.
        let now = start + 65 * MS;
        assert_eq!(t.take_due(now).map(|(n, once)| (n.to_string(), once)), Some(("tick".into(), false)));
        assert_eq!(t.take_due(now).map(|(n, once)| (n.to_string(), once)), Some(("slow".into(), true)));
        assert!(t.take_due(now).is_none());
        assert_eq!(t.next_due(), Some(start + 80 * MS));
    }

    #[test]
    fn bounds_and_idempotent_set() {
        let t = ConnTimers::default();
        assert!(matches!(t.set("a", Schedule::Every(5 * MS), &LIMITS), Err(TimerError::TooSoon { .. })));
        assert_eq!(t.set("", Schedule::Once(10 * MS), &LIMITS), Err(TimerError::BadName(0)));
        assert_eq!(t.set("a", Schedule::Every(10 * MS), &LIMITS), Ok(Set::Added));
        assert_eq!(t.set("a", Schedule::Every(10 * MS), &LIMITS), Ok(Set::Unchanged));
        assert_eq!(t.set("a", Schedule::Every(20 * MS), &LIMITS), Ok(Set::Replaced));
        assert_eq!(t.set("b", Schedule::Once(10 * MS), &LIMITS), Ok(Set::Added));
        assert_eq!(t.set("c", Schedule::Once(10 * MS), &LIMITS), Err(TimerError::TooMany(2)));
        assert!(t.cancel("a"));
        assert!(!t.cancel("a"));
        assert_eq!(t.end(), 1);
        assert_eq!(t.set("late", Schedule::Once(10 * MS), &LIMITS), Err(TimerError::Ended));
    }
}
