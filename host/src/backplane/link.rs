//! Keeps the link to Redis: connect, subscribe, renew this host's lease,
//! receive what other hosts publish; on any failure report the outage and
//! reconnect with backoff and jitter.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Backplane;
use super::conn::{Mode, RedisConn};
use super::membership::{self, Op};
use super::scripts::{HEARTBEAT, LAYOUT, LAYOUT_CHECK};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

pub(super) async fn supervise(backplane: Arc<Backplane>) {
    let mut backoff = FIRST_BACKOFF;
    let mut attempts_failed = 0u32;
    let mut down_since = None;
    let Some(mut pushes) = backplane.pushes.lock().ok().and_then(|mut p| p.take()) else { return };
    loop {
        let session = CancellationToken::new();
        if let Ok(mut current) = backplane.session.lock() {
            *current = session.clone();
        }
        let error = match connect(&backplane, &session).await {
            Ok(()) => {
                backoff = FIRST_BACKOFF;
                attempts_failed = 0;
                went_up(&backplane, down_since.take());
                serve(&backplane, &mut pushes, &session).await
            }
            Err(e) => Some(e),
        };
        let Some(error) = error else { return };
        attempts_failed += 1;
        if went_down(&backplane, &error, attempts_failed) {
            down_since = Some(Instant::now());
        }
        if backplane.incompatible.get().is_some() {
            tracing::error!("{error}; this host stays off the cluster");
            return;
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

/// Connects, subscribes to this host's channel, renews the lease and
/// rewrites this host's memberships (which subscribes to its rooms); then
/// the link is up.
async fn connect(backplane: &Arc<Backplane>, session: &CancellationToken) -> Result<(), String> {
    let t = backplane.timeout;
    let mut conn = within(t, backplane.target.connect()).await.map_err(|e| format!("cannot connect: {e}"))?;
    check_layout(backplane, &mut conn).await?;
    within(t, conn.subscribe(&backplane.host_channel)).await?;
    // And those of the first hosts of sessions that moved here.
    for channel in backplane.home_channels() {
        within(t, conn.subscribe(&channel)).await?;
    }
    heartbeat(backplane, &mut conn).await?;
    backplane.conn.store(Some(Arc::new(conn)));

    // Through the membership writer, so it is ordered with joins and leaves.
    let (done, written) = oneshot::channel();
    backplane.ops.send(Op::Resync { done: Some(done) }).await.map_err(|_| "shutting down".to_string())?;
    let _ = written.await;
    if session.is_cancelled() {
        return Err(backplane.last_error());
    }
    Ok(())
}

/// Marks an empty Redis with this release's layout, and refuses one that
/// holds another.
async fn check_layout(backplane: &Backplane, conn: &mut RedisConn) -> Result<(), String> {
    let key = backplane.keys.layout();
    let found: String = within(backplane.timeout, LAYOUT_CHECK.key(&key).arg(LAYOUT).invoke_async(conn)).await?;
    if found == LAYOUT.to_string() {
        return Ok(());
    }
    let why = format!(
        "the Redis holds the key layout of backplane version {found} (key {key}); this release reads and writes \
         version {LAYOUT}. Hosts of releases with different layouts cannot share one Redis under one prefix: \
         upgrade them all at once, or give the new release its own redis.prefix"
    );
    let _ = backplane.incompatible.set(why.clone());
    Err(why)
}

async fn within<T>(t: Duration, future: impl Future<Output = Result<T, redis::RedisError>>) -> Result<T, String> {
    match tokio::time::timeout(t, future).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}", humantime::format_duration(t))),
    }
}

/// Renews this host's lease and sweeps the hosts whose lease ran out. True
/// when this host had itself been swept (e.g. during a long pause).
async fn heartbeat(backplane: &Backplane, conn: &mut RedisConn) -> Result<bool, String> {
    let (added, dead): (u64, Vec<String>) = HEARTBEAT
        .key(backplane.keys.hosts())
        .arg(&*backplane.host_id)
        .arg(backplane.host_timeout.as_millis() as u64)
        .invoke_async(conn)
        .await
        .map_err(|e| format!("heartbeat failed: {e}"))?;
    for host in dead {
        // Claimed by this host alone (the script removed it from the live
        // set); a failure here leaves that host's entries behind.
        if let Err(e) = super::checkpoints::orphan(backplane, conn, &host).await {
            backplane.failed(&e);
        }
        match membership::forget(backplane, conn, &host).await {
            Ok(swept) => tracing::info!(
                %host,
                memberships = swept,
                "swept the room memberships of a host that stopped renewing its lease"
            ),
            Err(e) => {
                backplane.failed(&e);
                return Err(format!("sweeping host {host} failed: {e}"));
            }
        }
    }
    Ok(added == 1)
}

/// Receives until the link fails; `None` at shutdown, else why it failed.
async fn serve(
    backplane: &Arc<Backplane>,
    pushes: &mut mpsc::Receiver<(u64, PushInfo)>,
    session: &CancellationToken,
) -> Option<String> {
    // Its own future, polled first: a flood of messages must not delay the
    // lease renewal (the cluster would sweep this host), and a slow renewal
    // must not hold up deliveries.
    let renewals = async {
        let mut ticks = tokio::time::interval(backplane.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut resync_again = false;
        loop {
            ticks.tick().await;
            let Some(conn) = backplane.conn.load_full() else { return "connection lost".to_string() };
            match heartbeat(backplane, &mut (*conn).clone()).await {
                Ok(false) if resync_again => {
                    // The sweep that removed this host may have still been
                    // running during the first rewrite.
                    resync_again = false;
                    let _ = backplane.ops.try_send(Op::Resync { done: None });
                }
                Ok(false) => {}
                Ok(true) => {
                    tracing::warn!(
                        "this host's lease had run out (no heartbeat for redis.host_timeout), so the cluster \
                         dropped its memberships: writing them again"
                    );
                    resync_again = true;
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
            push = pushes.recv() => match push {
                Some((connection, push)) => {
                    if let Some(error) = pushed(backplane, connection, push) {
                        return Some(error);
                    }
                }
                None => return Some("shutting down".into()),
            },
        }
    }
}

/// Acts on one push; an error when it says the link is gone.
fn pushed(backplane: &Arc<Backplane>, connection: u64, push: PushInfo) -> Option<String> {
    let channel = |data: &[Value]| match data.first() {
        Some(Value::BulkString(name)) => std::str::from_utf8(name).ok().map(str::to_string),
        _ => None,
    };
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            if let [Value::BulkString(name), Value::BulkString(payload)] = &push.data[..]
                && let Ok(name) = std::str::from_utf8(name)
            {
                backplane.receive(name, payload);
            }
        }
        // A new subscription starts a new numbering.
        PushKind::Unsubscribe | PushKind::SUnsubscribe => {
            if let Some(name) = channel(&push.data)
                && let Ok(mut seen) = backplane.seen.lock()
            {
                seen.remove(&name);
            }
        }
        // On a cluster, a node lost may be a master failing over: the
        // client reconnects to the same address and would not learn of the
        // promoted replica until a command is redirected, so this host's
        // subscriptions there would stay silent. Start afresh (new slot
        // map, every room subscribed again) once the cluster answers.
        PushKind::Disconnection if connection == backplane.target.newest() => {
            return Some(match backplane.mode {
                Mode::Single => "Redis closed the connection".into(),
                Mode::Cluster => "lost a Redis Cluster node".into(),
            });
        }
        _ => {}
    }
    None
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
