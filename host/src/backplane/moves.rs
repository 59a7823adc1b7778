//! Resumable sessions moving between hosts (`docs/delivery.md`): a client
//! whose session lives on host H reconnects to host B (H is draining, or
//! the load balancer picked B), and B takes the session over, id and all.
//!
//! 1. B listens on the channel of the id's first host (where directed
//!    sends to the id go, wherever it lives), then publishes `Take` there.
//!    Whoever holds the session hears it, after every directed send
//!    published before it and before every one published after it: so
//!    those before are H's to deliver, those after B's.
//! 2. H answers `Offer` with the session's rooms and from then on holds its
//!    broadcasts aside with their numbers (see `hub::rooms`).
//! 3. B joins those rooms cluster-wide; each join point splits the room's
//!    numbered stream: up to it H delivers, after it B. B sends `Commit`.
//! 4. H waits until it has received every broadcast up to those points,
//!    hands the session to its layer above to pack (with the held
//!    broadcasts up to the points), stores it in Redis and answers
//!    `Handed`; B takes it and the client carries on.
//!
//! Rooms a session moved with take only numbered broadcasts on its new
//! host, its own included: those come back from Redis. So nothing is
//! delivered twice, and nothing published while it moved is lost.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::{Backplane, Envelope, Keys};
use crate::hub::Hub;
use crate::metrics::CrossHost;

/// How long a moving session's packed state waits in Redis for its new
/// host to take it.
const STORED_FOR: Duration = Duration::from_secs(60);

/// How long each step of a move may wait for the other host. Generous: a
/// host that drains thousands of sessions hears thousands of requests at
/// once. A request for a session no one holds is answered at once by the
/// host that gave out its id (see `Moves::handed`), so only a session that
/// moved and then ended makes its asker wait this long.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Most ids remembered as handed over by the host that gave them out.
const MAX_HANDED: usize = 65_536;

/// Where the holder's side of a move is served: the sessions, a layer
/// above, attached at start-up with [`Backplane::take_moves`].
pub trait MovingSessions: Send + Sync {
    /// Another host asks for session `token` (`ID.SECRET`) of `plugin`,
    /// whose client received `last` messages.
    fn offer(&self, plugin: &str, token: &str, last: u64) -> Offered;

    /// Packs the session for its new host, with the broadcasts held up to
    /// `points` (room, number); `None` if it ended meanwhile.
    fn export<'a>(
        &'a self,
        plugin: &'a str,
        id: &'a str,
        points: &'a [(String, u64)],
    ) -> BoxFuture<'a, Option<Vec<u8>>>;

    /// The asker went silent: the session stays here.
    fn keep(&self, plugin: &str, id: &str);
}

/// What a holder answers to a `Take`.
pub enum Offered {
    /// Not here: someone else may answer.
    NotHere,
    /// Here, but it will not move; why, as a resume refusal names it.
    Refused(&'static str),
    /// Here, now holding its broadcasts: its rooms, each with the
    /// session's join point on this host.
    Rooms(Vec<(String, u64)>),
}

/// A session this host offered, until the asker commits or goes silent.
pub(super) struct Offer {
    plugin: String,
    id: Arc<str>,
    rooms: Vec<(String, u64)>,
}

/// What an asker hears back.
pub(super) enum Answer {
    Offer { holder: String, rooms: Vec<String> },
    Handed,
    Decline(String),
}

/// The holder's offer, as the asker sees it.
pub struct Taken {
    pub holder: String,
    pub ticket: u64,
    pub rooms: Vec<String>,
}

/// Ids, and the order they came in.
type Recent = (HashSet<Arc<str>>, std::collections::VecDeque<Arc<str>>);

/// The moves in progress on this host, either side.
#[derive(Default)]
pub(super) struct Moves {
    /// Offers made, by ticket.
    offers: std::sync::Mutex<HashMap<u64, Offer>>,
    /// Sessions offered away: directed sends to them are the asker's now.
    leaving: std::sync::Mutex<HashSet<Arc<str>>>,
    /// Sessions being taken over here, with whether this host's `Take` has
    /// come back on their home channel yet (before it, directed sends to
    /// them are the holder's).
    arriving: std::sync::Mutex<HashMap<String, bool>>,
    /// Answers awaited, by ticket.
    waiting: std::sync::Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Home channels listened on for sessions that moved here, by host,
    /// with how many sessions need each.
    homes: std::sync::Mutex<HashMap<String, usize>>,
    /// Whether any of the maps above is in use: the receive path checks
    /// this alone.
    active: std::sync::atomic::AtomicUsize,
    /// Ids this host gave out whose sessions it handed to another host,
    /// oldest first: a request for any other id it gave out and does not
    /// hold is refused at once, as no one else can hold it.
    handed: std::sync::Mutex<Recent>,
}

impl Backplane {
    /// Serves other hosts' requests for sessions held here; once, at
    /// start-up.
    pub fn take_moves(&self, sessions: Arc<dyn MovingSessions>) {
        let _ = self.movers.set(sessions);
    }

