//! Recent plugin call times for the console's chart: lock-free counters in
//! fine logarithmic buckets, so a watcher can take the p50 and p99 of the
//! last second from two snapshots. (The Prometheus histogram's buckets are
//! too coarse for that and not readable from outside its crate.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Four buckets per doubling from 1 µs: 2^(96/4) µs is about 17 s, past
/// any deadline.
const PER_DOUBLING: f64 = 4.0;
const BUCKETS: usize = 96;

/// Call counts by duration bucket, since the plugin was first loaded.
pub struct LatencySketch {
    counts: [AtomicU64; BUCKETS],
}

/// The median and 99th percentile of some calls, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Quantiles {
    pub calls: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self { counts: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl LatencySketch {
    pub fn observe(&self, took: Duration) {
        let micros = took.as_secs_f64() * 1e6;
        let bucket = if micros <= 1.0 { 0 } else { (micros.log2() * PER_DOUBLING).ceil() as usize };
        self.counts[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    /// The quantiles of the calls between snapshots `before` and `now`;
    /// each is the upper bound of its bucket (within 19%).
    pub fn between(before: &[u64], now: &[u64]) -> Quantiles {
        let delta: Vec<u64> =
            now.iter().zip(before.iter().chain(std::iter::repeat(&0))).map(|(n, b)| n.saturating_sub(*b)).collect();
        let calls: u64 = delta.iter().sum();
        let at = |q: f64| {
            let rank = ((calls as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in delta.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return 2f64.powf(i as f64 / PER_DOUBLING) / 1000.0;
                }
            }
            0.0
        };
        if calls == 0 {
            return Quantiles::default();
        }
        Quantiles { calls, p50_ms: at(0.5), p99_ms: at(0.99) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_the_calls_between_snapshots() {
        let sketch = LatencySketch::default();
        let before = sketch.snapshot();
        for _ in 0..99 {
            sketch.observe(Duration::from_micros(100));
        }
        sketch.observe(Duration::from_millis(50));
        let q = LatencySketch::between(&before, &sketch.snapshot());
        assert_eq!(q.calls, 100);
        assert!((0.1..0.12).contains(&q.p50_ms), "{q:?}");
        assert!((0.1..0.12).contains(&q.p99_ms), "{q:?}");
        sketch.observe(Duration::from_millis(50));
        let q = LatencySketch::between(&before, &sketch.snapshot());
        assert!((50.0..60.0).contains(&q.p99_ms), "{q:?}");
        assert_eq!(LatencySketch::between(&sketch.snapshot(), &sketch.snapshot()).calls, 0);
    }
}
