//! How many plugin instances may be alive at once, and who gives one up
//! when every slot is taken.
//!
//! A connection holds an instance only while it has events to handle (see
//! `limits.hibernate_after`). Each live instance holds a [`Permit`], one of
//! `max_instances`, which is also what the pooling allocator is sized for.
//! When none is free, the one asking does not fail: it asks the connection
//! whose instance has been idle longest to give its instance up, and waits
//! for a permit within its call's deadline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::PoolMetrics;

/// Every instance slot of the host.
pub struct InstancePool {
    slots: Arc<Semaphore>,
    size: u32,
    /// Every lease that went idle since it was last looked at, once each,
    /// oldest first: the clock hand of a second-chance (CLOCK) eviction, so
    /// going idle is an atomic store on the message path, not a lock.
    idle: Mutex<IdleQueue>,
    metrics: PoolMetrics,
}

/// The clock hand's queue. An entry outlives its permit (nothing takes it
/// out when the instance is dropped), and its `Weak` keeps the lease's
/// allocation alive: without compaction, a host whose pool never fills
/// (so never evicts) kept one entry for every instance it ever made.
struct IdleQueue {
    leases: VecDeque<Weak<Lease>>,
    /// Its length when dead entries are next swept out.
    compact_at: usize,
}

/// The queue is swept no sooner than at this length.
const MIN_COMPACT_AT: usize = 64;

impl IdleQueue {
    fn new() -> Self {
        Self { leases: VecDeque::new(), compact_at: MIN_COMPACT_AT }
    }

    fn push(&mut self, lease: Weak<Lease>) {
        self.leases.push_back(lease);
        if self.leases.len() >= self.compact_at {
            self.compact();
        }
    }

    /// Drops the entries of leases whose permit is gone. The next sweep
    /// waits until the queue has doubled, so each push costs O(1) on
    /// average, and the queue never holds more than twice the live leases
    /// (at most `max_instances`) or `MIN_COMPACT_AT`.
    fn compact(&mut self) {
        self.leases.retain(|lease| lease.strong_count() > 0);
        self.compact_at = (self.leases.len() * 2).max(MIN_COMPACT_AT);
        // Give back what a burst of instances grew it to.
        if self.leases.capacity() > self.compact_at * 2 {
            self.leases.shrink_to(self.compact_at);
        }
    }
}

/// No slot came free within the deadline.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("all {0} instance slots stayed busy (max_instances)")]
pub struct Exhausted(pub u32);

/// One slot, held for as long as an instance lives.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    lease: Arc<Lease>,
    pool: Arc<InstancePool>,
}

const BUSY: u8 = 0;
const IDLE: u8 = 1;
const EVICTED: u8 = 2;

/// What the pool and the holder of a slot agree on.
pub struct Lease {
    state: AtomicU8,
    /// Used since the clock hand last passed: spared once.
    referenced: AtomicBool,
    /// In the pool's `idle` queue.
    queued: AtomicBool,
    /// Tells the holder its slot was taken back (it then checks
    /// [`Permit::is_evicted`]).
    on_evict: Box<dyn Fn() + Send + Sync>,
}

impl InstancePool {
    pub fn new(size: u32, metrics: PoolMetrics) -> Arc<Self> {
        let permits = usize::try_from(size).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Arc::new(Self { slots: Arc::new(Semaphore::new(permits)), size, idle: Mutex::new(IdleQueue::new()), metrics })
    }

    /// A slot for a new instance, evicting an idle instance if the pool is
    /// full; waits at most `within`. The permit starts busy; `on_evict`
    /// runs if the pool later asks for the slot back.
    pub async fn acquire(
        self: &Arc<Self>,
        within: Duration,
        on_evict: impl Fn() + Send + Sync + 'static,
    ) -> Result<Permit, Exhausted> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.evict_one();
                match tokio::time::timeout(within, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(slot)) => slot,
                    _ => {
                        self.metrics.exhausted.inc();
                        return Err(Exhausted(self.size));
                    }
                }
            }
        };
        let lease = Arc::new(Lease {
            state: AtomicU8::new(BUSY),
            referenced: AtomicBool::new(true),
            queued: AtomicBool::new(false),
            on_evict: Box::new(on_evict),
        });
        self.metrics.live.inc();
        Ok(Permit { _slot: slot, lease, pool: self.clone() })
    }

    /// Asks an idle holder that has not been used since the clock hand
    /// last passed it to give its slot back (a used one is spared once and
    /// goes to the back).
    fn evict_one(&self) {
        let Ok(mut queue) = self.idle.lock() else { return };
        let idle = &mut queue.leases;
        // Twice round the queue at most: the first pass clears the marks.
        for _ in 0..idle.len().saturating_mul(2) {
            let Some(weak) = idle.pop_front() else { return };
            let Some(lease) = weak.upgrade() else { continue };
            if lease.state.load(Ordering::Acquire) != IDLE {
                // Busy now; it queues itself again when it next goes idle.
                lease.queued.store(false, Ordering::Release);
                continue;
            }
            if lease.referenced.swap(false, Ordering::AcqRel) {
                idle.push_back(weak);
                continue;
            }
            lease.queued.store(false, Ordering::Release);
            if lease.state.compare_exchange(IDLE, EVICTED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                self.metrics.evictions.inc();
                (lease.on_evict)();
                return;
            }
        }
    }

    fn went_idle(&self, lease: &Arc<Lease>) {
        if lease.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Arc::downgrade(lease));
        }
    }
}