    // --- The asker's side --------------------------------------------------

    /// Listens on the channel where directed sends to `id` go (its first
    /// host's), while a session with that id lives here; false when Redis
    /// did not confirm. Until this host's `Take` comes back there, directed
    /// sends to `id` are left to its holder.
    pub async fn arrive(&self, id: &str) -> bool {
        let Some(home) = Hub::host_of(id) else { return false };
        self.moves.active.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut arriving) = self.moves.arriving.lock() {
            arriving.insert(id.to_string(), false);
        }
        if let Ok(mut homes) = self.moves.homes.lock() {
            *homes.entry(home.to_string()).or_default() += 1;
        }
        if home == &*self.host_id {
            return true;
        }
        // Every time, though another session may have asked already: the
        // request below must not go out before Redis confirms this host
        // listens (subscribing twice is harmless).
        let Some(conn) = self.conn.load_full() else { return false };
        match (*conn).clone().subscribe(&self.keys.host_channel(home)).await {
            Ok(()) => true,
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    /// The move ended, taken over (`stays`) or not: directed sends to `id`
    /// arriving here are its own now (or it is gone).
    pub fn arrived(&self, id: &str, stays: bool) {
        if let Ok(mut arriving) = self.moves.arriving.lock()
            && arriving.remove(id).is_some()
        {
            self.moves.active.fetch_sub(1, Ordering::AcqRel);
        }
        if !stays {
            self.depart(id);
        }
    }

    /// A session that had moved here ended or moved on: its home channel
    /// is let go once no session here needs it.
    pub fn depart(&self, id: &str) {
        let Some(home) = Hub::host_of(id) else { return };
        let last = self.moves.homes.lock().is_ok_and(|mut homes| match homes.get_mut(home) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                homes.remove(home);
                true
            }
            None => false,
        });
        if !last || home == &*self.host_id {
            return;
        }
        let channel = self.keys.host_channel(home);
        if let Some(conn) = self.conn.load_full() {
            tokio::spawn(async move {
                let _ = (*conn).clone().unsubscribe(&channel).await;
            });
        }
    }

    /// Whether this host listens on `host`'s channel for sessions that
    /// moved here.
    pub(super) fn listens_on(&self, host: &str) -> bool {
        self.moves.homes.lock().is_ok_and(|homes| homes.contains_key(host))
    }

