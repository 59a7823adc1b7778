//! Room history on one host: each room's last broadcasts with their offset
//! (1, 2, 3, … per room), for the plugins that keep one (`history_size`,
//! `history_ttl`). Scaled out, history lives in Redis instead (see
//! `backplane`), numbered by the cluster; this store then stays empty.
//!
//! Bounded three ways: messages per room, age, and bytes across the host
//! (`websocket.history_budget`). Past the budget, a room first forgets its
//! own oldest entries; a message that still does not fit is not kept (and
//! counted), never refused: history is a convenience beside delivery.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::HistoryMetrics;

/// Most entries one `history` call returns.
pub const MAX_HISTORY_READ: usize = 1000;

/// How often expired entries are swept, so rooms nobody touches give their
/// bytes back.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What a plugin's rooms keep: `size` broadcasts at most (0: none), each
/// for `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep {
    pub size: u32,
    pub ttl: Duration,
}

impl Keep {
    pub fn is_on(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

/// One broadcast kept in a room's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub offset: u64,
    pub message: Message,
}

/// Why history could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("room history is off for this plugin (set history_size in its configuration)")]
    Off,
    #[error("room history is unavailable: Redis is unreachable")]
    Unavailable,
}

/// One room's entries, oldest first, its last offset, and how long its
/// entries live (its plugin's `history_ttl`).
#[derive(Default)]
struct Ring {
    last: u64,
    ttl: Duration,
    entries: VecDeque<(u64, Instant, Message)>,
}

/// Every room's ring, and their bytes together.
#[derive(Default)]
struct Rings {
    rooms: HashMap<(Arc<str>, String), Ring>,
    used: usize,
}

/// Every room's history on this host.
pub struct History {
    default: Keep,
    plugins: HashMap<String, Keep>,
    rings: Arc<Mutex<Rings>>,
    budget: usize,
    /// Rung when the first entry is kept: the sweeper sleeps while there
    /// is none (an idle host spends no CPU on it).
    kept: Arc<Notify>,
    metrics: HistoryMetrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl History {
    /// `default` for every plugin not in `plugins`; `budget` bytes across
    /// the host. Inside a tokio runtime this also starts the sweeper.
    pub fn new(default: Keep, plugins: HashMap<String, Keep>, budget: usize, metrics: HistoryMetrics) -> Self {
        let rings = Arc::new(Mutex::new(Rings::default()));
        let kept = Arc::new(Notify::new());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&rings), kept.clone(), metrics.bytes.clone()));
        }
        Self { default, plugins, rings, budget, kept, metrics }
    }

    /// What plugin `plugin`'s rooms keep.
    pub fn keep(&self, plugin: &str) -> Keep {
        self.plugins.get(plugin).copied().unwrap_or(self.default)
    }

    /// Bytes kept across the host.
    pub fn bytes(&self) -> usize {
        lock(&self.rings).used
    }

    /// Keeps `message` as the next broadcast of `room`; returns its offset.
    pub fn append(&self, plugin: &str, room: &str, message: &Message, keep: Keep) -> u64 {
        let now = Instant::now();
        let len = message.len();
        let mut rings = lock(&self.rings);
        let Rings { rooms, used } = &mut *rings;
        let was_empty = rooms.is_empty();
        let ring = rooms.entry((Arc::from(plugin), room.to_string())).or_default();
        ring.last += 1;
        ring.ttl = keep.ttl;
        let offset = ring.last;
        *used -= expire(ring, now);
        while !ring.entries.is_empty() && (ring.entries.len() >= keep.size as usize || *used + len > self.budget) {
            *used -= pop(ring);
        }
        if *used + len <= self.budget {
            ring.entries.push_back((offset, now, message.clone()));
            *used += len;
        } else {
            self.metrics.not_kept.inc();
        }
        self.metrics.bytes.set(i64::try_from(*used).unwrap_or(i64::MAX));
        drop(rings);
        if was_empty {
            self.kept.notify_one();
        }
        offset
    }

    /// Up to `limit` entries of `room` (at most [`MAX_HISTORY_READ`]),
    /// oldest first: those after offset `since`, or the latest ones.
    pub fn read(&self, plugin: &str, room: &str, since: Option<u64>, limit: usize) -> Vec<Kept> {
        let limit = limit.min(MAX_HISTORY_READ);
        let now = Instant::now();
        let rings = lock(&self.rings);
        let Some(ring) = rings.rooms.get(&(Arc::from(plugin), room.to_string())) else { return Vec::new() };
        let live = ring.entries.iter().filter(|(_, at, _)| now.duration_since(*at) < ring.ttl);
        let picked: Vec<_> = match since {
            Some(since) => live.filter(|(offset, ..)| *offset > since).take(limit).collect(),
            None => {
                let live: Vec<_> = live.collect();
                let skip = live.len().saturating_sub(limit);
                live.into_iter().skip(skip).collect()
            }
        };
        picked.into_iter().map(|(offset, _, message)| Kept { offset: *offset, message: message.clone() }).collect()
    }
}

