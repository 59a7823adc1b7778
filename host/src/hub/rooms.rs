//! Rooms: named groups of one plugin's connections, for broadcast.
//! In-process; each plugin has its own namespace, so plugins never see each
//! other's rooms.
//!
//! The rooms are split over [`SHARDS`] locks by a hash of plugin and room:
//! a join or leave locks only its room's shard, so a storm of joins does
//! not make every broadcast and every other join of the host wait on one
//! lock (whose holder, a call on the low-priority plugin lane, the kernel
//! may pause while threads of higher priority wait for it).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio_tungstenite::tungstenite::Message;

use super::Connection;

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 128;
/// Most rooms one connection may be in.
pub const MAX_ROOMS_PER_CONNECTION: usize = 256;
/// Most ids one `members` call returns.
pub const MAX_MEMBERS_LISTED: usize = 1000;

/// Why a room operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room name must be 1 to {MAX_ROOM_NAME} bytes, got {0}")]
    BadName(usize),
    #[error("a connection may be in at most {MAX_ROOMS_PER_CONNECTION} rooms")]
    TooManyRooms,
}

/// A member's join point while its join is being written to Redis: it gets
/// this host's broadcasts but none from other hosts yet.
pub const JOINING: u64 = u64::MAX;

/// One connection in one room.
struct Member {
    conn: Arc<Connection>,
    /// Broadcasts from other hosts reach it only if the cluster numbered
    /// them after this (see `backplane`): one published before it joined
    /// but received late must not arrive after its welcome.
    since: AtomicU64,
    /// `NUMBERED`, `HELD`, or 0 for a member served as usual.
    mode: AtomicU8,
}

/// The member takes only broadcasts the cluster numbered, this host's own
/// included (they come back from Redis): a session moving between hosts,
/// whose two hosts split the stream by number (see `resume`).
const NUMBERED: u8 = 1;
/// The member's broadcasts are held with their numbers instead of queued:
/// its session is leaving, and only those up to the new host's join point
/// go with it ([`Connection::take_held`]).
const HELD: u8 = 2;

/// The members of one room.
#[derive(Default)]
struct Room {
    members: HashMap<Arc<str>, Member>,
    /// How many are `NUMBERED`: a broadcast this host published comes back
    /// to it only for them.
    numbered: usize,
}

/// Locks the rooms are split over.
pub const SHARDS: usize = 64;

/// plugin → room → members, for the rooms of one shard.
type Shard = HashMap<Arc<str>, HashMap<String, Room>>;

/// Every room of every plugin on this host.
pub struct Rooms {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
}

impl Default for Rooms {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| RwLock::default()).collect(), hasher: RandomState::new() }
    }
}

pub fn check_name(room: &str) -> Result<(), RoomError> {
    if room.is_empty() || room.len() > MAX_ROOM_NAME {
        return Err(RoomError::BadName(room.len()));
    }
    Ok(())
}

