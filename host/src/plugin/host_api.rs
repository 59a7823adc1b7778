//! The host side of the WIT imports: `connections`, `state` and `log`.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::bindings::{HostError, Message, connections, log, state, types};
use crate::hub::{Connection, DeliveryError, Hub};

/// What an instance may reach: the hub, scoped to its own plugin.
pub struct HostApi {
    hub: Arc<Hub>,
    /// The connection this instance serves: the common target, looked up
    /// without touching the hub.
    own: Arc<Connection>,
    version: Arc<str>,
    max_message: usize,
    max_state: usize,
}

impl HostApi {
    pub fn new(hub: Arc<Hub>, own: Arc<Connection>, version: Arc<str>, max_message: usize, max_state: usize) -> Self {
        Self {
            hub,
            own,
            version,
            max_message,
            max_state,
        }
    }

    pub fn plugin(&self) -> &str {
        &self.own.plugin
    }

    pub fn connection(&self) -> &str {
        &self.own.id
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    fn target(&self, id: &str) -> Result<Arc<Connection>, HostError> {
        if *self.own.id == *id {
            return Ok(self.own.clone());
        }
        self.hub.get(&self.own.plugin, id).ok_or(HostError::NotFound)
    }
}

impl From<DeliveryError> for HostError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::NotFound => HostError::NotFound,
            DeliveryError::Closed => HostError::Closed,
            DeliveryError::QueueFull => HostError::QueueFull,
        }
    }
}

impl types::Host for HostApi {}

impl connections::Host for HostApi {
    fn send(&mut self, id: String, message: Message) -> Result<(), HostError> {
        let len = match &message {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        };
        if len > self.max_message {
            return Err(HostError::TooLarge(format!(
                "message of {len} bytes exceeds websocket.max_message_size ({} bytes)",
                self.max_message
            )));
        }
        Ok(self.target(&id)?.send(message.into())?)
    }

    fn close(&mut self, id: String, code: u16, reason: String) -> Result<(), HostError> {
        if !server_may_send(code) {
            return Err(HostError::Invalid(format!(
                "close code {code} may not be sent by a server: use 1000, 1001, 1003, 1007-1011 or 3000-4999"
            )));
        }
        if reason.len() > 123 {
            return Err(HostError::Invalid(format!(
                "close reason is {} bytes; at most 123 fit a close frame",
                reason.len()
            )));
        }
        let frame = WsCloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        Ok(self.target(&id)?.close(frame)?)
    }
}

fn server_may_send(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 1003 | 1007..=1011 | 3000..=4999)
}

impl state::Host for HostApi {
    fn get(&mut self, id: String) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.target(&id)?.state())
    }

    fn set(&mut self, id: String, value: Vec<u8>) -> Result<(), HostError> {
        if value.len() > self.max_state {
            return Err(HostError::TooLarge(format!(
                "state of {} bytes exceeds the plugin's state_size limit ({} bytes)",
                value.len(),
                self.max_state
            )));
        }
        self.target(&id)?.set_state(Some(value));
        Ok(())
    }

    fn clear(&mut self, id: String) -> Result<(), HostError> {
        self.target(&id)?.set_state(None);
        Ok(())
    }
}

/// Longest plugin log line kept; the rest is cut so a plugin cannot flood
/// the log with one call.
pub(super) const MAX_LOG_LINE: usize = 4096;

pub(super) fn clip(text: &str) -> &str {
    if text.len() <= MAX_LOG_LINE {
        return text;
    }
    let mut end = MAX_LOG_LINE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl log::Host for HostApi {
    fn log(&mut self, level: log::Level, message: String) {
        let (plugin, conn, version, message) = (self.plugin(), self.connection(), self.version(), clip(&message));
        match level {
            log::Level::Trace => tracing::trace!(target: "plugin", plugin, conn, version, "{message}"),
            log::Level::Debug => tracing::debug!(target: "plugin", plugin, conn, version, "{message}"),
            log::Level::Info => tracing::info!(target: "plugin", plugin, conn, version, "{message}"),
            log::Level::Warn => tracing::warn!(target: "plugin", plugin, conn, version, "{message}"),
            log::Level::Error => tracing::error!(target: "plugin", plugin, conn, version, "{message}"),
        }
    }
}

impl From<Message> for tokio_tungstenite::tungstenite::Message {
    fn from(m: Message) -> Self {
        match m {
            Message::Text(t) => Self::Text(t.into()),
            Message::Binary(b) => Self::Binary(b.into()),
        }
    }
}
