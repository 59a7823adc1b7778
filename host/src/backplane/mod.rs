//! Scale-out over Redis: several hosts behind a load balancer act as one.
//!
//! * Broadcasts are delivered locally, then published on the room's own
//!   channel, to which a host subscribes while it has a member in the room;
//!   so what a host receives grows with the rooms it serves, not with the
//!   whole cluster's traffic.
//! * A send or close for a connection of another host is published on that
//!   host's own channel (connection ids start with their host's id).
//! * Room membership is kept in Redis sets, so counts and listings are
//!   cluster-wide; each host renews a lease and sweeps hosts whose lease ran
//!   out, so a dead host's members disappear.
//! * The key-value store is Redis strings.
//! * On a Redis Cluster the channels are sharded (`SPUBLISH`): each room's
//!   keys and channel live on one shard (see `scripts`).
//!
//! When Redis is unreachable a host keeps serving its own connections and
//! rooms, reports the outage, and reconnects with backoff; it then rewrites
//! its memberships, since a long outage may have had it swept.
//! Pub/sub is at-most-once: what is published during an outage is lost, and
//! counted (by the publisher when it cannot publish, by a listening host
//! from the gaps in a room's numbering).

mod checkpoints;
mod conn;
mod envelope;
mod link;
mod membership;
mod moves;
mod room_timers;
mod scripts;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use futures_util::future::BoxFuture;
use redis::{ErrorKind, FromRedisValue, PushInfo, RedisError, ServerErrorKind};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

pub use checkpoints::Checkpoint;
pub use envelope::{Envelope, Payload};
pub use moves::{MovingSessions, Offered, PATIENCE as MOVE_PATIENCE};

use crate::config::RedisConfig;
use crate::hub::history::{HistoryError, Keep, Kept};
use crate::hub::kv::KvError;
use crate::hub::{Cluster, DeliveryError, Hub, TimerTurn};
use crate::metrics::{BackplaneMetrics, CrossHost, Incoming};
use conn::{Mode, RedisConn, Target};
use membership::Op;
use scripts::Keys;

/// Memberships changes waiting to be written; past this, the host rewrites
/// all of its memberships instead of queueing more.
const MEMBERSHIP_QUEUE: usize = 65_536;

/// Messages received on subscribed channels, waiting for the receiving
/// task; past this they are dropped and counted as lost.
const PUSH_QUEUE: usize = 65_536;

/// A post as it came, before it is checked: what a host forwards to the
/// session's owner.
#[derive(Debug, Clone)]
pub struct RawPost {
    pub seq: u64,
    pub close: Option<u16>,
    /// `Content-Type: text/plain`: a text message.
    pub text: bool,
    pub body: Vec<u8>,
}

/// Where posts forwarded from other hosts go: the HTTP fallback's sessions
/// (a layer above), attached at start-up with [`Backplane::take_posts`].
pub trait ForwardedPosts: Send + Sync {
    /// Delivers `post` to session `session` of `plugin` on this host, and
    /// answers with the HTTP status and message its client gets.
    fn deliver_forwarded<'a>(
        &'a self,
        plugin: &'a str,
        session: &'a str,
        post: RawPost,
    ) -> BoxFuture<'a, (u16, String)>;
}

/// Why the backplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    #[error("redis.url / redis.cluster_nodes: {0}")]
    Target(#[from] RedisError),
    /// The Redis holds another release's key layout.
    #[error("{0}")]
    Layout(String),
}

/// The link to Redis, as `/healthz` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkStatus {
    /// "up" or "down".
    pub status: &'static str,
    /// This host's id: the prefix of its connection ids.
    pub host: String,
    /// When the link last went up or down (RFC 3339).
    pub since: String,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last change of the link, for `/healthz`.
struct Change {
    since: SystemTime,
    error: Option<String>,
}