/// Drops `ring`'s expired entries; returns their bytes.
fn expire(ring: &mut Ring, now: Instant) -> usize {
    let mut freed = 0;
    while ring.entries.front().is_some_and(|(_, at, _)| now.duration_since(*at) >= ring.ttl) {
        freed += pop(ring);
    }
    freed
}

fn pop(ring: &mut Ring) -> usize {
    ring.entries.pop_front().map_or(0, |(_, _, message)| message.len())
}

/// Now and then drops expired entries, and rooms left with none (their
/// numbering then starts again at 1, as in Redis when a room's history
/// expires).
async fn sweep(rings: Weak<Mutex<Rings>>, kept: Arc<Notify>, bytes: prometheus_client::metrics::gauge::Gauge) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(all) = rings.upgrade() else { return };
        let empty = {
            let mut all = lock(&all);
            let Rings { rooms, used } = &mut *all;
            let now = Instant::now();
            rooms.retain(|_, ring| {
                *used -= expire(ring, now);
                !ring.entries.is_empty()
            });
            bytes.set(i64::try_from(*used).unwrap_or(i64::MAX));
            rooms.is_empty()
        };
        if empty {
            kept.notified().await;
        }
    }
}

impl History {
    /// A store that keeps nothing (tests).
    #[cfg(test)]
    pub fn off() -> Self {
        Self::new(Keep::default(), HashMap::new(), 0, HistoryMetrics::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Keep = Keep { size: 3, ttl: Duration::from_secs(60) };

    fn texts(kept: &[Kept]) -> Vec<(u64, String)> {
        kept.iter().map(|k| (k.offset, k.message.to_text().unwrap_or_default().to_string())).collect()
    }

    fn pairs(list: &[(u64, &str)]) -> Vec<(u64, String)> {
        list.iter().map(|(o, t)| (*o, t.to_string())).collect()
    }

    #[test]
    fn a_room_keeps_its_last_entries_numbered_from_one() {
        let h = History::new(KEEP, HashMap::new(), 1 << 20, HistoryMetrics::default());
        for i in 1..=5 {
            assert_eq!(h.append("p", "r", &Message::text(format!("m{i}")), KEEP), i);
        }
        assert_eq!(h.append("p", "other", &Message::text("x"), KEEP), 1, "each room numbers its own");
        assert_eq!(h.append("q", "r", &Message::text("y"), KEEP), 1, "each plugin has its own rooms");
        assert_eq!(texts(&h.read("p", "r", None, 10)), pairs(&[(3, "m3"), (4, "m4"), (5, "m5")]));
        assert_eq!(texts(&h.read("p", "r", None, 1)), pairs(&[(5, "m5")]));
        assert_eq!(texts(&h.read("p", "r", Some(3), 10)), pairs(&[(4, "m4"), (5, "m5")]));
        assert_eq!(texts(&h.read("p", "r", Some(0), 1)), pairs(&[(3, "m3")]));
        assert!(h.read("p", "none", None, 10).is_empty());
        assert_eq!(h.bytes(), 3 * 2 + 1 + 1);
    }

    #[test]
    fn past_the_budget_a_room_forgets_its_oldest_and_a_message_too_big_is_not_kept() {
        let metrics = HistoryMetrics::default();
        let keep = Keep { size: 100, ttl: Duration::from_secs(60) };
        let h = History::new(keep, HashMap::new(), 10, metrics.clone());
        h.append("p", "r", &Message::text("aaaa"), keep);
        h.append("p", "r", &Message::text("bbbb"), keep);
        h.append("p", "r", &Message::text("cccc"), keep);
        assert_eq!(texts(&h.read("p", "r", None, 10)), pairs(&[(2, "bbbb"), (3, "cccc")]));
        assert_eq!(h.bytes(), 8);
        assert_eq!(h.append("p", "r", &Message::text("x".repeat(11)), keep), 4, "still numbered");
        assert_eq!(metrics.not_kept.get(), 1);
        assert_eq!(h.bytes(), 0, "the room gave its entries up trying");
        assert_eq!(metrics.bytes.get(), 0);
    }

    #[tokio::test]
    async fn expired_entries_are_not_read_and_the_sweep_gives_their_bytes_back() {
        let keep = Keep { size: 10, ttl: Duration::from_millis(50) };
        let metrics = HistoryMetrics::default();
        let h = History::new(keep, HashMap::new(), 1 << 20, metrics.clone());
        h.append("p", "r", &Message::text("old"), keep);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(h.read("p", "r", None, 10).is_empty());
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.bytes() > 0 {
            assert!(Instant::now() < deadline, "the sweeper never gave the bytes back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(metrics.bytes.get(), 0);
        assert_eq!(h.append("p", "r", &Message::text("new"), keep), 1, "an emptied room numbers afresh");
    }
}
