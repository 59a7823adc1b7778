//! A resumable session leaving this host for another (see
//! `backplane::moves`): what travels with it, and this host's answers to
//! the host that asks for it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::backplane::{MovingSessions, Offered};
use crate::hub::Hub;
use crate::hub::timers::Schedule;
use crate::resume::{PackedReplay, Sessions, Transfer};

/// How long a session's task may take to pack it.
const PACK_WITHIN: Duration = Duration::from_secs(2);

/// A session as it travels: everything its new host needs to carry on
/// where this one left off. The plugin and its limits are the new host's.
#[derive(Debug, Serialize, Deserialize)]
pub struct Packed {
    pub id: String,
    pub secret: String,
    pub subprotocol: Option<String>,
    /// The plugin's `state` for it.
    pub state: Option<Vec<u8>>,
    pub rooms: Vec<String>,
    /// Its timers: name, schedule (`once:MS` or `every:MS`), due in ms.
    pub timers: Vec<(String, String, u64)>,
    pub replay: PackedReplay,
    /// Messages this host took from its client.
    pub received: u64,
}

/// A session's timers as they travel: name, schedule (`once:MS` or
/// `every:MS`), due in ms.
pub fn pack_timers(timers: Vec<(String, Schedule, Duration)>) -> Vec<(String, String, u64)> {
    timers
        .into_iter()
        .map(|(name, schedule, due_in)| {
            (name, schedule.encode(), u64::try_from(due_in.as_millis()).unwrap_or(u64::MAX))
        })
        .collect()
}

impl Packed {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising into a Vec fails only on out-of-memory.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// This host's side of a move: the backplane's [`MovingSessions`] port.
pub struct Handover {
    pub sessions: Arc<Sessions>,
    pub hub: Arc<Hub>,
}

impl MovingSessions for Handover {
    fn offer(&self, plugin: &str, token: &str, last: u64) -> Offered {
        let Some(session) = self.sessions.live(plugin, token) else {
            // Only the holder of the secret learns why it ended.
            return match self.sessions.ended_why(token) {
                Some(why) => Offered::Refused(why.as_str()),
                None => Offered::NotHere,
            };
        };
        if !session.replay.lock().is_ok_and(|r| r.can_resume_from(last)) {
            return Offered::Refused("gap");
        }
        let rooms = session.conn.rooms();
        let since = self.hub.rooms.hold(&session.conn, &rooms);
        Offered::Rooms(rooms.into_iter().zip(since).collect())
    }

    fn export<'a>(
        &'a self,
        plugin: &'a str,
        id: &'a str,
        points: &'a [(String, u64)],
    ) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let session = self.sessions.get(id).filter(|s| *s.conn.plugin == *plugin)?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            session.handoff.give(&session.conn, Transfer::Export(points.to_vec(), tx)).ok()?;
            tokio::time::timeout(PACK_WITHIN, rx).await.ok()?.ok()
        })
    }

    fn keep(&self, plugin: &str, id: &str) {
        if let Some(session) = self.sessions.get(id).filter(|s| *s.conn.plugin == *plugin) {
            self.hub.rooms.unhold(&session.conn);
        }
    }
}
