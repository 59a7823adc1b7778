//! The host side of the WIT imports: `connections`, `state`, `rooms`, `kv`
//! and `log`.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::bindings::{HostError, Message, connections, kv, log, rooms, state, timers, types};
use super::wait::WaitMark;
use crate::console::{Console, Kind};
use crate::hub::LogBudget;
use crate::hub::kv::{KvError, Store};
use crate::hub::rooms::RoomError;
use crate::hub::timers::{Schedule, Set, TimerError, TimerLimits};
use crate::hub::{ByteBudget, Connection, DeliveryError, Hub, Outbound};
use crate::metrics::TimerMetrics;

/// What an instance may reach: the hub, scoped to its own plugin.
pub struct HostApi {
    hub: Arc<Hub>,
    /// The connection this instance serves: the common target, looked up
    /// without touching the hub.
    own: Arc<Connection>,
    version: Arc<str>,
    max_message: usize,
    max_state: usize,
    /// What the plugin sent to its own connection during the current call.
    /// The connection's task writes these itself when the call returns, so
    /// a reply costs no hand-off to another task. Bounded like the queue.
    replies: Replies,
    max_replies: usize,
    /// This plugin's key-value store.
    store: Arc<Store>,
    /// The connection's log budget, which outlives this instance.
    log_budget: Arc<LogBudget>,
    /// The plugin's live console: `log` and stdio lines go there too.
    console: Arc<Console>,
    timer_limits: TimerLimits,
    max_room_timers: usize,
    timer_metrics: TimerMetrics,
    /// Marked when a call waits on another host (Redis): see `wait`.
    waiting: WaitMark,
}

/// Replies of one call, in order, with their bytes taken from the plugin's
/// budget of bytes in flight until they are written (or dropped).
pub struct Replies {
    items: Vec<Outbound>,
    bytes: usize,
    budget: Arc<ByteBudget>,
}

impl Replies {
    fn new(budget: Arc<ByteBudget>) -> Self {
        Self { items: Vec::new(), bytes: 0, budget }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The replies, to write; their bytes are given back when `self` drops.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Outbound> {
        self.items.drain(..)
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

/// Limits an instance's host API enforces.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    pub max_message: usize,
    pub max_state: usize,
    pub max_replies: usize,
    pub timers: TimerLimits,
    pub max_room_timers: usize,
}

impl HostApi {
    pub fn new(
        hub: Arc<Hub>,
        own: Arc<Connection>,
        version: Arc<str>,
        limits: HostLimits,
        log_budget: Arc<LogBudget>,
        console: Arc<Console>,
        timer_metrics: TimerMetrics,
    ) -> Self {
        Self {
            store: hub.kv.store(&own.plugin),
            replies: Replies::new(own.outbound().clone()),
            hub,
            own,
            version,
            max_message: limits.max_message,
            max_state: limits.max_state,
            max_replies: limits.max_replies,
            log_budget,
            console,
            timer_limits: limits.timers,
            max_room_timers: limits.max_room_timers,
            timer_metrics,
            waiting: WaitMark::default(),
        }
    }

    /// Shares the mark of the instance's calls.
    pub(super) fn set_wait_mark(&mut self, mark: WaitMark) {
        self.waiting = mark;
    }

    /// The cluster, if any, with the call marked as waiting on it.
    fn cluster(&self) -> Option<&Arc<dyn crate::hub::Cluster>> {
        let cluster = self.hub.cluster();
        if cluster.is_some() {
            self.waiting.mark();
        }
        cluster
    }

    /// A timer was refused: the console says why.
    fn refused(&self, name: &str, e: &TimerError) {
        self.console.publish(Kind::Timer, Some(self.connection()), Some("refused"), || format!("timer {name:?}: {e}"));
    }

    /// Marks the call as waiting when what it asks goes to the cluster.
    fn may_wait(&self) {
        let _ = self.cluster();
    }

    pub(super) fn console(&self) -> &Arc<Console> {
        &self.console
    }

    pub(super) fn log_budget(&self) -> &Arc<LogBudget> {
        &self.log_budget
    }

    /// Takes the replies queued by the last call, in order.
    pub fn take_replies(&mut self) -> Replies {
        let empty = Replies::new(self.replies.budget.clone());
        std::mem::replace(&mut self.replies, empty)
    }

    /// Holds a reply for the connection's task to write after the call. One
    /// call may send at most what the send queue holds, in messages and in
    /// bytes: past that the plugin, not the client, is at fault.
    fn reply(&mut self, item: Outbound) -> Result<(), HostError> {
        let len = item.len();
        let bytes = self.replies.bytes.saturating_add(len);
        if self.replies.items.len() >= self.max_replies || bytes > self.own.max_queued() {
            self.own.abort(WsCloseFrame {
                code: CloseCode::Policy,
                reason: "plugin sent more in one call than the send queue holds".into(),
            });
            return Err(HostError::QueueFull);
        }
        let budget = &self.replies.budget;
        if !budget.take(len) {
            return Err(DeliveryError::OverBudget { used: budget.used(), limit: budget.limit() }.into());
        }
        self.replies.bytes = bytes;
        self.replies.items.push(item);
        Ok(())
    }

    pub fn plugin(&self) -> &str {
        &self.own.plugin
    }

    pub fn connection(&self) -> &str {
        &self.own.id
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    fn check_size(&self, message: &Message) -> Result<(), HostError> {
        let len = match message {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        };
        if len > self.max_message {
            return Err(HostError::TooLarge(format!(
                "message of {len} bytes exceeds websocket.max_message_size ({} bytes)",
                self.max_message
            )));
        }
        Ok(())
    }

    fn target(&self, id: &str) -> Result<Arc<Connection>, HostError> {
        if *self.own.id == *id {
            return Ok(self.own.clone());
        }
        self.hub.get(&self.own.plugin, id).ok_or(HostError::NotFound)
    }
}

impl From<DeliveryError> for HostError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::NotFound => HostError::NotFound,
            DeliveryError::Closed => HostError::Closed,
            DeliveryError::QueueFull => HostError::QueueFull,
            DeliveryError::OverBudget { .. } => HostError::TooLarge(e.to_string()),
        }
    }
}

