//! The key-value store each plugin shares across its connections.
//! In-process, bounded in keys and in bytes, with active expiry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::metrics::StoreGauges;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 256;

/// How often the stores nobody writes to are rid of their expired keys.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Expired keys a sweep removes per hold of a store's lock, so a mass
/// expiry does not stall the plugin's calls.
const SWEEP_BATCH: usize = 1024;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("key must be 1 to {MAX_KEY} bytes, got {0}")]
    BadKey(usize),
    #[error("value of {size} bytes exceeds the {max} byte limit (store.value_size)")]
    ValueTooLarge { size: usize, max: usize },
    #[error("the store is full: {0} keys (store.max_keys)")]
    Full(usize),
    #[error("the store holds {held} of its {max} bytes (store.max_bytes) and this needs {needed} more")]
    OutOfBytes { held: usize, max: usize, needed: usize },
    #[error("value at {0:?} is not a decimal integer")]
    NotAnInteger(String),
    #[error("increment overflows")]
    Overflow,
    #[error("the shared store is unavailable ({0}); try again later")]
    Unavailable(String),
}

/// When a key expires, made unique by a sequence number so that keys
/// expiring at the same instant each have their place in the index.
type Deadline = (Instant, u64);

struct Entry {
    value: Vec<u8>,
    expires: Option<Deadline>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|(t, _)| t > now)
    }
}

/// Sizes of each plugin's store.
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    pub max_keys: usize,
    pub max_value: usize,
    /// Bytes of keys and values.
    pub max_bytes: usize,
}

/// The entries of one store, with their expiry index and size.
#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Every key with a TTL, soonest first: expiring costs O(expired), not
    /// a scan of every key.
    expiry: BTreeMap<Deadline, String>,
    next_seq: u64,
    /// Bytes of keys and values held.
    bytes: usize,
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

impl Inner {
    /// Removes up to `budget` keys expired by `now`; returns how many.
    fn purge(&mut self, now: Instant, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            let Some(first) = self.expiry.first_entry() else { break };
            let deadline = *first.key();
            if deadline.0 > now {
                break;
            }
            let key = first.remove();
            if self.entries.get(&key).is_some_and(|e| e.expires == Some(deadline))
                && let Some(entry) = self.entries.remove(&key)
            {
                self.bytes -= cost(&key, &entry.value);
            }
            removed += 1;
        }
        removed
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        if let Some(deadline) = entry.expires {
            self.expiry.remove(&deadline);
        }
        self.bytes -= cost(key, &entry.value);
        Some(entry)
    }

    /// Stores `value` under `key`, replacing what was there; the limits
    /// were checked by the caller.
    fn insert(&mut self, key: &str, value: Vec<u8>, expires: Option<Instant>) {
        self.remove(key);
        let expires = expires.map(|t| {
            self.next_seq += 1;
            let deadline = (t, self.next_seq);
            self.expiry.insert(deadline, key.to_string());
            deadline
        });
        self.bytes += cost(key, &value);
        self.entries.insert(key.to_string(), Entry { value, expires });
    }
}

/// One plugin's store.
pub struct Store {
    inner: Mutex<Inner>,
    limits: KvLimits,
    bytes_gauge: Gauge,
    keys_gauge: Gauge,
    /// Rung when a key with a TTL is set: the sweeper sleeps while no
    /// store has one, so an idle host does not wake for it.
    expiring: Arc<Notify>,
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(KvError::BadKey(key.len()));
    }
    Ok(())
}

