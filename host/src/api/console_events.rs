//! `GET /api/plugins/NAME/events`: the console as server-sent events.
//!
//! Events: `console` (a [`ConsoleEvent`](crate::console::ConsoleEvent) as JSON) as they happen, `stats`
//! (a [`Stats`] as JSON) every second, and `closed` (why the stream ends)
//! last. Open when the host listens on loopback; elsewhere it needs the API
//! token, as `Authorization: Bearer TOKEN` or `?token=TOKEN` (an
//! `EventSource` cannot set headers). At most
//! [`MAX_WATCHERS_PER_PLUGIN`] per plugin
//! and [`MAX_WATCHERS`] per host; past either, 429.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use warp::Filter;
use warp::reply::{Reply, Response};
use warp::sse::Event;

use crate::console::{MAX_WATCHERS, MAX_WATCHERS_PER_PLUGIN, Published};
use crate::metrics::{LatencySketch, Quantiles};
use crate::pending::PendingSlot;
use crate::plugin::Plugin;
use crate::state::AppState;

/// How often the chart's figures come.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// One second of a plugin, for the chart.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub messages_per_s: f64,
    pub connections: i64,
    #[serde(flatten)]
    pub latency: Quantiles,
}

#[derive(serde::Deserialize)]
struct Query {
    token: Option<String>,
}

pub fn route(
    with_state: impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone + Send + Sync + 'static,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    // Watchers of every plugin of this host.
    let watching = Arc::new(AtomicUsize::new(0));
    warp::path!("api" / "plugins" / String / "events")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<Query>())
        .and(warp::ext::optional::<PendingSlot>())
        .and(with_state)
        .map(move |name: String, authorization: Option<String>, query: Query, pending: Option<PendingSlot>, state: Arc<AppState>| {
            let given = authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).or(query.token.as_deref());
            if !state.config.listen.ip().is_loopback()
                && let Some(refused) = super::refused_by_token(&state, given, "the console event stream")
            {
                return refused;
            }
            let Some(plugin) = state.registry.get(&name) else {
                return super::json_status(
                    http::StatusCode::NOT_FOUND,
                    serde_json::json!({ "error": format!("no plugin {name:?}") }),
                );
            };
            let Some(seat) = Seat::take(&watching, plugin.console.watchers()) else {
                return super::json_status(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    serde_json::json!({ "error": format!(
                        "too many console watchers (at most {MAX_WATCHERS_PER_PLUGIN} per plugin, {MAX_WATCHERS} per host)"
                    ) }),
                );
            };
            if let Some(pending) = pending {
                // A stream now, bounded by the watcher caps from here on.
                pending.release();
            }
            let events = events(plugin, state.shutdown.clone(), seat);
            warp::sse::reply(warp::sse::keep_alive().interval(Duration::from_secs(15)).stream(events)).into_response()
        })
}

/// One watcher's place under the host-wide cap; the per-plugin cap is the
/// plugin channel's receiver count.
struct Seat(Arc<AtomicUsize>);

impl Seat {
    fn take(watching: &Arc<AtomicUsize>, of_plugin: usize) -> Option<Self> {
        if of_plugin >= MAX_WATCHERS_PER_PLUGIN {
            return None;
        }
        watching.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_WATCHERS).then_some(n + 1)).ok()?;
        Some(Self(watching.clone()))
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Watch {
    plugin: Arc<Plugin>,
    rx: broadcast::Receiver<Published>,
    ticks: tokio::time::Interval,
    last: (Instant, u64, Vec<u64>),
    shutdown: tokio_util::sync::CancellationToken,
    done: bool,
    _seat: Seat,
}

fn events(
    plugin: Arc<Plugin>,
    shutdown: tokio_util::sync::CancellationToken,
    seat: Seat,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let rx = plugin.console.subscribe();
    let mut ticks = tokio::time::interval(STATS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let last = (Instant::now(), plugin.metrics.messages_in.get(), plugin.metrics.latency.snapshot());
    let watch = Watch { plugin, rx, ticks, last, shutdown, done: false, _seat: seat };
    futures_util::stream::unfold(watch, |mut w| async move {
        if w.done {
            return None;
        }
        let event = tokio::select! {
            received = w.rx.recv() => match received {
                Ok(json) => Event::default().event("console").data(&*json),
                // Fallen behind by more than the channel holds: a page that
                // does not read is closed rather than buffered for.
                Err(RecvError::Lagged(missed)) => {
                    w.done = true;
                    Event::default().event("closed").data(format!("too slow: {missed} events missed; reconnect"))
                }
                Err(RecvError::Closed) => return None,
            },
            _ = w.ticks.tick() => Event::default().event("stats").json_data(stats(&mut w)).unwrap_or_default(),
            _ = w.shutdown.cancelled() => {
                w.done = true;
                Event::default().event("closed").data("the host is shutting down")
            }
        };
        Some((Ok(event), w))
    })
}

fn stats(w: &mut Watch) -> Stats {
    let now = (Instant::now(), w.plugin.metrics.messages_in.get(), w.plugin.metrics.latency.snapshot());
    let seconds = now.0.duration_since(w.last.0).as_secs_f64().max(1e-3);
    let stats = Stats {
        messages_per_s: now.1.saturating_sub(w.last.1) as f64 / seconds,
        connections: w.plugin.metrics.connections_open.get(),
        latency: LatencySketch::between(&w.last.2, &now.2),
    };
    w.last = now;
    stats
}
