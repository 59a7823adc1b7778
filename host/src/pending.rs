//! Connections still in their HTTP phase ("pending"), bounded in number by
//! `http.max_pending`.
//!
//! When every slot is taken, the connection that has been pending longest
//! gives way to the new one: it is closed, and the newcomer is served.
//! Refusing newcomers instead (the earlier policy) let a client that keeps
//! `max_pending` requests half-sent lock every new handshake and every
//! `/healthz` out for as long as it holds them. Evicting the oldest keeps
//! the host reachable: a stalled request is closed after at most
//! `max_pending` newer arrivals, and a real request, which finishes in
//! milliseconds, is never the oldest for long.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Every pending connection, oldest first.
pub struct Pending {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Admission number → what closes that connection.
    live: BTreeMap<u64, CancellationToken>,
}

/// What admitting a connection did.
pub struct Admitted {
    /// Held while the connection is pending; handed back on upgrade.
    pub slot: PendingSlot,
    /// Cancelled if a newer connection needs the slot.
    pub evicted: CancellationToken,
    /// Whether an older connection was closed to make room.
    pub displaced: bool,
}

impl Pending {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), inner: Mutex::new(Inner::default()) })
    }

    /// Takes a slot for a new connection, closing the oldest pending one
    /// when none is free.
    pub fn admit(self: &Arc<Self>) -> Admitted {
        let evicted = CancellationToken::new();
        let mut displaced = false;
        let id = match self.inner.lock() {
            Ok(mut inner) => {
                if inner.live.len() >= self.max
                    && let Some((_, oldest)) = inner.live.pop_first()
                {
                    oldest.cancel();
                    displaced = true;
                }
                let id = inner.next;
                inner.next += 1;
                inner.live.insert(id, evicted.clone());
                Some(id)
            }
            Err(_) => None,
        };
        let held = id.map(|id| Held { id, pending: self.clone() });
        Admitted { slot: PendingSlot(Arc::new(Mutex::new(held))), evicted, displaced }
    }

    /// Connections pending now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.live.len()).unwrap_or(0)
    }
}

/// One connection's place among the pending; freed on drop.
struct Held {
    id: u64,
    pending: Arc<Pending>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.pending.inner.lock() {
            inner.live.remove(&self.id);
        }
    }
}

/// The pending slot of the HTTP connection a request came on, in every
/// request's extensions: a request that turns its connection into a
/// long-lived stream (the HTTP fallback, the console) gives the slot back,
/// since a bound of its own covers it from then on. A connection that gave
/// its slot back is no longer evicted.
#[derive(Clone)]
pub struct PendingSlot(Arc<Mutex<Option<Held>>>);

impl PendingSlot {
    pub fn release(&self) {
        if let Ok(mut slot) = self.0.lock() {
            slot.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_gives_way_and_released_slots_are_not_evicted() {
        let pending = Pending::new(2);
        let first = pending.admit();
        let second = pending.admit();
        assert!(!first.displaced && !second.displaced);
        // A stream gave its slot back: it is not pending any more.
        first.slot.release();
        let third = pending.admit();
        assert!(!third.displaced, "a free slot was there");
        assert!(!first.evicted.is_cancelled());
        let fourth = pending.admit();
        assert!(fourth.displaced);
        assert!(second.evicted.is_cancelled(), "the oldest pending one gave way");
        assert!(!third.evicted.is_cancelled());
        assert_eq!(pending.len(), 2);
        drop((third, fourth));
        assert_eq!(pending.len(), 0);
    }
}