/// A lock whose holder panicked still guards consistent data: nothing
/// between the updates of entries, index and size can panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    fn new(limits: KvLimits, (bytes_gauge, keys_gauge): (Gauge, Gauge), expiring: Arc<Notify>) -> Self {
        Self { inner: Mutex::new(Inner::default()), limits, bytes_gauge, keys_gauge, expiring }
    }

    fn has_expiring(&self) -> bool {
        !lock(&self.inner).expiry.is_empty()
    }

    /// The checks `set` makes on the key and value alone, for stores kept
    /// elsewhere.
    pub fn check(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > self.limits.max_value {
            return Err(KvError::ValueTooLarge { size: value.len(), max: self.limits.max_value });
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        match inner.entries.get(key) {
            Some(e) if e.live(now) => return Some(e.value.clone()),
            Some(_) => {}
            None => return None,
        }
        inner.remove(key);
        self.publish(&inner);
        None
    }

    pub fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        self.check(key, &value)?;
        let now = Instant::now();
        let mut inner = self.lock_purged(now);
        self.admit(&inner, key, value.len())?;
        // `ttl_ms` is any u64: a TTL past what `Instant` can hold (not
        // reachable on Linux) means no expiry rather than a panic.
        let expires = ttl.and_then(|t| now.checked_add(t));
        inner.insert(key, value, expires);
        self.publish(&inner);
        drop(inner);
        if expires.is_some() {
            self.expiring.notify_one();
        }
        Ok(())
    }

    pub fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.lock_purged(now);
        // Whatever the purge left is live.
        let existed = inner.remove(key).is_some();
        if existed {
            self.publish(&inner);
        }
        existed
    }

    /// Adds `delta` under one lock: concurrent increments never lose counts.
    /// The key keeps its expiry.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        let now = Instant::now();
        let mut inner = self.lock_purged(now);
        let (current, expires) = match inner.entries.get(key) {
            Some(e) => {
                let text = std::str::from_utf8(&e.value).map_err(|_| KvError::NotAnInteger(key.into()))?;
                (text.trim().parse::<i64>().map_err(|_| KvError::NotAnInteger(key.into()))?, e.expires)
            }
            None => (0, None),
        };
        let next = current.checked_add(delta).ok_or(KvError::Overflow)?;
        let value = next.to_string().into_bytes();
        self.admit(&inner, key, value.len())?;
        inner.insert(key, value, expires.map(|(t, _)| t));
        self.publish(&inner);
        Ok(next)
    }

    /// The store's lock, with every key expired by `now` gone: what a
    /// write sees.
    fn lock_purged(&self, now: Instant) -> MutexGuard<'_, Inner> {
        let mut inner = lock(&self.inner);
        if inner.purge(now, usize::MAX) > 0 {
            self.publish(&inner);
        }
        inner
    }

    /// Removes up to `budget` expired keys; returns how many.
    fn sweep(&self, budget: usize) -> usize {
        let mut inner = lock(&self.inner);
        let removed = inner.purge(Instant::now(), budget);
        if removed > 0 {
            self.publish(&inner);
        }
        removed
    }

    /// Whether `size` more bytes under `key` fit, once expired keys are
    /// gone. Replacing a key counts only the difference.
    fn admit(&self, inner: &Inner, key: &str, size: usize) -> Result<(), KvError> {
        let old = inner.entries.get(key).map(|e| cost(key, &e.value));
        if old.is_none() && inner.entries.len() >= self.limits.max_keys {
            return Err(KvError::Full(self.limits.max_keys));
        }
        let (old, new) = (old.unwrap_or(0), key.len() + size);
        if new > old && inner.bytes - old + new > self.limits.max_bytes {
            return Err(KvError::OutOfBytes { held: inner.bytes, max: self.limits.max_bytes, needed: new - old });
        }
        Ok(())
    }

    fn publish(&self, inner: &Inner) {
        self.bytes_gauge.set(gauge_value(inner.bytes));
        self.keys_gauge.set(gauge_value(inner.entries.len()));
    }
}

type Stores = Mutex<HashMap<Arc<str>, Arc<Store>>>;

/// Every plugin's store, created on first use.
pub struct Kv {
    stores: Arc<Stores>,
    limits: KvLimits,
    gauges: StoreGauges,
    expiring: Arc<Notify>,
}

impl Kv {
    /// Inside a tokio runtime (the server) this also starts the sweeper,
    /// which ends with the `Kv`; outside one (unit tests) writes still
    /// purge what expired.
    pub fn new(limits: KvLimits, gauges: StoreGauges) -> Self {
        let stores = Arc::new(Mutex::new(HashMap::new()));
        let expiring = Arc::new(Notify::new());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&stores), expiring.clone()));
        }
        Self { stores, limits, gauges, expiring }
    }

    pub fn store(&self, plugin: &Arc<str>) -> Arc<Store> {
        lock(&self.stores)
            .entry(plugin.clone())
            .or_insert_with(|| Arc::new(Store::new(self.limits, self.gauges.for_plugin(plugin), self.expiring.clone())))
            .clone()
    }
}

