//! Sessions that outlive their transport (`docs/delivery.md`). A WebSocket
//! client that opts in (`?resume=new`) gets a session: its first message
//! names it, and a transport that drops without a close frame leaves the
//! session waiting for `limits.resume_grace`, with its id, rooms, state,
//! timers and every message sent to it. A reconnect that presents it
//! (`?resume=ID.SECRET&last=N`) continues it: the messages after the `N`th
//! arrive first, once each, in order. The plugin sees no close and no open.
//!
//! Messages are numbered per session, 1, 2, 3, ...; the client counts what
//! it received. The host keeps what it wrote until the client acknowledges
//! it, with nothing new on the wire: its pings carry the number of the last
//! message written, and a client's pong, which RFC 6455 makes echo the
//! ping, acknowledges everything up to it. The HTTP fallback resumes its
//! stream the same way (numbered events, a last seen id, a secret), with
//! the same registry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::hub::{ByteBudget, Connection, Mark};
use crate::metrics::ResumeMetrics;
use crate::socket::Socket;

/// The query parameter that opts in (`new`) or names a session to resume.
pub const PARAM: &str = "resume";
/// The query parameter with the count of messages the client received.
pub const LAST_PARAM: &str = "last";

/// What a WebSocket request asks of resumption.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask {
    /// A plain connection: nothing changes, on the wire or for the plugin.
    Plain,
    /// A new session.
    New,
    /// Continue a session: `ID.SECRET`, and how many messages arrived.
    Resume { session: String, last: u64 },
}

/// Takes resumption's parameters out of a query: what they ask, and the
/// query the plugin sees (without them).
pub fn ask_of(query: &str) -> (Ask, String) {
    let pairs: Vec<(&str, &str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (pair, key, value)
        })
        .collect();
    let value_of = |name: &str| pairs.iter().find(|(_, key, _)| *key == name).map(|(_, _, value)| *value);
    let Some(resume) = value_of(PARAM) else {
        // No opt-in: the query is the plugin's, all of it.
        return (Ask::Plain, query.to_string());
    };
    let ask = match resume {
        "new" | "" => Ask::New,
        session => {
            // A count that is not a number can continue nothing.
            let last = value_of(LAST_PARAM).map_or(Some(0), |v| v.parse().ok()).unwrap_or(u64::MAX);
            Ask::Resume { session: session.to_string(), last }
        }
    };
    let rest: Vec<&str> =
        pairs.iter().filter(|(_, key, _)| *key != PARAM && *key != LAST_PARAM).map(|(pair, _, _)| *pair).collect();
    (ask, rest.join("&"))
}

/// A fresh secret: 128 random bits, as hex.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Compares secrets in time that does not depend on where they differ.
pub fn secret_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A session a client can name: its connection and its secret.
pub trait Keyed {
    fn conn(&self) -> &Arc<Connection>;
    fn secret(&self) -> &str;
}

/// Sessions by connection id, found by what their client holds.
pub struct Registry<T> {
    by_id: Mutex<HashMap<Arc<str>, Arc<T>>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self { by_id: Mutex::new(HashMap::new()) }
    }
}

impl<T: Keyed> Registry<T> {
    pub fn insert(&self, session: Arc<T>) {
        if let Ok(mut map) = self.by_id.lock() {
            map.insert(session.conn().id.clone(), session);
        }
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.by_id.lock() {
            map.remove(id);
        }
    }

    /// The session with id `id`, whoever asks (the caller checked).
    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        self.by_id.lock().ok()?.get(id).cloned()
    }

    /// The session `ID.SECRET` names, if it is `plugin`'s and the secret
    /// matches. Whatever fails, the answer is the same `None`.
    pub fn find(&self, plugin: &str, session: &str) -> Option<Arc<T>> {
        let (id, secret) = session.split_once('.')?;
        let found = self.by_id.lock().ok()?.get(id)?.clone();
        (*found.conn().plugin == *plugin && secret_matches(found.secret(), secret)).then_some(found)
    }
}

