//! A fallback session's messages from its client: posts carry a sequence
//! number, and are handed to the session in that order whatever order the
//! requests arrive in. A retried post is taken once. Posts that wait for
//! an earlier one hold at most `websocket.max_message_size` bytes per
//! session: a client that never sends the post everyone waits for cannot
//! pile up more.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, mpsc};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::plugin;

/// Posts a session takes ahead of the next one it is waiting for: how many
/// a client may have in flight.
pub const WINDOW: u64 = 16;

/// What a client posted.
#[derive(Debug)]
pub enum Post {
    Message(plugin::Message),
    /// Close after the messages before it.
    Close(CloseFrame),
}

impl Post {
    /// Payload bytes, as counted against the session's bounds.
    pub fn len(&self) -> usize {
        match self {
            Post::Message(plugin::Message::Text(t)) => t.len(),
            Post::Message(plugin::Message::Binary(b)) => b.len(),
            Post::Close(frame) => frame.reason.len(),
        }
    }
}

/// How a post ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Handed to the session, in order.
    Now,
    /// Its sequence number was taken before: a retry.
    Already,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("seq is more than {WINDOW} ahead of the next message the session waits for")]
    TooFarAhead,
    #[error("the posts before this one did not arrive in time")]
    Timeout,
    #[error("too many bytes are already waiting for an earlier post; retry once it is taken")]
    TooMuchWaiting,
    #[error("the session has ended")]
    Gone,
}

/// The ordering point between posts and the session's task.
pub struct Inbox {
    /// The sequence number the session waits for next.
    next: Mutex<u64>,
    /// Rung whenever `next` moves on.
    moved: Notify,
    to_session: mpsc::Sender<Post>,
    /// Bytes of posts waiting for an earlier one, and their bound.
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Inbox {
    /// The inbox, and what the session's task reads it from. The channel
    /// holds one message: a post waits while the plugin works, as a
    /// WebSocket read does.
    pub fn new(max_waiting: usize) -> (Self, mpsc::Receiver<Post>) {
        let (tx, rx) = mpsc::channel(1);
        let inbox = Self {
            next: Mutex::new(1),
            moved: Notify::new(),
            to_session: tx,
            waiting: AtomicUsize::new(0),
            max_waiting,
        };
        (inbox, rx)
    }

    /// Bytes of posts waiting for an earlier one.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Hands post `seq` to the session once every post before it has been,
    /// waiting at most `within`.
    pub async fn deliver(&self, seq: u64, post: Post, within: Duration) -> Result<Taken, PostError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let mut moved = pin!(self.moved.notified());
            moved.as_mut().enable();
            {
                let mut next = self.next.lock().await;
                if seq < *next {
                    return Ok(Taken::Already);
                }
                if seq > *next + WINDOW {
                    return Err(PostError::TooFarAhead);
                }
                if seq == *next {
                    drop(waiting.take());
                    match tokio::time::timeout_at(deadline, self.to_session.send(post)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(PostError::Gone),
                        Err(_) => return Err(PostError::Timeout),
                    }
                    *next += 1;
                    self.moved.notify_waiters();
                    return Ok(Taken::Now);
                }
                if waiting.is_none() {
                    waiting = Some(Waiting::take(self, post.len())?);
                }
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return Err(PostError::Timeout);
            }
        }
    }
}

/// A post's bytes among those waiting for an earlier post; given back on
/// drop, however the wait ends.
struct Waiting<'a> {
    inbox: &'a Inbox,
    bytes: usize,
}

impl<'a> Waiting<'a> {
    fn take(inbox: &'a Inbox, bytes: usize) -> Result<Self, PostError> {
        // One post always fits, however large (it is within
        // max_message_size already): the bound is on piling up.
        inbox
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w == 0 || w.saturating_add(bytes) <= inbox.max_waiting).then_some(w.saturating_add(bytes))
            })
            .map_err(|_| PostError::TooMuchWaiting)?;
        Ok(Self { inbox, bytes })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.inbox.waiting.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Post {
        Post::Message(plugin::Message::Text(s.into()))
    }

    fn as_text(post: Post) -> String {
        match post {
            Post::Message(plugin::Message::Text(t)) => t,
            other => panic!("not text: {other:?}"),
        }
    }

    #[tokio::test]
    async fn posts_are_taken_in_seq_order_and_retries_once() {
        let (inbox, mut rx) = Inbox::new(1 << 20);
        let inbox = std::sync::Arc::new(inbox);
        let within = Duration::from_secs(5);
        let mut posts = Vec::new();
        for seq in [3u64, 2, 1] {
            let inbox = inbox.clone();
            posts.push(tokio::spawn(async move { inbox.deliver(seq, text(&seq.to_string()), within).await }));
        }
        let got: Vec<String> = [rx.recv().await, rx.recv().await, rx.recv().await]
            .into_iter()
            .map(|p| as_text(p.expect("a post")))
            .collect();
        assert_eq!(got, ["1", "2", "3"]);
        for post in posts {
            assert_eq!(post.await.unwrap(), Ok(Taken::Now));
        }
        assert_eq!(inbox.deliver(2, text("again"), within).await, Ok(Taken::Already));
        assert_eq!(inbox.deliver(4 + WINDOW + 1, text("far"), within).await, Err(PostError::TooFarAhead));
    }

    #[tokio::test]
    async fn posts_waiting_for_an_earlier_one_are_bounded_in_bytes() {
        let (inbox, mut rx) = Inbox::new(10);
        let inbox = std::sync::Arc::new(inbox);
        let within = Duration::from_secs(5);
        let big = "x".repeat(8);
        let waiter = {
            let (inbox, big) = (inbox.clone(), big.clone());
            tokio::spawn(async move { inbox.deliver(2, text(&big), within).await })
        };
        while inbox.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // 8 bytes wait for post 1: 8 more do not fit, 2 do.
        assert_eq!(inbox.deliver(3, text(&big), within).await, Err(PostError::TooMuchWaiting));
        let small = {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.deliver(3, text("ab"), within).await })
        };
        while inbox.waiting() < 10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(inbox.deliver(1, text("first"), within).await, Ok(Taken::Now));
        let got: Vec<String> = [rx.recv().await, rx.recv().await, rx.recv().await]
            .into_iter()
            .map(|p| as_text(p.expect("a post")))
            .collect();
        assert_eq!(got, ["first", big.as_str(), "ab"]);
        assert_eq!(waiter.await.unwrap(), Ok(Taken::Now));
        assert_eq!(small.await.unwrap(), Ok(Taken::Now));
        assert_eq!(inbox.waiting(), 0, "every waiting byte given back");
    }
}
