//! The open connections of this host: how a plugin reaches any of them by
//! id, and the bounded queue and close signal that each one's writer obeys;
//! and what connections share: rooms and each plugin's key-value store.

mod cluster;
mod cluster_wide;
pub mod history;
pub mod kv;
mod log_budget;
pub mod room_timers;
pub mod rooms;
pub mod timers;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub use cluster::{Cluster, TimerTurn};
pub use log_budget::LogBudget;

use crate::metrics::StoreGauges;

/// What a connection's writer sends, in order.
#[derive(Debug)]
pub enum Outbound {
    Message(Message),
    /// Close after everything queued before it.
    Close(CloseFrame),
}

impl Outbound {
    /// Payload bytes, as counted against the byte bounds.
    pub fn len(&self) -> usize {
        match self {
            Outbound::Message(m) => m.len(),
            Outbound::Close(_) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes one plugin has queued for its clients, against
/// `limits.outbound_bytes`: its connections' queues and the replies of its
/// calls in progress.
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { used: AtomicUsize::new(0), limit })
    }

    /// Takes `n` bytes; false (and nothing taken) past the limit.
    pub fn take(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.limit {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Takes `n` bytes even past the limit (what was promised elsewhere).
    pub fn force(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
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
    #[error("the plugin already has {used} bytes queued for its clients; limits.outbound_bytes allows {limit}")]
    OverBudget { used: usize, limit: usize },
}

/// One open connection, shared by its own task and every plugin call that
/// may send to it. Kept small: an idle host holds one per connection.
pub struct Connection {
    pub id: Arc<str>,
    pub plugin: Arc<str>,
    /// What the connection's task is to write, and how it must end.
    outbox: Mutex<Outbox>,
    /// Wakes the connection's task: something was queued, a close began,
    /// or the connection must end.
    wake: Doorbell,
    limits: QueueLimits,
    /// Bit set of `CLOSING`, `ABORTED`, `QUEUED` and `AWAY`.
    flags: AtomicU8,
    /// Bytes kept for the plugin across calls and instances (`state` in WIT).
    state: Mutex<Option<Vec<u8>>>,
    /// The rooms it is in, so closing it can leave them all.
    rooms: Mutex<Vec<String>>,
    /// What its plugin may still write to the log, across instances; made
    /// with the first one.
    pub log_budget: OnceLock<Arc<LogBudget>>,
    /// Its timers, delivered by its task.
    pub timers: timers::ConnTimers,
}

/// Wakes a connection's task, which alone waits on it: lock-free, where a
/// `Notify` takes a lock to register every wait.
#[derive(Default)]
struct Doorbell {
    rung: AtomicBool,
    waker: AtomicWaker,
}

impl Doorbell {
    fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Completes once the doorbell has rung since it was last answered.
pub struct Rung<'a>(&'a Doorbell);

impl std::future::Future for Rung<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let bell = self.0;
        if bell.rung.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        bell.waker.register(cx.waker());
        // A ring between the check and the registration is not lost.
        if bell.rung.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }
}

/// A close is under way: nothing more may be queued.
const CLOSING: u8 = 1;
/// The connection must end now, without waiting for its queue: a slow
/// client, a faulted plugin, a dead peer.
const ABORTED: u8 = 2;
/// Its outbox holds something: read on every turn of its task without the
/// lock; set and cleared under it.
const QUEUED: u8 = 4;
/// The host is stopping ([`Connection::go_away`]).
const AWAY: u8 = 8;
/// Its session is being taken over from another host, which may refuse:
/// this host's own sends go the way of any other host's, through the
/// cluster, until it is here ([`Connection::arrived`]).
const ARRIVING: u8 = 16;
/// Its session is checkpointed for recovery after a crash (see
/// [`Connection::track`]): it takes numbered broadcasts only, and its
/// outbox marks the last one queued per room.
const TRACKED: u8 = 32;

/// Where a tracked connection stands in one room's numbering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub room: String,
    /// Its join point: every broadcast after it is the connection's.
    pub join: u64,
    /// The last broadcast of the room queued for it (its join point if none).
    pub last: u64,
}