/// A value one side hands to a session's task, which takes it when it
/// next looks (it is woken): a new transport, for instance.
pub struct Handoff<T> {
    slot: Mutex<(Option<T>, bool)>,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Self { slot: Mutex::new((None, false)) }
    }
}

impl<T> Handoff<T> {
    /// Hands `item` over (replacing one not taken yet) and wakes the task;
    /// gives it back once the task has stopped taking.
    pub fn give(&self, conn: &Connection, item: T) -> Result<(), T> {
        match self.slot.lock() {
            Ok(mut slot) if !slot.1 => slot.0 = Some(item),
            _ => return Err(item),
        }
        conn.wake();
        Ok(())
    }

    pub fn take(&self) -> Option<T> {
        self.slot.lock().ok()?.0.take()
    }

    /// The task stops taking: later gives fail.
    pub fn close(&self) -> Option<T> {
        let mut slot = self.slot.lock().ok()?;
        slot.1 = true;
        slot.0.take()
    }
}

/// The host's bytes for resumable sessions (`websocket.resume_budget`),
/// with their gauge.
#[derive(Clone)]
pub struct Budget {
    bytes: Arc<ByteBudget>,
    gauge: Gauge,
}

impl Budget {
    pub fn new(limit: usize, gauge: Gauge) -> Self {
        Self { bytes: ByteBudget::new(limit), gauge }
    }

    fn take(&self, n: usize) -> bool {
        let taken = self.bytes.take(n);
        if taken {
            self.gauge.inc_by(n as i64);
        }
        taken
    }

    fn give(&self, n: usize) {
        self.bytes.give(n);
        self.gauge.dec_by(n as i64);
    }

    /// Takes `n` bytes even past the limit.
    fn force(&self, n: usize) {
        self.bytes.force(n);
        self.gauge.inc_by(n as i64);
    }

    fn half_spent(&self) -> bool {
        self.bytes.used() > self.bytes.limit() / 2
    }
}

/// The buffer of a resumable session overflowed: its client is too slow,
/// or was away while more was sent than it may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session's resume buffer is full")]
pub struct Overflow;

/// A session's numbered messages, from the oldest its client has not
/// acknowledged: those written (kept for a resume) and, behind them, those
/// not written yet (while it is away, or until the next write).
pub struct Replay {
    items: VecDeque<Message>,
    /// The number of `items[0]`; the next one's when empty.
    first: u64,
    /// The number of the next message written.
    cursor: u64,
    bytes: usize,
    /// Bytes of the written messages (those before `cursor`).
    written_bytes: usize,
    max: usize,
    /// A close the plugin asked for: written after every message.
    close: Option<CloseFrame>,
    budget: Budget,
}

impl Replay {
    pub fn new(max: usize, budget: Budget) -> Self {
        Self { items: VecDeque::new(), first: 1, cursor: 1, bytes: 0, written_bytes: 0, max, close: None, budget }
    }

    fn next(&self) -> u64 {
        self.first + self.items.len() as u64
    }

    /// The number of the last message kept (0 before any).
    pub fn last_kept(&self) -> u64 {
        self.next() - 1
    }

    /// Numbers and keeps a message. Room is made by forgetting written
    /// messages not yet acknowledged, oldest first (a resume from before
    /// them is then refused); past that, the buffer overflows.
    pub fn push(&mut self, message: Message) -> Result<(), Overflow> {
        let len = message.len();
        while !(self.bytes + len <= self.max && self.budget.take(len)) {
            if self.first >= self.cursor {
                return Err(Overflow);
            }
            self.pop_front();
        }
        self.bytes += len;
        self.items.push_back(message);
        Ok(())
    }

    fn pop_front(&mut self) {
        if let Some(m) = self.items.pop_front() {
            // Only written messages are ever forgotten.
            self.bytes -= m.len();
            self.written_bytes -= m.len();
            self.budget.give(m.len());
            self.first += 1;
        }
        if self.items.is_empty() && self.items.capacity() > 0 {
            // A quiet session keeps no buffer memory.
            self.items = VecDeque::new();
        }
    }