impl types::Host for HostApi {}

impl connections::Host for HostApi {
    async fn send(&mut self, id: String, message: Message) -> Result<(), HostError> {
        self.check_size(&message)?;
        if *self.own.id == *id {
            if self.own.is_closing() {
                return Err(HostError::Closed);
            }
            return self.reply(Outbound::Message(message.into()));
        }
        self.may_wait();
        Ok(self.hub.send_to(Some(&self.own.plugin), &id, message.into()).await?)
    }

    async fn close(&mut self, id: String, code: u16, reason: String) -> Result<(), HostError> {
        if !server_may_send(code) {
            return Err(HostError::Invalid(format!(
                "close code {code} may not be sent by a server: use 1000, 1001, 1003, 1007-1011 or 3000-4999"
            )));
        }
        if reason.len() > 123 {
            return Err(HostError::Invalid(format!(
                "close reason is {} bytes; at most 123 fit a close frame",
                reason.len()
            )));
        }
        let frame = WsCloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let target = match self.target(&id) {
            Ok(target) => target,
            Err(_) => {
                self.may_wait();
                return Ok(self.hub.close_remote(&self.own.plugin, &id, &frame).await?);
            }
        };
        if Arc::ptr_eq(&target, &self.own) {
            if !target.begin_close() {
                return Err(HostError::Closed);
            }
            return self.reply(Outbound::Close(frame));
        }
        Ok(target.close(frame)?)
    }
}

fn server_may_send(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 1003 | 1007..=1011 | 3000..=4999)
}

impl state::Host for HostApi {
    fn get(&mut self, id: String) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.target(&id)?.state())
    }

    fn set(&mut self, id: String, value: Vec<u8>) -> Result<(), HostError> {
        if value.len() > self.max_state {
            return Err(HostError::TooLarge(format!(
                "state of {} bytes exceeds the plugin's state_size limit ({} bytes)",
                value.len(),
                self.max_state
            )));
        }
        self.target(&id)?.set_state(Some(value));
        Ok(())
    }

    fn clear(&mut self, id: String) -> Result<(), HostError> {
        self.target(&id)?.set_state(None);
        Ok(())
    }
}

impl From<RoomError> for HostError {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::BadName(_) => HostError::Invalid(e.to_string()),
            RoomError::TooManyRooms => HostError::TooLarge(e.to_string()),
        }
    }
}