impl Permit {
    /// Marks the instance busy for an event. False if the pool took it
    /// back meanwhile: the instance must be dropped and a new one made.
    pub fn resume(&self) -> bool {
        self.lease.state.compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire).is_ok()
            || self.lease.state.load(Ordering::Acquire) == BUSY
    }

    /// The event is handled: the instance may be evicted until the next.
    pub fn idle(&self) {
        self.lease.referenced.store(true, Ordering::Release);
        self.lease.state.store(IDLE, Ordering::Release);
        self.pool.went_idle(&self.lease);
    }

    /// Whether the pool asked for this slot back.
    pub fn is_evicted(&self) -> bool {
        self.lease.state.load(Ordering::Acquire) == EVICTED
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pool.metrics.live.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An eviction callback that raises a flag.
    fn flag() -> (Arc<AtomicBool>, impl Fn() + Send + Sync + 'static) {
        let raised = Arc::new(AtomicBool::new(false));
        let raise = raised.clone();
        (raised, move || raise.store(true, Ordering::Release))
    }

    #[tokio::test]
    async fn a_full_pool_takes_the_longest_idle_slot_back() {
        let metrics = PoolMetrics::default();
        let pool = InstancePool::new(2, metrics.clone());
        let (first_told, tell_first) = flag();
        let (second_told, tell_second) = flag();
        let first = pool.acquire(Duration::from_millis(10), tell_first).await.unwrap();
        let second = pool.acquire(Duration::from_millis(10), tell_second).await.unwrap();
        assert_eq!(metrics.live.get(), 2);

        // Both busy: nobody can be evicted, so the third waits and fails.
        assert!(pool.acquire(Duration::from_millis(20), || {}).await.is_err());

        first.idle();
        second.idle();
        // Used again since: spared by the first pass of the clock hand.
        second.idle();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(Duration::from_secs(5), || {}).await.is_ok() }
        });
        // Both were used once; the hand clears both marks, then takes the
        // first it finds unused on its second pass ...
        eventually(|| first_told.load(Ordering::Acquire)).await;
        assert!(first.is_evicted());
        assert!(!first.resume(), "an evicted instance must not be used again");
        assert!(!second_told.load(Ordering::Acquire));
        assert!(second.resume(), "the other one was not evicted");
        drop(first);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn stale_idle_entries_do_not_evict_a_busy_slot() {
        let pool = InstancePool::new(1, PoolMetrics::default());
        let only = pool.acquire(Duration::from_millis(10), || {}).await.unwrap();
        for _ in 0..1000 {
            only.idle();
            assert!(only.resume());
        }
        assert_eq!(pool.idle.lock().unwrap().leases.len(), 1, "a lease is queued once");
        // Busy now: a request waits and fails rather than taking it.
        assert!(pool.acquire(Duration::from_millis(20), || {}).await.is_err());
        assert!(only.resume());
    }

    #[tokio::test]
    async fn instances_that_came_and_went_leave_nothing_queued() {
        // A pool that never fills never evicts, so only compaction takes
        // the entries of dropped permits out.
        let pool = InstancePool::new(64, PoolMetrics::default());
        let mut held = Vec::new();
        for i in 0..100_000 {
            let permit = pool.acquire(Duration::from_millis(10), || {}).await.unwrap();
            permit.idle();
            // A few stay alive throughout, like connections that stay open.
            if i % 10_000 == 0 {
                held.push(permit);
            }
        }
        let queue = pool.idle.lock().unwrap();
        assert!(queue.leases.len() < MIN_COMPACT_AT, "{} entries queued", queue.leases.len());
        assert!(queue.leases.capacity() <= 4 * MIN_COMPACT_AT, "capacity {}", queue.leases.capacity());
        let alive = queue.leases.iter().filter(|l| l.strong_count() > 0).count();
        assert_eq!(alive, held.len(), "every live idle lease is still queued");
    }

    /// Waits (at most 5 s) until `done` holds.
    async fn eventually(done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition never held");
    }
}