#[derive(Default)]
struct Outbox {
    items: VecDeque<Outbound>,
    /// Payload bytes in `items`, against `QueueLimits::bytes`.
    bytes: usize,
    /// The close frame an abort asked for; the first reason given wins.
    abort_frame: Option<CloseFrame>,
    /// The host is stopping: this frame goes out at once, even while a
    /// plugin call runs.
    away_frame: Option<CloseFrame>,
    /// Numbered broadcasts held while the session leaves for another host
    /// (see `rooms::Rooms::hold`).
    held: Vec<Held>,
    /// A tracked connection's rooms, kept under the same lock as the queue
    /// so a snapshot matches what was queued exactly.
    marks: Vec<Mark>,
}

/// A broadcast held for a session that is leaving: its room and number.
pub struct Held {
    pub room: String,
    pub seq: u64,
    pub message: Message,
}

impl Connection {
    fn new(id: Arc<str>, plugin: Arc<str>, limits: QueueLimits) -> Self {
        Self {
            id,
            plugin,
            outbox: Mutex::new(Outbox::default()),
            wake: Doorbell::default(),
            limits,
            flags: AtomicU8::new(0),
            state: Mutex::new(None),
            rooms: Mutex::new(Vec::new()),
            log_budget: OnceLock::new(),
            timers: Default::default(),
        }
    }

    /// Queues a message. A full queue means the client is not reading: the
    /// connection is closed with 1008 rather than buffered without bound.
    pub fn send(&self, message: Message) -> Result<(), DeliveryError> {
        self.queue(message, None)
    }

    /// Queues `message`; `numbered` (room, number) marks it for a tracked
    /// connection under the queue's lock.
    fn queue(&self, message: Message, numbered: Option<(&str, u64)>) -> Result<(), DeliveryError> {
        if self.is_closing() {
            return Err(DeliveryError::Closed);
        }
        let len = message.len();
        let budget = &self.limits.outbound;
        if !budget.take(len) {
            return Err(DeliveryError::OverBudget { used: budget.used(), limit: budget.limit() });
        }
        let queued = match self.outbox.lock() {
            Ok(mut outbox) => {
                let fits =
                    outbox.items.len() < self.limits.messages && outbox.bytes.saturating_add(len) <= self.limits.bytes;
                if fits {
                    outbox.bytes += len;
                    outbox.items.push_back(Outbound::Message(message));
                    self.flags.fetch_or(QUEUED, Ordering::AcqRel);
                    if let Some((room, seq)) = numbered
                        && let Some(mark) = outbox.marks.iter_mut().find(|m| m.room == room)
                    {
                        mark.last = mark.last.max(seq);
                    }
                }
                fits
            }
            Err(_) => false,
        };
        if !queued {
            budget.give(len);
            self.abort(CloseFrame { code: CloseCode::Policy, reason: "send queue full: client too slow".into() });
            return Err(DeliveryError::QueueFull);
        }
        self.wake.ring();
        Ok(())
    }

    /// [`Self::send`] for numbered broadcast `seq` of `room`: a tracked
    /// connection marks it, in step with its queue.
    pub fn send_numbered(&self, message: Message, room: &str, seq: u64) -> Result<(), DeliveryError> {
        self.queue(message, Some((room, seq)))
    }

    /// Checkpoints this connection's session (see `TRACKED`): from now on
    /// it joins rooms taking numbered broadcasts only.
    pub fn track(&self) {
        self.flags.fetch_or(TRACKED, Ordering::AcqRel);
    }

    pub fn is_tracked(&self) -> bool {
        self.flags.load(Ordering::Acquire) & TRACKED != 0
    }

    /// A tracked connection joined `room` at point `join`.
    pub fn mark_join(&self, room: &str, join: u64) {
        if !self.is_tracked() {
            return;
        }
        if let Ok(mut outbox) = self.outbox.lock() {
            outbox.marks.retain(|m| m.room != room);
            outbox.marks.push(Mark { room: room.to_string(), join, last: join });
        }
    }

