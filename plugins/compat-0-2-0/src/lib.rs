//! A plugin built against `wasmsocket:plugin@0.2.0` (frozen in the host's
//! `wit/0.2.0`). The host's tests load it to prove that plugins built
//! against 0.2.0 keep working under 0.2.1, which added `rooms.history`.

wit_bindgen::generate!({
    path: "../../host/wit/0.2.0",
    world: "websocket-plugin",
    generate_all,
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use wasmsocket::plugin::{connections, rooms, timers};

struct Compat;

impl Guest for Compat {
    fn on_open(_id: ConnectionId, _request: Request) -> OpenResponse {
        OpenResponse::Accept(None)
    }

    /// `join ROOM` answers the room's size; `tick` sets a timer whose
    /// `on-timer` answers `0.2.0 tick`; anything else is echoed with a
    /// prefix.
    fn on_message(id: ConnectionId, message: Message) {
        let Message::Text(text) = message else { return };
        let reply = if let Some(room) = text.strip_prefix("join ") {
            let _ = rooms::join(&id, room);
            format!("0.2.0 room {room} has {}", rooms::count(room))
        } else if text == "tick" {
            match timers::set(&id, "t", timers::Schedule::Once(10)) {
                Ok(()) => return,
                Err(e) => format!("0.2.0 timer failed: {e:?}"),
            }
        } else {
            format!("0.2.0 says {text}")
        };
        let _ = connections::send(&id, &Message::Text(reply));
    }

    fn on_close(_id: ConnectionId, _close: Option<CloseFrame>) {}

    fn on_timer(id: ConnectionId, _name: String) {
        let _ = connections::send(&id, &Message::Text("0.2.0 tick".into()));
    }

    fn on_room_timer(_room: String, _name: String) {}
}

export!(Compat);
