//! A connection's socket, awake or resting. Awake it is a tungstenite
//! stream with its read buffer (`websocket.receive_buffer_size`) and write
//! buffer; resting it is the bare I/O and nothing else, so an idle
//! connection holds no buffers. It rests only when tungstenite holds no
//! bytes: nothing half-read, nothing unwritten.

use std::sync::Arc;

use futures_util::SinkExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig as TungsteniteConfig};

use crate::inbound::{Meter, MeteredIo};

/// The upgraded connection under tungstenite.
pub type Io = MeteredIo<TokioIo<Upgraded>>;
/// The connection as tungstenite speaks it.
pub type Stream = WebSocketStream<Io>;

/// The first byte of a ping frame (FIN, opcode 9): a ping is written
/// straight to a resting socket, without waking it.
const PING: [u8; 1] = [0x89];

/// The socket of one connection.
pub struct Socket {
    state: State,
    meter: Arc<Meter>,
    /// Bytes of the client's frames that tungstenite has handed over; equal
    /// to the bytes read exactly when its buffer is empty.
    consumed: u64,
    config: TungsteniteConfig,
    /// Sockets resting now, host-wide (`wasmsocket_sockets_resting`).
    resting: Gauge,
}

/// Awake is boxed so that a resting connection's task carries only the
/// I/O, not the stream's size.
enum State {
    Awake(Box<Stream>),
    Resting(Io),
    /// Between states, or after an I/O error while changing.
    Gone,
}

/// What a resting socket saw.
pub enum Arrival {
    /// Bytes came: the socket is awake again.
    Woke,
    /// The client closed or the socket failed.
    Ended,
}

impl Socket {
    pub fn new(stream: Stream, config: TungsteniteConfig, resting: Gauge) -> Self {
        let meter = stream.get_ref().meter();
        Self { state: State::Awake(Box::new(stream)), meter, consumed: 0, config, resting }
    }

    pub fn is_awake(&self) -> bool {
        matches!(self.state, State::Awake(_))
    }

    /// The awake stream, woken first if it rests.
    pub async fn awake(&mut self) -> Option<&mut Stream> {
        self.wake(Vec::new()).await;
        self.stream()
    }

    /// Builds the stream again on a resting socket, with `first`, the bytes
    /// already read from it.
    async fn wake(&mut self, first: Vec<u8>) {
        if let State::Resting(_) = self.state
            && let State::Resting(io) = std::mem::replace(&mut self.state, State::Gone)
        {
            self.resting.dec();
            // Boxed: a resting connection's task waits beside this, and
            // should not carry the size of building a stream.
            let woken = WebSocketStream::from_partially_read(io, first, Role::Server, Some(self.config));
            self.state = State::Awake(Box::new(Box::pin(woken).await));
        }
    }

    /// The stream, if awake.
    pub fn stream(&mut self) -> Option<&mut Stream> {
        match &mut self.state {
            State::Awake(stream) => Some(stream),
            _ => None,
        }
    }

    /// Accounts for a message tungstenite returned: its bytes go back to the
    /// receive budget, and count as the frame that carried them.
    pub fn received(&mut self, message: &Message) {
        self.meter.message_done(message);
        let payload = match message {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            Message::Ping(p) | Message::Pong(p) => p.len(),
            Message::Close(_) | Message::Frame(_) => return,
        };
        self.consumed += frame_size(payload);
    }

    /// Puts the socket to rest if tungstenite holds nothing: everything
    /// written is flushed, and every byte read was part of a message it
    /// handed over. A client that fragments messages or pads frame lengths
    /// never matches exactly, and its socket simply stays awake.
    pub async fn rest(&mut self) {
        if self.meter.read_total() != self.consumed {
            return;
        }
        let State::Awake(stream) = &mut self.state else { return };
        if stream.flush().await.is_err() {
            return;
        }
        if let State::Awake(stream) = std::mem::replace(&mut self.state, State::Gone) {
            self.resting.inc();
            self.state = State::Resting((*stream).into_inner());
        }
    }

    /// Waits for the first byte on a resting socket and wakes it with it.
    /// Cancel-safe: nothing is read until the byte is there.
    pub async fn arrival(&mut self) -> Arrival {
        let State::Resting(io) = &mut self.state else { return Arrival::Woke };
        let mut first = [0u8; 1];
        match io.read(&mut first).await {
            Ok(1) => {}
            _ => return Arrival::Ended,
        }
        self.wake(first.to_vec()).await;
        Arrival::Woke
    }

    /// Lets the transport go, with its buffers and its file descriptor: a
    /// resumable session waits for its client without them.
    pub fn drop_transport(&mut self) {
        if let State::Resting(_) = std::mem::replace(&mut self.state, State::Gone) {
            self.resting.dec();
        }
    }

    /// Sends a ping carrying `payload` (at most 8 bytes: a resumable
    /// session's acknowledgement mark), waking nothing.
    pub async fn ping(&mut self, payload: &[u8]) -> bool {
        let payload = &payload[..payload.len().min(8)];
        match &mut self.state {
            State::Awake(stream) => stream.send(Message::Ping(payload.to_vec().into())).await.is_ok(),
            State::Resting(io) => {
                // A server's frame is not masked: opcode, length, payload.
                let mut frame = Vec::with_capacity(2 + payload.len());
                frame.extend_from_slice(&[PING[0], payload.len() as u8]);
                frame.extend_from_slice(payload);
                io.write_all(&frame).await.is_ok()
            }
            State::Gone => false,
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let State::Resting(_) = self.state {
            self.resting.dec();
        }
    }
}

/// Wire size of a client frame (masked) carrying `payload` bytes, with the
/// shortest length encoding RFC 6455 requires.
fn frame_size(payload: usize) -> u64 {
    let len = payload as u64;
    let extended = match len {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    2 + extended + 4 + len
}

#[cfg(test)]
mod tests {
    use super::frame_size;

    #[test]
    fn frame_sizes_follow_the_length_encoding() {
        assert_eq!(frame_size(0), 6);
        assert_eq!(frame_size(125), 131);
        assert_eq!(frame_size(126), 134);
        assert_eq!(frame_size(65_535), 65_543);
        assert_eq!(frame_size(65_536), 65_550);
    }
}
