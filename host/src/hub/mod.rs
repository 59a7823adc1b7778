//! The open connections of this host: how a plugin reaches any of them by
//! id, and the bounded queue and close signal that each one's writer obeys;
//! and what connections share: rooms and each plugin's key-value store.

pub mod kv;
pub mod rooms;
mod route;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::backplane::Backplane;
use crate::metrics::StoreGauges;

/// What a connection's writer sends, in order.
#[derive(Debug)]
pub enum Outbound {
    Message(Message),
    /// Close after everything queued before it.
    Close(CloseFrame),
}

/// Why a send or close could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("no such connection")]
    NotFound,
    #[error("connection is closing")]
    Closed,
    #[error("connection's send queue is full")]
    QueueFull,
}

/// One open connection, shared by its own tasks and every plugin call that
/// may send to it.
pub struct Connection {
    pub id: Arc<str>,
    pub plugin: Arc<str>,
    tx: mpsc::Sender<Outbound>,
    closing: AtomicBool,
    /// Cancelled once any close begins, so the reader can time the peer's
    /// answer.
    close_started: CancellationToken,
    /// Cancelled when the connection must end now, without waiting for its
    /// queue: a slow client, a faulted plugin, shutdown, a dead peer.
    abort: CancellationToken,
    abort_frame: Mutex<Option<CloseFrame>>,
    /// Bytes kept for the plugin across calls and instances (`state` in WIT).
    state: Mutex<Option<Vec<u8>>>,
    /// The rooms it is in, so closing it can leave them all.
    rooms: Mutex<Vec<String>>,
    /// What its plugin may still write to the log, across instances; made
    /// with the first one.
    pub log_budget: OnceLock<Arc<crate::plugin::LogBudget>>,
}