    /// A tracked connection left `room`.
    pub fn unmark(&self, room: &str) {
        if !self.is_tracked() {
            return;
        }
        if let Ok(mut outbox) = self.outbox.lock() {
            outbox.marks.retain(|m| m.room != room);
        }
    }

    /// [`Self::take_queued`] with, for a tracked connection, its marks as
    /// they stand once the items taken were queued.
    pub fn take_queued_marked(&self, max: usize) -> (Vec<Outbound>, usize, Vec<Mark>) {
        let Ok(mut outbox) = self.outbox.lock() else { return (Vec::new(), 0, Vec::new()) };
        let marks = outbox.marks.clone();
        let (items, bytes) = self.take_locked(&mut outbox, max);
        (items, bytes, marks)
    }

    /// Its marks now.
    pub fn marks(&self) -> Vec<Mark> {
        self.outbox.lock().map(|o| o.marks.clone()).unwrap_or_default()
    }

    /// Holds numbered broadcast `seq` of `room` (see `rooms::Rooms::hold`),
    /// within the queue's bounds; false past them.
    pub fn hold(&self, room: &str, seq: u64, message: Message) -> bool {
        let Ok(mut outbox) = self.outbox.lock() else { return false };
        if outbox.held.len() >= self.limits.messages {
            return false;
        }
        outbox.held.push(Held { room: room.to_string(), seq, message });
        true
    }

    /// The broadcasts held, in the order they came.
    pub fn take_held(&self) -> Vec<Held> {
        self.outbox.lock().map(|mut o| std::mem::take(&mut o.held)).unwrap_or_default()
    }

    /// The session stays: what was held is queued, in order.
    pub fn release_held(&self) {
        for held in self.take_held() {
            let _ = self.send(held.message);
        }
    }

    /// Takes up to `max` queued items, in order; their bytes stay counted
    /// against the plugin's budget until [`Connection::written`].
    pub fn take_queued(&self, max: usize) -> (Vec<Outbound>, usize) {
        let Ok(mut outbox) = self.outbox.lock() else { return (Vec::new(), 0) };
        self.take_locked(&mut outbox, max)
    }

    fn take_locked(&self, outbox: &mut Outbox, max: usize) -> (Vec<Outbound>, usize) {
        let n = outbox.items.len().min(max);
        let items: Vec<Outbound> = outbox.items.drain(..n).collect();
        let bytes = items.iter().map(Outbound::len).sum();
        outbox.bytes -= bytes;
        if outbox.items.is_empty() {
            self.flags.fetch_and(!QUEUED, Ordering::AcqRel);
            if outbox.items.capacity() > 0 {
                // An idle connection keeps no queue memory.
                outbox.items = VecDeque::new();
            }
        }
        (items, bytes)
    }

    /// Taken items of `bytes` were written (or dropped with the connection).
    pub fn written(&self, bytes: usize) {
        self.limits.outbound.give(bytes);
    }

    /// Whether anything is queued.
    pub fn has_queued(&self) -> bool {
        self.flags.load(Ordering::Acquire) & QUEUED != 0
    }

