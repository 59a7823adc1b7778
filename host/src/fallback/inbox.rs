//! A fallback session's messages from its client: posts carry a sequence
//! number, and are handed to the session in that order whatever order the
//! requests arrive in. A retried post is taken once.

use std::pin::pin;
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
}

impl Inbox {
    /// The inbox, and what the session's task reads it from. The channel
    /// holds one message: a post waits while the plugin works, as a
    /// WebSocket read does.
    pub fn new() -> (Self, mpsc::Receiver<Post>) {
        let (tx, rx) = mpsc::channel(1);
        (Self { next: Mutex::new(1), moved: Notify::new(), to_session: tx }, rx)
    }

    /// Hands post `seq` to the session once every post before it has been,
    /// waiting at most `within`.
    pub async fn deliver(&self, seq: u64, post: Post, within: Duration) -> Result<Taken, PostError> {
        let deadline = tokio::time::Instant::now() + within;
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
                    match tokio::time::timeout_at(deadline, self.to_session.send(post)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(PostError::Gone),
                        Err(_) => return Err(PostError::Timeout),
                    }
                    *next += 1;
                    self.moved.notify_waiters();
                    return Ok(Taken::Now);
                }
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return Err(PostError::Timeout);
            }
        }
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
        let (inbox, mut rx) = Inbox::new();
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
}
