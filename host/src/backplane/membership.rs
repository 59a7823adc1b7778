//! Writes this host's room memberships to Redis, and keeps its room
//! subscriptions, in order, from one task: a host listens on a room's
//! channel while it has a member there. Joins and leaves are taken in
//! batches; a full rewrite after reconnecting cannot interleave with them.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};

use super::Backplane;
use super::conn::RedisConn;
use super::scripts::{JOIN, Keys, LEAVE, TAKE_INDEX};

/// Most membership changes taken in one batch.
const BATCH: usize = 512;
/// Most commands in flight at once during a rewrite or sweep.
const IN_FLIGHT: usize = 256;

/// Told when an op is written: for joins, the room's broadcast counter
/// read as it was written (the member's join point); `None` when Redis was
/// unreachable.
pub(super) type Done = oneshot::Sender<Option<u64>>;

pub(super) enum Op {
    Join {
        plugin: Arc<str>,
        room: String,
        conn: Arc<str>,
        done: Option<Done>,
    },
    Leave {
        plugin: Arc<str>,
        room: String,
        conn: Arc<str>,
        done: Option<Done>,
    },
    /// A session moved to another host: this host's index forgets it, but
    /// it stays a member (the new host indexed it too).
    Disown {
        plugin: Arc<str>,
        room: String,
        conn: Arc<str>,
    },
    /// Answers once every op before it is written.
    Flush {
        done: Option<Done>,
    },
    /// Replace everything Redis holds for this host with what it has now,
    /// and subscribe again to every room it has members in.
    Resync {
        done: Option<Done>,
    },
}

impl Op {
    pub fn set_done(&mut self, tx: Done) {
        match self {
            Op::Join { done, .. } | Op::Leave { done, .. } | Op::Resync { done } => *done = Some(tx),
            Op::Flush { done } => *done = Some(tx),
            Op::Disown { .. } => {}
        }
    }
}

/// The rooms this host listens on, as `(plugin, room)`.
type Interest = HashSet<(Arc<str>, String)>;

pub(super) async fn write(backplane: Arc<Backplane>, mut ops: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut pending = Vec::with_capacity(BATCH);
    let mut interest = Interest::new();
    loop {
        tokio::select! {
            received = ops.recv_many(&mut batch, BATCH) => if received == 0 { return },
            _ = backplane.stop.cancelled() => return,
        }
        for op in batch.drain(..) {
            match op {
                Op::Resync { done } => {
                    flush(&backplane, &mut pending, &mut interest).await;
                    resync(&backplane, &mut interest).await;
                    if let Some(done) = done {
                        let _ = done.send(None);
                    }
                }
                Op::Flush { done } => {
                    flush(&backplane, &mut pending, &mut interest).await;
                    if let Some(done) = done {
                        let _ = done.send(None);
                    }
                }
                op => pending.push(op),
            }
        }
        flush(&backplane, &mut pending, &mut interest).await;
        if backplane.resync_needed.swap(false, Ordering::AcqRel) {
            resync(&backplane, &mut interest).await;
        }
    }
}

