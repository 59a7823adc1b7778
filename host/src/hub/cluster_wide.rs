//! Where an operation goes: this host's connections and rooms, and, when
//! the host is part of a cluster, the other hosts through its [`Cluster`] port.
//! Without a cluster every call here is purely local.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::history::{HistoryError, Kept, MAX_HISTORY_READ};
use super::rooms::RoomError;
use super::{Cluster, Connection, DeliveryError, Hub};

impl Hub {
    /// The cluster, for connection `id` that is not here: it belongs to
    /// another host, or its session moved to one (see `resume`).
    fn remote(&self, id: &str) -> Option<&Arc<dyn Cluster>> {
        let cluster = self.cluster()?;
        Hub::host_of(id).map(|_| cluster)
    }

    /// Queues `message` for connection `id` of `plugin` (any plugin when
    /// `None`: the operator's API), on whichever host it is.
    pub async fn send_to(&self, plugin: Option<&str>, id: &str, message: Message) -> Result<(), DeliveryError> {
        let local = match plugin {
            Some(plugin) => self.get(plugin, id),
            None => self.get_any(id),
        };
        // One being taken over may stay where it is (a wrong secret): it is
        // reached where it lives for now.
        if let Some(conn) = local.filter(|c| !c.is_arriving()) {
            return conn.send(message);
        }
        match self.remote(id) {
            Some(cluster) => cluster.send(plugin, id, &message).await,
            None => Err(DeliveryError::NotFound),
        }
    }

    /// Starts closing a connection of another host (local ones are closed
    /// directly by the caller, which may need the close in order).
    pub async fn close_remote(&self, plugin: &str, id: &str, frame: &CloseFrame) -> Result<(), DeliveryError> {
        match self.remote(id) {
            Some(cluster) => cluster.close(plugin, id, frame).await,
            None => Err(DeliveryError::NotFound),
        }
    }

    pub async fn join(&self, conn: &Arc<Connection>, room: &str) -> Result<(), RoomError> {
        let Some(cluster) = self.cluster() else {
            self.rooms.join(conn, room, 0)?;
            return Ok(());
        };
        // Other hosts' broadcasts reach the new member only from its join
        // point in the cluster's numbering, known once the join is written.
        let new = self.rooms.join(conn, room, super::rooms::JOINING)?;
        let since = cluster.join(&conn.plugin, room, &conn.id).await;
        if new {
            self.rooms.set_since(&conn.plugin, room, &conn.id, since.unwrap_or(0));
        }
        Ok(())
    }

    /// Joins a session that moved here from another host to `room`, which
    /// it was in there: it takes only numbered broadcasts, from its join
    /// point here, which is returned (`None` when the cluster could not be
    /// told).
    pub async fn join_moved(&self, conn: &Arc<Connection>, room: &str) -> Option<u64> {
        let cluster = self.cluster()?;
        self.rooms.join_numbered(conn, room).ok()?;
        let since = cluster.join(&conn.plugin, room, &conn.id).await?;
        self.rooms.settle(conn, room, since);
        Some(since)
    }

    pub async fn leave(&self, conn: &Connection, room: &str) -> Result<(), RoomError> {
        self.rooms.leave(conn, room)?;
        if let Some(cluster) = self.cluster() {
            cluster.leave(&conn.plugin, room, &conn.id).await;
        }
        Ok(())
    }

    /// Queues `message` for every member of `room`, cluster-wide, except
    /// `except`. Returns the members it was queued for here plus the
    /// members on other hosts, to which it was published.
    pub async fn broadcast(&self, plugin: &str, room: &str, message: &Message, except: Option<&str>) -> u32 {
        let here = self.rooms.broadcast(plugin, room, message, except);
        let keep = self.history.keep(plugin);
        let Some(cluster) = self.cluster() else {
            if keep.is_on() {
                self.history.append(plugin, room, message, keep);
            }
            return here;
        };
        let local_members = u64::from(self.rooms.count(plugin, room));
        match cluster.broadcast(plugin, room, message, except, keep).await {
            Some(cluster_members) => {
                let elsewhere = cluster_members.saturating_sub(local_members);
                u32::try_from(u64::from(here) + elsewhere).unwrap_or(u32::MAX)
            }
            None => {
                self.rooms.broadcast_unpublished(plugin, room, message, except);
                here
            }
        }
    }

    /// Up to `limit` of `room`'s last broadcasts (at most
    /// [`MAX_HISTORY_READ`]), oldest first: those after offset `since`, or
    /// the latest ones. Scaled out, from Redis.
    pub async fn history(
        &self,
        plugin: &str,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Kept>, HistoryError> {
        if !self.history.keep(plugin).is_on() {
            return Err(HistoryError::Off);
        }
        let limit = limit.min(MAX_HISTORY_READ);
        match self.cluster() {
            Some(cluster) => cluster.history(plugin, room, since, limit).await,
            None => Ok(self.history.read(plugin, room, since, limit)),
        }
    }

    /// Members of `room` across the cluster (this host's alone while Redis
    /// is unreachable).
    pub async fn count(&self, plugin: &str, room: &str) -> u32 {
        if let Some(cluster) = self.cluster()
            && let Some(n) = cluster.count(plugin, room).await
        {
            return n;
        }
        self.rooms.count(plugin, room)
    }

    pub async fn members(&self, plugin: &str, room: &str, limit: usize) -> Vec<String> {
        let limit = limit.min(super::rooms::MAX_MEMBERS_LISTED);
        if let Some(cluster) = self.cluster()
            && let Some(listed) = cluster.members(plugin, room, limit).await
        {
            return listed;
        }
        self.rooms.members(plugin, room, limit)
    }
}
