//! Rooms: named groups of one plugin's connections, for broadcast.
//! In-process; each plugin has its own namespace, so plugins never see each
//! other's rooms.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio_tungstenite::tungstenite::Message;

use super::{Connection, DeliveryError};

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

type Members = HashMap<Arc<str>, Arc<Connection>>;

/// Every room of every plugin on this host.
#[derive(Default)]
pub struct Rooms {
    /// plugin → room → members.
    by_plugin: RwLock<HashMap<Arc<str>, HashMap<String, Members>>>,
}

fn check_name(room: &str) -> Result<(), RoomError> {
    if room.is_empty() || room.len() > MAX_ROOM_NAME {
        return Err(RoomError::BadName(room.len()));
    }
    Ok(())
}

impl Rooms {
    pub fn join(&self, conn: &Arc<Connection>, room: &str) -> Result<(), RoomError> {
        check_name(room)?;
        let mut joined = conn.rooms.lock().map_err(|_| RoomError::TooManyRooms)?;
        if joined.iter().any(|r| r == room) {
            return Ok(());
        }
        if joined.len() >= MAX_ROOMS_PER_CONNECTION {
            return Err(RoomError::TooManyRooms);
        }
        if let Ok(mut all) = self.by_plugin.write() {
            let rooms = all.entry(conn.plugin.clone()).or_default();
            rooms.entry(room.to_string()).or_default().insert(conn.id.clone(), conn.clone());
            joined.push(room.to_string());
        }
        Ok(())
    }

    pub fn leave(&self, conn: &Connection, room: &str) -> Result<(), RoomError> {
        check_name(room)?;
        if let Ok(mut joined) = conn.rooms.lock() {
            joined.retain(|r| r != room);
        }
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
        let Ok(all) = self.by_plugin.read() else { return Vec::new() };
        let mut out = Vec::new();
        for (plugin, rooms) in all.iter() {
            for (room, members) in rooms {
                out.extend(members.keys().map(|id| (plugin.clone(), room.clone(), id.clone())));
            }
        }
        out
    }

    fn remove_member(&self, plugin: &str, room: &str, id: &str) {
        let Ok(mut all) = self.by_plugin.write() else { return };
        let Some(rooms) = all.get_mut(plugin) else { return };
        if let Some(members) = rooms.get_mut(room) {
            members.remove(id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Queues `message` for every member of `room` except `except`; returns
    /// how many it was queued for. Members whose queue is full are closed
    /// (1008) by their connection, not waited for.
    pub fn broadcast(&self, plugin: &str, room: &str, message: &Message, except: Option<&str>) -> u32 {
        let Ok(all) = self.by_plugin.read() else { return 0 };
        let Some(members) = all.get(plugin).and_then(|rooms| rooms.get(room)) else { return 0 };
        let mut delivered = 0;
        for (id, conn) in members {
            if except == Some(&**id) {
                continue;
            }
            // The message is reference-counted: a clone per member is cheap.
            match conn.send(message.clone()) {
                Ok(()) => delivered += 1,
                Err(DeliveryError::QueueFull | DeliveryError::Closed | DeliveryError::NotFound) => {}
            }
        }
        delivered
    }

    pub fn count(&self, plugin: &str, room: &str) -> u32 {
        let Ok(all) = self.by_plugin.read() else { return 0 };
        let n = all.get(plugin).and_then(|rooms| rooms.get(room)).map_or(0, |m| m.len());
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub fn members(&self, plugin: &str, room: &str, limit: usize) -> Vec<String> {
        let Ok(all) = self.by_plugin.read() else { return Vec::new() };
        let Some(members) = all.get(plugin).and_then(|rooms| rooms.get(room)) else { return Vec::new() };
        members.keys().take(limit.min(MAX_MEMBERS_LISTED)).map(|id| id.to_string()).collect()
    }
}
