//! Writing to a client: the plugin's replies and what other connections
//! queued, batched into one flush, and the close frame after which nothing
//! more may go out.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::hub::Outbound;
use crate::metrics::PluginMetrics;
use crate::socket::Stream;

/// Most queued messages written before one flush: batches under load,
/// without holding a message back when the queue is quiet.
pub const WRITE_BATCH: usize = 64;

/// What has gone out on one connection.
#[derive(Default)]
pub struct Written {
    /// Our close frame is out: nothing more may be written.
    pub close_sent: bool,
}

impl Written {
    /// Writes `items` in order and flushes. False when the socket failed.
    /// Cancel-safe: tungstenite keeps whole frames in its buffer.
    pub async fn write(
        &mut self,
        stream: &mut Stream,
        items: impl IntoIterator<Item = Outbound>,
        metrics: &PluginMetrics,
    ) -> bool {
        for item in items {
            if self.close_sent {
                break;
            }
            let fed = match item {
                Outbound::Message(message) => {
                    metrics.messages_out.inc();
                    metrics.bytes_out.inc_by(message.len() as u64);
                    stream.feed(message).await
                }
                Outbound::Close(frame) => {
                    self.close_sent = true;
                    stream.feed(Message::Close(Some(frame))).await
                }
            };
            if fed.is_err() {
                return false;
            }
        }
        stream.flush().await.is_ok()
    }

    /// Sends the close frame an abort asked for, unless one is already out.
    pub async fn close(&mut self, stream: &mut Stream, frame: Option<CloseFrame>) {
        if std::mem::replace(&mut self.close_sent, true) {
            return;
        }
        let _ = stream.send(Message::Close(frame)).await;
    }
}
