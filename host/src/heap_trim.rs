//! Gives the memory of hibernated instances back to the system. An
//! instance's store, its component instance and its host state are many
//! small allocations; once they are freed, glibc keeps the pages in its
//! arenas, scattered among live data, so a host whose connections all went
//! idle after a burst held megabytes it no longer used (measured in
//! `docs/performance.md`, idle memory). `malloc_trim` returns every whole
//! free page. It runs only after many instances went away, and at most
//! every few seconds, so a host under steady load never pays for it.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

/// How often the number of live instances is looked at.
const SAMPLE: Duration = Duration::from_secs(2);
/// The least time between two trims.
const MIN_GAP: Duration = Duration::from_secs(10);
/// Instances that must have gone away since the last trim.
const FREED: i64 = 64;

/// Trims the heap in the background after instances go away, until the
/// runtime ends. `live` is the gauge of live instances.
pub fn spawn(live: Gauge) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    tokio::spawn(async move {
        let mut peak = live.get();
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(SAMPLE).await;
            let now = live.get();
            peak = peak.max(now);
            if peak - now < FREED || last.elapsed() < MIN_GAP {
                continue;
            }
            peak = now;
            last = tokio::time::Instant::now();
            let started = std::time::Instant::now();
            let _ = tokio::task::spawn_blocking(trim).await;
            tracing::debug!(took = ?started.elapsed(), "gave freed heap pages back");
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