impl Rooms {
    fn shard(&self, plugin: &str, room: &str) -> &RwLock<Shard> {
        let hash = self.hasher.hash_one((plugin, room));
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// Adds `conn` to `room` with join point `since` (0: every broadcast).
    /// False if it was already a member.
    pub fn join(&self, conn: &Arc<Connection>, room: &str, since: u64) -> Result<bool, RoomError> {
        self.join_as(conn, room, since, 0)
    }

    /// [`Self::join`] for a session that came from another host: it takes
    /// only numbered broadcasts, for as long as it is here; until its join
    /// point is known ([`Self::settle`]) they are held.
    pub fn join_numbered(&self, conn: &Arc<Connection>, room: &str) -> Result<bool, RoomError> {
        self.join_as(conn, room, JOINING, NUMBERED | HELD)
    }

    /// A moving session's join point in `room` is known: what was held
    /// for it there after that point is queued, in order, and the rest
    /// dropped (its old host hands those over).
    pub fn settle(&self, conn: &Connection, room: &str, since: u64) {
        let Ok(all) = self.shard(&conn.plugin, room).write() else { return };
        let Some(member) =
            all.get(&conn.plugin).and_then(|rooms| rooms.get(room)).and_then(|r| r.members.get(&conn.id))
        else {
            return;
        };
        member.since.store(since, Ordering::Release);
        member.mode.fetch_and(!HELD, Ordering::AcqRel);
        conn.mark_join(room, since);
        // Under the room's lock: no broadcast of it comes between.
        for held in conn.take_held() {
            if held.room != room {
                let _ = conn.hold(&held.room, held.seq, held.message);
            } else if held.seq > since {
                let _ = conn.send_numbered(held.message, room, held.seq);
            }
        }
    }

    fn join_as(&self, conn: &Arc<Connection>, room: &str, since: u64, mode: u8) -> Result<bool, RoomError> {
        check_name(room)?;
        let mut joined = conn.rooms.lock().map_err(|_| RoomError::TooManyRooms)?;
        if joined.iter().any(|r| r == room) {
            return Ok(false);
        }
        if joined.len() >= MAX_ROOMS_PER_CONNECTION {
            return Err(RoomError::TooManyRooms);
        }
        // A tracked session's host checkpoints where it stands in each
        // room's numbering: every broadcast it takes must carry a number.
        let mode = if conn.is_tracked() { mode | NUMBERED } else { mode };
        if let Ok(mut all) = self.shard(&conn.plugin, room).write() {
            let rooms = all.entry(conn.plugin.clone()).or_default();
            let member = Member { conn: conn.clone(), since: AtomicU64::new(since), mode: AtomicU8::new(mode) };
            let entry = rooms.entry(room.to_string()).or_default();
            entry.numbered += usize::from(mode & NUMBERED != 0);
            entry.members.insert(conn.id.clone(), member);
            joined.push(room.to_string());
        }
        Ok(true)
    }

    /// Sets a member's join point once its join is in Redis.
    pub fn set_since(&self, plugin: &str, room: &str, id: &str, since: u64) {
        let Ok(all) = self.shard(plugin, room).read() else { return };
        if let Some(member) = all.get(plugin).and_then(|rooms| rooms.get(room)).and_then(|r| r.members.get(id)) {
            member.since.store(since, Ordering::Release);
            member.conn.mark_join(room, since);
        }
    }

    /// A session starts leaving for another host: in each of its rooms it
    /// takes only numbered broadcasts from now on, held with their numbers.
    /// Returns its join point in each, in the order of `rooms`.
    pub fn hold(&self, conn: &Connection, rooms: &[String]) -> Vec<u64> {
        rooms
            .iter()
            .map(|room| {
                let Ok(mut all) = self.shard(&conn.plugin, room).write() else { return 0 };
                let Some(r) = all.get_mut(&conn.plugin).and_then(|rooms| rooms.get_mut(room.as_str())) else {
                    return 0;
                };
                let Some(member) = r.members.get(&conn.id) else { return 0 };
                let before = member.mode.fetch_or(NUMBERED | HELD, Ordering::AcqRel);
                let since = member.since.load(Ordering::Acquire);
                r.numbered += usize::from(before & NUMBERED == 0);
                since
            })
            .collect()
    }

    /// A connection whose session is checkpointed from now on (see
    /// `Connection::track`): in the rooms it is already in, it takes only
    /// numbered broadcasts, marked from its join point.
    pub fn track(&self, conn: &Connection) {
        for room in conn.rooms() {
            let Ok(mut all) = self.shard(&conn.plugin, &room).write() else { continue };
            let Some(r) = all.get_mut(&conn.plugin).and_then(|rooms| rooms.get_mut(room.as_str())) else { continue };
            let Some(member) = r.members.get(&conn.id) else { continue };
            let before = member.mode.fetch_or(NUMBERED, Ordering::AcqRel);
            let since = member.since.load(Ordering::Acquire);
            r.numbered += usize::from(before & NUMBERED == 0);
            if since != JOINING {
                conn.mark_join(&room, since);
            }
        }
    }

    /// The move did not happen: the session's broadcasts are queued again
    /// (it stays numbered, so none arrives twice).
    pub fn unhold(&self, conn: &Connection) {
        for room in conn.rooms() {
            let Ok(all) = self.shard(&conn.plugin, &room).read() else { continue };
            if let Some(member) =
                all.get(&conn.plugin).and_then(|rooms| rooms.get(&room)).and_then(|r| r.members.get(&conn.id))
            {
                member.mode.fetch_and(!HELD, Ordering::AcqRel);
            }
        }
        conn.release_held();
    }

    /// After reconnecting to Redis, whose numbering may have restarted:
    /// every member takes every broadcast from now on.
    pub fn reset_since(&self) {
        for shard in &self.shards {
            let Ok(all) = shard.read() else { continue };
            for member in all.values().flat_map(|rooms| rooms.values()).flat_map(|r| r.members.values()) {
                member.since.store(0, Ordering::Release);
            }
        }
    }

    pub fn leave(&self, conn: &Connection, room: &str) -> Result<(), RoomError> {
        check_name(room)?;
        if let Ok(mut joined) = conn.rooms.lock() {
            joined.retain(|r| r != room);
        }
        conn.unmark(room);
        self.remove_member(&conn.plugin, room, &conn.id);
        Ok(())
    }

    /// Takes a closed connection out of every room it was in; returns them.
    pub fn leave_all(&self, conn: &Connection) -> Vec<String> {
        let joined = conn.rooms.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
        for room in &joined {
            self.remove_member(&conn.plugin, room, &conn.id);
        }
        joined
    }

    /// Every (plugin, room, connection) on this host.
    pub fn snapshot(&self) -> Vec<(Arc<str>, String, Arc<str>)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let Ok(all) = shard.read() else { continue };
            for (plugin, rooms) in all.iter() {
                for (room, r) in rooms {
                    out.extend(r.members.keys().map(|id| (plugin.clone(), room.clone(), id.clone())));
                }
            }
        }
        out
    }

    fn remove_member(&self, plugin: &str, room: &str, id: &str) {
        let Ok(mut all) = self.shard(plugin, room).write() else { return };
        let Some(rooms) = all.get_mut(plugin) else { return };
        if let Some(r) = rooms.get_mut(room) {
            if let Some(member) = r.members.remove(id) {
                r.numbered -= usize::from(member.mode.load(Ordering::Acquire) & NUMBERED != 0);
            }
            if r.members.is_empty() {
                rooms.remove(room);
            }
        }
        if rooms.is_empty() {
            all.remove(plugin);
        }
    }

    /// Queues `message` for every member of `room` except `except`; returns
    /// how many it was queued for. Members whose queue is full are closed
    /// (1008) by their connection, not waited for.
    pub fn broadcast(&self, plugin: &str, room: &str, message: &Message, except: Option<&str>) -> u32 {
        self.deliver(plugin, room, message, except, None)
    }

    /// The same for a broadcast another host published as number `seq`:
    /// only members that joined before it was numbered get it.
    pub fn broadcast_from_cluster(
        &self,
        plugin: &str,
        room: &str,
        message: &Message,
        except: Option<&str>,
        seq: u64,
    ) -> u32 {
        self.deliver(plugin, room, message, except, Some(seq))
    }

    /// A broadcast this host published, come back from Redis as number
    /// `seq`: only its `NUMBERED` members take it (the others had it when
    /// it was published).
    pub fn broadcast_looped(&self, plugin: &str, room: &str, message: &Message, except: Option<&str>, seq: u64) {
        self.each_numbered(plugin, room, except, |member, mode| {
            if Self::after_join(member, mode, seq) {
                let _ = Self::give(member, mode, room, seq, message);
            }
        });
    }

    /// A broadcast this host published that Redis did not take: its
    /// `NUMBERED` members, which wait for it to come back numbered, get it
    /// as it is (as everything acts on this host alone while Redis is
    /// unreachable).
    pub fn broadcast_unpublished(&self, plugin: &str, room: &str, message: &Message, except: Option<&str>) {
        self.each_numbered(plugin, room, except, |member, mode| {
            if mode & HELD == 0 {
                let _ = member.conn.send(message.clone());
            }
        });
    }

    /// Calls `f` with each `NUMBERED` member of `room` but `except`, and
    /// its mode, under the room's lock.
    fn each_numbered(&self, plugin: &str, room: &str, except: Option<&str>, mut f: impl FnMut(&Member, u8)) {
        let Ok(all) = self.shard(plugin, room).read() else { return };
        let Some(r) = all.get(plugin).and_then(|rooms| rooms.get(room)) else { return };
        if r.numbered == 0 {
            return;
        }
        for (id, member) in &r.members {
            let mode = member.mode.load(Ordering::Acquire);
            if mode & NUMBERED != 0 && except != Some(&**id) {
                f(member, mode);
            }
        }
    }

    fn deliver(&self, plugin: &str, room: &str, message: &Message, except: Option<&str>, seq: Option<u64>) -> u32 {
        let Ok(all) = self.shard(plugin, room).read() else { return 0 };
        let Some(r) = all.get(plugin).and_then(|rooms| rooms.get(room)) else { return 0 };
        let mut delivered = 0;
        for (id, member) in &r.members {
            if except == Some(&**id) {
                continue;
            }
            let mode = member.mode.load(Ordering::Acquire);
            let Some(seq) = seq else {
                if mode & NUMBERED != 0 {
                    // It comes back numbered (see `broadcast_looped`).
                    delivered += 1;
                } else if member.conn.send(message.clone()).is_ok() {
                    // The message is reference-counted: a clone per member is cheap.
                    delivered += 1;
                }
                continue;
            };
            if !Self::after_join(member, mode, seq) {
                continue;
            }
            if Self::give(member, mode, room, seq, message) {
                delivered += 1;
            }
        }
        delivered
    }

    /// Whether numbered broadcast `seq` is after the member's join point;
    /// while a moving session's join is being written, every one is (it is
    /// held, and sorted out by [`Self::settle`]).
    fn after_join(member: &Member, mode: u8, seq: u64) -> bool {
        let since = member.since.load(Ordering::Acquire);
        since < seq || (since == JOINING && mode & HELD != 0)
    }

    /// Queues numbered broadcast `seq`, or holds it while its member moves.
    fn give(member: &Member, mode: u8, room: &str, seq: u64, message: &Message) -> bool {
        if mode & HELD != 0 {
            member.conn.hold(room, seq, message.clone())
        } else {
            member.conn.send_numbered(message.clone(), room, seq).is_ok()
        }
    }

    pub fn count(&self, plugin: &str, room: &str) -> u32 {
        let Ok(all) = self.shard(plugin, room).read() else { return 0 };
        let n = all.get(plugin).and_then(|rooms| rooms.get(room)).map_or(0, |r| r.members.len());
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub fn members(&self, plugin: &str, room: &str, limit: usize) -> Vec<String> {
        let Ok(all) = self.shard(plugin, room).read() else { return Vec::new() };
        let Some(r) = all.get(plugin).and_then(|rooms| rooms.get(room)) else { return Vec::new() };
        r.members.keys().take(limit.min(MAX_MEMBERS_LISTED)).map(|id| id.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::history::History;
    use crate::hub::{ByteBudget, Hub, Outbound, QueueLimits, kv::KvLimits};

    fn received(conn: &Connection) -> Vec<String> {
        let (items, bytes) = conn.take_queued(usize::MAX);
        conn.written(bytes);
        items
            .into_iter()
            .filter_map(|item| match item {
                Outbound::Message(Message::Text(t)) => Some(t.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_session_that_moved_takes_numbered_broadcasts_only_and_one_leaving_holds_them() {
        let hub =
            Hub::new(10, KvLimits { max_keys: 10, max_value: 10, max_bytes: 100 }, Default::default(), History::off());
        let queue = || QueueLimits { messages: 16, bytes: 1 << 10, outbound: ByteBudget::new(1 << 20) };
        let usual = hub.register("p".into(), queue());
        let moved = hub.register("p".into(), queue());
        assert!(hub.rooms.join(&usual, "r", 0).unwrap());
        assert!(hub.rooms.join_numbered(&moved, "r").unwrap());
        // Until its join point is known, numbered broadcasts are held.
        hub.rooms.broadcast_from_cluster("p", "r", &Message::text("before its join"), None, 3);
        hub.rooms.broadcast_from_cluster("p", "r", &Message::text("m4"), None, 4);
        assert!(received(&moved).is_empty());
        hub.rooms.settle(&moved, "r", 3);
        assert_eq!(received(&moved), ["m4"]);
        assert_eq!(received(&usual), ["before its join", "m4"]);

        // This host's own broadcast: the usual member has it at once, the
        // moved one when it comes back from Redis, numbered.
        assert_eq!(hub.rooms.broadcast("p", "r", &Message::text("own"), None), 2);
        assert_eq!(received(&usual), ["own"]);
        assert!(received(&moved).is_empty());
        hub.rooms.broadcast_looped("p", "r", &Message::text("own"), None, 5);
        hub.rooms.broadcast_looped("p", "r", &Message::text("not after its join"), None, 3);
        assert_eq!(received(&moved), ["own"]);
        assert!(received(&usual).is_empty(), "no second copy");

        // Leaving: numbered broadcasts are held with their numbers.
        assert_eq!(hub.rooms.hold(&usual, &["r".to_string()]), [0]);
        hub.rooms.broadcast_from_cluster("p", "r", &Message::text("m6"), None, 6);
        hub.rooms.broadcast("p", "r", &Message::text("own, unnumbered"), None);
        assert!(received(&usual).is_empty());
        let held: Vec<(u64, String)> =
            usual.take_held().into_iter().map(|h| (h.seq, h.message.to_text().unwrap().to_string())).collect();
        assert_eq!(held, [(6, "m6".to_string())]);
        hub.rooms.broadcast_from_cluster("p", "r", &Message::text("m7"), None, 7);
        // The move fell through: what was held is queued, and it stays numbered.
        hub.rooms.unhold(&usual);
        assert_eq!(received(&usual), ["m7"]);
    }

    #[test]
    fn broadcasts_from_other_hosts_reach_members_from_their_join_point_on() {
        let hub =
            Hub::new(10, KvLimits { max_keys: 10, max_value: 10, max_bytes: 100 }, Default::default(), History::off());
        let queue = || QueueLimits { messages: 16, bytes: 1 << 10, outbound: ByteBudget::new(1 << 20) };
        let early = hub.register("p".into(), queue());
        let late = hub.register("p".into(), queue());
        let joining = hub.register("p".into(), queue());
        assert!(hub.rooms.join(&early, "r", 0).unwrap());
        assert!(hub.rooms.join(&late, "r", 7).unwrap());
        assert!(hub.rooms.join(&joining, "r", JOINING).unwrap());
        assert!(!hub.rooms.join(&late, "r", 0).unwrap(), "a second join keeps the first join point");

        for seq in [5, 7, 8] {
            hub.rooms.broadcast_from_cluster("p", "r", &Message::text(format!("m{seq}")), None, seq);
        }
        // This host's own broadcasts reach every member at once.
        assert_eq!(hub.rooms.broadcast("p", "r", &Message::text("local"), None), 3);

        assert_eq!(received(&early), ["m5", "m7", "m8", "local"]);
        assert_eq!(received(&late), ["m8", "local"]);
        assert_eq!(received(&joining), ["local"]);

        hub.rooms.set_since("p", "r", &joining.id, 8);
        hub.rooms.broadcast_from_cluster("p", "r", &Message::text("m9"), None, 9);
        assert_eq!(received(&joining), ["m9"]);
        assert_eq!(received(&late), ["m9"]);

        // After a reconnection Redis may number from 1 again.
        hub.rooms.reset_since();
        hub.rooms.broadcast_from_cluster("p", "r", &Message::text("m1"), None, 1);
        assert_eq!(received(&late), ["m1"]);
    }
}
