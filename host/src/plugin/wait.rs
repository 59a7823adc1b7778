//! A call's bound in wall time. Computing and waiting are told apart: a
//! call is bounded by its deadline until it first waits on outbound I/O (an
//! HTTP response, a Redis round trip), and from then on by `wait_timeout`.
//! Its own running time stays bounded by the deadline either way, counted
//! in epoch ticks (see `instance`), which do not advance while it waits.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Set when the current call starts waiting on outbound I/O.
#[derive(Clone, Default)]
pub struct WaitMark(Arc<AtomicBool>);

impl WaitMark {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    fn waited(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a call ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfTime {
    /// Past its deadline without waiting on I/O.
    Deadline,
    /// Past `wait_timeout`, having waited on I/O.
    Wait,
}

/// Runs `call` within `deadline`, or within `wait_timeout` (from the same
/// start) once `mark` says it waited on I/O.
pub async fn bounded<F: Future>(
    call: F,
    deadline: Duration,
    wait_timeout: Duration,
    mark: &WaitMark,
) -> Result<F::Output, OutOfTime> {
    let start = Instant::now();
    let mut call = std::pin::pin!(call);
    match tokio::time::timeout_at(start + deadline, call.as_mut()).await {
        Ok(out) => return Ok(out),
        Err(_) if !mark.waited() || wait_timeout <= deadline => return Err(OutOfTime::Deadline),
        Err(_) => {}
    }
    tokio::time::timeout_at(start + wait_timeout, call).await.map_err(|_| OutOfTime::Wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn a_call_that_waited_gets_the_wait_timeout() {
        let mark = WaitMark::default();
        let slow = async {
            mark.mark();
            tokio::time::sleep(300 * MS).await;
            "answered"
        };
        assert_eq!(bounded(slow, 100 * MS, 2000 * MS, &mark).await, Ok("answered"));

        let unmarked = WaitMark::default();
        let sleeper = tokio::time::sleep(300 * MS);
        assert_eq!(bounded(sleeper, 100 * MS, 2000 * MS, &unmarked).await, Err(OutOfTime::Deadline));

        let forever = async {
            mark.mark();
            std::future::pending::<()>().await
        };
        let start = Instant::now();
        assert_eq!(bounded(forever, 100 * MS, 2000 * MS, &mark).await, Err(OutOfTime::Wait));
        assert_eq!(start.elapsed(), 2000 * MS);
    }
}