/// This host's membership of the cluster.
pub struct Backplane {
    host_id: Arc<str>,
    keys: Keys,
    /// `keys.host_channel(host_id)`, kept to tell incoming messages apart.
    host_channel: String,
    target: Target,
    mode: Mode,
    /// What subscribed channels bring, for the supervisor to receive.
    pushes: Mutex<Option<mpsc::Receiver<(u64, PushInfo)>>>,
    timeout: Duration,
    heartbeat: Duration,
    host_timeout: Duration,
    max_backoff: Duration,
    /// The connection, while Redis is reachable.
    conn: ArcSwapOption<RedisConn>,
    /// Reachable, and this host's memberships are written: cluster-wide
    /// answers can be trusted.
    up: AtomicBool,
    /// When `up` last changed, and why the link is down.
    change: Mutex<Change>,
    /// Cancelled when a command finds the connection broken, so the
    /// supervisor reconnects without waiting for the next heartbeat.
    session: Mutex<CancellationToken>,
    ops: mpsc::Sender<Op>,
    /// The membership queue overflowed: rewrite everything.
    resync_needed: AtomicBool,
    hub: Weak<Hub>,
    metrics: BackplaneMetrics,
    stop: CancellationToken,
    /// Posts forwarded to their sessions' hosts, waiting for the answer.
    posts: Mutex<HashMap<u64, oneshot::Sender<(u16, String)>>>,
    next_ticket: AtomicU64,
    /// Where posts forwarded to this host go.
    forwarded: OnceLock<Arc<dyn ForwardedPosts>>,
    /// Why this host cannot use the Redis it reached: another release's
    /// key layout is there. The link stops trying.
    incompatible: OnceLock<String>,
    /// The last broadcast number received per room channel, kept across
    /// reconnections so what an outage lost is counted, and read by moves.
    seen: Mutex<HashMap<String, u64>>,
    /// Sessions moving to or from this host.
    moves: moves::Moves,
    /// Where sessions held here are asked for.
    movers: OnceLock<Arc<dyn MovingSessions>>,
}

impl Backplane {
    /// Joins the cluster on `config.url` (or `config.cluster_nodes`) in the
    /// background: the host serves at once, and reports in `/healthz` until
    /// Redis answers.
    pub fn start(config: &RedisConfig, hub: &Arc<Hub>, metrics: BackplaneMetrics) -> Result<Arc<Self>, BackplaneError> {
        let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
        let lost = metrics.lost.clone();
        let push = move |connection: u64, info: PushInfo| {
            if push_tx.try_send((connection, info)).is_err() {
                lost.inc();
            }
        };
        let (target, mode) = Target::new(config.url.as_deref(), &config.cluster_nodes, config.timeout, Arc::new(push))?;
        let (ops, ops_rx) = mpsc::channel(MEMBERSHIP_QUEUE);
        let keys = Keys::new(&config.prefix);
        let backplane = Arc::new(Self {
            host_id: hub.host_id().into(),
            host_channel: keys.host_channel(hub.host_id()),
            keys,
            target,
            mode,
            pushes: Mutex::new(Some(push_rx)),
            timeout: config.timeout,
            heartbeat: config.heartbeat,
            host_timeout: config.host_timeout,
            max_backoff: config.max_backoff,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            change: Mutex::new(Change { since: SystemTime::now(), error: Some("connecting".into()) }),
            session: Mutex::new(CancellationToken::new()),
            ops,
            resync_needed: AtomicBool::new(false),
            hub: Arc::downgrade(hub),
            metrics,
            stop: CancellationToken::new(),
            posts: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(1),
            forwarded: OnceLock::new(),
            incompatible: OnceLock::new(),
            seen: Mutex::new(HashMap::new()),
            moves: Default::default(),
            movers: OnceLock::new(),
        });
        tokio::spawn(membership::write(backplane.clone(), ops_rx));
        tokio::spawn(link::supervise(backplane.clone()));
        tokio::spawn(room_timers::scout(backplane.clone()));
        Ok(backplane)
    }

    /// Delivers the posts other hosts forward here to `sessions`; once, at
    /// start-up. Until then they are answered 404, as no session is open.
    pub fn take_posts(&self, sessions: Arc<dyn ForwardedPosts>) {
        let _ = self.forwarded.set(sessions);
    }

