//! What hosts tell each other over Redis pub/sub, in postcard's compact
//! binary form: a broadcast to a room, or a message or close for one
//! connection.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

/// Bumped when the layout changes, so a host never misreads a newer one.
const VERSION: u8 = 1;

/// A WebSocket message as sent between hosts.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Payload<'a> {
    Text(Cow<'a, str>),
    Binary(#[serde(borrow, with = "serde_bytes")] Cow<'a, [u8]>),
}

impl<'a> Payload<'a> {
    /// Borrows a message; `None` for control frames, which never cross hosts.
    pub fn of(message: &'a Message) -> Option<Self> {
        match message {
            Message::Text(t) => Some(Payload::Text(Cow::Borrowed(t.as_str()))),
            Message::Binary(b) => Some(Payload::Binary(Cow::Borrowed(b.as_ref()))),
            _ => None,
        }
    }

    pub fn into_message(self) -> Message {
        match self {
            Payload::Text(t) => Message::text(t.into_owned()),
            Payload::Binary(b) => Message::binary(b.into_owned()),
        }
    }
}

/// One cross-host instruction.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Envelope<'a> {
    /// Deliver to this host's members of `room` of `plugin`.
    Broadcast {
        /// The publishing host, which has already delivered to its own members.
        origin: Cow<'a, str>,
        plugin: Cow<'a, str>,
        room: Cow<'a, str>,
        except: Option<Cow<'a, str>>,
        #[serde(borrow)]
        message: Payload<'a>,
    },
    /// Deliver to connection `to`, if it is served by `plugin` (any plugin
    /// when `None`: the operator's publish API).
    Send {
        plugin: Option<Cow<'a, str>>,
        to: Cow<'a, str>,
        #[serde(borrow)]
        message: Payload<'a>,
    },
    /// Close connection `to` after what it has queued.
    Close { plugin: Cow<'a, str>, to: Cow<'a, str>, code: u16, reason: Cow<'a, str> },
    /// A fallback client's post, taken by host `from`, for the session's
    /// owner to deliver (unchecked: the owner checks it) and answer.
    Post {
        from: Cow<'a, str>,
        ticket: u64,
        plugin: Cow<'a, str>,
        session: Cow<'a, str>,
        seq: u64,
        close: Option<u16>,
        text: bool,
        #[serde(borrow, with = "serde_bytes")]
        body: Cow<'a, [u8]>,
    },
    /// The owner's answer to post `ticket`: the HTTP status and message its
    /// client gets.
    PostAnswer { ticket: u64, status: u16, message: Cow<'a, str> },
    /// Host `from` asks for resumable session `session` (`ID.SECRET`) of
    /// `plugin`, whose client received `last` messages. Published on the
    /// channel of the id's first host, where whoever holds the session
    /// listens; directed sends to it published after this are `from`'s.
    Take { from: Cow<'a, str>, ticket: u64, plugin: Cow<'a, str>, session: Cow<'a, str>, last: u64 },
    /// The holder has the session: its rooms. From now on it holds their
    /// broadcasts, numbered.
    Offer {
        ticket: u64,
        holder: Cow<'a, str>,
        #[serde(borrow)]
        rooms: Vec<Cow<'a, str>>,
    },
    /// The asker has joined the rooms, at these points of their numbering
    /// (in the order of the offer): the holder hands over the session with
    /// what was numbered up to them.
    Commit { ticket: u64, from: Cow<'a, str>, points: Vec<u64> },
    /// The session is stored for the asker (see `moves`).
    Handed { ticket: u64 },
    /// The holder will not hand it over; why, as a resume refusal says.
    Decline { ticket: u64, reason: Cow<'a, str> },
}

/// Why a received envelope was ignored.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("envelope version {0}, this host reads version {VERSION}")]
    Version(u8),
    #[error("malformed envelope: {0}")]
    Malformed(#[from] postcard::Error),
}

impl Envelope<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        // Serialising into a Vec fails only on out-of-memory.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        Ok(postcard::from_bytes(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_binary_and_close() {
        let text = Message::text("héllo");
        let bin = Message::binary(vec![0u8, 255, 7]);
        let envelopes = [
            Envelope::Broadcast {
                origin: "h1".into(),
                plugin: "chat".into(),
                room: "lobby".into(),
                except: Some("h1-2".into()),
                message: Payload::of(&text).unwrap(),
            },
            Envelope::Send { plugin: None, to: "h2-9".into(), message: Payload::of(&bin).unwrap() },
            Envelope::Close { plugin: "chat".into(), to: "h2-9".into(), code: 4000, reason: "bye".into() },
        ];
        for e in &envelopes {
            assert_eq!(&Envelope::decode(&e.encode()).unwrap(), e);
        }
        let bytes = envelopes[1].encode();
        let Envelope::Send { message, .. } = Envelope::decode(&bytes).unwrap() else { panic!() };
        assert_eq!(message.into_message(), bin);
    }

    #[test]
    fn garbage_and_other_versions_are_refused() {
        assert!(matches!(Envelope::decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(Envelope::decode(&[9, 0]), Err(DecodeError::Version(9))));
        assert!(matches!(Envelope::decode(&[VERSION, 200, 1]), Err(DecodeError::Malformed(_))));
    }
}
