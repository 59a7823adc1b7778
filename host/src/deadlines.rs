//! The timers of a connection's serve loop, whatever its transport: one
//! timer for every deadline it waits on (close, keep-alive, hibernation and
//! the transport's own), and how long a silent peer is given.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::config::WebSocketConfig;

/// How long a client may go without a sign of life (reading or writing)
/// before it counts as gone; none while keep-alive is off.
pub fn silence_allowed(settings: &WebSocketConfig) -> Option<Duration> {
    (!settings.keep_alive_interval.is_zero()).then(|| settings.keep_alive_interval + settings.keep_alive_timeout)
}

/// One timer for every deadline of a serve loop, each named by a `W` (why
/// it is set). Traffic only pushes deadlines later, so the timer moves only
/// when one comes earlier than where it is armed; firing early just
/// re-arms it. A connection waits in one `Sleep`, not one per deadline.
pub struct Deadlines<'t, W> {
    timer: Pin<&'t mut Sleep>,
    armed: Option<Instant>,
    next: Option<(Instant, W)>,
}

impl<'t, W: Copy> Deadlines<'t, W> {
    pub fn new(timer: Pin<&'t mut Sleep>) -> Self {
        Self { timer, armed: None, next: None }
    }

    /// Sets the earliest of `deadlines` as the next one.
    pub fn set(&mut self, deadlines: impl IntoIterator<Item = Option<(Instant, W)>>) {
        self.next = deadlines.into_iter().flatten().min_by_key(|(at, _)| *at);
        if let Some((at, _)) = self.next
            && self.armed.is_none_or(|armed| at < armed)
        {
            self.timer.as_mut().reset(at);
            self.armed = Some(at);
        }
    }

    /// Waits for the timer (forever while none is set): the deadline that
    /// has come, or `None` when it fired before the next one (set again).
    /// Cancel-safe: a serve loop selects on it beside its other events.
    pub async fn fired(&mut self) -> Option<W> {
        if self.armed.is_none() {
            std::future::pending::<()>().await;
        }
        self.timer.as_mut().await;
        self.armed = None;
        self.next.filter(|(at, _)| *at <= Instant::now()).map(|(_, why)| why)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_fires_with_its_reason() {
        let now = Instant::now();
        let timer = pin!(tokio::time::sleep_until(now));
        let mut d = Deadlines::new(timer);
        d.set([Some((now + 30 * MS, "ping")), None, Some((now + 10 * MS, "close"))]);
        assert_eq!(d.fired().await, Some("close"));
        assert_eq!(Instant::now(), now + 10 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_pushed_later_fires_early_once_then_at_its_time() {
        let now = Instant::now();
        let timer = pin!(tokio::time::sleep_until(now));
        let mut d = Deadlines::new(timer);
        d.set([Some((now + 10 * MS, "hibernate"))]);
        // Traffic came: the deadline moves later, the timer does not.
        d.set([Some((now + 50 * MS, "hibernate"))]);
        assert_eq!(d.fired().await, None, "fired early: nothing is due yet");
        assert_eq!(Instant::now(), now + 10 * MS);
        d.set([Some((now + 50 * MS, "hibernate"))]);
        assert_eq!(d.fired().await, Some("hibernate"));
        assert_eq!(Instant::now(), now + 50 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_moves_the_timer_and_none_waits_forever() {
        let now = Instant::now();
        let timer = pin!(tokio::time::sleep_until(now));
        let mut d = Deadlines::new(timer);
        d.set([Some((now + 50 * MS, "ping"))]);
        d.set([Some((now + 50 * MS, "ping")), Some((now + 5 * MS, "close"))]);
        assert_eq!(d.fired().await, Some("close"));
        d.set([None::<(Instant, &str)>]);
        let waited = tokio::time::timeout(Duration::from_secs(3600), d.fired()).await;
        assert!(waited.is_err(), "nothing set: nothing fires");
    }
}
