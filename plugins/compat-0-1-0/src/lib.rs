//! An echo plugin built against `wasmsocket:plugin@0.1.0`, the first release
//! of the world (kept frozen in `wit/` beside this file). The host's tests
//! load it to prove that plugins built against an older `0.1.x` world keep
//! working as the host gains interfaces.

wit_bindgen::generate!({
    path: "wit",
    world: "websocket-plugin",
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use wasmsocket::plugin::connections;

struct Compat;

impl Guest for Compat {
    fn on_open(_id: ConnectionId, _request: Request) -> OpenResponse {
        OpenResponse::Accept(None)
    }

    fn on_message(id: ConnectionId, message: Message) {
        let reply = match message {
            Message::Text(text) => Message::Text(format!("0.1.0 says {text}")),
            binary => binary,
        };
        let _ = connections::send(&id, &reply);
    }

    fn on_close(_id: ConnectionId, _close: Option<CloseFrame>) {}
}

export!(Compat);