    /// Home channels to listen on again after reconnecting.
    pub(super) fn home_channels(&self) -> Vec<String> {
        let homes = self.moves.homes.lock().map(|h| h.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        homes.into_iter().filter(|h| *h != *self.host_id).map(|h| self.keys.host_channel(&h)).collect()
    }

    /// Asks whoever holds session `token` of `plugin` for it. `Err` names
    /// why not, as a resume refusal does (`unknown` when no one answered).
    pub async fn ask(&self, plugin: &str, token: &str, last: u64) -> Result<Taken, String> {
        let id = token.split_once('.').map_or(token, |(id, _)| id);
        let home = Hub::host_of(id).ok_or_else(|| "unknown".to_string())?;
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let answer = self.await_answer(ticket);
        let envelope =
            Envelope::Take { from: (*self.host_id).into(), ticket, plugin: plugin.into(), session: token.into(), last };
        let answer = match self.to_host(home, CrossHost::Move, &envelope).await {
            Ok(()) => self.answer(ticket, answer, PATIENCE).await,
            Err(_) => None,
        };
        match answer {
            Some(Answer::Offer { holder, rooms }) => Ok(Taken { holder, ticket, rooms }),
            Some(Answer::Decline(why)) => Err(why),
            _ => Err("unknown".into()),
        }
    }

    /// Tells the holder where this host joined the session's rooms, and
    /// takes the session it hands over: its packed state.
    pub async fn commit(&self, taken: &Taken, points: Vec<u64>) -> Option<Vec<u8>> {
        // The holder answers on the offer's ticket.
        let answer = self.await_answer(taken.ticket);
        let envelope = Envelope::Commit { ticket: taken.ticket, from: (*self.host_id).into(), points };
        self.to_host(&taken.holder, CrossHost::Move, &envelope).await.ok()?;
        // The holder first waits for the broadcasts up to the points.
        match self.answer(taken.ticket, answer, PATIENCE + self.timeout).await? {
            Answer::Handed => {}
            _ => return None,
        }
        let key = self.keys.moving(taken.ticket, &taken.holder);
        self.query::<Option<Vec<u8>>>(redis::cmd("GETDEL").arg(key)).await?.ok().flatten()
    }

    fn await_answer(&self, ticket: u64) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.moves.waiting.lock() {
            waiting.insert(ticket, tx);
        }
        rx
    }

    async fn answer(&self, ticket: u64, rx: oneshot::Receiver<Answer>, within: Duration) -> Option<Answer> {
        let answer = tokio::time::timeout(within, rx).await.ok().and_then(Result::ok);
        if let Ok(mut waiting) = self.moves.waiting.lock() {
            waiting.remove(&ticket);
        }
        answer
    }

    pub(super) fn answered(&self, ticket: u64, answer: Answer) {
        let waiting = self.moves.waiting.lock().ok().and_then(|mut w| w.remove(&ticket));
        if let Some(tx) = waiting {
            let _ = tx.send(answer);
        }
    }

    // --- The holder's side -------------------------------------------------