impl Connection {
    /// Queues a message. A full queue means the client is not reading: the
    /// connection is closed with 1008 rather than buffered without bound.
    pub fn send(&self, message: Message) -> Result<(), DeliveryError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(DeliveryError::Closed);
        }
        self.tx.try_send(Outbound::Message(message)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.abort(CloseFrame { code: CloseCode::Policy, reason: "send queue full: client too slow".into() });
                DeliveryError::QueueFull
            }
            mpsc::error::TrySendError::Closed(_) => DeliveryError::Closed,
        })
    }

    /// Marks the connection as closing; false if it already was.
    pub fn begin_close(&self) -> bool {
        if self.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.close_started.cancel();
        true
    }

    /// Starts a close handshake after the messages already queued.
    pub fn close(&self, frame: CloseFrame) -> Result<(), DeliveryError> {
        if !self.begin_close() {
            return Err(DeliveryError::Closed);
        }
        match self.tx.try_send(Outbound::Close(frame)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Outbound::Close(frame))) => {
                // The client is not reading anyway: close without the backlog.
                self.abort(frame);
                Ok(())
            }
            Err(_) => Err(DeliveryError::Closed),
        }
    }

    /// Ends the connection now with `frame`, skipping anything queued. The
    /// first reason given wins.
    pub fn abort(&self, frame: CloseFrame) {
        self.closing.store(true, Ordering::Release);
        if let Ok(mut slot) = self.abort_frame.lock()
            && slot.is_none()
        {
            *slot = Some(frame);
        }
        self.close_started.cancel();
        self.abort.cancel();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub fn close_started(&self) -> &CancellationToken {
        &self.close_started
    }

    pub fn aborted(&self) -> &CancellationToken {
        &self.abort
    }

    pub fn take_abort_frame(&self) -> Option<CloseFrame> {
        self.abort_frame.lock().ok().and_then(|mut f| f.take())
    }

    pub fn state(&self) -> Option<Vec<u8>> {
        self.state.lock().ok().and_then(|s| s.clone())
    }

    /// The rooms it is in.
    pub fn rooms(&self) -> Vec<String> {
        self.rooms.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn set_state(&self, value: Option<Vec<u8>>) {
        if let Ok(mut s) = self.state.lock() {
            *s = value;
        }
    }
}

/// All connections of this host, by id.
pub struct Hub {
    host_id: String,
    next: AtomicU64,
    connections: RwLock<HashMap<Arc<str>, Arc<Connection>>>,
    reserved: AtomicUsize,
    max_connections: usize,
    pub rooms: rooms::Rooms,
    pub kv: kv::Kv,
    /// Other hosts, through Redis, when scaled out.
    backplane: OnceLock<Arc<Backplane>>,
}

/// A place among `max_connections`, held from the handshake until the
/// connection ends.
pub struct Slot {
    hub: Arc<Hub>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.reserved.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hub {
    pub fn new(max_connections: usize, kv_limits: kv::KvLimits, store_gauges: StoreGauges) -> Arc<Self> {
        // Ids name their host, so a later multi-host setup can route a send
        // to the host that owns the connection.
        let host_id = format!("{:08x}", rand::random::<u32>());
        Arc::new(Self {
            host_id,
            next: AtomicU64::new(1),
            connections: RwLock::new(HashMap::new()),
            reserved: AtomicUsize::new(0),
            max_connections,
            rooms: rooms::Rooms::default(),
            kv: kv::Kv::new(kv_limits, store_gauges),
            backplane: OnceLock::new(),
        })
    }

    /// This host's id: the prefix of every connection id it hands out.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The host that owns connection `id`.
    pub fn host_of(id: &str) -> Option<&str> {
        id.split_once('-').map(|(host, _)| host)
    }

    /// Joins this hub to a cluster; once, at start-up.
    pub fn attach(&self, backplane: Arc<Backplane>) {
        let _ = self.backplane.set(backplane);
    }

    pub fn backplane(&self) -> Option<&Arc<Backplane>> {
        self.backplane.get()
    }

    /// Takes a connection slot, or `None` when the host is full.
    pub fn reserve(self: &Arc<Self>) -> Option<Slot> {
        let mut current = self.reserved.load(Ordering::Acquire);
        loop {
            if current >= self.max_connections {
                return None;
            }
            match self.reserved.compare_exchange(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Slot { hub: self.clone() }),
                Err(now) => current = now,
            }
        }
    }

    /// Registers a new connection with a fresh id and a send queue of
    /// `capacity` messages; the receiver feeds its writer.
    pub fn register(&self, plugin: Arc<str>, capacity: usize) -> (Arc<Connection>, mpsc::Receiver<Outbound>) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = format!("{}-{seq:x}", self.host_id).into();
        let (tx, rx) = mpsc::channel(capacity);
        let conn = Arc::new(Connection {
            id: id.clone(),
            plugin,
            tx,
            closing: AtomicBool::new(false),
            close_started: CancellationToken::new(),
            abort: CancellationToken::new(),
            abort_frame: Mutex::new(None),
            state: Mutex::new(None),
            rooms: Mutex::new(Vec::new()),
            log_budget: OnceLock::new(),
        });
        if let Ok(mut map) = self.connections.write() {
            map.insert(id, conn.clone());
        }
        (conn, rx)
    }

    /// Forgets a closed connection, and takes it out of its rooms.
    pub fn remove(&self, id: &str) {
        let removed = self.connections.write().ok().and_then(|mut map| map.remove(id));
        if let Some(conn) = removed {
            let left = self.rooms.leave_all(&conn);
            if let Some(backplane) = self.backplane()
                && !left.is_empty()
            {
                backplane.left_all(&conn.plugin, left, &conn.id);
            }
        }
    }

    /// The connection `id`, whatever its plugin (the operator's API).
    pub fn get_any(&self, id: &str) -> Option<Arc<Connection>> {
        self.connections.read().ok()?.get(id).cloned()
    }

    /// The connection `id`, if it is open and served by `plugin`: plugins
    /// never see each other's connections.
    pub fn get(&self, plugin: &str, id: &str) -> Option<Arc<Connection>> {
        let map = self.connections.read().ok()?;
        map.get(id).filter(|c| &*c.plugin == plugin).cloned()
    }

    pub fn len(&self) -> usize {
        self.connections.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every connection to close with `frame` after what it has
    /// queued (used at shutdown).
    pub fn close_all(&self, frame: &CloseFrame) {
        let all: Vec<_> = self.connections.read().map(|m| m.values().cloned().collect()).unwrap_or_default();
        for conn in all {
            let _ = conn.close(frame.clone());
        }
    }
}