/// Subscribes to the rooms of `ops` that gained their first member here and
/// unsubscribes from those that lost their last, then writes the changes.
/// The subscription is confirmed before a join is answered, so its member
/// gets every broadcast numbered after its join point. A change made while
/// Redis is unreachable is written by the rewrite that follows
/// reconnection.
async fn flush(backplane: &Backplane, ops: &mut Vec<Op>, interest: &mut Interest) {
    if ops.is_empty() {
        return;
    }
    let conn = backplane.conn.load_full();
    let listening = match (&conn, backplane.hub.upgrade()) {
        (Some(conn), Some(hub)) => {
            // Whether a room is wanted is read now, after its ops were
            // queued: any later join or leave has its own op behind these.
            let mut touched = Interest::new();
            for op in ops.iter() {
                if let Op::Join { plugin, room, .. }
                | Op::Leave { plugin, room, .. }
                | Op::Disown { plugin, room, .. } = op
                {
                    touched.insert((plugin.clone(), room.clone()));
                }
            }
            let mut changes = Vec::new();
            let mut listens = Vec::new();
            for key in touched {
                let wanted = hub.rooms.count(&key.0, &key.1) > 0;
                if wanted != interest.contains(&key) {
                    listens.push(listen(backplane, (**conn).clone(), key.0.clone(), key.1.clone(), wanted));
                    changes.push((key, wanted));
                }
            }
            let results = join_all(listens).await;
            let mut ok = true;
            for ((key, wanted), result) in changes.into_iter().zip(results) {
                ok &= result;
                match (result, wanted) {
                    (true, true) => interest.insert(key),
                    (true, false) => interest.remove(&key),
                    (false, _) => false,
                };
            }
            ok
        }
        _ => false,
    };
    backplane.metrics.rooms_listened.set(interest.len() as i64);
    let writes = ops.drain(..).map(|op| {
        let conn = conn.as_deref().cloned();
        async move {
            let (written, done) = match op {
                Op::Join { plugin, room, conn: id, done } => {
                    let Some(conn) = conn else { return (None, done) };
                    (join(backplane, conn, &Keys::room_id(&plugin, &room), &id).await, done)
                }
                Op::Leave { plugin, room, conn: id, done } => {
                    let Some(conn) = conn else { return (None, done) };
                    (leave(backplane, conn, &Keys::room_id(&plugin, &room), &id).await.then_some(0), done)
                }
                Op::Disown { plugin, room, conn: id } => {
                    if let Some(mut conn) = conn {
                        let index = backplane.keys.host_index(&backplane.host_id);
                        let entry = Keys::index_entry(&Keys::room_id(&plugin, &room), &id);
                        let removed = redis::cmd("SREM").arg(index).arg(entry).query_async::<()>(&mut conn).await;
                        if let Err(e) = removed {
                            backplane.failed(&e);
                        }
                    }
                    (None, None)
                }
                Op::Resync { done } | Op::Flush { done } => (None, done),
            };
            (written, done)
        }
    });
    for (written, done) in join_all(writes).await {
        if let Some(done) = done {
            let _ = done.send(written.filter(|_| listening));
        }
    }
}

/// Subscribes (`wanted`) or unsubscribes; true once Redis confirmed it.
async fn listen(backplane: &Backplane, mut conn: RedisConn, plugin: Arc<str>, room: String, wanted: bool) -> bool {
    let channel = backplane.keys.room_channel(&Keys::room_id(&plugin, &room));
    let result = if wanted { conn.subscribe(&channel).await } else { conn.unsubscribe(&channel).await };
    match result {
        Ok(()) => true,
        Err(e) => {
            backplane.failed(&e);
            false
        }
    }
}

/// Writes one membership; returns the join point.
async fn join(backplane: &Backplane, mut conn: RedisConn, room_id: &str, id: &str) -> Option<u64> {
    let index = backplane.keys.host_index(&backplane.host_id);
    // The index first, so a sweep after this host dies finds the room entry.
    let indexed = redis::cmd("SADD").arg(&index).arg(Keys::index_entry(room_id, id)).query_async::<()>(&mut conn).await;
    let result = match indexed {
        Ok(()) => {
            JOIN.key(backplane.keys.members(room_id))
                .key(backplane.keys.seq(room_id))
                .arg(id)
                .invoke_async::<u64>(&mut conn)
                .await
        }
        Err(e) => Err(e),
    };
    result.inspect_err(|e| backplane.failed(e)).ok()
}

/// Removes one membership; true once written.
async fn leave(backplane: &Backplane, mut conn: RedisConn, room_id: &str, id: &str) -> bool {
    let index = backplane.keys.host_index(&backplane.host_id);
    let result = async {
        remove_member(backplane, &mut conn, room_id, id).await?;
        redis::cmd("SREM").arg(&index).arg(Keys::index_entry(room_id, id)).query_async::<()>(&mut conn).await
    }
    .await;
    result.inspect_err(|e| backplane.failed(e)).is_ok()
}