    /// Completes when the connection's task should look again: something
    /// was queued, a close began, an abort came, or its instance slot was
    /// taken back.
    pub fn woken(&self) -> Rung<'_> {
        Rung(&self.wake)
    }

    /// Makes the connection's task look again.
    pub fn wake(&self) {
        self.wake.ring();
    }

    /// The connection ended: whatever is still queued is dropped.
    pub fn discard_queued(&self) {
        let (_, bytes) = self.take_queued(usize::MAX);
        self.written(bytes);
    }

    /// The most bytes its queue, or one call's replies, may hold.
    pub fn max_queued(&self) -> usize {
        self.limits.bytes
    }

    /// The budget of its plugin's bytes in flight.
    pub fn outbound(&self) -> &Arc<ByteBudget> {
        &self.limits.outbound
    }

    /// Marks the connection as closing; false if it already was.
    pub fn begin_close(&self) -> bool {
        let before = self.flags.fetch_or(CLOSING, Ordering::AcqRel);
        self.wake.ring();
        before & CLOSING == 0
    }

    /// The host is stopping: a close handshake as [`Connection::close`]
    /// starts one, whose frame a connection busy in a plugin call sends
    /// without waiting for the call (see [`Connection::away_frame`]).
    pub fn go_away(&self, frame: CloseFrame) {
        if let Ok(mut outbox) = self.outbox.lock() {
            outbox.away_frame.get_or_insert_with(|| frame.clone());
        }
        self.flags.fetch_or(AWAY, Ordering::AcqRel);
        if self.close(frame).is_err() {
            // Already closing: its task still hears of the stop.
            self.wake.ring();
        }
    }

    /// Ready with the frame of [`Connection::go_away`] once it is called.
    /// Leaves the doorbell's ring for the connection's serve loop to answer.
    pub fn poll_away(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<CloseFrame> {
        if let Some(frame) = self.away_frame() {
            return std::task::Poll::Ready(frame);
        }
        self.wake.waker.register(cx.waker());
        match self.away_frame() {
            Some(frame) => std::task::Poll::Ready(frame),
            None => std::task::Poll::Pending,
        }
    }

    /// The frame of [`Connection::go_away`], once it was called.
    pub fn away_frame(&self) -> Option<CloseFrame> {
        // Checked on every call of the message path: a flag, not the lock.
        if self.flags.load(Ordering::Acquire) & AWAY == 0 {
            return None;
        }
        self.outbox.lock().ok()?.away_frame.clone()
    }

    /// Starts a close handshake after the messages already queued.
    pub fn close(&self, frame: CloseFrame) -> Result<(), DeliveryError> {
        if self.is_closing() {
            return Err(DeliveryError::Closed);
        }
        let queued = match self.outbox.lock() {
            Ok(mut outbox) if outbox.items.len() < self.limits.messages => {
                outbox.items.push_back(Outbound::Close(frame.clone()));
                self.flags.fetch_or(QUEUED, Ordering::AcqRel);
                true
            }
            _ => false,
        };
        if !self.begin_close() {
            return Err(DeliveryError::Closed);
        }
        if !queued {
            // The client is not reading anyway: close without the backlog.
            self.abort(frame);
        }
        Ok(())
    }

    /// Ends the connection now with `frame`, skipping anything queued. The
    /// first reason given wins.
    pub fn abort(&self, frame: CloseFrame) {
        if let Ok(mut outbox) = self.outbox.lock()
            && outbox.abort_frame.is_none()
        {
            outbox.abort_frame = Some(frame);
        }
        self.flags.fetch_or(CLOSING | ABORTED, Ordering::AcqRel);
        self.wake.ring();
    }

    /// Its session, taken over from another host, is here now.
    pub fn arrived(&self) {
        self.flags.fetch_and(!ARRIVING, Ordering::AcqRel);
    }

    /// Whether its session is still being taken over (see `ARRIVING`).
    pub fn is_arriving(&self) -> bool {
        self.flags.load(Ordering::Acquire) & ARRIVING != 0
    }

    pub fn is_closing(&self) -> bool {
        self.flags.load(Ordering::Acquire) & CLOSING != 0
    }

    pub fn is_aborted(&self) -> bool {
        self.flags.load(Ordering::Acquire) & ABORTED != 0
    }

    pub fn take_abort_frame(&self) -> Option<CloseFrame> {
        self.outbox.lock().ok().and_then(|mut o| o.abort_frame.take())
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
    /// Rooms' recent broadcasts, on a host without a cluster.
    pub history: history::History,
    pub room_timers: Arc<room_timers::RoomTimers>,
    /// The other hosts, when scaled out.
    cluster: OnceLock<Arc<dyn Cluster>>,
}

/// The bounds of one connection's send queue.
pub struct QueueLimits {
    pub messages: usize,
    pub bytes: usize,
    /// Its plugin's bytes in flight.
    pub outbound: Arc<ByteBudget>,
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
    pub fn new(
        max_connections: usize,
        kv_limits: kv::KvLimits,
        store_gauges: StoreGauges,
        history: history::History,
    ) -> Arc<Self> {
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
            history,
            room_timers: Default::default(),
            cluster: OnceLock::new(),
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
    pub fn attach(&self, cluster: Arc<dyn Cluster>) {
        self.room_timers.attach_cluster(cluster.clone());
        let _ = self.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.get()
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
    /// `queue.messages` and `queue.bytes`.
    pub fn register(&self, plugin: Arc<str>, queue: QueueLimits) -> Arc<Connection> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = format!("{}-{seq:x}", self.host_id).into();
        let conn = Arc::new(Connection::new(id.clone(), plugin, queue));
        if let Ok(mut map) = self.connections.write() {
            map.insert(id, conn.clone());
        }
        conn
    }

    /// Registers a connection that keeps the id it had on another host (a
    /// session that moved here); `None` if that id is here already.
    pub fn register_as(&self, id: &str, plugin: Arc<str>, queue: QueueLimits) -> Option<Arc<Connection>> {
        let mut map = self.connections.write().ok()?;
        if map.contains_key(id) {
            return None;
        }
        let id: Arc<str> = id.into();
        let conn = Arc::new(Connection::new(id.clone(), plugin, queue));
        conn.flags.fetch_or(ARRIVING, Ordering::AcqRel);
        map.insert(id, conn.clone());
        Some(conn)
    }

    /// Forgets a connection whose session moved to another host: it leaves
    /// its rooms here, but stays a member cluster-wide, where the new host
    /// has taken its place.
    pub fn hand_over(&self, id: &str) {
        self.forget(id, true);
    }

    /// A connection of `plugin` that no client holds and no id reaches: what
    /// a call that serves no connection (a room timer's tick) runs as.
    pub fn detached(&self, plugin: Arc<str>, label: &str, queue: QueueLimits) -> Arc<Connection> {
        Arc::new(Connection::new(label.into(), plugin, queue))
    }

    /// Forgets a closed connection, and takes it out of its rooms.
    pub fn remove(&self, id: &str) {
        self.forget(id, false);
    }

    /// Takes connection `id` out of this host and its rooms here; out of
    /// them cluster-wide too, unless its session `moved` to another host.
    fn forget(&self, id: &str, moved: bool) {
        let removed = self.connections.write().ok().and_then(|mut map| map.remove(id));
        if let Some(conn) = removed {
            let left = self.rooms.leave_all(&conn);
            if let Some(cluster) = self.cluster()
                && !left.is_empty()
            {
                if moved {
                    cluster.disowned(&conn.plugin, left, &conn.id);
                } else {
                    cluster.left_all(&conn.plugin, left, &conn.id);
                }
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

    /// [`Self::close_all`] but for the connections in `but`.
    pub fn close_all_but(&self, frame: &CloseFrame, but: &std::collections::HashSet<Arc<str>>) {
        let all: Vec<_> = self
            .connections
            .read()
            .map(|m| m.values().filter(|c| !but.contains(&c.id)).cloned().collect())
            .unwrap_or_default();
        for conn in all {
            conn.go_away(frame.clone());
        }
    }

    /// Asks every connection to close with `frame` after what it has
    /// queued (used at shutdown).
    pub fn close_all(&self, frame: &CloseFrame) {
        self.close_all_but(frame, &Default::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(messages: usize, bytes: usize, budget: usize) -> Connection {
        let limits = QueueLimits { messages, bytes, outbound: ByteBudget::new(budget) };
        Connection::new("h-1".into(), "p".into(), limits)
    }

    fn frame(code: u16, reason: &str) -> CloseFrame {
        CloseFrame { code: CloseCode::from(code), reason: reason.to_string().into() }
    }

    #[test]
    fn queued_messages_come_out_in_order_and_their_bytes_stay_counted_until_written() {
        let c = conn(8, 1024, 1024);
        c.send(Message::text("one")).expect("queued");
        c.send(Message::binary(vec![0u8; 5])).expect("queued");
        assert!(c.has_queued());
        let (items, bytes) = c.take_queued(usize::MAX);
        assert_eq!(bytes, 8);
        assert!(matches!(&items[0], Outbound::Message(m) if m.to_text().ok() == Some("one")));
        assert!(matches!(&items[1], Outbound::Message(Message::Binary(b)) if b.len() == 5));
        assert!(!c.has_queued());
        // Taken is not yet written: the plugin's budget still holds them.
        assert_eq!(c.outbound().used(), 8);
        c.written(bytes);
        assert_eq!(c.outbound().used(), 0);
    }

    #[test]
    fn a_full_queue_aborts_with_1008_and_gives_the_bytes_back() {
        let c = conn(2, 1024, 1024);
        c.send(Message::text("a")).expect("queued");
        c.send(Message::text("b")).expect("queued");
        assert_eq!(c.send(Message::text("c")), Err(DeliveryError::QueueFull));
        assert!(c.is_closing() && c.is_aborted());
        let abort = c.take_abort_frame().expect("abort frame");
        assert_eq!(u16::from(abort.code), 1008);
        assert_eq!(c.outbound().used(), 2, "the refused message is not counted");
        // Nothing more is taken once closing.
        assert_eq!(c.send(Message::text("d")), Err(DeliveryError::Closed));
        // Over the byte bound, not the count, is full too.
        let c = conn(8, 4, 1024);
        assert_eq!(c.send(Message::text("12345")), Err(DeliveryError::QueueFull));
    }

    #[test]
    fn the_plugins_byte_budget_refuses_without_closing() {
        let c = conn(8, 1024, 4);
        assert_eq!(c.send(Message::text("12345")), Err(DeliveryError::OverBudget { used: 0, limit: 4 }));
        assert!(!c.is_closing(), "over the plugin's budget is the sender's error, not this client's");
        c.send(Message::text("1234")).expect("fits");
    }

    #[test]
    fn a_close_goes_after_what_was_queued_and_only_once() {
        let c = conn(8, 1024, 1024);
        c.send(Message::text("last words")).expect("queued");
        c.close(frame(4000, "bye")).expect("closing");
        assert_eq!(c.close(frame(4001, "again")), Err(DeliveryError::Closed));
        assert!(c.is_closing() && !c.is_aborted());
        let (items, _) = c.take_queued(usize::MAX);
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[1], Outbound::Close(f) if u16::from(f.code) == 4000));
    }

    #[test]
    fn a_close_that_does_not_fit_aborts_and_the_first_abort_reason_wins() {
        let c = conn(1, 1024, 1024);
        c.send(Message::text("x")).expect("queued");
        c.close(frame(4000, "bye")).expect("closing");
        assert!(c.is_aborted());
        c.abort(frame(1011, "later"));
        assert_eq!(u16::from(c.take_abort_frame().expect("frame").code), 4000);
    }

    #[test]
    fn going_away_closes_and_keeps_the_frame_for_a_busy_connection() {
        let c = conn(8, 1024, 1024);
        assert!(c.away_frame().is_none());
        c.go_away(frame(1001, "server shutting down"));
        assert!(c.is_closing());
        assert_eq!(u16::from(c.away_frame().expect("away").code), 1001);
        // A connection already closing still hears of the stop.
        let c = conn(8, 1024, 1024);
        c.close(frame(4000, "bye")).expect("closing");
        c.go_away(frame(1001, "server shutting down"));
        assert_eq!(u16::from(c.away_frame().expect("away").code), 1001);
    }

    #[test]
    fn an_idle_connection_keeps_no_queue_memory() {
        let c = conn(8, 1024, 1024);
        c.send(Message::text("x")).expect("queued");
        c.discard_queued();
        assert_eq!(c.outbound().used(), 0);
        assert_eq!(c.outbox.lock().expect("outbox").items.capacity(), 0);
    }
}
