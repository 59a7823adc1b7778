//! A real HTTP fallback client (reqwest): the event stream read and parsed
//! as it arrives, and one POST per message.

#![allow(dead_code)]

use std::time::Duration;

use base64::Engine as _;

use super::PATIENCE;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<u64>,
    pub data: String,
}

/// What the client received, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
}

pub struct Fallback {
    pub http: reqwest::Client,
    /// The route's URL, e.g. `http://127.0.0.1:PORT/ws/testbed`.
    pub url: String,
    pub session: String,
    stream: Option<reqwest::Response>,
    buf: String,
    /// The id of the last numbered event read.
    pub last_id: u64,
    seq: u64,
}

impl Fallback {
    /// Opens a session on `url` (with its query), or the refusal's status
    /// and body.
    pub async fn open(url: &str) -> Result<Fallback, (u16, String)> {
        Self::open_with(url, &[]).await
    }

    pub async fn open_with(url: &str, headers: &[(&str, &str)]) -> Result<Fallback, (u16, String)> {
        let http = reqwest::Client::new();
        let mut request = http.get(url).header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(PATIENCE, request.send()).await.expect("open timed out").expect("open");
        let status = response.status().as_u16();
        if status != 200 {
            return Err((status, response.text().await.unwrap_or_default()));
        }
        let base = url.split('?').next().unwrap_or(url).to_string();
        let mut client = Fallback {
            http,
            url: base,
            session: String::new(),
            stream: Some(response),
            buf: String::new(),
            last_id: 0,
            seq: 0,
        };
        let open = client.next_event().await.expect("an open event");
        assert_eq!(open.event, "open", "the first event opens the session: {open:?}");
        let data: serde_json::Value = serde_json::from_str(&open.data).expect("open data is JSON");
        client.session = data["session"].as_str().expect("a session id").to_string();
        Ok(client)
    }

    /// The next event, or `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = SseEvent { event: "message".into(), id: None, data: String::new() };
                let mut comment = true;
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "" => continue,
                        "event" => event.event = value.to_string(),
                        "id" => event.id = value.parse().ok(),
                        "data" => event.data.push_str(value),
                        _ => {}
                    }
                    comment = false;
                }
                if comment {
                    continue;
                }
                if let Some(id) = event.id {
                    self.last_id = id;
                }
                return Some(event);
            }
            let stream = self.stream.as_mut()?;
            let chunk = tokio::time::timeout(PATIENCE, stream.chunk()).await.expect("no event within patience");
            match chunk {
                Ok(Some(bytes)) => self.buf.push_str(std::str::from_utf8(&bytes).expect("UTF-8 stream")),
                _ => {
                    self.stream = None;
                    return None;
                }
            }
        }
    }

    /// The next message or close.
    pub async fn recv(&mut self) -> Option<Received> {
        let event = self.next_event().await?;
        Some(decode(&event))
    }

    pub async fn expect_text(&mut self) -> String {
        match self.recv().await {
            Some(Received::Text(t)) => t,
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Sends text; the post's status.
    pub async fn send_text(&mut self, text: &str) -> u16 {
        self.seq += 1;
        self.post(self.seq, "text/plain;charset=utf-8", text.as_bytes().to_vec(), None).await
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) -> u16 {
        self.seq += 1;
        self.post(self.seq, "application/octet-stream", bytes.to_vec(), None).await
    }

    /// Asks the host to close the session with `code`.
    pub async fn close(&mut self, code: u16, reason: &str) -> u16 {
        self.seq += 1;
        self.post(self.seq, "text/plain", reason.as_bytes().to_vec(), Some(code)).await
    }

    /// Posts with an explicit sequence number.
    pub async fn post(&self, seq: u64, content_type: &str, body: Vec<u8>, close: Option<u16>) -> u16 {
        self.post_to(&self.url, seq, content_type, body, close).await
    }

    /// Posts to `url` (another host's route, say).
    pub async fn post_to(&self, url: &str, seq: u64, content_type: &str, body: Vec<u8>, close: Option<u16>) -> u16 {
        let mut url = format!("{url}?session={}&seq={seq}", self.session);
        if let Some(code) = close {
            url.push_str(&format!("&close={code}"));
        }
        let request = self.http.post(url).header("content-type", content_type).body(body);
        let response = tokio::time::timeout(PATIENCE, request.send()).await.expect("post timed out").expect("post");
        response.status().as_u16()
    }

    /// Drops the stream, as a proxy that cuts it would.
    pub fn drop_stream(&mut self) {
        self.stream = None;
        self.buf.clear();
    }

    /// Opens the stream again after the last event read; the status.
    pub async fn resume(&mut self) -> u16 {
        let url = format!("{}?session={}", self.url, self.session);
        let request = self.http.get(url).header("accept", "text/event-stream").header("last-event-id", self.last_id);
        let response = tokio::time::timeout(PATIENCE, request.send()).await.expect("resume timed out").expect("resume");
        let status = response.status().as_u16();
        if status == 200 {
            self.stream = Some(response);
            self.buf.clear();
        }
        status
    }

    /// Waits up to `within` for the stream to end (true) or an event (false).
    pub async fn ended_within(&mut self, within: Duration) -> bool {
        match tokio::time::timeout(within, self.next_event()).await {
            Ok(None) => true,
            Ok(Some(event)) => panic!("expected the stream to end, got {event:?}"),
            Err(_) => false,
        }
    }
}

pub fn decode(event: &SseEvent) -> Received {
    match event.event.as_str() {
        "text" => Received::Text(serde_json::from_str(&event.data).expect("text data is a JSON string")),
        "binary" => Received::Binary(
            base64::engine::general_purpose::STANDARD.decode(&event.data).expect("binary data is base64"),
        ),
        "close" => {
            let v: serde_json::Value = serde_json::from_str(&event.data).expect("close data is JSON");
            Received::Close(v["code"].as_u64().unwrap_or(0) as u16, v["reason"].as_str().unwrap_or("").to_string())
        }
        other => panic!("unexpected event {other:?}"),
    }
}
