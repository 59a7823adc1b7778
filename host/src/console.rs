//! The live plugin console: what a plugin logs and prints, its faults and
//! its reloads, streamed to whoever watches it (the test page), and the
//! per-second figures beside it.
//!
//! Each plugin has one bounded broadcast channel. Publishing costs a
//! counter read while nobody watches; an event is serialised once, however
//! many watch; a watcher that falls behind by more than the channel holds
//! is closed (see `api::console_events`), so a slow page holds at most the channel's
//! events, never a growing queue. Watchers are few by design
//! ([`MAX_WATCHERS_PER_PLUGIN`], [`MAX_WATCHERS`]): each one is woken for
//! every event, so their number, not their speed, is what could cost the
//! connections that publish.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events a watcher may be behind before it is closed.
pub const CAPACITY: usize = 512;

/// Watchers one plugin's console may have at once; more are refused (429).
pub const MAX_WATCHERS_PER_PLUGIN: usize = 8;

/// Watchers of every console of the host at once.
pub const MAX_WATCHERS: usize = 32;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A connection opened.
    Open,
    /// A `log` call.
    Log,
    Stdout,
    Stderr,
    /// A call trapped, ran past its deadline or its memory.
    Fault,
    /// A new version serves.
    Reload,
    /// A file failed to load; the previous version, if any, serves.
    LoadError,
    /// The file is back to the version that serves; the error is cleared.
    Restored,
    /// The file is gone.
    Removed,
    /// A timer fired, or one was refused.
    Timer,
    /// An outbound HTTP request: its response, or why it had none (denied,
    /// busy, failed).
    Outbound,
    /// A resumable session went away, resumed, or ended while away.
    Session,
}

/// One console line.
#[derive(Debug, Serialize)]
pub struct ConsoleEvent {
    pub kind: Kind,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// The connection it concerns, if any, so a page can mark its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// `trace` to `error` for `log`; the fault kind for faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<&'static str>,
    /// For `open`: the page id of the client, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    pub message: String,
}

/// An event as watchers get it: its JSON, made once.
pub type Published = Arc<str>;

/// One plugin's console.
pub struct Console {
    events: broadcast::Sender<Published>,
}

impl Default for Console {
    fn default() -> Self {
        Self { events: broadcast::channel(CAPACITY).0 }
    }
}

impl Console {
    /// Whether anyone watches: callers skip building events otherwise.
    pub fn watched(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// Watchers now.
    pub fn watchers(&self) -> usize {
        self.events.receiver_count()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.events.subscribe()
    }

    /// Sends an event to every watcher; `message` is only made if there is one.
    pub fn publish(
        &self,
        kind: Kind,
        conn: Option<&str>,
        level: Option<&'static str>,
        message: impl FnOnce() -> String,
    ) {
        self.send(kind, conn, level, None, message);
    }

    /// A connection opened; `page` is the id the test page gave itself (its
    /// `wasmsocket-page` cookie), so the page can tell its own connection.
    pub fn opened(&self, conn: &str, page: Option<&str>, message: impl FnOnce() -> String) {
        self.send(Kind::Open, Some(conn), None, page, message);
    }

    fn send(
        &self,
        kind: Kind,
        conn: Option<&str>,
        level: Option<&'static str>,
        page: Option<&str>,
        message: impl FnOnce() -> String,
    ) {
        if !self.watched() {
            return;
        }
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let (conn, page) = (conn.map(str::to_string), page.map(str::to_string));
        let event = ConsoleEvent { kind, at, conn, page, level, message: message() };
        let Ok(json) = serde_json::to_string(&event) else { return };
        // No receivers left since the check: nothing to do.
        let _ = self.events.send(json.into());
    }
}
