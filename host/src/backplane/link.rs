//! Keeps the link to Redis: connect, subscribe, renew this host's lease,
//! receive what other hosts publish; on any failure report the outage and
//! reconnect with backoff and jitter.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use redis::aio::{MultiplexedConnection, PubSub};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Backplane;
use super::membership::Op;
use super::scripts::HEARTBEAT;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

pub(super) async fn supervise(backplane: Arc<Backplane>) {
    let mut backoff = FIRST_BACKOFF;
    let mut attempts_failed = 0u32;
    let mut down_since = None;
    loop {
        let session = CancellationToken::new();
        if let Ok(mut current) = backplane.session.lock() {
            *current = session.clone();
        }
        let error = match connect(&backplane, &session).await {
            Ok(pubsub) => {
                backoff = FIRST_BACKOFF;
                attempts_failed = 0;
                went_up(&backplane, down_since.take());
                serve(&backplane, pubsub, &session).await
            }
            Err(e) => Some(e),
        };
        let Some(error) = error else { return };
        attempts_failed += 1;
        if went_down(&backplane, &error, attempts_failed) {
            down_since = Some(Instant::now());
        }
        let pause = jitter(backoff);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = backplane.stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(backplane.max_backoff);
    }
}

/// A pause of 50-100% of `backoff`, so hosts that lost Redis together do
/// not reconnect in lockstep.
fn jitter(backoff: Duration) -> Duration {
    backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// Connects, subscribes, renews the lease and rewrites this host's
/// memberships; then the link is up.
async fn connect(backplane: &Arc<Backplane>, session: &CancellationToken) -> Result<PubSub, String> {
    let t = backplane.timeout;
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(t)).set_response_timeout(Some(t));
    let mut conn = backplane
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut pubsub = within(t, backplane.client.get_async_pubsub()).await?;
    within(t, pubsub.subscribe(&backplane.broadcast_channel)).await?;
    within(t, pubsub.subscribe(backplane.keys.host_channel(&backplane.host_id))).await?;
    heartbeat(backplane, &mut conn).await?;
    backplane.conn.store(Some(Arc::new(conn)));

    // Through the membership writer, so it is ordered with joins and leaves.
    let (done, written) = oneshot::channel();
    backplane.ops.send(Op::Resync { done: Some(done) }).await.map_err(|_| "shutting down".to_string())?;
    let _ = written.await;
    if session.is_cancelled() {
        return Err(backplane.last_error());
    }

    Ok(pubsub)
}

async fn within<T>(t: Duration, future: impl Future<Output = Result<T, redis::RedisError>>) -> Result<T, String> {
    match tokio::time::timeout(t, future).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}", humantime::format_duration(t))),
    }
}

/// Renews this host's lease and sweeps expired hosts. True when this host
/// had itself been swept (its lease ran out, e.g. during a long pause).
async fn heartbeat(backplane: &Backplane, conn: &mut MultiplexedConnection) -> Result<bool, String> {
    let (before, after) = backplane.keys.host_index_parts();
    let (added, swept): (u64, u64) = HEARTBEAT
        .key(backplane.keys.hosts())
        .arg(&*backplane.host_id)
        .arg(backplane.host_timeout.as_millis() as u64)
        .arg(before)
        .arg(after)
        .invoke_async(conn)
        .await
        .map_err(|e| format!("heartbeat failed: {e}"))?;
    if swept > 0 {
        tracing::info!(memberships = swept, "swept the room memberships of hosts that stopped renewing their lease");
    }
    Ok(added == 1)
}

/// Receives until the link fails; `None` at shutdown, else why it failed.
async fn serve(backplane: &Arc<Backplane>, pubsub: PubSub, session: &CancellationToken) -> Option<String> {
    let mut messages = pubsub.into_on_message();
    // Its own future, polled first: a flood of messages must not delay the
    // lease renewal (the cluster would sweep this host), and a slow renewal
    // must not hold up deliveries.
    let renewals = async {
        let mut ticks = tokio::time::interval(backplane.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(conn) = backplane.conn.load_full() else { return "connection lost".to_string() };
            match heartbeat(backplane, &mut (*conn).clone()).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::warn!(
                        "this host's lease had run out (no heartbeat for redis.host_timeout), so the cluster \
                         dropped its memberships: writing them again"
                    );
                    let _ = backplane.ops.try_send(Op::Resync { done: None });
                }
                Err(e) => return e,
            }
        }
    };
    tokio::pin!(renewals);
    loop {
        tokio::select! {
            biased;
            _ = backplane.stop.cancelled() => return None,
            _ = session.cancelled() => return Some(backplane.last_error()),
            error = &mut renewals => return Some(error),
            message = messages.next() => match message {
                Some(message) => backplane.receive(message.get_channel_name(), message.get_payload_bytes()),
                None => return Some("Redis closed the subscription connection".into()),
            },
        }
    }
}

fn went_up(backplane: &Backplane, down_since: Option<Instant>) {
    if let Ok(mut change) = backplane.change.lock() {
        *change = super::Change { since: SystemTime::now(), error: None };
    }
    backplane.up.store(true, Ordering::Release);
    backplane.metrics.up.set(1);
    backplane.metrics.connects.inc();
    match down_since {
        Some(t) => tracing::info!(
            host = %backplane.host_id,
            "reconnected to Redis after {}; cross-host delivery resumed",
            humantime::format_duration(Duration::from_millis(t.elapsed().as_millis() as u64))
        ),
        None => tracing::info!(host = %backplane.host_id, "joined the cluster on Redis"),
    }
}

/// Marks the link down; true if it was up.
fn went_down(backplane: &Backplane, error: &str, attempts_failed: u32) -> bool {
    backplane.conn.store(None);
    // The reason first, so `/healthz` never shows "down" without one.
    let was_up = backplane.is_up();
    if let Ok(mut change) = backplane.change.lock() {
        if was_up {
            change.since = SystemTime::now();
        }
        change.error = Some(error.to_string());
    }
    backplane.up.store(false, Ordering::Release);
    backplane.metrics.up.set(0);
    if was_up {
        backplane.metrics.disconnects.inc();
        tracing::warn!(
            "lost Redis ({error}): serving this host's connections and rooms only; cross-host delivery \
             is off until it is back, reconnecting"
        );
    } else if attempts_failed == 1 {
        tracing::warn!("cannot reach Redis ({error}): serving this host's connections only; retrying");
    } else {
        tracing::debug!(attempts_failed, "Redis still unreachable: {error}");
    }
    was_up
}

impl Backplane {
    fn last_error(&self) -> String {
        self.change.lock().ok().and_then(|c| c.error.clone()).unwrap_or_else(|| "connection lost".into())
    }
}
