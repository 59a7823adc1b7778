//! Taking over a resumable session from another host (see
//! `backplane::moves`): its client reconnected here, through a load
//! balancer, while its session lives on a host that is draining or that
//! the balancer did not pick. The session keeps its id, rooms, `state`,
//! timers and every message sent to it; the plugin sees no close and no
//! open.

use std::sync::Arc;

use crate::backplane::Backplane;
use crate::checkpoint::Record;
use crate::config::InMemory;
use crate::connection::Resumable;
use crate::dispatch::Parts;
use crate::handover::Packed;
use crate::hub::history::MAX_HISTORY_READ;
use crate::hub::timers::Schedule;
use crate::hub::{Hub, QueueLimits, Slot};
use crate::plugin::{self, Plugin};
use crate::resume::{Found, PackedReplay, Refused, Replay, Session};
use crate::state::AppState;

/// What a takeover found.
pub enum Taken {
    /// The session came here.
    Over(TakenOver),
    /// An earlier attempt of the same client brought it here already.
    Here(Arc<Session>),
}

/// Waits (as long as a move may take) for another attempt to finish
/// taking session `token` over here; the session, if it did.
async fn arrived_here(state: &AppState, plugin: &str, token: &str, last: u64) -> Option<Arc<Session>> {
    let (id, _) = token.split_once('.')?;
    let deadline = tokio::time::Instant::now() + crate::backplane::MOVE_PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if let Found::Live(session) = state.sessions.find(plugin, token, last) {
            return Some(session);
        }
        // Gone: that attempt failed.
        state.hub.get(plugin, id)?;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

/// A session taken over, ready to serve its client's socket.
pub struct TakenOver {
    pub parts: Parts,
    pub slot: Slot,
    pub version: Arc<plugin::Version>,
    pub resume: Box<Resumable>,
}

impl TakenOver {
    pub fn subprotocol(&self) -> Option<String> {
        self.resume.session.subprotocol.clone()
    }

    /// Serves the client's socket, from its `last` message on.
    pub async fn run(self, socket: crate::socket::Socket, last: u64, backplane: Option<Arc<Backplane>>) {
        let TakenOver { parts, slot, version, resume } = self;
        let id = parts.conn.id.clone();
        crate::connection::run_moved(parts, slot, version, socket, last, resume).await;
        if let Some(backplane) = backplane {
            backplane.depart(&id);
        }
    }

    /// The client's upgrade failed after the session came here: it ends
    /// here, as one whose grace ran out.
    pub async fn abandon(self, backplane: Option<Arc<Backplane>>) {
        let TakenOver { parts, slot, version, resume } = self;
        resume.sessions.end(&resume.session, None);
        parts.conn.discard_queued();
        Box::pin(crate::dispatch::Dispatcher::asleep(&parts, version).finish(None)).await;
        drop(slot);
        if let Some(backplane) = backplane {
            backplane.depart(&parts.conn.id);
        }
    }
}

/// Whether a resume that found no session here should ask the cluster:
/// the session's id was given out by another host.
pub fn elsewhere(state: &AppState, token: &str) -> bool {
    let id = token.split_once('.').map_or(token, |(id, _)| id);
    state.backplane.is_some() && Hub::host_of(id).is_some_and(|host| host != state.hub.host_id())
}

/// Takes session `token` of `plugin` over from whichever host holds it,
/// for a client that received `last` messages. `Err` says why not, as the
/// client is told.
pub async fn take_over(state: &AppState, plugin: Arc<Plugin>, token: &str, last: u64) -> Result<Taken, Refused> {
    let backplane = state.backplane.clone().ok_or(Refused::Unknown)?;
    let (id, _) = token.split_once('.').ok_or(Refused::Unknown)?;
    let version = plugin.current().ok_or(Refused::Unknown)?;
    let Some(slot) = state.hub.reserve() else {
        tracing::debug!(conn = id, "no room for the session here (max_connections)");
        return Err(Refused::Unknown);
    };
    let queue =
        QueueLimits { messages: state.ws.send_queue, bytes: state.ws.queue_bytes(), outbound: plugin.outbound.clone() };
    let Some(conn) = state.hub.register_as(id, plugin.name.clone(), queue) else {
        // The client tried again while its first attempt is still taking
        // the session over here: it resumes here once that is done.
        return match arrived_here(state, &plugin.name, token, last).await {
            Some(session) => Ok(Taken::Here(session)),
            None => Err(Refused::Unknown),
        };
    };
    let tracked = crate::checkpoint::tracks(true, &plugin.limits);
    if tracked {
        // Before it joins anything here (see `checkpoint`).
        conn.track();
    }
    let parts = Parts { conn, plugin, hub: state.hub.clone(), pool: state.pool.clone(), settings: state.ws.clone() };
    let brought = match bring(state, &backplane, &parts, token, last).await {
        // No host holds it: if its host crashed, its checkpoint may.
        Err(Refused::Unknown) if tracked => recover(state, &backplane, &parts, token, last).await,
        other => other,
    };
    match brought {
        Ok(packed) => {
            backplane.arrived(id, true);
            Ok(Taken::Over(settle(state, parts, slot, version, packed)))
        }
        Err(why) => {
            // Whatever it joined here stays the holder's cluster-wide.
            state.hub.hand_over(id);
            backplane.arrived(id, false);
            tracing::debug!(conn = id, reason = why.as_str(), "could not take the session over");
            Err(why)
        }
    }
}

/// Asks for the session, joins its rooms and takes what its holder packed.
async fn bring(
    state: &AppState,
    backplane: &Backplane,
    parts: &Parts,
    token: &str,
    last: u64,
) -> Result<Packed, Refused> {
    let conn = &parts.conn;
    if !backplane.arrive(&conn.id).await {
        tracing::debug!(conn = &*conn.id, "could not listen for the session's sends");
        return Err(Refused::Unknown);
    }
    let taken = backplane.ask(&parts.plugin.name, token, last).await.map_err(|why| {
        tracing::debug!(conn = &*conn.id, "no host handed the session over: {why}");
        refusal(&why)
    })?;
    let mut points = Vec::with_capacity(taken.rooms.len());
    for room in &taken.rooms {
        let point = state.hub.join_moved(conn, room).await;
        let Some(point) = point else {
            tracing::debug!(conn = &*conn.id, "could not join the session's rooms");
            return Err(Refused::Unknown);
        };
        points.push(point);
    }
    let Some(bytes) = backplane.commit(&taken, points).await else {
        tracing::debug!(conn = &*conn.id, "the session's host did not hand it over");
        return Err(Refused::Unknown);
    };
    let packed = Packed::decode(&bytes).map_err(|e| {
        tracing::warn!(conn = &*conn.id, "a session from another host could not be read: {e}");
        Refused::Unknown
    })?;
    if packed.id != *conn.id {
        return Err(Refused::Unknown);
    }
    Ok(packed)
}

/// Recovers session `token` from the checkpoint its crashed host left
/// (see `checkpoint`): rejoins its rooms, and owes its client first what
/// each room's history holds past the checkpoint the client had.
async fn recover(
    state: &AppState,
    backplane: &Backplane,
    parts: &Parts,
    token: &str,
    last: u64,
) -> Result<Packed, Refused> {
    let conn = &parts.conn;
    let (_, secret) = token.split_once('.').ok_or(Refused::Unknown)?;
    let (owner, bytes) = backplane.read_checkpoint(&conn.id).await.ok_or(Refused::Unknown)?;
    let record = Record::decode(&bytes).map_err(|e| {
        tracing::warn!(conn = &*conn.id, "a session's checkpoint could not be read: {e}");
        Refused::Unknown
    })?;
    if record.id != *conn.id || !crate::resume::secret_matches(&record.secret, secret) {
        return Err(Refused::Unknown);
    }
    if !backplane.claim_checkpoint(&conn.id, &owner).await {
        return Err(Refused::Unknown);
    }
    let (owed, repeats) = record.owed(last);
    let metrics = &state.sessions.metrics;
    let mut recovered = Vec::new();
    for (room, after) in &owed {
        let Some(point) = state.hub.join_moved(conn, room).await else {
            tracing::debug!(conn = &*conn.id, "could not join the recovered session's rooms");
            return Err(Refused::Unknown);
        };
        // What the history no longer holds (trimmed, expired) is lost.
        let mut next = *after;
        while next < point {
            let Ok(page) = state.hub.history(&parts.plugin.name, room, Some(next), MAX_HISTORY_READ).await else {
                break;
            };
            let before = next;
            for kept in page.into_iter().take_while(|k| k.offset <= point) {
                metrics.recovery_lost.inc_by(kept.offset - next - 1);
                next = kept.offset;
                recovered.push(kept.message);
            }
            if next == before {
                break;
            }
        }
        metrics.recovery_lost.inc_by(point.saturating_sub(next));
    }
    let rooms: Vec<String> = owed.into_iter().map(|(room, _)| room).collect();
    backplane.disown_for(&owner, &parts.plugin.name, &rooms, &conn.id).await;
    metrics.recovered.inc();
    metrics.recovered_broadcasts.inc_by(recovered.len() as u64);
    metrics.recovery_repeats_at_most.inc_by(repeats.min(recovered.len() as u64));
    tracing::info!(
        conn = &*conn.id,
        host = owner,
        broadcasts = recovered.len(),
        "recovered a session whose host is gone from its checkpoint"
    );
    Ok(Packed {
        id: record.id,
        secret: record.secret,
        subprotocol: record.subprotocol,
        state: record.state,
        rooms,
        timers: record.timers,
        replay: PackedReplay::owed(last, recovered),
        received: record.received,
    })
}

/// The session's state here, as its holder packed it.
fn settle(state: &AppState, parts: Parts, slot: Slot, version: Arc<plugin::Version>, packed: Packed) -> TakenOver {
    let Parts { conn, plugin, .. } = &parts;
    conn.arrived();
    let Packed { secret, subprotocol, state: value, timers, replay, received, .. } = packed;
    conn.set_state(value);
    let timers = timers
        .into_iter()
        .filter_map(|(name, schedule, due_in)| {
            Some((name, Schedule::decode(&schedule)?, std::time::Duration::from_millis(due_in)))
        })
        .collect();
    let set = conn.timers.import(timers, plugin.limits.max_timers);
    plugin.metrics.timers.connection_timers.inc_by(i64::try_from(set).unwrap_or(0));
    let limits = plugin.limits;
    let buffer = limits.resume_buffer.max(state.ws.max_message_size).in_memory();
    let replay = Replay::unpack(replay, buffer, state.sessions.budget.clone());
    let session = state.sessions.adopt(conn.clone(), secret, subprotocol, limits.resume_grace, replay);
    if conn.is_tracked() {
        // Its checkpoint is this host's from now on.
        state.sessions.changed(&conn.id);
    }
    plugin.metrics.connections_open.inc();
    state.sessions.metrics.moved_in.inc();
    plugin.console.publish(crate::console::Kind::Session, Some(&conn.id), Some("moved"), || {
        "the session moved here from another host; its client resumed it".to_string()
    });
    let resume = Resumable::moved(session, state.sessions.clone(), received);
    TakenOver { parts, slot, version, resume }
}

/// The refusal a holder's reason names.
fn refusal(why: &str) -> Refused {
    match why {
        "overflow" => Refused::Overflow,
        "gap" => Refused::Gap,
        "closed" => Refused::Closed,
        _ => Refused::Unknown,
    }
}