    /// Waits up to `wait` for the first connection, so a host whose Redis
    /// is there starts as part of the cluster; one whose Redis is not
    /// starts anyway, degraded.
    pub async fn ready(&self, wait: Duration) -> Result<bool, BackplaneError> {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.is_up() && tokio::time::Instant::now() < deadline {
            if let Some(why) = self.incompatible.get() {
                return Err(BackplaneError::Layout(why.clone()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(self.is_up())
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn status(&self) -> LinkStatus {
        let (since, error) =
            self.change.lock().map(|c| (c.since, c.error.clone())).unwrap_or((SystemTime::now(), None));
        LinkStatus {
            status: if self.is_up() { "up" } else { "down" },
            host: self.host_id.to_string(),
            since: humantime::format_rfc3339_seconds(since).to_string(),
            error,
        }
    }

    /// The connection, if cluster-wide answers can be trusted now.
    fn link(&self) -> Option<RedisConn> {
        if !self.is_up() {
            return None;
        }
        self.conn.load().as_deref().cloned()
    }

    /// Notes a failed command; a broken connection makes the supervisor
    /// reconnect now.
    fn failed(&self, error: &RedisError) {
        self.metrics.errors.inc();
        // On a cluster, a master down or slots in move is an outage too:
        // what lives there is unreachable until the cluster heals.
        let cluster_down = error.is_cluster_error()
            || matches!(
                error.kind(),
                ErrorKind::ClusterConnectionNotFound | ErrorKind::Server(ServerErrorKind::MasterDown)
            );
        if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_timeout()
            || error.is_connection_refusal()
            || cluster_down
        {
            if let Ok(mut change) = self.change.lock() {
                change.error = Some(error.to_string());
            }
            if let Ok(session) = self.session.lock() {
                session.cancel();
            }
        } else {
            // E.g. INCRBY on text: the plugin gets the error; not an outage.
            tracing::debug!("Redis refused a command: {error}");
        }
    }

    /// Runs one command or pipeline; `None` when Redis is not reachable.
    async fn query<T: FromRedisValue>(&self, cmd: &impl Query) -> Option<Result<T, RedisError>> {
        let mut conn = self.link()?;
        let result = cmd.run(&mut conn).await;
        if let Err(e) = &result {
            self.failed(e);
        }
        Some(result)
    }

    /// Runs one script; `None` when Redis is not reachable.
    async fn script<T: FromRedisValue>(&self, script: &redis::ScriptInvocation<'_>) -> Option<Result<T, RedisError>> {
        let mut conn = self.link()?;
        let result = script.invoke_async(&mut conn).await;
        if let Err(e) = &result {
            self.failed(e);
        }
        Some(result)
    }

    // --- Rooms -----------------------------------------------------------

    /// Records a join in Redis; returns once written, with the member's
    /// join point in the broadcast numbering. `None` while Redis is
    /// unreachable: the join is written on reconnection.
    pub async fn join(&self, plugin: &str, room: &str, conn: &str) -> Option<u64> {
        self.membership(Op::Join { plugin: plugin.into(), room: room.into(), conn: conn.into(), done: None }).await
    }

    pub async fn leave(&self, plugin: &str, room: &str, conn: &str) {
        self.membership(Op::Leave { plugin: plugin.into(), room: room.into(), conn: conn.into(), done: None }).await;
    }

    async fn membership(&self, mut op: Op) -> Option<u64> {
        let (done, written) = oneshot::channel();
        op.set_done(done);
        self.ops.send(op).await.ok()?;
        written.await.ok().flatten()
    }

    /// A closed connection left `rooms`; written in the background.
    pub fn left_all(&self, plugin: &str, rooms: Vec<String>, conn: &str) {
        for room in rooms {
            let op = Op::Leave { plugin: plugin.into(), room, conn: conn.into(), done: None };
            if self.ops.try_send(op).is_err() {
                self.resync_needed.store(true, Ordering::Release);
            }
        }
    }

    /// Publishes a broadcast that this host has delivered to its own
    /// members. Returns the room's size across the cluster, or `None`
    /// when Redis is unreachable (other hosts miss it).
    pub async fn broadcast(
        &self,
        plugin: &str,
        room: &str,
        message: &Message,
        except: Option<&str>,
        keep: Keep,
    ) -> Option<u64> {
        let envelope = Envelope::Broadcast {
            origin: self.host_id.as_ref().into(),
            plugin: plugin.into(),
            room: room.into(),
            except: except.map(Into::into),
            message: Payload::of(message)?,
        };
        let room_id = Keys::room_id(plugin, room);
        let mut publish = scripts::BROADCAST.prepare_invoke();
        publish
            .key(self.keys.seq(&room_id))
            .key(self.keys.members(&room_id))
            .key(self.keys.history(&room_id))
            .arg(self.keys.room_channel(&room_id))
            .arg(envelope.encode())
            .arg(self.mode.publish())
            .arg(if keep.is_on() { keep.size } else { 0 })
            .arg(u64::try_from(keep.ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let published = match self.link() {
            Some(mut conn) => publish.invoke_async::<u64>(&mut conn).await.inspect_err(|e| self.failed(e)).ok(),
            None => None,
        };
        match published {
            Some(_) => self.metrics.published(CrossHost::Broadcast),
            None => self.metrics.dropped(CrossHost::Broadcast),
        }
        published
    }

    /// Up to `limit` entries of the room's history stream, oldest first:
    /// those numbered after `since`, or the latest ones.
    pub async fn history(
        &self,
        plugin: &str,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Kept>, HistoryError> {
        let key = self.keys.history(&Keys::room_id(plugin, room));
        let cmd = match since {
            // Ids are `N-0`: the first after `since` is `since+1`.
            Some(since) => redis::cmd("XRANGE")
                .arg(key)
                .arg(format!("{}-0", since.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(limit)
                .to_owned(),
            None => redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(limit).to_owned(),
        };
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> =
            self.query(&cmd).await.ok_or(HistoryError::Unavailable)?.map_err(|_| HistoryError::Unavailable)?;
        let mut kept: Vec<Kept> = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let offset = id.split_once('-')?.0.parse().ok()?;
                let Envelope::Broadcast { message, .. } = Envelope::decode(fields.get("m")?).ok()? else { return None };
                Some(Kept { offset, message: message.into_message() })
            })
            .collect();
        if since.is_none() {
            kept.reverse();
        }
        Ok(kept)
    }

    /// The room's size across the cluster; `None` when unreachable.
    pub async fn count(&self, plugin: &str, room: &str) -> Option<u32> {
        let n: u64 =
            self.query(redis::cmd("SCARD").arg(self.keys.members(&Keys::room_id(plugin, room)))).await?.ok()?;
        Some(u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub async fn members(&self, plugin: &str, room: &str, limit: usize) -> Option<Vec<String>> {
        if limit == 0 {
            return Some(Vec::new());
        }
        self.query(redis::cmd("SRANDMEMBER").arg(self.keys.members(&Keys::room_id(plugin, room))).arg(limit))
            .await?
            .ok()
    }

    // --- Connections on other hosts -------------------------------------

    /// Sends to a connection of another host. `NotFound` when that host is
    /// not listening (gone, or Redis unreachable).
    pub async fn send(&self, plugin: Option<&str>, to: &str, message: &Message) -> Result<(), DeliveryError> {
        let payload = Payload::of(message).ok_or(DeliveryError::NotFound)?;
        let envelope = Envelope::Send { plugin: plugin.map(Into::into), to: to.into(), message: payload };
        self.direct(to, CrossHost::Send, &envelope).await
    }

    pub async fn close(&self, plugin: &str, to: &str, frame: &CloseFrame) -> Result<(), DeliveryError> {
        let envelope = Envelope::Close {
            plugin: plugin.into(),
            to: to.into(),
            code: frame.code.into(),
            reason: frame.reason.as_str().into(),
        };
        self.direct(to, CrossHost::Close, &envelope).await
    }

    /// Forwards a fallback client's post to the host that owns its session
    /// and waits up to `within` for its answer: the status and message.
    pub async fn forward_post(
        &self,
        plugin: &str,
        session: &str,
        post: &RawPost,
        within: Duration,
    ) -> Result<(u16, String), DeliveryError> {
        let to = session.split_once('.').map_or(session, |(id, _)| id);
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut posts) = self.posts.lock() {
            posts.insert(ticket, tx);
        }
        let envelope = Envelope::Post {
            from: (*self.host_id).into(),
            ticket,
            plugin: plugin.into(),
            session: session.into(),
            seq: post.seq,
            close: post.close,
            text: post.text,
            body: post.body.as_slice().into(),
        };
        let sent = self.direct(to, CrossHost::Post, &envelope).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(within + self.timeout, rx).await.ok().and_then(Result::ok),
            Err(_) => None,
        };
        if let Ok(mut posts) = self.posts.lock() {
            posts.remove(&ticket);
        }
        match (sent, answer) {
            (_, Some(answer)) => Ok(answer),
            (Err(e), None) => Err(e),
            (Ok(()), None) => Ok((504, "the session's host did not answer in time".into())),
        }
    }

    async fn direct(&self, to: &str, kind: CrossHost, envelope: &Envelope<'_>) -> Result<(), DeliveryError> {
        let host = Hub::host_of(to).ok_or(DeliveryError::NotFound)?;
        self.to_host(host, kind, envelope).await
    }

    /// Publishes on host `host`'s own channel, where another host than
    /// this one must listen (this one does on its own, and on those of the
    /// hosts whose sessions moved here).
    async fn to_host(&self, host: &str, kind: CrossHost, envelope: &Envelope<'_>) -> Result<(), DeliveryError> {
        let channel = self.keys.host_channel(host);
        let others = u64::from(host == &*self.host_id || self.listens_on(host));
        match self.query::<u64>(redis::cmd(self.mode.publish()).arg(channel).arg(envelope.encode())).await {
            Some(Ok(listeners)) if listeners > others => {
                self.metrics.published(kind);
                Ok(())
            }
            Some(Ok(_)) => Err(DeliveryError::NotFound),
            _ => {
                self.metrics.dropped(kind);
                Err(DeliveryError::NotFound)
            }
        }
    }

    /// Acts on what a subscribed channel brought: on a room's channel
    /// `NUMBER SPACE ENVELOPE`, on a host's own just the envelope (this
    /// host's, or the first host of a session that moved here).
    fn receive(self: &Arc<Self>, channel: &str, bytes: &[u8]) {
        let Some(hub) = self.hub.upgrade() else { return };
        let (seq, bytes) = if channel == self.host_channel || self.keys.is_host_channel(channel) {
            self.metrics.incoming(Incoming::Direct);
            (0, bytes)
        } else {
            self.metrics.incoming(Incoming::Room);
            let numbered = bytes.iter().position(|&b| b == b' ').and_then(|space| {
                let seq = std::str::from_utf8(&bytes[..space]).ok()?.parse::<u64>().ok()?;
                Some((seq, &bytes[space + 1..]))
            });
            match numbered {
                Some((seq, rest)) => {
                    self.count_gap(channel, seq);
                    (seq, rest)
                }
                None => {
                    tracing::warn!("ignoring a backplane broadcast without its number");
                    return;
                }
            }
        };
        let envelope = match Envelope::decode(bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("ignoring a backplane message: {e}");
                return;
            }
        };
        match envelope {
            Envelope::Broadcast { origin, plugin, room, except, message } => {
                let message = message.into_message();
                // The publisher has served its own members already, but for
                // sessions that moved here, which take numbered ones only.
                if *origin == *self.host_id {
                    hub.rooms.broadcast_looped(&plugin, &room, &message, except.as_deref(), seq);
                    return;
                }
                self.metrics.received(CrossHost::Broadcast);
                hub.rooms.broadcast_from_cluster(&plugin, &room, &message, except.as_deref(), seq);
            }
            Envelope::Send { plugin, to, message } => {
                self.metrics.received(CrossHost::Send);
                if self.not_mine(&to) {
                    return;
                }
                let conn = match plugin {
                    Some(plugin) => hub.get(&plugin, &to),
                    None => hub.get_any(&to),
                };
                if let Some(conn) = conn {
                    let _ = conn.send(message.into_message());
                }
            }
            Envelope::Close { plugin, to, code, reason } => {
                self.metrics.received(CrossHost::Close);
                if self.not_mine(&to) {
                    return;
                }
                if let Some(conn) = hub.get(&plugin, &to) {
                    let _ = conn.close(CloseFrame { code: CloseCode::from(code), reason: reason.into_owned().into() });
                }
            }
            // The rest answer this host only; on the channel of a session's
            // first host they are that host's.
            _ if channel != self.host_channel && !matches!(envelope, Envelope::Take { .. }) => {}
            Envelope::Post { from, ticket, plugin, session, seq, close, text, body } => {
                self.metrics.received(CrossHost::Post);
                let post = RawPost { seq, close, text, body: body.into_owned() };
                let (from, plugin, session) = (from.into_owned(), plugin.into_owned(), session.into_owned());
                let (me, sessions) = (self.clone(), self.forwarded.get().cloned());
                // It waits for the posts before it, so it must not hold up
                // what else this channel brings.
                tokio::spawn(async move {
                    let (status, message) = match &sessions {
                        Some(sessions) => sessions.deliver_forwarded(&plugin, &session, post).await,
                        None => (404, "no such session".into()),
                    };
                    let answer = Envelope::PostAnswer { ticket, status, message: message.into() };
                    let _ = me.to_host(&from, CrossHost::Post, &answer).await;
                });
            }
            Envelope::PostAnswer { ticket, status, message } => {
                let waiting = self.posts.lock().ok().and_then(|mut posts| posts.remove(&ticket));
                if let Some(waiting) = waiting {
                    let _ = waiting.send((status, message.into_owned()));
                }
            }
            Envelope::Take { from, ticket, plugin, session, last } => {
                self.metrics.received(CrossHost::Move);
                self.take(&from, ticket, &plugin, &session, last);
            }
            Envelope::Commit { ticket, from, points } => self.commit_received(ticket, &from, points),
            Envelope::Offer { ticket, holder, rooms } => self.answered(
                ticket,
                moves::Answer::Offer {
                    holder: holder.into_owned(),
                    rooms: rooms.into_iter().map(Cow::into_owned).collect(),
                },
            ),
            Envelope::Handed { ticket } => self.answered(ticket, moves::Answer::Handed),
            Envelope::Decline { ticket, reason } => self.answered(ticket, moves::Answer::Decline(reason.into_owned())),
        }
    }

    /// Counts the numbers skipped since the last broadcast of this room
    /// received: published while this host listened, but not delivered
    /// (an outage, a failover). A lower number means the counter restarted
    /// (the room emptied, or Redis lost it): nothing to count.
    fn count_gap(&self, channel: &str, seq: u64) {
        let Ok(mut seen) = self.seen.lock() else { return };
        match seen.get_mut(channel) {
            Some(last) => {
                if seq > *last + 1 {
                    self.metrics.lost.inc_by(seq - *last - 1);
                }
                *last = seq;
            }
            None => {
                seen.insert(channel.to_string(), seq);
            }
        }
    }

    // --- Key-value store --------------------------------------------------

    fn unreachable() -> KvError {
        KvError::Unavailable("Redis is unreachable".into())
    }

    fn store_error(e: RedisError) -> KvError {
        let text = e.to_string();
        if text.contains("overflow") {
            KvError::Overflow
        } else if text.contains("not an integer") {
            KvError::NotAnInteger(String::new())
        } else {
            KvError::Unavailable(text)
        }
    }

    /// `None` both when the key is absent and when Redis is unreachable:
    /// the WIT `get` has no error case.
    pub async fn kv_get(&self, plugin: &str, key: &str) -> Option<Vec<u8>> {
        self.query(redis::cmd("GET").arg(self.keys.kv(plugin, key))).await?.ok()?
    }

    pub async fn kv_set(&self, plugin: &str, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.kv(plugin, key)).arg(value);
        if let Some(ttl) = ttl {
            // Redis refuses PX 0; a zero TTL means already expired.
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        self.query::<()>(&cmd).await.ok_or_else(Self::unreachable)?.map_err(Self::store_error)
    }

    pub async fn kv_delete(&self, plugin: &str, key: &str) -> bool {
        let removed: Option<u64> =
            self.query(redis::cmd("DEL").arg(self.keys.kv(plugin, key))).await.and_then(Result::ok);
        removed.unwrap_or(0) > 0
    }

    pub async fn kv_increment(&self, plugin: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let result = self
            .query::<i64>(redis::cmd("INCRBY").arg(self.keys.kv(plugin, key)).arg(delta))
            .await
            .ok_or_else(Self::unreachable)?;
        result.map_err(|e| match Self::store_error(e) {
            KvError::NotAnInteger(_) => KvError::NotAnInteger(key.into()),
            other => other,
        })
    }

    /// Leaves the cluster at shutdown: this host's memberships and lease
    /// go now rather than at `host_timeout`.
    pub async fn shutdown(&self) {
        // Sessions that moved away stay members: what they left here is
        // written first, so the sweep below does not take them out.
        let _ = tokio::time::timeout(self.timeout, self.membership(Op::Flush { done: None })).await;
        if let Some(conn) = self.conn.load_full() {
            let leave = async {
                membership::forget(self, &conn, &self.host_id).await?;
                redis::cmd("ZREM")
                    .arg(self.keys.hosts())
                    .arg(&*self.host_id)
                    .query_async::<()>(&mut (*conn).clone())
                    .await
            };
            match tokio::time::timeout(self.timeout, leave).await {
                Ok(Ok(())) => tracing::info!("left the Redis cluster"),
                Ok(Err(e)) => {
                    tracing::warn!("could not leave the Redis cluster cleanly ({e}); it sweeps this host later")
                }
                Err(_) => tracing::warn!("Redis did not answer at shutdown; the cluster sweeps this host later"),
            }
        }
        self.stop.cancel();
    }
}

/// A command or a pipeline.
trait Query {
    fn run<T: FromRedisValue>(&self, conn: &mut RedisConn) -> impl Future<Output = Result<T, RedisError>> + Send;
}

impl Query for redis::Cmd {
    fn run<T: FromRedisValue>(&self, conn: &mut RedisConn) -> impl Future<Output = Result<T, RedisError>> + Send {
        self.query_async(conn)
    }
}

impl Query for redis::Pipeline {
    fn run<T: FromRedisValue>(&self, conn: &mut RedisConn) -> impl Future<Output = Result<T, RedisError>> + Send {
        self.query_async(conn)
    }
}

/// The hub's port to the cluster, served by Redis.
impl Cluster for Backplane {
    fn join<'a>(&'a self, plugin: &'a str, room: &'a str, conn: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(Backplane::join(self, plugin, room, conn))
    }

    fn leave<'a>(&'a self, plugin: &'a str, room: &'a str, conn: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(Backplane::leave(self, plugin, room, conn))
    }

    fn left_all(&self, plugin: &str, rooms: Vec<String>, conn: &str) {
        Backplane::left_all(self, plugin, rooms, conn);
    }

    fn disowned(&self, plugin: &str, rooms: Vec<String>, conn: &str) {
        for room in rooms {
            let op = Op::Disown { plugin: plugin.into(), room, conn: conn.into() };
            if self.ops.try_send(op).is_err() {
                self.resync_needed.store(true, Ordering::Release);
            }
        }
    }

    fn broadcast<'a>(
        &'a self,
        plugin: &'a str,
        room: &'a str,
        message: &'a Message,
        except: Option<&'a str>,
        keep: Keep,
    ) -> BoxFuture<'a, Option<u64>> {
        Box::pin(Backplane::broadcast(self, plugin, room, message, except, keep))
    }

    fn history<'a>(
        &'a self,
        plugin: &'a str,
        room: &'a str,
        since: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Kept>, HistoryError>> {
        Box::pin(Backplane::history(self, plugin, room, since, limit))
    }

    fn count<'a>(&'a self, plugin: &'a str, room: &'a str) -> BoxFuture<'a, Option<u32>> {
        Box::pin(Backplane::count(self, plugin, room))
    }

    fn members<'a>(&'a self, plugin: &'a str, room: &'a str, limit: usize) -> BoxFuture<'a, Option<Vec<String>>> {
        Box::pin(Backplane::members(self, plugin, room, limit))
    }

    fn send<'a>(
        &'a self,
        plugin: Option<&'a str>,
        to: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(Backplane::send(self, plugin, to, message))
    }

    fn close<'a>(
        &'a self,
        plugin: &'a str,
        to: &'a str,
        frame: &'a CloseFrame,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(Backplane::close(self, plugin, to, frame))
    }

    fn kv_get<'a>(&'a self, plugin: &'a str, key: &'a str) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(Backplane::kv_get(self, plugin, key))
    }

    fn kv_set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        Box::pin(Backplane::kv_set(self, plugin, key, value, ttl))
    }

    fn kv_delete<'a>(&'a self, plugin: &'a str, key: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(Backplane::kv_delete(self, plugin, key))
    }

    fn kv_increment<'a>(&'a self, plugin: &'a str, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64, KvError>> {
        Box::pin(Backplane::kv_increment(self, plugin, key, delta))
    }

    fn timer_define<'a>(
        &'a self,
        plugin: &'a str,
        room: &'a str,
        name: &'a str,
        schedule: &'a str,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(Backplane::timer_define(self, plugin, room, name, schedule))
    }

    fn timer_turn<'a>(&'a self, plugin: &'a str, room: &'a str, name: &'a str) -> BoxFuture<'a, Option<TimerTurn>> {
        Box::pin(Backplane::timer_turn(self, plugin, room, name))
    }

    fn timer_cancel<'a>(&'a self, plugin: &'a str, room: &'a str, name: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(Backplane::timer_cancel(self, plugin, room, name))
    }

    fn timer_release<'a>(&'a self, timers: &'a [(Arc<str>, Arc<str>, Arc<str>)]) -> BoxFuture<'a, ()> {
        Box::pin(Backplane::timer_release(self, timers))
    }
}
