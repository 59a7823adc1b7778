//! What a fallback session sends its client, as numbered events: those not
//! yet written to the stream (the session's send queue, bounded like a
//! WebSocket's) and, behind them, those already written, kept within
//! `fallback.replay_bytes` so a dropped stream can resume without loss.

use std::collections::VecDeque;

use base64::Engine as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// One event of the stream.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub id: u64,
    pub kind: StreamKind,
    /// The `data:` field: a JSON string, base64 or a JSON object; never a
    /// line break, so it is always one line.
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Text,
    Binary,
    Close,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Text => "text",
            StreamKind::Binary => "binary",
            StreamKind::Close => "close",
        }
    }
}

impl StreamEvent {
    /// The event as the stream carries it.
    pub fn to_sse(&self) -> warp::sse::Event {
        warp::sse::Event::default().id(self.id.to_string()).event(self.kind.name()).data(&self.data)
    }

    /// Bytes it holds, against the byte bounds.
    fn size(&self) -> usize {
        self.data.len()
    }
}

/// The first event of a new stream: not numbered, never replayed.
pub fn opened(session: &str, protocol: Option<&str>, grace_ms: u128, ping_ms: u128) -> warp::sse::Event {
    let data =
        serde_json::json!({ "session": session, "protocol": protocol, "grace_ms": grace_ms, "ping_ms": ping_ms });
    warp::sse::Event::default().event("open").data(data.to_string())
}

/// A keep-alive comment.
pub fn ping() -> warp::sse::Event {
    warp::sse::Event::default().comment("ping")
}

/// Why events could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("send queue full: client too slow")]
    Full,
}

/// The session's events, oldest first.
pub struct Events {
    events: VecDeque<StreamEvent>,
    next_id: u64,
    /// Events with an id up to this one have been written to a stream.
    sent_upto: u64,
    sent_bytes: usize,
    unsent_bytes: usize,
    max_unsent: usize,
    max_kept: usize,
}

impl Events {
    pub fn new(max_unsent: usize, max_kept: usize) -> Self {
        Self { events: VecDeque::new(), next_id: 1, sent_upto: 0, sent_bytes: 0, unsent_bytes: 0, max_unsent, max_kept }
    }

    /// Queues a message; past the send queue's bound the client is too slow.
    pub fn push_message(&mut self, message: &Message) -> Result<(), QueueError> {
        let (kind, data) = match message {
            Message::Text(text) => (StreamKind::Text, serde_json::Value::from(text.as_str()).to_string()),
            Message::Binary(bytes) => (StreamKind::Binary, base64::engine::general_purpose::STANDARD.encode(bytes)),
            _ => return Ok(()),
        };
        if self.unsent_bytes + data.len() > self.max_unsent {
            return Err(QueueError::Full);
        }
        self.push(kind, data);
        Ok(())
    }

    /// Queues the last event. Whatever comes after it is never sent.
    pub fn push_close(&mut self, frame: Option<&CloseFrame>) {
        let (code, reason) = frame.map(|f| (u16::from(f.code), f.reason.as_str())).unwrap_or((1005, ""));
        let data = serde_json::json!({ "code": code, "reason": reason }).to_string();
        self.push(StreamKind::Close, data);
    }

    /// Forgets what was not sent yet: an aborted session's backlog.
    pub fn drop_unsent(&mut self) {
        while self.events.back().is_some_and(|e| e.id > self.sent_upto) {
            if let Some(e) = self.events.pop_back() {
                self.unsent_bytes -= e.size();
            }
        }
        self.next_id = self.sent_upto + 1;
    }

    fn push(&mut self, kind: StreamKind, data: String) {
        let event = StreamEvent { id: self.next_id, kind, data };
        self.next_id += 1;
        self.unsent_bytes += event.size();
        self.events.push_back(event);
    }

    pub fn has_unsent(&self) -> bool {
        self.next_id - 1 > self.sent_upto
    }

    /// The next event to write; counted as sent (and kept for replay).
    pub fn next_unsent(&mut self) -> Option<StreamEvent> {
        let first = self.events.front()?.id;
        let index = usize::try_from(self.sent_upto + 1 - first).ok()?;
        let event = self.events.get(index)?.clone();
        self.sent_upto = event.id;
        self.unsent_bytes -= event.size();
        self.sent_bytes += event.size();
        self.trim();
        Some(event)
    }

    /// Written events beyond what replay keeps are dropped, oldest first.
    fn trim(&mut self) {
        while self.sent_bytes > self.max_kept {
            match self.events.front() {
                Some(e) if e.id <= self.sent_upto => {
                    self.sent_bytes -= e.size();
                    self.events.pop_front();
                }
                _ => break,
            }
        }
        if self.events.is_empty() && self.events.capacity() > 0 {
            // An idle session keeps no queue memory.
            self.events = VecDeque::new();
        }
    }

    /// A new stream whose client saw events up to `last`: everything after
    /// it is sent again. False when some of those are no longer kept.
    pub fn resume_after(&mut self, last: u64) -> bool {
        let oldest = self.events.front().map_or(self.next_id, |e| e.id);
        if last + 1 < oldest || last > self.sent_upto {
            return false;
        }
        for e in self.events.iter().filter(|e| e.id > last && e.id <= self.sent_upto) {
            self.sent_bytes -= e.size();
            self.unsent_bytes += e.size();
        }
        self.sent_upto = last;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::text(s.to_owned())
    }

    #[test]
    fn replays_what_was_sent_after_the_last_seen() {
        let mut events = Events::new(1 << 20, 1 << 20);
        for s in ["a", "b", "c"] {
            events.push_message(&text(s)).unwrap();
        }
        let ids: Vec<u64> = std::iter::from_fn(|| events.next_unsent()).map(|e| e.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(events.resume_after(1));
        let again: Vec<String> = std::iter::from_fn(|| events.next_unsent()).map(|e| e.data).collect();
        assert_eq!(again, ["\"b\"", "\"c\""]);
    }

    #[test]
    fn a_resume_from_before_what_is_kept_fails() {
        // Room for one of the two.
        let mut events = Events::new(1 << 20, 20);
        for s in ["first message", "second message"] {
            events.push_message(&text(s)).unwrap();
        }
        while events.next_unsent().is_some() {}
        assert!(!events.resume_after(0), "event 1 was trimmed");
        assert!(events.resume_after(1));
    }

    #[test]
    fn the_send_queue_is_bounded_in_bytes() {
        let mut events = Events::new(10, 1 << 20);
        events.push_message(&text("12345")).unwrap();
        assert_eq!(events.push_message(&text("123456")), Err(QueueError::Full));
        events.next_unsent();
        events.push_message(&text("123456")).unwrap();
    }

    #[test]
    fn text_and_binary_encodings_survive_every_character() {
        let mut events = Events::new(1 << 20, 1 << 20);
        events.push_message(&text("line\r\nbreak \"quoted\" \u{1F600}")).unwrap();
        events.push_message(&Message::binary(vec![0u8, 1, 2, 255])).unwrap();
        let text_event = events.next_unsent().unwrap();
        assert!(!text_event.data.contains('\n') && !text_event.data.contains('\r'));
        let back: String = serde_json::from_str(&text_event.data).unwrap();
        assert_eq!(back, "line\r\nbreak \"quoted\" \u{1F600}");
        assert_eq!(events.next_unsent().unwrap().data, "AAEC/w==");
    }
}
