//! One fallback session, served by one task, as a WebSocket connection is:
//! posted messages go to the plugin in order, what the plugin and other
//! connections send becomes numbered events on the stream, pings keep the
//! stream alive, and `on-close` comes exactly once. A dropped stream
//! detaches the session for `fallback.grace`; a resume attaches a new one.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant as Deadline;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::events::{Events, QueueError};
use super::inbox::{Inbox, Post};
use crate::config::InMemory;
use crate::deadlines::{Deadlines, silence_allowed};
use crate::dispatch::{Accepted, Dispatcher};
use crate::hub::{Connection, Outbound};
use crate::resume::{Handoff, Keyed};
use crate::writer::WRITE_BATCH;

/// Events a stream's HTTP body may hold before the session waits for the
/// client to read: a few, so a slow reader shows up as the session's own
/// send queue growing, which is bounded in bytes.
pub const STREAM_BUFFER: usize = 4;

/// A stream to the client: what the HTTP response body reads from.
pub type Stream = mpsc::Sender<warp::sse::Event>;

/// What the HTTP side shares with the session's task.
pub struct Shared {
    pub conn: Arc<Connection>,
    /// The part of the session id only its client knows.
    secret: String,
    pub inbox: Inbox,
    /// How long a post may wait for the ones before it
    /// (`websocket.message_timeout`).
    pub post_timeout: Duration,
    /// A stream that resumed, for the task to take: and the last event id
    /// its client saw.
    attach: Handoff<(Stream, u64)>,
}

impl Shared {
    pub fn new(conn: Arc<Connection>, secret: String, inbox: Inbox, post_timeout: Duration) -> Self {
        Self { conn, secret, inbox, post_timeout, attach: Handoff::default() }
    }

    /// Hands the session a new stream; an older one still attached ends.
    pub fn attach(&self, stream: Stream, last_seen: u64) {
        // A session that ended drops the stream, which ends its response.
        let _ = self.attach.give(&self.conn, (stream, last_seen));
    }

    fn take_attached(&self) -> Option<(Stream, u64)> {
        self.attach.take()
    }
}

impl Keyed for Shared {
    fn conn(&self) -> &Arc<Connection> {
        &self.conn
    }

    fn secret(&self) -> &str {
        &self.secret
    }
}

/// How the session is set up.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a session without a stream waits for its client to resume.
    pub grace: Duration,
    /// Bytes of written events kept for a resume.
    pub replay_bytes: usize,
}

impl From<&crate::config::FallbackConfig> for Settings {
    fn from(config: &crate::config::FallbackConfig) -> Self {
        Self { grace: config.grace, replay_bytes: config.replay_bytes.in_memory() }
    }
}

/// Why the next timer is set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Due {
    Close,
    Ping,
    Hibernate,
    Grace,
    Stalled,
    /// One of the plugin's timers for this session.
    Timer,
}

/// Serves the session until it ends, then tells the plugin.
pub async fn run(
    accepted: Accepted,
    shared: Arc<Shared>,
    mut posts: mpsc::Receiver<Post>,
    stream: Stream,
    settings: Settings,
) {
    let Accepted { parts, instance, slot } = accepted;
    let mut task = SessionTask {
        dispatcher: Dispatcher::new(&parts, instance),
        events: Events::new(parts.settings.queue_bytes(), settings.replay_bytes),
        stream: Some(stream),
        shared: &shared,
        settings,
        close_queued: false,
        peer_close: None,
    };
    // What on-open sent goes out first.
    task.queue_replies();
    task.dispatcher.rest();
    Box::pin(task.serve(&mut posts)).await;
    parts.conn.discard_queued();
    let SessionTask { dispatcher, peer_close, stream, .. } = task;
    // The stream's body ends now, after what was written.
    drop(stream);
    Box::pin(dispatcher.finish(peer_close.as_ref())).await;
    drop(slot);
}

struct SessionTask<'a> {
    dispatcher: Dispatcher<'a>,
    events: Events,
    /// The stream of the client, when it has one.
    stream: Option<Stream>,
    shared: &'a Shared,
    settings: Settings,
    /// The close event is queued: nothing more is.
    close_queued: bool,
    /// The close frame the client posted.
    peer_close: Option<CloseFrame>,
}

