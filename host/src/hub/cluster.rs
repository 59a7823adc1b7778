//! The hub's port to the other hosts of a cluster. The hub and the plugin
//! runtime call it; the backplane (a layer above, which knows Redis)
//! implements it and is attached at start-up. A host without a cluster has
//! none, and every operation stays local.
//!
//! Futures are boxed so the port can be a trait object: they are made only
//! on cluster operations, never on a single host's message path.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::DeliveryError;
use super::history::{HistoryError, Keep, Kept};
use super::kv::KvError;

/// What the hub asks of the rest of the cluster. `None` answers mean the
/// cluster could not be asked (its store is unreachable): callers fall
/// back to what this host knows.
pub trait Cluster: Send + Sync {
    /// Records a join cluster-wide; returns the member's join point in the
    /// room's broadcast numbering.
    fn join<'a>(&'a self, plugin: &'a str, room: &'a str, conn: &'a str) -> BoxFuture<'a, Option<u64>>;

    fn leave<'a>(&'a self, plugin: &'a str, room: &'a str, conn: &'a str) -> BoxFuture<'a, ()>;

    /// A closed connection left `rooms`; recorded in the background.
    fn left_all(&self, plugin: &str, rooms: Vec<String>, conn: &str);

    /// A session that moved to another host left `rooms` here; it stays a
    /// member cluster-wide (its new host wrote its own entries). Recorded
    /// in the background.
    fn disowned(&self, plugin: &str, rooms: Vec<String>, conn: &str);

    /// Publishes a broadcast already delivered to this host's members,
    /// and keeps it in the room's history as `keep` says; returns the
    /// room's size across the cluster.
    fn broadcast<'a>(
        &'a self,
        plugin: &'a str,
        room: &'a str,
        message: &'a Message,
        except: Option<&'a str>,
        keep: Keep,
    ) -> BoxFuture<'a, Option<u64>>;

    /// Up to `limit` entries of the room's history, oldest first: those
    /// after offset `since`, or the latest ones.
    fn history<'a>(
        &'a self,
        plugin: &'a str,
        room: &'a str,
        since: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Kept>, HistoryError>>;

    fn count<'a>(&'a self, plugin: &'a str, room: &'a str) -> BoxFuture<'a, Option<u32>>;

    fn members<'a>(&'a self, plugin: &'a str, room: &'a str, limit: usize) -> BoxFuture<'a, Option<Vec<String>>>;

    /// Sends to a connection of another host (`plugin` `None`: any plugin).
    fn send<'a>(
        &'a self,
        plugin: Option<&'a str>,
        to: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;

    fn close<'a>(
        &'a self,
        plugin: &'a str,
        to: &'a str,
        frame: &'a CloseFrame,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// The cluster's key-value store, shared by every host. `kv_get`
    /// answers `None` both for an absent key and an unreachable store (the
    /// WIT `get` has no error case).
    fn kv_get<'a>(&'a self, plugin: &'a str, key: &'a str) -> BoxFuture<'a, Option<Vec<u8>>>;

    fn kv_set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>>;

    fn kv_delete<'a>(&'a self, plugin: &'a str, key: &'a str) -> BoxFuture<'a, bool>;

    fn kv_increment<'a>(&'a self, plugin: &'a str, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64, KvError>>;

    /// Writes room timer `name` of `room` cluster-wide (`schedule` as
    /// [`super::timers::Schedule::encode`] writes it) and takes its lease
    /// unless another host runs it with that schedule: whether this host is
    /// to run it.
    fn timer_define<'a>(
        &'a self,
        plugin: &'a str,
        room: &'a str,
        name: &'a str,
        schedule: &'a str,
    ) -> BoxFuture<'a, Option<bool>>;

    /// Before a tick, and to renew the lease between ticks: whether this
    /// host runs the timer now (taking it over if its holder's lease ran
    /// out), and its schedule.
    fn timer_turn<'a>(&'a self, plugin: &'a str, room: &'a str, name: &'a str) -> BoxFuture<'a, Option<TimerTurn>>;

    /// Removes the timer cluster-wide (its holder stops at its next turn);
    /// whether it existed.
    fn timer_cancel<'a>(&'a self, plugin: &'a str, room: &'a str, name: &'a str) -> BoxFuture<'a, Option<bool>>;

    /// This host stops running these timers: their leases end now, so
    /// another host takes them over at once.
    fn timer_release<'a>(&'a self, timers: &'a [(Arc<str>, Arc<str>, Arc<str>)]) -> BoxFuture<'a, ()>;
}

/// Who runs a room timer now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerTurn {
    /// This host, with this schedule.
    Mine(String),
    /// Another host holds its lease.
    Theirs,
    /// It was cancelled (or fired, for a one-shot).
    Gone,
}
