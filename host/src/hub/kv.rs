//! The key-value store each plugin shares across its connections.
//! In-process, bounded, with optional expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest key, in bytes.
pub const MAX_KEY: usize = 256;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("key must be 1 to {MAX_KEY} bytes, got {0}")]
    BadKey(usize),
    #[error("value of {size} bytes exceeds the {max} byte limit (kv_value_size)")]
    ValueTooLarge { size: usize, max: usize },
    #[error("the store is full: {0} keys (kv_max_keys)")]
    Full(usize),
    #[error("value at {0:?} is not a decimal integer")]
    NotAnInteger(String),
    #[error("increment overflows")]
    Overflow,
    #[error("the shared store is unavailable ({0}); try again later")]
    Unavailable(String),
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// Sizes of each plugin's store.
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    pub max_keys: usize,
    pub max_value: usize,
}

/// One plugin's store.
pub struct Store {
    entries: Mutex<HashMap<String, Entry>>,
    limits: KvLimits,
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(KvError::BadKey(key.len()));
    }
    Ok(())
}

impl Store {
    /// The checks `set` makes before storing, for stores kept elsewhere.
    pub fn check(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > self.limits.max_value {
            return Err(KvError::ValueTooLarge { size: value.len(), max: self.limits.max_value });
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        self.check(key, &value)?;
        let now = Instant::now();
        let mut entries = self.entries.lock().map_err(|_| KvError::Full(0))?;
        self.make_room(&mut entries, key, now)?;
        entries.insert(key.to_string(), Entry { value, expires: ttl.map(|t| now + t) });
        Ok(())
    }

    pub fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        self.entries.lock().ok().and_then(|mut e| e.remove(key)).is_some_and(|e| e.live(now))
    }

    /// Adds `delta` under one lock: concurrent increments never lose counts.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        let now = Instant::now();
        let mut entries = self.entries.lock().map_err(|_| KvError::Full(0))?;
        let (current, expires) = match entries.get(key) {
            Some(e) if e.live(now) => {
                let text = std::str::from_utf8(&e.value).map_err(|_| KvError::NotAnInteger(key.into()))?;
                (text.trim().parse::<i64>().map_err(|_| KvError::NotAnInteger(key.into()))?, e.expires)
            }
            _ => (0, None),
        };
        let next = current.checked_add(delta).ok_or(KvError::Overflow)?;
        self.make_room(&mut entries, key, now)?;
        entries.insert(key.to_string(), Entry { value: next.to_string().into_bytes(), expires });
        Ok(next)
    }

    /// Before a new key goes in: drop expired entries if the store is full,
    /// and refuse if it still is.
    fn make_room(&self, entries: &mut HashMap<String, Entry>, key: &str, now: Instant) -> Result<(), KvError> {
        if entries.len() < self.limits.max_keys || entries.contains_key(key) {
            return Ok(());
        }
        entries.retain(|_, e| e.live(now));
        if entries.len() >= self.limits.max_keys {
            return Err(KvError::Full(self.limits.max_keys));
        }
        Ok(())
    }
}

/// Every plugin's store, created on first use.
pub struct Kv {
    stores: Mutex<HashMap<Arc<str>, Arc<Store>>>,
    limits: KvLimits,
}

impl Kv {
    pub fn new(limits: KvLimits) -> Self {
        Self { stores: Mutex::new(HashMap::new()), limits }
    }

    pub fn store(&self, plugin: &Arc<str>) -> Arc<Store> {
        let mut stores = match self.stores.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        stores
            .entry(plugin.clone())
            .or_insert_with(|| Arc::new(Store { entries: Mutex::new(HashMap::new()), limits: self.limits }))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_keys: usize) -> Store {
        Store { entries: Mutex::new(HashMap::new()), limits: KvLimits { max_keys, max_value: 32 } }
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
}