    /// The plugin closed the session: the frame goes out after every
    /// message. The first one wins.
    pub fn close(&mut self, frame: CloseFrame) {
        self.close.get_or_insert(frame);
    }

    /// Up to `max` messages not written yet, counted as written.
    pub fn take_unsent(&mut self, max: usize) -> Vec<Message> {
        let start = usize::try_from(self.cursor - self.first).unwrap_or(usize::MAX);
        let batch: Vec<Message> = self.items.iter().skip(start).take(max).cloned().collect();
        self.cursor += batch.len() as u64;
        self.written_bytes += batch.iter().map(Message::len).sum::<usize>();
        batch
    }

    pub fn has_unsent(&self) -> bool {
        self.cursor < self.next()
    }

    /// The close frame, once every message is written.
    pub fn take_close(&mut self) -> Option<CloseFrame> {
        if self.has_unsent() { None } else { self.close.take() }
    }

    /// The number of the last message written.
    pub fn written(&self) -> u64 {
        self.cursor - 1
    }

    /// Whether written messages await an acknowledgement.
    pub fn unacknowledged(&self) -> bool {
        self.first < self.cursor
    }

    /// Whether what awaits an acknowledgement is a quarter of the buffer,
    /// or the host's budget is half spent: time to ask, before a buffer
    /// must forget any of it.
    pub fn pressing(&self) -> bool {
        self.written_bytes >= self.max / 4 || (self.written_bytes > 0 && self.budget.half_spent())
    }

    /// The client received every message up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        let upto = seq.min(self.written());
        while self.first <= upto && !self.items.is_empty() {
            self.pop_front();
        }
    }

    /// Whether a client that received `last` messages can continue: it
    /// cannot have received more than were written, and what followed
    /// must still be kept.
    pub fn can_resume_from(&self, last: u64) -> bool {
        last <= self.written() && last + 1 >= self.first
    }

    /// A new transport whose client received `last` messages: everything
    /// after them is written again. False (nothing changes) if it cannot.
    pub fn resume_from(&mut self, last: u64) -> bool {
        if !self.can_resume_from(last) {
            return false;
        }
        self.ack(last);
        // Everything kept now follows `last`: none of it counts as written.
        self.cursor = last + 1;
        self.written_bytes = 0;
        true
    }
}

/// A session's numbered messages as they travel to another host.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PackedReplay {
    /// The number of `messages[0]`.
    pub first: u64,
    /// The number of the last message written.
    pub written: u64,
    pub messages: Vec<PackedMessage>,
    pub close: Option<(u16, String)>,
}

