//! Room timers (`timers.set-room` in WIT): one task per timer, which runs
//! the room's ticks one at a time through a [`RoomTicker`] that the session
//! layer attaches at start-up (it knows how to make an instance; the hub
//! does not). A tick that comes while the previous one still runs is
//! skipped, not queued. Cancelling lets a tick in progress finish, so a
//! plugin may cancel its timer from its own tick.
//!
//! Scaled out, a timer is defined in the cluster and exactly one host holds
//! its lease ([`TIMER_LEASE`]) and runs it: the holder asks for its turn
//! before every tick and renews the lease while it waits and while a tick
//! runs, so no tick runs on two hosts. A host that stops gives its leases
//! back; one that dies loses them when they run out. Either way the
//! backplane's scout on another host takes the timer over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::cluster::{Cluster, TimerTurn};
use super::timers::{Schedule, Set, TimerError, TimerLimits, check, next_tick};

/// How long a host's hold on a room timer lasts without renewal: what a
/// host that dies delays its timers by, at most (plus the scout's round).
pub const TIMER_LEASE: std::time::Duration = std::time::Duration::from_secs(3);

/// How often a holder renews its leases.
const RENEW: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the ticks of room timers: the layer that can run a plugin.
pub trait RoomTicker: Send + Sync {
    /// Whether `plugin` is loaded here.
    fn serves(&self, plugin: &str) -> bool;

    /// What runs the ticks of one timer, holding what it may reuse between
    /// them; `None` when the plugin is gone.
    fn runner(&self, plugin: &Arc<str>, room: &Arc<str>, name: &Arc<str>) -> Option<Box<dyn RoomTick>>;
}

/// The ticks of one room timer, one at a time.
pub trait RoomTick: Send {
    /// Runs one tick; false when the timer must end (its handler keeps
    /// failing).
    fn tick(&mut self) -> BoxFuture<'_, bool>;
}

/// Plugin, room, timer name.
pub type Key = (Arc<str>, Arc<str>, Arc<str>);

struct Running {
    schedule: Schedule,
    /// Tells the timer's task to stop after the tick in progress.
    stop: Arc<Stop>,
    generation: u64,
}

#[derive(Default)]
struct Stop {
    stopped: AtomicBool,
    notify: Notify,
    /// Set while the cluster was unreachable: not yet written there.
    unwritten: AtomicBool,
}

impl Stop {
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct Table {
    running: HashMap<Key, Running>,
    per_plugin: HashMap<Arc<str>, usize>,
}

/// The room timers this host runs.
#[derive(Default)]
pub struct RoomTimers {
    table: Mutex<Table>,
    ticker: OnceLock<Arc<dyn RoomTicker>>,
    cluster: OnceLock<Arc<dyn Cluster>>,
    generation: AtomicU64,
    /// The timers' tasks, so stopping can wait for ticks in progress.
    tasks: tokio_util::task::TaskTracker,
    /// The host is stopping: no timer starts here any more.
    stopping: AtomicBool,
}

impl RoomTimers {
    /// Attaches what runs the ticks; timers set before do nothing.
    pub fn attach(&self, ticker: Arc<dyn RoomTicker>) {
        let _ = self.ticker.set(ticker);
    }