/// Rids every store of its expired keys now and then, so keys nobody
/// reads or writes stop counting toward the limits and the gauges.
async fn sweep(stores: Weak<Stores>, expiring: Arc<Notify>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let all: Vec<Arc<Store>> = match stores.upgrade() {
            Some(stores) => lock(&stores).values().cloned().collect(),
            None => return,
        };
        for store in &all {
            while store.sweep(SWEEP_BATCH) == SWEEP_BATCH {
                tokio::task::yield_now().await;
            }
        }
        if !all.iter().any(|store| store.has_expiring()) {
            drop(all);
            // Nothing can expire until a key with a TTL is set (a set
            // before this wait leaves a permit, so none is missed).
            expiring.notified().await;
            tick.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(max_keys: usize, max_bytes: usize) -> Store {
        let gauges = StoreGauges::default().for_plugin("p");
        Store::new(KvLimits { max_keys, max_value: 32, max_bytes }, gauges, Arc::new(Notify::new()))
    }

    fn store(max_keys: usize) -> Store {
        limited(max_keys, usize::MAX)
    }

    fn held(s: &Store) -> (i64, i64) {
        (s.bytes_gauge.get(), s.keys_gauge.get())
    }

    #[test]
    fn set_get_delete() {
        let s = store(10);
        s.set("a", b"1".to_vec(), None).unwrap();
        assert_eq!(s.get("a").as_deref(), Some(&b"1"[..]));
        assert!(s.delete("a"));
        assert!(!s.delete("a"));
        assert_eq!(s.get("a"), None);
    }

    #[test]
    fn expiry() {
        let s = store(10);
        s.set("a", b"1".to_vec(), Some(Duration::ZERO)).unwrap();
        assert_eq!(s.get("a"), None);
    }

    #[test]
    fn limits_are_enforced_with_clear_errors() {
        let s = store(2);
        assert_eq!(s.set("", vec![], None), Err(KvError::BadKey(0)));
        assert!(matches!(s.set("a", vec![0; 33], None), Err(KvError::ValueTooLarge { size: 33, max: 32 })));
        s.set("a", vec![], None).unwrap();
        s.set("b", vec![], None).unwrap();
        s.set("a", vec![1], None).unwrap(); // replacing is fine when full
        assert_eq!(s.set("c", vec![], None), Err(KvError::Full(2)));
    }

    #[test]
    fn increment_counts_from_zero_and_rejects_non_numbers() {
        let s = store(10);
        assert_eq!(s.increment("n", 5), Ok(5));
        assert_eq!(s.increment("n", -2), Ok(3));
        s.set("t", b"text".to_vec(), None).unwrap();
        assert!(matches!(s.increment("t", 1), Err(KvError::NotAnInteger(_))));
        s.set("m", i64::MAX.to_string().into_bytes(), None).unwrap();
        assert_eq!(s.increment("m", 1), Err(KvError::Overflow));
    }

    #[test]
    fn errors_name_the_settings() {
        let s = limited(1, 32);
        assert!(s.set("a", vec![0; 33], None).unwrap_err().to_string().contains("store.value_size"));
        s.set("a", vec![0; 31], None).unwrap();
        assert!(s.set("b", vec![], None).unwrap_err().to_string().contains("store.max_keys"));
        let err = s.set("a", vec![0; 32], None).unwrap_err().to_string();
        assert!(err.contains("holds 32 of its 32 bytes (store.max_bytes)"), "{err}");
    }

    #[test]
    fn bytes_of_keys_and_values_are_capped() {
        let s = limited(100, 100);
        s.set("a", vec![0; 29], None).unwrap();
        s.set("b", vec![0; 29], None).unwrap();
        s.set("c", vec![0; 29], None).unwrap();
        assert_eq!(held(&s), (90, 3));
        assert_eq!(s.set("d", vec![0; 10], None), Err(KvError::OutOfBytes { held: 90, max: 100, needed: 11 }));
        s.set("d", vec![0; 9], None).unwrap();
        assert_eq!(held(&s), (100, 4));
        // Replacing counts the difference: shrinking always fits, growing
        // only into what is free.
        s.set("a", vec![0; 19], None).unwrap();
        s.set("e", vec![0; 9], None).unwrap();
        assert_eq!(held(&s), (100, 5));
        assert!(matches!(s.set("b", vec![0; 30], None), Err(KvError::OutOfBytes { needed: 1, .. })));
        s.set("b", vec![1; 29], None).unwrap();
        s.delete("c");
        assert_eq!(held(&s), (70, 4));
        assert_eq!(s.increment("counter", 1_000_000_000), Ok(1_000_000_000));
        assert_eq!(held(&s), (87, 5));
    }

    #[test]
    fn increment_respects_the_byte_cap() {
        let s = limited(100, 10);
        assert_eq!(s.increment("n", 9), Ok(9)); // 1 + 1 bytes
        s.set("v", vec![0; 7], None).unwrap(); // 8 more: full
        assert!(matches!(s.increment("n", 1), Err(KvError::OutOfBytes { held: 10, needed: 1, .. })));
        assert_eq!(s.get("n").as_deref(), Some(&b"9"[..]), "a refused increment changes nothing");
        assert!(matches!(s.increment("m", 1), Err(KvError::OutOfBytes { .. })));
    }

    #[test]
    fn expired_keys_stop_counting_without_being_read() {
        let s = limited(3, 70);
        s.set("a", vec![0; 30], Some(Duration::from_millis(1))).unwrap();
        s.set("b", vec![0; 30], Some(Duration::from_millis(1))).unwrap();
        s.set("keep", vec![], None).unwrap();
        assert_eq!(held(&s), (66, 3));
        std::thread::sleep(Duration::from_millis(5));
        // The sweep alone removes them, and the gauges follow.
        assert_eq!(s.sweep(usize::MAX), 2);
        assert_eq!(held(&s), (4, 1));

        s.set("a", vec![0; 30], Some(Duration::from_millis(1))).unwrap();
        s.set("b", vec![0; 30], Some(Duration::from_millis(1))).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        // A write purges them too: neither the keys nor the bytes are full
        // any more.
        s.set("c", vec![0; 30], None).unwrap();
        s.set("d", vec![0; 30], None).unwrap();
        assert_eq!(held(&s), (66, 3));
        assert_eq!(s.get("keep").as_deref(), Some(&[][..]));
    }

    #[test]
    fn sweeps_remove_a_batch_at_a_time() {
        let s = store(100);
        for i in 0..10 {
            s.set(&format!("k{i}"), vec![], Some(Duration::from_millis(100))).unwrap();
        }
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(s.sweep(4), 4);
        assert_eq!(s.sweep(4), 4);
        assert_eq!(s.sweep(4), 2);
        assert_eq!(held(&s), (0, 0));
    }

    #[test]
    fn replacing_a_key_replaces_its_expiry() {
        let s = store(10);
        s.set("k", b"1".to_vec(), Some(Duration::from_millis(1))).unwrap();
        s.set("k", b"2".to_vec(), None).unwrap();
        s.set("t", b"1".to_vec(), None).unwrap();
        s.set("t", b"2".to_vec(), Some(Duration::from_millis(1))).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.sweep(usize::MAX), 1);
        assert_eq!(s.get("k").as_deref(), Some(&b"2"[..]));
        assert_eq!(s.get("t"), None);
    }

    #[test]
    fn increment_keeps_the_expiry() {
        let s = store(10);
        s.set("n", b"1".to_vec(), Some(Duration::from_millis(200))).unwrap();
        assert_eq!(s.increment("n", 1), Ok(2));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(s.sweep(usize::MAX), 1);
        assert_eq!(s.increment("n", 1), Ok(1), "counts from zero once expired");
    }

    #[test]
    fn the_longest_ttl_is_accepted() {
        let s = store(10);
        s.set("k", b"1".to_vec(), Some(Duration::from_millis(u64::MAX))).unwrap();
        assert_eq!(s.get("k").as_deref(), Some(&b"1"[..]));
    }

    #[tokio::test]
    async fn the_sweeper_empties_stores_nobody_touches() {
        let kv = Kv::new(KvLimits { max_keys: 10, max_value: 10, max_bytes: 100 }, StoreGauges::default());
        let s = kv.store(&Arc::from("p"));
        s.set("k", b"v".to_vec(), Some(Duration::from_millis(10))).unwrap();
        assert_eq!(held(&s), (2, 1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while held(&s) != (0, 0) {
            assert!(Instant::now() < deadline, "the sweeper never removed the expired key");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