impl PackedReplay {
    /// What a recovered session owes a client that received `last`
    /// messages: `messages`, numbered from `last + 1`, none written yet.
    pub fn owed(last: u64, messages: Vec<Message>) -> Self {
        let messages = messages.into_iter().filter_map(PackedMessage::of).collect();
        Self { first: last + 1, written: last, messages, close: None }
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum PackedMessage {
    Text(String),
    Binary(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl PackedMessage {
    /// A data message as it travels; `None` for control frames.
    fn of(message: Message) -> Option<Self> {
        match message {
            Message::Text(t) => Some(Self::Text(t.as_str().to_owned())),
            Message::Binary(b) => Some(Self::Binary(b.to_vec())),
            _ => None,
        }
    }
}

impl Replay {
    /// Appends a message that goes with a leaving session whatever its
    /// buffer's bounds; its new host counts it.
    pub fn push_unbounded(&mut self, message: Message) {
        self.budget.force(message.len());
        self.bytes += message.len();
        self.items.push_back(message);
    }

    /// Everything kept, to travel; the buffer is empty after.
    pub fn pack(&mut self) -> PackedReplay {
        let messages = std::mem::take(&mut self.items).into_iter().filter_map(PackedMessage::of).collect();
        let packed = PackedReplay {
            first: self.first,
            written: self.written(),
            messages,
            close: self.close.take().map(|f| (u16::from(f.code), f.reason.to_string())),
        };
        self.budget.give(self.bytes);
        self.bytes = 0;
        self.written_bytes = 0;
        self.first = self.cursor;
        packed
    }

    /// A buffer from another host's: its numbering carries on. What it
    /// brings is kept even past this host's budget: it was promised.
    pub fn unpack(packed: PackedReplay, max: usize, budget: Budget) -> Self {
        let mut replay = Replay::new(max, budget);
        replay.first = packed.first;
        replay.cursor = packed.written + 1;
        for (n, message) in (packed.first..).zip(packed.messages) {
            let message = match message {
                PackedMessage::Text(t) => Message::text(t),
                PackedMessage::Binary(b) => Message::binary(b),
            };
            if n < replay.cursor {
                replay.written_bytes += message.len();
            }
            replay.push_unbounded(message);
        }
        replay.close = packed.close.map(|(code, reason)| CloseFrame { code: code.into(), reason: reason.into() });
        replay
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

/// What a session's task is handed.
pub enum Transfer {
    /// Its client resumed: the new socket and the client's count of
    /// messages received.
    Resume(Socket, u64),
    /// Another host takes it over: pack it (see `handover`), with the
    /// broadcasts held up to these points of its rooms' numbering.
    Export(Vec<(String, u64)>, tokio::sync::oneshot::Sender<Vec<u8>>),
    /// The host is stopping and another will take it over: its client is
    /// told so (1012), and the session waits.
    Drain,
}

/// One resumable WebSocket session, shared by its connection's task and
/// the handshakes that resume it.
pub struct Session {
    pub conn: Arc<Connection>,
    secret: String,
    /// The subprotocol chosen at open: every resume answers with it.
    pub subprotocol: Option<String>,
    pub grace: Duration,
    pub replay: Mutex<Replay>,
    pub handoff: Handoff<Transfer>,
    /// Checkpoints of a tracked session (see `checkpoint`): after message
    /// number N, where it stood in each room. Oldest first; the first is
    /// at or before what its client acknowledged.
    pub marks: Mutex<Vec<(u64, Vec<Mark>)>>,
    /// Messages taken from its client, as last counted by its task.
    pub received: AtomicU64,
}

/// Most checkpoints a session keeps between acknowledgements.
const MAX_MARKS: usize = 16;

impl Keyed for Session {
    fn conn(&self) -> &Arc<Connection> {
        &self.conn
    }

    fn secret(&self) -> &str {
        &self.secret
    }
}

impl Session {
    /// What the client holds: `ID.SECRET`.
    pub fn token(&self) -> String {
        format!("{}.{}", self.conn.id, self.secret)
    }

    /// Every message up to number `kept` was queued with the connection
    /// standing at `marks`. Past [`MAX_MARKS`], the second oldest goes: the
    /// oldest is the one a client that acknowledged it can resume from.
    pub fn note(&self, kept: u64, marks: Vec<Mark>) {
        let Ok(mut all) = self.marks.lock() else { return };
        if all.last().is_some_and(|(n, m)| *n == kept && *m == marks) {
            return;
        }
        if all.len() >= MAX_MARKS {
            all.remove(1);
        }
        all.push((kept, marks));
    }

    /// Its client acknowledged every message up to `mark`: checkpoints
    /// before the last one at or before it are no longer needed.
    pub fn acked(&self, mark: u64) {
        let Ok(mut all) = self.marks.lock() else { return };
        if let Some(keep) = all.iter().rposition(|(n, _)| *n <= mark) {
            all.drain(..keep);
        }
    }
}

/// Why a resume was refused, as the client is told. Only a client that
/// holds the session's secret learns more than `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No such session here: a wrong secret, a grace that ran out, or a
    /// session of another host.
    Unknown,
    /// More was sent while it was away than `limits.resume_buffer` keeps.
    Overflow,
    /// The messages after the client's last are no longer kept.
    Gap,
    /// The session ended while it was away (the plugin closed it, or
    /// faulted).
    Closed,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unknown => "unknown",
            Refused::Overflow => "overflow",
            Refused::Gap => "gap",
            Refused::Closed => "closed",
        }
    }
}

/// What a resume finds.
pub enum Found {
    Live(Arc<Session>),
    Refused(Refused),
}

/// A session that ended while its client may still come back to it: kept
/// until its grace would have run out, so that client learns why.
struct Ended {
    secret: String,
    why: Refused,
    until: Instant,
}

/// Most ended sessions remembered at once; the oldest go first.
const MAX_ENDED: usize = 65_536;

/// Ended sessions by id, and their ids in the order they ended.
type EndedSessions = (HashMap<Arc<str>, Ended>, VecDeque<Arc<str>>);

/// This host's resumable WebSocket sessions.
pub struct Sessions {
    live: Registry<Session>,
    ended: Mutex<EndedSessions>,
    pub budget: Budget,
    pub metrics: ResumeMetrics,
    /// Tracked sessions whose checkpoint changed, and those that left.
    changes: Mutex<Changes>,
    pub changed_bell: tokio::sync::Notify,
}

/// What the checkpoint writer (see `checkpoint`) has to do.
#[derive(Default)]
pub struct Changes {
    pub changed: HashSet<Arc<str>>,
    pub gone: Vec<Arc<str>>,
}

impl Sessions {
    pub fn new(budget_bytes: usize, metrics: ResumeMetrics) -> Self {
        Self {
            live: Registry::default(),
            ended: Mutex::new((HashMap::new(), VecDeque::new())),
            budget: Budget::new(budget_bytes, metrics.buffered.clone()),
            metrics,
            changes: Mutex::default(),
            changed_bell: tokio::sync::Notify::new(),
        }
    }

    /// Tracked session `id`'s checkpoint changed.
    pub fn changed(&self, id: &Arc<str>) {
        let new = self.changes.lock().is_ok_and(|mut c| c.changed.insert(id.clone()));
        if new {
            self.changed_bell.notify_one();
        }
    }

    /// What changed since the last call.
    pub fn take_changes(&self) -> Changes {
        self.changes.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }

    /// A new session for an accepted connection.
    pub fn open(
        &self,
        conn: Arc<Connection>,
        subprotocol: Option<String>,
        grace: Duration,
        buffer: usize,
    ) -> Arc<Session> {
        self.adopt(conn, new_secret(), subprotocol, grace, Replay::new(buffer, self.budget.clone()))
    }

    /// A session with `secret` and what it kept: one that moved here from
    /// another host, or (from [`Self::open`]) a new one.
    pub fn adopt(
        &self,
        conn: Arc<Connection>,
        secret: String,
        subprotocol: Option<String>,
        grace: Duration,
        replay: Replay,
    ) -> Arc<Session> {
        let session = Arc::new(Session {
            conn,
            secret,
            subprotocol,
            grace,
            replay: Mutex::new(replay),
            handoff: Handoff::default(),
            marks: Mutex::default(),
            received: AtomicU64::new(0),
        });
        self.live.insert(session.clone());
        session
    }

    /// The live session `id`, whoever asks (the caller checks the secret).
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.live.get(id)
    }

    /// The live session `token` names, if it is `plugin`'s.
    pub fn live(&self, plugin: &str, token: &str) -> Option<Arc<Session>> {
        self.live.find(plugin, token)
    }

    /// Why session `token` of `plugin` ended, if its client may still learn.
    pub fn ended_why(&self, token: &str) -> Option<Refused> {
        let (id, secret) = token.split_once('.')?;
        let mut ended = self.ended.lock().ok()?;
        sweep(&mut ended);
        ended.0.get(id).filter(|e| secret_matches(&e.secret, secret)).map(|e| e.why)
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.live.by_id.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Every live session (to drain them).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.live.by_id.lock().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// The session a resume names, if it can continue from `last`.
    pub fn find(&self, plugin: &str, token: &str, last: u64) -> Found {
        if let Some(session) = self.live.find(plugin, token) {
            let resumable = session.replay.lock().is_ok_and(|r| r.can_resume_from(last));
            if resumable {
                return Found::Live(session);
            }
            // The client cannot continue it: it ends, and the client starts
            // afresh.
            session.conn.abort(CloseFrame { code: 1001.into(), reason: "session replaced".into() });
            return Found::Refused(Refused::Gap);
        }
        let Some((id, secret)) = token.split_once('.') else { return Found::Refused(Refused::Unknown) };
        let Ok(mut ended) = self.ended.lock() else { return Found::Refused(Refused::Unknown) };
        sweep(&mut ended);
        match ended.0.get(id) {
            Some(e) if secret_matches(&e.secret, secret) => Found::Refused(e.why),
            _ => Found::Refused(Refused::Unknown),
        }
    }

    /// The session is over; `why`, when its client may still come back
    /// within the grace, is what that client is told.
    pub fn end(&self, session: &Session, why: Option<Refused>) {
        self.live.remove(&session.conn.id);
        if session.conn.is_tracked()
            && let Ok(mut changes) = self.changes.lock()
        {
            changes.changed.remove(&session.conn.id);
            changes.gone.push(session.conn.id.clone());
            drop(changes);
            self.changed_bell.notify_one();
        }
        let Some(why) = why else { return };
        let Ok(mut ended) = self.ended.lock() else { return };
        sweep(&mut ended);
        if ended.1.len() >= MAX_ENDED
            && let Some(oldest) = ended.1.pop_front()
        {
            ended.0.remove(&oldest);
        }
        let id = session.conn.id.clone();
        let until = Instant::now() + session.grace;
        ended.0.insert(id.clone(), Ended { secret: session.secret.clone(), why, until });
        ended.1.push_back(id);
    }
}

/// Forgets ended sessions whose grace ran out (they were added in order).
fn sweep(ended: &mut EndedSessions) {
    let now = Instant::now();
    while let Some(id) = ended.1.front() {
        if ended.0.get(id).is_some_and(|e| e.until > now) {
            break;
        }
        if let Some(id) = ended.1.pop_front() {
            ended.0.remove(&id);
        }
    }
}

/// The session's first message to its client, before anything the plugin
/// sends: a JSON object that starts `{"wasmsocket":"session"`, by which
/// the client tells it from the plugin's messages.
pub fn hello(session: Option<&Session>, resumed: bool, refused: Option<Refused>, received: u64) -> Message {
    /// Fields in this order on the wire.
    #[derive(serde::Serialize)]
    struct Hello<'a> {
        wasmsocket: &'a str,
        session: Option<String>,
        resumed: bool,
        refused: Option<&'a str>,
        received: u64,
        grace_ms: u128,
    }
    let hello = Hello {
        wasmsocket: "session",
        session: session.map(Session::token),
        resumed,
        refused: refused.map(Refused::as_str),
        received,
        grace_ms: session.map_or(0, |s| s.grace.as_millis()),
    };
    Message::text(serde_json::to_string(&hello).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(max: usize) -> Replay {
        Replay::new(max, Budget::new(1 << 20, Gauge::default()))
    }

    fn text(s: &str) -> Message {
        Message::text(s.to_owned())
    }

    #[test]
    fn a_buffer_travels_to_another_host_with_its_numbering() {
        let gauge = Gauge::default();
        let mut here = Replay::new(1 << 10, Budget::new(1 << 20, gauge.clone()));
        for m in ["m1", "m2", "m3", "m4"] {
            here.push(text(m)).expect("fits");
        }
        // Two written, the first acknowledged; two not written yet.
        assert_eq!(here.take_unsent(2), [text("m1"), text("m2")]);
        here.ack(1);
        here.push_unbounded(text("held broadcast"));
        here.close(CloseFrame { code: 4000.into(), reason: "bye".into() });
        let packed = here.pack();
        assert_eq!(gauge.get(), 0, "the leaving host gives its bytes back");
        let bytes = postcard::to_stdvec(&packed).expect("encode");
        let packed: PackedReplay = postcard::from_bytes(&bytes).expect("decode");

        let there_gauge = Gauge::default();
        let mut there = Replay::unpack(packed, 1 << 10, Budget::new(1 << 20, there_gauge.clone()));
        assert_eq!(there_gauge.get(), 3 * 2 + 14, "m2, m3, m4 and the broadcast");
        assert!(!there.can_resume_from(0), "m1 was acknowledged");
        assert!(there.resume_from(1));
        assert_eq!(there.take_unsent(10), [text("m2"), text("m3"), text("m4"), text("held broadcast")]);
        assert_eq!(there.take_close().map(|f| u16::from(f.code)), Some(4000));
        assert_eq!(there.written(), 5, "numbering carries on");
    }

    fn texts(batch: Vec<Message>) -> Vec<String> {
        batch.into_iter().map(|m| m.into_text().expect("text").to_string()).collect()
    }

    #[test]
    fn only_resumptions_parameters_are_taken_from_the_query() {
        assert_eq!(ask_of("room=a&b=c"), (Ask::Plain, "room=a&b=c".into()));
        assert_eq!(ask_of("room=a&resume=new"), (Ask::New, "room=a".into()));
        assert_eq!(
            ask_of("resume=h-1.abc&last=7&room=a"),
            (Ask::Resume { session: "h-1.abc".into(), last: 7 }, "room=a".into())
        );
        // A last that is not a number can continue nothing.
        assert_eq!(ask_of("resume=h-1.abc&last=x").0, Ask::Resume { session: "h-1.abc".into(), last: u64::MAX });
    }

    #[test]
    fn a_resume_writes_again_what_followed_the_clients_last() {
        let mut r = replay(1 << 20);
        for s in ["a", "b", "c"] {
            r.push(text(s)).unwrap();
        }
        assert!(!r.pressing());
        assert_eq!(texts(r.take_unsent(64)), ["a", "b", "c"]);
        r.ack(1);
        assert!(!r.can_resume_from(0), "message 1 was acknowledged and forgotten");
        assert!(!r.can_resume_from(4), "only 3 were written");
        assert!(r.resume_from(2));
        assert_eq!(texts(r.take_unsent(64)), ["c"]);
    }

    #[test]
    fn a_quarter_of_the_buffer_unacknowledged_is_pressing() {
        let mut r = replay(40);
        r.push(text("0123456789")).unwrap();
        assert!(!r.pressing(), "not written yet");
        r.take_unsent(64);
        assert!(r.pressing());
        r.ack(1);
        assert!(!r.pressing());
    }

    #[test]
    fn room_is_made_from_written_messages_and_then_it_overflows() {
        let mut r = replay(4);
        r.push(text("ab")).unwrap();
        r.push(text("cd")).unwrap();
        r.take_unsent(1);
        // "ab" was written, unacknowledged: forgotten to make room.
        r.push(text("ef")).unwrap();
        assert!(!r.can_resume_from(0));
        assert_eq!(r.push(text("g")), Err(Overflow), "nothing written is left to forget");
        assert_eq!(r.bytes, 4);
    }

    #[test]
    fn the_hosts_budget_bounds_every_session_and_is_given_back() {
        let budget = Budget::new(5, Gauge::default());
        let mut a = Replay::new(100, budget.clone());
        let mut b = Replay::new(100, budget.clone());
        a.push(text("1234")).unwrap();
        assert_eq!(b.push(text("12")), Err(Overflow));
        drop(a);
        b.push(text("12")).unwrap();
        assert_eq!(budget.gauge.get(), 2);
    }

    #[test]
    fn a_close_waits_for_the_messages_before_it() {
        let mut r = replay(100);
        r.push(text("last words")).unwrap();
        r.close(CloseFrame { code: 4000.into(), reason: "bye".into() });
        assert!(r.take_close().is_none());
        r.take_unsent(64);
        assert_eq!(r.take_close().map(|f| u16::from(f.code)), Some(4000));
    }

    #[test]
    fn the_hello_starts_as_clients_look_for_it() {
        let text = hello(None, false, Some(Refused::Unknown), 0).into_text().expect("text");
        assert!(text.starts_with(r#"{"wasmsocket":"session","session":null,"resumed":false,"refused":"unknown""#));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_matches("abcd", "abcd"));
        assert!(!secret_matches("abcd", "abce"));
        assert!(!secret_matches("abcd", "abc"));
    }
}