impl SessionTask<'_> {
    async fn serve(&mut self, posts: &mut mpsc::Receiver<Post>) {
        let ws = &self.dispatcher.ctx.settings;
        let conn = &self.dispatcher.ctx.conn;
        let hibernate_after = self.dispatcher.hibernate_after();
        let ping_every = (!ws.keep_alive_interval.is_zero()).then_some(ws.keep_alive_interval);
        let stall_allowed = silence_allowed(ws);
        let now = Deadline::now();
        let mut last_event = now;
        let mut next_ping = ping_every.map(|every| now + every);
        let mut detached_at: Option<Deadline> = None;
        let mut close_deadline: Option<Deadline> = None;
        // Since when the stream has had events waiting that it did not take.
        let mut waiting_since: Option<Deadline> = None;
        let timer = pin!(tokio::time::sleep_until(now));
        let mut deadlines = Deadlines::new(timer);
        loop {
            if let Some((stream, last_seen)) = self.shared.take_attached() {
                if !self.events.resume_after(last_seen) {
                    tracing::debug!(conn = &*conn.id, last_seen, "fallback resume too late");
                    conn.abort(CloseFrame {
                        code: CloseCode::Error,
                        reason: "resumed too late: messages were lost".into(),
                    });
                }
                self.stream = Some(stream);
                detached_at = None;
                waiting_since = None;
            }
            if conn.is_closing() && close_deadline.is_none() {
                close_deadline = Some(Deadline::now() + ws.close_timeout);
            }
            if conn.is_aborted() && !self.close_queued {
                // An abort goes out now, ahead of the backlog.
                self.events.drop_unsent();
                conn.discard_queued();
                self.queue_close(conn.take_abort_frame().as_ref());
            }
            self.drain_outbox();
            if self.stream.as_ref().is_some_and(|s| s.is_closed()) {
                self.stream = None;
            }
            if self.stream.is_none() && detached_at.is_none() {
                tracing::debug!(conn = &*conn.id, "fallback stream dropped; waiting for a resume");
                detached_at = Some(Deadline::now());
            }
            if self.close_queued && !self.events.has_unsent() && self.stream.is_some() {
                // The close event is written: the session is over.
                break;
            }
            if self.events.has_unsent() && self.stream.is_some() {
                waiting_since.get_or_insert_with(Deadline::now);
            } else {
                waiting_since = None;
            }
            self.dispatcher.check_evicted();
            let holding = self.dispatcher.holding();
            deadlines.set([
                close_deadline.map(|at| (at, Due::Close)),
                next_ping.filter(|_| self.stream.is_some()).map(|at| (at, Due::Ping)),
                hibernate_after.filter(|_| holding).map(|after| (last_event + after, Due::Hibernate)),
                detached_at.map(|at| (at + self.settings.grace, Due::Grace)),
                waiting_since.zip(stall_allowed).map(|(since, allowed)| (since + allowed, Due::Stalled)),
                conn.timers.next_due().filter(|_| !conn.is_closing()).map(|at| (at, Due::Timer)),
            ]);
            let writable = async {
                match &self.stream {
                    Some(stream) if self.events.has_unsent() => stream.clone().reserve_owned().await.ok(),
                    _ => std::future::pending().await,
                }
            };
            let stream_closed = async {
                match &self.stream {
                    Some(stream) => stream.closed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = conn.woken() => {}
                fired = deadlines.fired() => {
                    let Some(why) = fired else { continue };
                    match why {
                        Due::Close | Due::Grace => break,
                        Due::Ping => {
                            next_ping = ping_every.map(|every| Deadline::now() + every);
                            if let Some(stream) = &self.stream {
                                // A full stream is busy anyway.
                                let _ = stream.try_send(super::events::ping());
                            }
                        }
                        Due::Hibernate => self.dispatcher.hibernate("idle"),
                        Due::Timer => {
                            if self.dispatcher.timer_due().await {
                                self.queue_replies();
                                self.dispatcher.rest();
                            }
                            last_event = Deadline::now();
                        }
                        Due::Stalled => {
                            // The client stopped reading: end this stream; it
                            // may resume with what it missed.
                            tracing::debug!(conn = &*conn.id, "fallback stream stalled; ending it");
                            self.stream = None;
                        }
                    }
                }
                permit = writable => {
                    if let (Some(permit), Some(event)) = (permit, self.events.next_unsent()) {
                        let metrics = &self.dispatcher.ctx.plugin.metrics;
                        if event.kind != super::events::StreamKind::Close {
                            metrics.messages_out.inc();
                            metrics.bytes_out.inc_by(event.data.len() as u64);
                        }
                        permit.send(event.to_sse());
                        waiting_since = None;
                    }
                }
                _ = stream_closed => self.stream = None,
                post = posts.recv(), if !conn.is_closing() => match post {
                    Some(Post::Message(message)) => {
                        if self.dispatcher.dispatch(message).await {
                            self.queue_replies();
                            self.dispatcher.rest();
                        }
                        last_event = Deadline::now();
                    }
                    Some(Post::Close(frame)) => {
                        conn.begin_close();
                        self.queue_close(Some(&frame));
                        self.peer_close = Some(frame);
                    }
                    None => break,
                },
            }
        }
    }

    /// Moves what other connections queued into the session's events.
    fn drain_outbox(&mut self) {
        let conn = &self.dispatcher.ctx.conn;
        while conn.has_queued() && !self.close_queued {
            let (batch, bytes) = conn.take_queued(WRITE_BATCH);
            self.queue(batch);
            conn.written(bytes);
        }
    }

    /// Queues what the last call sent to this session itself.
    fn queue_replies(&mut self) {
        if let Some(mut replies) = self.dispatcher.take_replies() {
            let items: Vec<Outbound> = replies.drain().collect();
            self.queue(items);
        }
    }

    fn queue(&mut self, items: impl IntoIterator<Item = Outbound>) {
        let conn = &self.dispatcher.ctx.conn;
        for item in items {
            if self.close_queued {
                return;
            }
            match item {
                Outbound::Message(message) => {
                    if let Err(QueueError::Full) = self.events.push_message(&message) {
                        conn.abort(CloseFrame {
                            code: CloseCode::Policy,
                            reason: "send queue full: client too slow".into(),
                        });
                        return;
                    }
                }
                Outbound::Close(frame) => self.queue_close(Some(&frame)),
            }
        }
    }

    fn queue_close(&mut self, frame: Option<&CloseFrame>) {
        if !std::mem::replace(&mut self.close_queued, true) {
            self.events.push_close(frame);
        }
    }
}
