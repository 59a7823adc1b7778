//! Example plugin: a ticker per room, driven by a room timer.
//!
//! `join ROOM` joins a room (reply `joined ROOM`); from then on every member
//! receives `tick ROOM N` every `tick_ms` milliseconds (the operator's
//! variable, read through `wasi:config/store`; 50 by default), N counting up
//! from 1 per room. `leave ROOM` leaves it (reply `left ROOM`). Anything else
//! gets `unknown COMMAND`.
//!
//! The timer belongs to the room, not to a connection: every join asks for
//! it, and asking again with the same schedule leaves it running. A tick that
//! finds the room empty cancels it; the next join starts it again. The count
//! lives in `kv`, so it goes on from where it stopped, and across hosts
//! scaled out over Redis (where exactly one host runs the room's timer).

wit_bindgen::generate!({
    path: "../../wit",
    world: "websocket-plugin",
    // Bindings for wasi:config (wit/deps/config) too, not only wasmsocket:plugin.
    generate_all,
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use wasi::config::store;
use wasmsocket::plugin::timers::{self, Schedule};
use wasmsocket::plugin::{connections, kv, log, rooms};

/// The room timer's name.
const TICK: &str = "tick";
/// The interval when the operator sets no `tick_ms`.
const DEFAULT_TICK_MS: u64 = 50;

struct Ticker;

fn tell(id: &str, text: String) {
    let _ = connections::send(id, &Message::Text(text));
}

/// The `tick_ms` variable, or the default when it is unset or not a number.
fn tick_ms() -> u64 {
    match store::get("tick_ms") {
        Ok(Some(value)) => value.trim().parse().unwrap_or_else(|_| {
            log::log(log::Level::Warn, &format!("tick_ms {value:?} is not a number: using {DEFAULT_TICK_MS}"));
            DEFAULT_TICK_MS
        }),
        Ok(None) => DEFAULT_TICK_MS,
        Err(e) => {
            log::log(log::Level::Warn, &format!("config unavailable ({e:?}): tick_ms {DEFAULT_TICK_MS}"));
            DEFAULT_TICK_MS
        }
    }
}

fn join(id: &str, room: &str) {
    if let Err(e) = rooms::join(id, room) {
        tell(id, format!("error {e:?}"));
        return;
    }
    // Every member asks for the timer: the same schedule again is a no-op.
    if let Err(e) = timers::set_room(room, TICK, Schedule::Every(tick_ms())) {
        let _ = rooms::leave(id, room);
        log::log(log::Level::Warn, &format!("no ticker for {room}: {e:?}"));
        tell(id, format!("error {e:?}"));
        return;
    }
    tell(id, format!("joined {room}"));
}

impl Guest for Ticker {
    fn on_open(_id: ConnectionId, _request: Request) -> OpenResponse {
        OpenResponse::Accept(None)
    }

    fn on_message(id: ConnectionId, message: Message) {
        let Message::Text(text) = message else { return };
        let text = text.trim();
        let (command, room) = text.split_once(' ').map_or((text, ""), |(c, r)| (c, r.trim()));
        match command {
            "join" => join(&id, room),
            "leave" => {
                let _ = rooms::leave(&id, room);
                tell(&id, format!("left {room}"));
            }
            _ => tell(&id, format!("unknown {command}")),
        }
    }

    // The host takes a closed connection out of its rooms; the next tick
    // of an emptied room stops its timer.
    fn on_close(_id: ConnectionId, _close: Option<CloseFrame>) {}

    fn on_timer(_id: ConnectionId, _name: String) {}

    fn on_room_timer(room: String, name: String) {
        if name != TICK {
            return;
        }
        if rooms::count(&room) == 0 {
            timers::cancel_room(&room, TICK);
            return;
        }
        match kv::increment(&format!("tick:{room}"), 1) {
            Ok(n) => {
                let _ = rooms::broadcast(&room, &Message::Text(format!("tick {room} {n}")), None);
            }
            Err(e) => log::log(log::Level::Warn, &format!("tick {room} skipped: {e:?}")),
        }
    }
}

export!(Ticker);