    pub fn attach_cluster(&self, cluster: Arc<dyn Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Whether this host can run `plugin`'s ticks.
    pub fn serves(&self, plugin: &str) -> bool {
        !self.stopping.load(Ordering::Acquire) && self.ticker.get().is_some_and(|t| t.serves(plugin))
    }

    /// Sets timer `name` of `room` for `plugin`, at most `max` per plugin
    /// on this host. Scaled out, the timer is written to the cluster first;
    /// it runs here unless another host already runs it with that schedule
    /// (or, while the cluster is unreachable, here).
    pub async fn set(
        self: &Arc<Self>,
        plugin: &str,
        room: &str,
        name: &str,
        schedule: Schedule,
        limits: &TimerLimits,
        max: usize,
    ) -> Result<Set, TimerError> {
        check(name, schedule, limits)?;
        if self.stopping.load(Ordering::Acquire) {
            return Ok(Set::Unchanged);
        }
        let mut unwritten = false;
        if let Some(cluster) = self.cluster.get() {
            match cluster.timer_define(plugin, room, name, &schedule.encode()).await {
                Some(false) => return Ok(Set::Unchanged),
                Some(true) => {}
                // Runs here, and is written once the cluster answers.
                None => unwritten = true,
            }
        }
        self.start(plugin, room, name, schedule, max, unwritten)
    }

    /// Runs a timer whose lease this host has just taken over.
    pub fn adopt(self: &Arc<Self>, plugin: &str, room: &str, name: &str, schedule: Schedule) {
        let _ = self.start(plugin, room, name, schedule, usize::MAX, false);
    }

    /// Whether this host runs the timer.
    pub fn is_running(&self, plugin: &str, room: &str, name: &str) -> bool {
        let key: Key = (plugin.into(), room.into(), name.into());
        self.table.lock().is_ok_and(|t| t.running.contains_key(&key))
    }

    fn start(
        self: &Arc<Self>,
        plugin: &str,
        room: &str,
        name: &str,
        schedule: Schedule,
        max: usize,
        unwritten: bool,
    ) -> Result<Set, TimerError> {
        let Ok(mut table) = self.table.lock() else { return Err(TimerError::TooMany(0)) };
        let key: Key = (plugin.into(), room.into(), name.into());
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Stop { unwritten: AtomicBool::new(unwritten), ..Stop::default() });
        let outcome = match table.running.get_mut(&key) {
            Some(running) if running.schedule == schedule => return Ok(Set::Unchanged),
            Some(running) => {
                running.stop.stop();
                *running = Running { schedule, stop: stop.clone(), generation };
                Set::Replaced
            }
            None => {
                let count = table.per_plugin.entry(key.0.clone()).or_default();
                if *count >= max {
                    return Err(TimerError::TooManyRoom(max));
                }
                *count += 1;
                table.running.insert(key.clone(), Running { schedule, stop: stop.clone(), generation });
                Set::Added
            }
        };
        drop(table);
        self.tasks.spawn(run(Arc::downgrade(self), key, schedule, stop, generation));
        Ok(outcome)
    }

    /// Cancels a room timer, on whichever host runs it; true if it was set.
    pub async fn cancel(&self, plugin: &str, room: &str, name: &str) -> bool {
        let key: Key = (plugin.into(), room.into(), name.into());
        let here = self.forget(&key, None);
        match self.cluster.get() {
            Some(cluster) => remove_from_cluster(cluster, &key).await.unwrap_or(false) || here,
            None => here,
        }
    }

    /// Stops the timer here, if it runs here (as `generation`, when given).
    fn forget(&self, key: &Key, generation: Option<u64>) -> bool {
        let Ok(mut table) = self.table.lock() else { return false };
        let this_one = |r: &Running| generation.is_none_or(|g| r.generation == g);
        if !table.running.get(key).is_some_and(this_one) {
            return false;
        }
        if let Some(running) = table.running.remove(key) {
            running.stop.stop();
        }
        uncount(&mut table, &key.0);
        true
    }

    /// Room timers set for `plugin`.
    pub fn count(&self, plugin: &str) -> usize {
        self.table.lock().ok().and_then(|t| t.per_plugin.get(plugin).copied()).unwrap_or(0)
    }

