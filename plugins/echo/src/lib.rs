//! The echo plugin: every message goes back to its sender unchanged, text as
//! text and binary as binary, like the echo loop of the ASP.NET Core sample.

wit_bindgen::generate!({
    path: "../../wit",
    world: "websocket-plugin",
    // Also the WASI interfaces the world imports (wasi:config).
    generate_all,
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use wasmsocket::plugin::connections;

struct Echo;

impl Guest for Echo {
    fn on_open(_id: ConnectionId, _request: Request) -> OpenResponse {
        OpenResponse::Accept(None)
    }

    fn on_message(id: ConnectionId, message: Message) {
        // A failed send means the connection is already going away (its
        // client stopped reading, or it is closing): nothing left to do.
        let _ = connections::send(&id, &message);
    }

    fn on_close(_id: ConnectionId, _close: Option<CloseFrame>) {}

    fn on_timer(_id: ConnectionId, _name: String) {}

    fn on_room_timer(_room: String, _name: String) {}
}

export!(Echo);