    /// A `Take` came on `channel`: this host's own, when it asked.
    pub(super) fn take(self: &Arc<Self>, from: &str, ticket: u64, plugin: &str, token: &str, last: u64) {
        let id = token.split_once('.').map_or(token, |(id, _)| id);
        if from == &*self.host_id {
            // Directed sends to it that come after this are this host's.
            if let Ok(mut arriving) = self.moves.arriving.lock()
                && let Some(seen) = arriving.get_mut(id)
            {
                *seen = true;
            }
            return;
        }
        let Some(movers) = self.movers.get().cloned() else { return };
        let answer = match movers.offer(plugin, token, last) {
            Offered::NotHere if Hub::host_of(id) == Some(&*self.host_id) && !self.handed_over(id) => {
                Envelope::Decline { ticket, reason: Cow::Borrowed("unknown") }
            }
            Offered::NotHere => return,
            Offered::Refused(why) => Envelope::Decline { ticket, reason: Cow::Borrowed(why) },
            Offered::Rooms(rooms) => {
                let id: Arc<str> = id.into();
                self.moves.active.fetch_add(1, Ordering::AcqRel);
                if let Ok(mut leaving) = self.moves.leaving.lock() {
                    leaving.insert(id.clone());
                }
                let names = rooms.iter().map(|(room, _)| Cow::Owned(room.clone())).collect();
                if let Ok(mut offers) = self.moves.offers.lock() {
                    offers.insert(ticket, Offer { plugin: plugin.to_string(), id, rooms });
                }
                // An asker that goes silent leaves the session here.
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(PATIENCE * 3).await;
                    if let Some(offer) = me.moves.offers.lock().ok().and_then(|mut o| o.remove(&ticket)) {
                        tracing::debug!(conn = &*offer.id, "the host that asked for the session went silent; it stays");
                        movers.keep(&offer.plugin, &offer.id);
                        me.left(&offer.id);
                    }
                });
                Envelope::Offer { ticket, holder: Cow::Owned(self.host_id.to_string()), rooms: names }
            }
        };
        let (me, from) = (self.clone(), from.to_string());
        tokio::spawn(async move {
            let _ = me.to_host(&from, CrossHost::Move, &answer).await;
        });
    }

    /// The asker joined at `points`: hand the session over.
    pub(super) fn commit_received(self: &Arc<Self>, ticket: u64, from: &str, points: Vec<u64>) {
        let Some(offer) = self.moves.offers.lock().ok().and_then(|mut o| o.remove(&ticket)) else { return };
        let Some(movers) = self.movers.get().cloned() else { return };
        let (me, from) = (self.clone(), from.to_string());
        tokio::spawn(async move {
            let points: Vec<(String, u64)> =
                offer.rooms.iter().zip(points).map(|((room, _), point)| (room.clone(), point)).collect();
            me.await_numbers(&offer, &points).await;
            let packed = movers.export(&offer.plugin, &offer.id, &points).await;
            let stored = match packed {
                Some(bytes) => {
                    let key = me.keys.moving(ticket, &me.host_id);
                    let set =
                        redis::cmd("SET").arg(key).arg(bytes).arg("PX").arg(STORED_FOR.as_millis() as u64).clone();
                    matches!(me.query::<()>(&set).await, Some(Ok(())))
                }
                None => false,
            };
            let answer = if stored {
                me.metrics.published(CrossHost::Move);
                me.remember_handed(&offer.id);
                Envelope::Handed { ticket }
            } else {
                Envelope::Decline { ticket, reason: Cow::Borrowed("closed") }
            };
            let _ = me.to_host(&from, CrossHost::Move, &answer).await;
            me.left(&offer.id);
        });
    }

    /// Waits (up to `redis.timeout`) until every broadcast of the session's
    /// rooms numbered up to the asker's join points has been received here:
    /// those are this host's to hand over. On one Redis they came before
    /// the `Commit`; on a cluster a room's shard may lag behind.
    async fn await_numbers(&self, offer: &Offer, points: &[(String, u64)]) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let channels: Vec<(String, u64, u64)> = offer
            .rooms
            .iter()
            .zip(points)
            .map(|((room, since), (_, point))| {
                (self.keys.room_channel(&Keys::room_id(&offer.plugin, room)), *since, *point)
            })
            .collect();
        loop {
            let behind = self.seen.lock().is_ok_and(|seen| {
                channels
                    .iter()
                    .any(|(channel, since, point)| since < point && seen.get(channel).is_none_or(|n| n < point))
            });
            if !behind || tokio::time::Instant::now() >= deadline {
                if behind {
                    tracing::debug!(
                        conn = &*offer.id,
                        "broadcasts before the new host's join points did not all arrive"
                    );
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Whether this host handed session `id` over (recently enough).
    fn handed_over(&self, id: &str) -> bool {
        self.moves.handed.lock().is_ok_and(|h| h.0.contains(id))
    }

    fn remember_handed(&self, id: &Arc<str>) {
        if Hub::host_of(id) != Some(&*self.host_id) {
            return;
        }
        let Ok(mut handed) = self.moves.handed.lock() else { return };
        if handed.1.len() >= MAX_HANDED
            && let Some(oldest) = handed.1.pop_front()
        {
            handed.0.remove(&oldest);
        }
        if handed.0.insert(id.clone()) {
            handed.1.push_back(id.clone());
        }
    }

    fn left(&self, id: &str) {
        if let Ok(mut leaving) = self.moves.leaving.lock()
            && leaving.remove(id)
        {
            self.moves.active.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether a directed send or close to `to`, come on `channel`, is
    /// another host's to deliver: its session is leaving this host, or is
    /// arriving and this host's `Take` has not come back yet.
    pub(super) fn not_mine(&self, to: &str) -> bool {
        if self.moves.active.load(Ordering::Acquire) == 0 {
            return false;
        }
        let leaving = self.moves.leaving.lock().is_ok_and(|l| l.contains(to));
        leaving || self.moves.arriving.lock().is_ok_and(|a| a.get(to) == Some(&false))
    }
}
