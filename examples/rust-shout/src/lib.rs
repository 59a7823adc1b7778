//! Example plugin: replies to every text message in capitals and keeps a
//! message count in host-kept state, so the count survives plugin reloads
//! and instance recycling. Binary messages come back unchanged.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `plugins/`
//! (this crate is a member of that workspace), then copy
//! `target/wasm32-wasip2/release/shout.wasm` into your plugin directory.
//!
//! Commands: `get` replies with the state as text (what `testbed`'s `set`
//! stored, or the count), `count` replies with the number of messages seen.

wit_bindgen::generate!({
    path: "../../wit",
    world: "websocket-plugin",
    // Also the WASI interfaces the world imports (wasi:config).
    generate_all,
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use wasmsocket::plugin::{connections, state};

struct Shout;

impl Guest for Shout {
    fn on_open(_id: ConnectionId, _request: Request) -> OpenResponse {
        OpenResponse::Accept(None)
    }

    fn on_message(id: ConnectionId, message: Message) {
        let reply = match message {
            Message::Text(text) if text == "get" => {
                let saved = state::get(&id).ok().flatten().unwrap_or_default();
                Message::Text(String::from_utf8_lossy(&saved).into_owned())
            }
            Message::Text(text) if text == "count" => {
                let n = bump(&id);
                Message::Text(n.to_string())
            }
            Message::Text(text) => {
                bump(&id);
                Message::Text(text.to_uppercase())
            }
            binary => binary,
        };
        let _ = connections::send(&id, &reply);
    }

    fn on_close(_id: ConnectionId, _close: Option<CloseFrame>) {}

    fn on_timer(_id: ConnectionId, _name: String) {}

    fn on_room_timer(_room: String, _name: String) {}
}

/// Counts this message in the connection's host-kept state.
fn bump(id: &str) -> u64 {
    let saved = state::get(id).ok().flatten().unwrap_or_default();
    let n = String::from_utf8_lossy(&saved).parse::<u64>().unwrap_or(0) + 1;
    let _ = state::set(id, n.to_string().as_bytes());
    n
}

export!(Shout);
