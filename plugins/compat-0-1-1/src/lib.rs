//! An echo and room counter built against `wasmsocket:plugin@0.1.1`, the
//! last release of the 0.1 line (frozen in the host's `wit/0.1.1`). The
//! host's tests load it to prove that plugins built against 0.1.1 keep
//! working under the 0.2 world, rooms and store included.

wit_bindgen::generate!({
    path: "../../host/wit/0.1.1",
    world: "websocket-plugin",
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use wasmsocket::plugin::{connections, kv, rooms};

struct Compat;

impl Guest for Compat {
    fn on_open(_id: ConnectionId, _request: Request) -> OpenResponse {
        OpenResponse::Accept(None)
    }

    /// `join ROOM` answers the room's size and the count of joins so far
    /// (kept in the store); anything else is echoed with a prefix.
    fn on_message(id: ConnectionId, message: Message) {
        let reply = match message {
            Message::Text(text) => match text.strip_prefix("join ") {
                Some(room) => {
                    let _ = rooms::join(&id, room);
                    let joins = kv::increment(&format!("joins:{room}"), 1).unwrap_or(-1);
                    Message::Text(format!("0.1.1 room {room} has {} after {joins} joins", rooms::count(room)))
                }
                None => Message::Text(format!("0.1.1 says {text}")),
            },
            binary => binary,
        };
        let _ = connections::send(&id, &reply);
    }

    fn on_close(_id: ConnectionId, _close: Option<CloseFrame>) {}
}

export!(Compat);
