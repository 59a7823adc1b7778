//! Checkpoints that let a resumable session survive its host's crash
//! (`docs/delivery.md`). With Redis, for a plugin that keeps room history,
//! each session's host writes its record to Redis (`backplane::checkpoints`)
//! at most once a [`WRITE_EVERY`]: its id and secret, `state`, timers, the
//! count of its client's messages taken, its rooms with their join points,
//! and checkpoints: "every message up to number N was queued with the
//! session at these offsets in its rooms". A host that finds the session's
//! host gone when its client resumes (`takeover`) picks the latest
//! checkpoint at or before what the client received, joins the rooms
//! again, and sends first what each room's history holds after those
//! offsets: no broadcast is lost that the history still holds; those the
//! client received after that checkpoint come again.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backplane::{Backplane, Checkpoint};
use crate::config::PluginLimits;
use crate::handover::pack_timers;
use crate::resume::{Keyed, Session, Sessions};

/// How often a session's record is written at most: what a crash can lose
/// of `state` writes and of the count of messages taken from the client.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);

/// Whether a plugin's sessions are checkpointed on this host.
pub fn tracks(scaled_out: bool, limits: &PluginLimits) -> bool {
    scaled_out && limits.history_size > 0 && !limits.resume_grace.is_zero()
}

/// A session as its checkpoint holds it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub secret: String,
    pub subprotocol: Option<String>,
    pub state: Option<Vec<u8>>,
    /// Name, schedule (`once:MS` or `every:MS`), due in ms as written.
    pub timers: Vec<(String, String, u64)>,
    /// Messages taken from its client.
    pub received: u64,
    /// Its rooms, each with its join point.
    pub rooms: Vec<(String, u64)>,
    /// Checkpoints, oldest first: message number, and the last broadcast
    /// queued in each room by then.
    pub marks: Vec<(u64, Vec<(String, u64)>)>,
}

impl Record {
    fn of(session: &Session) -> Self {
        let conn = &session.conn;
        let marks = session.marks.lock().map(|m| m.clone()).unwrap_or_default();
        Self {
            id: conn.id.to_string(),
            secret: session.secret().to_string(),
            subprotocol: session.subprotocol.clone(),
            state: conn.state(),
            timers: pack_timers(conn.timers.list()),
            received: session.received.load(std::sync::atomic::Ordering::Acquire),
            rooms: conn.marks().into_iter().map(|m| (m.room, m.join)).collect(),
            marks: marks
                .into_iter()
                .map(|(n, marks)| (n, marks.into_iter().map(|m| (m.room, m.last)).collect()))
                .collect(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising into a Vec fails only on out-of-memory.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// For a client that received `last` messages: per room, the offset
    /// after which its broadcasts are owed; and at most how many messages
    /// the client had past the checkpoint used (repeats, at most).
    pub fn owed(&self, last: u64) -> (Vec<(String, u64)>, u64) {
        let chosen = self.marks.iter().rev().find(|(n, _)| *n <= last);
        let rooms = self
            .rooms
            .iter()
            .map(|(room, join)| {
                let at = chosen.and_then(|(_, marks)| marks.iter().find(|(r, _)| r == room)).map_or(*join, |m| m.1);
                // Left and joined again since: nothing before the join is owed.
                (room.clone(), at.max(*join))
            })
            .collect();
        (rooms, last - chosen.map_or(0, |(n, _)| *n).min(last))
    }
}

/// Writes the records of the sessions that changed, and forgets those of
/// sessions that ended or left, until the host stops.
pub async fn write(sessions: Arc<Sessions>, backplane: Arc<Backplane>) {
    loop {
        sessions.changed_bell.notified().await;
        // Changes gather for a while: one write per session per period.
        tokio::time::sleep(WRITE_EVERY).await;
        let changes = sessions.take_changes();
        if !changes.gone.is_empty() {
            backplane.drop_checkpoints(changes.gone).await;
        }
        let records: Vec<Checkpoint> = changes
            .changed
            .into_iter()
            .filter_map(|id| sessions.get(&id))
            .map(|session| Checkpoint {
                id: session.conn.id.clone(),
                grace_ms: u64::try_from(session.grace.as_millis()).unwrap_or(u64::MAX),
                record: Record::of(&session).encode(),
            })
            .collect();
        let n = records.len() as u64;
        if n > 0 && backplane.store_checkpoints(records).await {
            sessions.metrics.checkpoints_written.inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rooms: &[(&str, u64)], marks: &[(u64, &[(&str, u64)])]) -> Record {
        Record {
            id: "h-1".into(),
            secret: "s".into(),
            subprotocol: None,
            state: None,
            timers: Vec::new(),
            received: 0,
            rooms: rooms.iter().map(|(r, j)| (r.to_string(), *j)).collect(),
            marks: marks.iter().map(|(n, m)| (*n, m.iter().map(|(r, l)| (r.to_string(), *l)).collect())).collect(),
        }
    }

    #[test]
    fn what_is_owed_starts_at_the_latest_checkpoint_the_client_had() {
        let r = record(&[("a", 10), ("b", 3)], &[(5, &[("a", 12), ("b", 3)]), (9, &[("a", 15), ("b", 7)])]);
        // Received 9 or more: from the second checkpoint, repeats at most what came after it.
        assert_eq!(r.owed(11), (vec![("a".into(), 15), ("b".into(), 7)], 2));
        // Received 5 to 8: from the first.
        assert_eq!(r.owed(7), (vec![("a".into(), 12), ("b".into(), 3)], 2));
        // Before any: from the join points.
        assert_eq!(r.owed(2), (vec![("a".into(), 10), ("b".into(), 3)], 2));
    }

    #[test]
    fn a_room_joined_again_after_the_checkpoint_is_owed_from_its_new_join() {
        let r = record(&[("a", 40), ("c", 8)], &[(5, &[("a", 12)])]);
        assert_eq!(r.owed(6), (vec![("a".into(), 40), ("c".into(), 8)], 1));
    }
}