impl rooms::Host for HostApi {
    async fn join(&mut self, id: String, room: String) -> Result<(), HostError> {
        self.may_wait();
        let conn = self.target(&id)?;
        Ok(self.hub.join(&conn, &room).await?)
    }

    async fn leave(&mut self, id: String, room: String) -> Result<(), HostError> {
        self.may_wait();
        let conn = self.target(&id)?;
        Ok(self.hub.leave(&conn, &room).await?)
    }

    async fn broadcast(&mut self, room: String, message: Message, except: Option<String>) -> Result<u32, HostError> {
        self.may_wait();
        self.check_size(&message)?;
        let message = message.into();
        Ok(self.hub.broadcast(&self.own.plugin, &room, &message, except.as_deref()).await)
    }

    async fn count(&mut self, room: String) -> u32 {
        self.may_wait();
        self.hub.count(&self.own.plugin, &room).await
    }

    async fn members(&mut self, room: String, limit: u32) -> Vec<String> {
        self.may_wait();
        self.hub.members(&self.own.plugin, &room, usize::try_from(limit).unwrap_or(usize::MAX)).await
    }

    async fn rooms_of(&mut self, id: String) -> Result<Vec<String>, HostError> {
        Ok(self.target(&id)?.rooms())
    }

    async fn history(&mut self, room: String, since: Option<u64>, limit: u32) -> Result<Vec<rooms::Kept>, HostError> {
        crate::hub::rooms::check_name(&room)?;
        self.may_wait();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let kept = self
            .hub
            .history(&self.own.plugin, &room, since, limit)
            .await
            .map_err(|e| HostError::Invalid(e.to_string()))?;
        Ok(kept
            .into_iter()
            .filter_map(|k| Some(rooms::Kept { offset: k.offset, message: Message::from_ws(k.message)? }))
            .collect())
    }
}

impl From<TimerError> for HostError {
    fn from(e: TimerError) -> Self {
        match e {
            TimerError::BadName(_) | TimerError::TooSoon { .. } => HostError::Invalid(e.to_string()),
            TimerError::TooMany(_) | TimerError::TooManyRoom(_) => HostError::TooLarge(e.to_string()),
            TimerError::Ended => HostError::Closed,
        }
    }
}

impl From<timers::Schedule> for Schedule {
    fn from(s: timers::Schedule) -> Self {
        use std::time::Duration;
        match s {
            timers::Schedule::Once(ms) => Schedule::Once(Duration::from_millis(ms)),
            timers::Schedule::Every(ms) => Schedule::Every(Duration::from_millis(ms)),
        }
    }
}

/// A connection's timers live on it; a room's in the hub's table, whose
/// tasks tick through the session layer.
impl timers::Host for HostApi {
    async fn set(&mut self, id: String, name: String, schedule: timers::Schedule) -> Result<(), HostError> {
        let conn = self.target(&id)?;
        if conn.is_closing() {
            return Err(HostError::Closed);
        }
        let set =
            conn.timers.set(&name, schedule.into(), &self.timer_limits).inspect_err(|e| self.refused(&name, e))?;
        if set == Set::Added {
            self.timer_metrics.connection_timers.inc();
        }
        // Its task waits for the earliest timer: it looks again.
        conn.wake();
        Ok(())
    }

    async fn cancel(&mut self, id: String, name: String) -> bool {
        let Ok(conn) = self.target(&id) else { return false };
        let cancelled = conn.timers.cancel(&name);
        if cancelled {
            self.timer_metrics.connection_timers.dec();
        }
        cancelled
    }

    async fn set_room(&mut self, room: String, name: String, schedule: timers::Schedule) -> Result<(), HostError> {
        crate::hub::rooms::check_name(&room)?;
        self.may_wait();
        let timers = &self.hub.room_timers;
        timers
            .set(&self.own.plugin, &room, &name, schedule.into(), &self.timer_limits, self.max_room_timers)
            .await
            .inspect_err(|e| self.refused(&name, e))?;
        Ok(())
    }

    async fn cancel_room(&mut self, room: String, name: String) -> bool {
        self.may_wait();
        self.hub.room_timers.cancel(&self.own.plugin, &room, &name).await
    }
}

