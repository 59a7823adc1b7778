//! Writes this host's room memberships to Redis, in order, from one task:
//! joins and leaves are batched into pipelines, and a full rewrite after
//! reconnecting cannot interleave with them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::Backplane;
use super::scripts::{FORGET, Keys};

/// Most membership changes written in one pipeline.
const BATCH: usize = 512;

/// Told when an op is written: for joins, the broadcast counter read just
/// after (the member's join point); `None` when Redis was unreachable.
pub(super) type Done = oneshot::Sender<Option<u64>>;

pub(super) enum Op {
    Join {
        room_key: String,
        conn: Arc<str>,
        done: Option<Done>,
    },
    Leave {
        room_key: String,
        conn: Arc<str>,
        done: Option<Done>,
    },
    /// Replace everything Redis holds for this host with what it has now.
    Resync {
        done: Option<Done>,
    },
}

impl Op {
    pub fn set_done(&mut self, tx: Done) {
        match self {
            Op::Join { done, .. } | Op::Leave { done, .. } | Op::Resync { done } => *done = Some(tx),
        }
    }
}

pub(super) async fn write(backplane: Arc<Backplane>, mut ops: mpsc::Receiver<Op>) {
    let index = backplane.keys.host_index(&backplane.host_id);
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = ops.recv_many(&mut batch, BATCH) => if received == 0 { return },
            _ = backplane.stop.cancelled() => return,
        }
        let mut pipe = redis::pipe();
        for op in batch.drain(..) {
            match op {
                Op::Join { room_key, conn, done } => {
                    pipe.sadd(&index, Keys::index_entry(&room_key, &conn)).ignore().sadd(room_key, &*conn).ignore();
                    waiting.extend(done);
                }
                Op::Leave { room_key, conn, done } => {
                    pipe.srem(&room_key, &*conn).ignore().srem(&index, Keys::index_entry(&room_key, &conn)).ignore();
                    waiting.extend(done);
                }
                Op::Resync { done } => {
                    flush(&backplane, &mut pipe, &mut waiting).await;
                    resync(&backplane, &index).await;
                    waiting.extend(done);
                }
            }
        }
        flush(&backplane, &mut pipe, &mut waiting).await;
        if backplane.resync_needed.swap(false, Ordering::AcqRel) {
            resync(&backplane, &index).await;
        }
    }
}

/// Writes what is pipelined, if Redis is reachable, then reads the
/// broadcast counter: every join in the batch is in Redis by then, so later
/// numbers are broadcasts its member must get. A change made while Redis is
/// unreachable is written by the rewrite that follows reconnection.
async fn flush(backplane: &Backplane, pipe: &mut redis::Pipeline, waiting: &mut Vec<Done>) {
    let mut seq = None;
    if !pipe.is_empty()
        && let Some(conn) = backplane.conn.load().as_deref()
    {
        pipe.get(backplane.keys.broadcast_seq());
        match pipe.query_async::<(Option<u64>,)>(&mut conn.clone()).await {
            Ok((n,)) => seq = Some(n.unwrap_or(0)),
            Err(e) => backplane.failed(&e),
        }
    }
    pipe.clear();
    for done in waiting.drain(..) {
        let _ = done.send(seq);
    }
}

/// Removes this host's memberships from Redis and writes the current ones.
async fn resync(backplane: &Backplane, index: &str) {
    let (Some(conn), Some(hub)) = (backplane.conn.load_full(), backplane.hub.upgrade()) else { return };
    let mut conn = (*conn).clone();
    let memberships = hub.rooms.snapshot();
    // Redis may have restarted and numbered broadcasts from 1 again.
    hub.rooms.reset_since();
    let result = async {
        FORGET.key(index).invoke_async::<u64>(&mut conn).await?;
        for chunk in memberships.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (plugin, room, id) in chunk {
                let room_key = backplane.keys.room(plugin, room);
                pipe.sadd(index, Keys::index_entry(&room_key, id)).ignore().sadd(room_key, &**id).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok::<_, redis::RedisError>(())
    }
    .await;
    match result {
        Ok(()) => tracing::debug!(memberships = memberships.len(), "wrote this host's room memberships to Redis"),
        Err(e) => backplane.failed(&e),
    }
}