    /// Stops every timer (the host is stopping), waiting up to `within` for
    /// ticks in progress to finish. Scaled out, their leases are then given
    /// back, so other hosts take them over at once, and no tick of this
    /// host overlaps theirs.
    pub async fn stop_all(&self, within: std::time::Duration) {
        let stopped: Vec<Key> = match self.table.lock() {
            Ok(mut table) => {
                self.stopping.store(true, Ordering::Release);
                table.per_plugin.clear();
                table
                    .running
                    .drain()
                    .map(|(key, running)| {
                        running.stop.stop();
                        key
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait()).await.is_err() {
            tracing::warn!("room timer ticks still running after {within:?}; stopping anyway");
        }
        if let Some(cluster) = self.cluster.get()
            && !stopped.is_empty()
        {
            cluster.timer_release(&stopped).await;
        }
    }
}

fn uncount(table: &mut Table, plugin: &Arc<str>) {
    if let Some(count) = table.per_plugin.get_mut(plugin) {
        *count -= 1;
        if *count == 0 {
            table.per_plugin.remove(plugin);
        }
    }
}

/// One timer's task: waits for each tick, runs it, skips what it missed;
/// scaled out, only while this host holds the timer's lease.
async fn run(timers: Weak<RoomTimers>, key: Key, schedule: Schedule, stop: Arc<Stop>, generation: u64) {
    let Some(strong) = timers.upgrade() else { return };
    let (Some(ticker), cluster) = (strong.ticker.get().cloned(), strong.cluster.get().cloned()) else { return };
    drop(strong);
    let Some(mut runner) = ticker.runner(&key.0, &key.1, &key.2) else { return };
    drop(ticker);
    let (plugin, room, name) = (&*key.0, &*key.1, &*key.2);
    let ends = |timers: &Weak<RoomTimers>| {
        if let Some(timers) = timers.upgrade() {
            timers.forget(&key, Some(generation));
        }
    };
    let mut due = Instant::now() + schedule.delay();
    let mut renew = Instant::now() + RENEW;
    loop {
        let wake = if cluster.is_some() { due.min(renew) } else { due };
        tokio::select! {
            biased;
            _ = stop.notify.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        if stop.is_stopped() {
            return;
        }
        if let Some(cluster) = &cluster {
            // Before a tick, or to renew the lease: still ours? An
            // unreachable cluster leaves it running here.
            match cluster.timer_turn(plugin, room, name).await {
                // Set while the cluster was unreachable: written now.
                Some(TimerTurn::Gone) if stop.unwritten.load(Ordering::Acquire) => {
                    if cluster.timer_define(plugin, room, name, &schedule.encode()).await == Some(false) {
                        return ends(&timers);
                    }
                    stop.unwritten.store(false, Ordering::Release);
                    renew = Instant::now() + RENEW;
                }
                Some(TimerTurn::Theirs | TimerTurn::Gone) => return ends(&timers),
                Some(TimerTurn::Mine(_)) => {
                    stop.unwritten.store(false, Ordering::Release);
                    renew = Instant::now() + RENEW;
                }
                None => renew = Instant::now() + RENEW,
            }
            if Instant::now() < due {
                continue;
            }
        }
        let keep = {
            let mut tick = runner.tick();
            loop {
                tokio::select! {
                    keep = &mut tick => break keep,
                    _ = tokio::time::sleep_until(renew), if cluster.is_some() => {
                        // A long tick (waiting on I/O) keeps its lease.
                        if let Some(cluster) = &cluster {
                            let _ = cluster.timer_turn(plugin, room, name).await;
                        }
                        renew = Instant::now() + RENEW;
                    }
                }
            }
        };
        match schedule {
            // A one-shot that fired, or a timer whose handler keeps failing,
            // ends everywhere.
            Schedule::Every(every) if keep => due = next_tick(due, every, Instant::now()),
            Schedule::Once(_) | Schedule::Every(_) => {
                if let Some(cluster) = &cluster {
                    remove_from_cluster(cluster, &key).await;
                }
                return ends(&timers);
            }
        }
    }
}

/// Removes a timer from the cluster: whether it was there, or `None` when
/// the cluster could not be told, and is told later.
async fn remove_from_cluster(cluster: &Arc<dyn Cluster>, key: &Key) -> Option<bool> {
    let removed = cluster.timer_cancel(&key.0, &key.1, &key.2).await;
    if removed.is_none() {
        remove_later(cluster.clone(), key.clone());
    }
    removed
}

/// A timer cancelled (or a one-shot fired) while the cluster could not be
/// told: tell it once it answers, for up to two minutes, so the timer does
/// not come back on another host.
fn remove_later(cluster: Arc<dyn Cluster>, key: Key) {
    tokio::spawn(async move {
        for _ in 0..120 {
            tokio::time::sleep(RENEW).await;
            if cluster.timer_cancel(&key.0, &key.1, &key.2).await.is_some() {
                return;
            }
        }
    });
}