async fn remove_member(backplane: &Backplane, conn: &mut RedisConn, room_id: &str, id: &str) -> redis::RedisResult<()> {
    LEAVE
        .key(backplane.keys.members(room_id))
        .key(backplane.keys.seq(room_id))
        .key(backplane.keys.history(room_id))
        .arg(id)
        .invoke_async::<u64>(conn)
        .await
        .map(drop)
}

/// Removes every membership a host's index lists (this host's at a rewrite
/// or shutdown, or a dead one's), then the index. Returns how many.
pub(super) async fn forget(backplane: &Backplane, conn: &RedisConn, host: &str) -> redis::RedisResult<usize> {
    let entries: Vec<String> = TAKE_INDEX.key(backplane.keys.host_index(host)).invoke_async(&mut conn.clone()).await?;
    let mut removals = Vec::with_capacity(entries.len());
    for entry in &entries {
        if let Some((room_id, id)) = Keys::split_entry(entry) {
            let (room_id, id, mut conn) = (room_id.to_string(), id.to_string(), conn.clone());
            removals.push(async move { remove_member(backplane, &mut conn, &room_id, &id).await });
        }
    }
    let results: Vec<_> = futures_util::stream::iter(removals).buffer_unordered(IN_FLIGHT).collect().await;
    results.into_iter().collect::<redis::RedisResult<Vec<()>>>()?;
    Ok(entries.len())
}

/// Removes this host's memberships from Redis, writes the current ones and
/// listens on exactly the rooms it has members in.
async fn resync(backplane: &Backplane, interest: &mut Interest) {
    let (Some(conn), Some(hub)) = (backplane.conn.load_full(), backplane.hub.upgrade()) else { return };
    let conn = (*conn).clone();
    let memberships = hub.rooms.snapshot();
    // Every counter may have restarted (a new Redis, or rooms emptied by
    // the rewrite itself): members take every broadcast from now on.
    hub.rooms.reset_since();
    let wanted: Interest = memberships.iter().map(|(plugin, room, _)| (plugin.clone(), room.clone())).collect();
    let result = async {
        forget(backplane, &conn, &backplane.host_id).await.map_err(|e| backplane.failed(&e))?;
        // Listen first: a member must not miss what follows its rewrite.
        let mut subscriptions = Vec::with_capacity(interest.len() + wanted.len());
        for (plugin, room) in interest.difference(&wanted) {
            subscriptions.push(listen(backplane, conn.clone(), plugin.clone(), room.clone(), false));
        }
        for (plugin, room) in &wanted {
            subscriptions.push(listen(backplane, conn.clone(), plugin.clone(), room.clone(), true));
        }
        let confirmed: Vec<bool> =
            futures_util::stream::iter(subscriptions).buffer_unordered(IN_FLIGHT).collect().await;
        let mut writes = Vec::with_capacity(memberships.len());
        for (plugin, room, id) in &memberships {
            let (room_id, id, conn) = (Keys::room_id(plugin, room), id.clone(), conn.clone());
            writes.push(async move { join(backplane, conn, &room_id, &id).await.is_some() });
        }
        let written: Vec<bool> = futures_util::stream::iter(writes).buffer_unordered(IN_FLIGHT).collect().await;
        let all = confirmed.into_iter().chain(written).all(|ok| ok);
        all.then_some(()).ok_or(())
    }
    .await;
    // Unconfirmed subscriptions are retried by the next rewrite, which a
    // failure (it cancels the session) brings about.
    *interest = wanted;
    backplane.metrics.rooms_listened.set(interest.len() as i64);
    match result {
        Ok(()) => tracing::debug!(memberships = memberships.len(), "wrote this host's room memberships to Redis"),
        Err(_) => tracing::debug!("rewriting this host's memberships failed; retried after reconnecting"),
    }
}
