//! How much a connection's plugin may write to the host's log (`log`,
//! stdout, stderr): a token bucket of bytes per connection, kept outside
//! the instance so that a new instance does not start with a fresh budget.
//! Lines past it are dropped, counted, and reported at most once a second.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use prometheus_client::metrics::counter::Counter;

/// What a line costs beyond its text: about what the host adds to it
/// (timestamp, level, target, plugin, connection and version tags).
pub const LINE_OVERHEAD: u64 = 64;

/// Reports of dropped lines come at most this often per connection.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Bytes refilled continuously at `rate` per second, holding at most two
/// seconds' worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket: a connection may start with a burst.
    fn new(rate: u64, now: Instant) -> Self {
        let rate = rate as f64;
        Self { rate, capacity: 2.0 * rate, tokens: 2.0 * rate, last: now }
    }

    /// Takes `cost` bytes if they are there.
    fn take(&mut self, cost: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = self.last.max(now);
        let cost = cost as f64;
        if cost > self.tokens {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

struct State {
    bucket: Bucket,
    /// Dropped since the last report.
    lines: u64,
    bytes: u64,
    last_report: Option<Instant>,
    /// A timer will report what is dropped until then.
    report_pending: bool,
}

/// One connection's log budget, shared by each instance that serves it.
pub struct LogBudget {
    state: Mutex<State>,
    rate: ByteSize,
    plugin: Arc<str>,
    conn: Arc<str>,
    dropped_lines: Counter,
    dropped_bytes: Counter,
    /// Itself, for the timer that reports drops.
    me: Weak<LogBudget>,
}

impl LogBudget {
    /// A full budget of `rate` bytes a second for connection `conn` of
    /// `plugin`, counting what it drops in the two counters.
    pub fn new(
        rate: ByteSize,
        plugin: Arc<str>,
        conn: Arc<str>,
        dropped_lines: Counter,
        dropped_bytes: Counter,
    ) -> Arc<Self> {
        let bucket = Bucket::new(rate.as_u64(), Instant::now());
        let state = State { bucket, lines: 0, bytes: 0, last_report: None, report_pending: false };
        Arc::new_cyclic(|me| Self {
            state: Mutex::new(state),
            rate,
            plugin,
            conn,
            dropped_lines,
            dropped_bytes,
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a line of `len` bytes may be written. If not, it is counted
    /// as dropped, and reported now or when a second has passed since the
    /// last report.
    pub fn admit(&self, len: usize) -> bool {
        let now = Instant::now();
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        let mut state = self.lock();
        if state.bucket.take(len.saturating_add(LINE_OVERHEAD), now) {
            return true;
        }
        self.dropped_lines.inc();
        self.dropped_bytes.inc_by(len);
        state.lines += 1;
        state.bytes = state.bytes.saturating_add(len);
        self.report_when_due(&mut state, now);
        false
    }

    /// Reports the drops not yet reported: when an instance ends, so none
    /// wait for a timer that may outlive the host's interest.
    pub fn flush(&self) {
        let mut state = self.lock();
        self.report(&mut state, Instant::now());
    }

    /// Reports now if the last report is a second old, or else makes sure
    /// a timer will: a flood that stops still gets its count told.
    fn report_when_due(&self, state: &mut State, now: Instant) {
        let due = state.last_report.map_or(now, |t| t + REPORT_EVERY);
        if due <= now {
            self.report(state, now);
            return;
        }
        if state.report_pending {
            return;
        }
        // Outside a runtime (unit tests) the next drop or flush reports.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        state.report_pending = true;
        let me = self.me.clone();
        runtime.spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            if let Some(budget) = me.upgrade() {
                let mut state = budget.lock();
                state.report_pending = false;
                if state.lines > 0 {
                    budget.report_when_due(&mut state, Instant::now());
                }
            }
        });
    }

    fn report(&self, state: &mut State, now: Instant) {
        let (lines, bytes) = (state.lines, state.bytes);
        if lines == 0 {
            return;
        }
        let (plugin, conn, rate) = (&*self.plugin, &*self.conn, self.rate);
        let noun = if lines == 1 { "line" } else { "lines" };
        if rate.as_u64() == 0 {
            // The operator asked for no plugin output: no warning either.
            tracing::debug!(plugin, conn, "plugin output off (limits.log_rate = 0): dropped {lines} {noun}");
        } else {
            tracing::warn!(
                plugin,
                conn,
                "plugin output over limits.log_rate ({rate}/s): dropped {lines} {noun} ({})",
                ByteSize(bytes)
            );
        }
        state.lines = 0;
        state.bytes = 0;
        state.last_report = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_starts_with_two_seconds_of_rate() {
        let t = Instant::now();
        let mut b = Bucket::new(1000, t);
        assert!(b.take(1500, t));
        assert!(b.take(500, t));
        assert!(!b.take(1, t));
    }

    #[test]
    fn a_bucket_refills_continuously_up_to_its_capacity() {
        let t = Instant::now();
        let mut b = Bucket::new(1000, t);
        assert!(b.take(2000, t));
        assert!(!b.take(100, t + 50 * MS), "50 ms bring 50 bytes");
        assert!(b.take(100, t + 100 * MS), "100 ms bring 100 bytes");
        assert!(!b.take(1, t + 100 * MS));
        // A long silence refills two seconds' worth, not more.
        assert!(b.take(2000, t + 60_000 * MS));
        assert!(!b.take(1, t + 60_000 * MS));
        // A line larger than the bucket never fits.
        assert!(!b.take(2001, t + 120_000 * MS));
    }

    #[test]
    fn a_zero_rate_admits_nothing() {
        let t = Instant::now();
        let mut b = Bucket::new(0, t);
        assert!(!b.take(1, t));
        assert!(!b.take(1, t + 60_000 * MS));
    }

    #[test]
    fn lines_are_charged_their_overhead_and_drops_are_counted() {
        let (lines, bytes) = (Counter::default(), Counter::default());
        let budget = LogBudget::new(ByteSize::b(500), "p".into(), "c".into(), lines.clone(), bytes.clone());
        // 1000 bytes of burst: ten lines of 36 bytes cost 1000.
        for _ in 0..10 {
            assert!(budget.admit(36));
        }
        assert!(!budget.admit(36));
        assert!(!budget.admit(10));
        assert_eq!((lines.get(), bytes.get()), (2, 46));
        budget.flush();
        assert_eq!(budget.lock().lines, 0, "a flush reports what was pending");
    }

    #[tokio::test]
    async fn drops_after_a_report_are_reported_a_second_later() {
        let budget = LogBudget::new(ByteSize::b(100), "p".into(), "c".into(), Counter::default(), Counter::default());
        assert!(budget.admit(136));
        assert!(!budget.admit(10));
        assert_eq!(budget.lock().lines, 0, "the first drop is reported at once");
        assert!(!budget.admit(10));
        assert!(!budget.admit(10));
        let pending = |b: &LogBudget| {
            let state = b.lock();
            (state.lines, state.report_pending)
        };
        assert_eq!(pending(&budget), (2, true));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(pending(&budget), (0, false));
    }
}
