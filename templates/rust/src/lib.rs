//! {{name}}: a wasmsocket plugin. It answers every text message with
//! `NAME #N: TEXT`, counts messages in host-kept `state` (which survives
//! reloads and new instances), and writes a `log` line for each.

wit_bindgen::generate!({
    path: "wit",
    world: "websocket-plugin",
    // Bindings for wasi:config too (wit/deps/config), not only this package.
    generate_all,
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use wasmsocket::plugin::{connections, log, state};

struct Plugin;

impl Guest for Plugin {
    fn on_open(id: ConnectionId, request: Request) -> OpenResponse {
        log::log(log::Level::Info, &format!("{id} opened {}", request.path));
        OpenResponse::Accept(None)
    }

    fn on_message(id: ConnectionId, message: Message) {
        let n = count(&id);
        let reply = match message {
            Message::Text(text) => {
                log::log(log::Level::Info, &format!("message {n}: {text}"));
                Message::Text(format!("{{name}} #{n}: {text}"))
            }
            binary => binary,
        };
        let _ = connections::send(&id, &reply);
    }

    fn on_close(id: ConnectionId, _close: Option<CloseFrame>) {
        log::log(log::Level::Info, &format!("{id} closed"));
    }

    // Timers this plugin set with `timers::set` and `timers::set_room`; it sets none.
    fn on_timer(_id: ConnectionId, _name: String) {}

    fn on_room_timer(_room: String, _name: String) {}
}

/// Counts this message in the connection's host-kept state.
fn count(id: &str) -> u64 {
    let saved = state::get(id).ok().flatten().unwrap_or_default();
    let n = String::from_utf8_lossy(&saved).parse::<u64>().unwrap_or(0) + 1;
    let _ = state::set(id, n.to_string().as_bytes());
    n
}

export!(Plugin);