impl From<KvError> for HostError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::ValueTooLarge { .. } | KvError::Full(_) | KvError::OutOfBytes { .. } => {
                HostError::TooLarge(e.to_string())
            }
            // host-error has no "unavailable" case, and 0.1.x plugins must
            // keep loading, so an outage is reported as `invalid` with a
            // text that says so.
            KvError::BadKey(_) | KvError::NotAnInteger(_) | KvError::Overflow | KvError::Unavailable(_) => {
                HostError::Invalid(e.to_string())
            }
        }
    }
}

/// In a cluster the store is the cluster's (Redis), shared by every host; the checks
/// on keys and values stay the same.
impl kv::Host for HostApi {
    async fn get(&mut self, key: String) -> Option<Vec<u8>> {
        match self.cluster() {
            Some(b) => b.kv_get(&self.own.plugin, &key).await,
            None => self.store.get(&key),
        }
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), HostError> {
        let ttl = ttl_ms.map(std::time::Duration::from_millis);
        match self.cluster() {
            Some(b) => {
                self.store.check(&key, &value)?;
                Ok(b.kv_set(&self.own.plugin, &key, &value, ttl).await?)
            }
            None => Ok(self.store.set(&key, value, ttl)?),
        }
    }

    async fn delete(&mut self, key: String) -> bool {
        match self.cluster() {
            Some(b) => b.kv_delete(&self.own.plugin, &key).await,
            None => self.store.delete(&key),
        }
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, HostError> {
        match self.cluster() {
            Some(b) => {
                self.store.check(&key, &[])?;
                Ok(b.kv_increment(&self.own.plugin, &key, delta).await?)
            }
            None => Ok(self.store.increment(&key, delta)?),
        }
    }
}

/// Longest plugin log line kept; the rest is cut so a plugin cannot flood
/// the log with one call.
pub(super) const MAX_LOG_LINE: usize = 4096;

pub(super) fn clip(text: &str) -> &str {
    if text.len() <= MAX_LOG_LINE {
        return text;
    }
    let mut end = MAX_LOG_LINE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The instance is gone: drops it left unreported are told now.
impl Drop for HostApi {
    fn drop(&mut self) {
        self.log_budget.flush();
    }
}

impl log::Host for HostApi {
    fn log(&mut self, level: log::Level, message: String) {
        use tracing::{Level, enabled};
        // Lines the filter discards cost nothing, so they are not charged.
        let shown = match level {
            log::Level::Trace => enabled!(target: "plugin", Level::TRACE),
            log::Level::Debug => enabled!(target: "plugin", Level::DEBUG),
            log::Level::Info => enabled!(target: "plugin", Level::INFO),
            log::Level::Warn => enabled!(target: "plugin", Level::WARN),
            log::Level::Error => enabled!(target: "plugin", Level::ERROR),
        };
        let watched = self.console.watched();
        let message = clip(&message);
        if !(shown || watched) || !self.log_budget.admit(message.len()) {
            return;
        }
        let level_name = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.console.publish(Kind::Log, Some(self.connection()), Some(level_name), || message.to_string());
        if !shown {
            return;
        }
        let (plugin, conn, version) = (self.plugin(), self.connection(), self.version());
        match level {
            log::Level::Trace => tracing::trace!(target: "plugin", plugin, conn, version, "{message}"),
            log::Level::Debug => tracing::debug!(target: "plugin", plugin, conn, version, "{message}"),
            log::Level::Info => tracing::info!(target: "plugin", plugin, conn, version, "{message}"),
            log::Level::Warn => tracing::warn!(target: "plugin", plugin, conn, version, "{message}"),
            log::Level::Error => tracing::error!(target: "plugin", plugin, conn, version, "{message}"),
        }
    }
}

impl Message {
    /// A data message as the plugin sees it; `None` for control frames.
    fn from_ws(m: tokio_tungstenite::tungstenite::Message) -> Option<Self> {
        use tokio_tungstenite::tungstenite::Message as Ws;
        match m {
            Ws::Text(t) => Some(Self::Text(t.as_str().to_owned())),
            Ws::Binary(b) => Some(Self::Binary(b.to_vec())),
            _ => None,
        }
    }
}

impl From<Message> for tokio_tungstenite::tungstenite::Message {
    fn from(m: Message) -> Self {
        match m {
            Message::Text(t) => Self::Text(t.into()),
            Message::Binary(b) => Self::Binary(b.into()),
        }
    }
}
