//! Example plugin: a chat room server.
//!
//! Connect to `/ws/chat?room=NAME&nick=NAME` (both optional: room `lobby`,
//! nick `guest-N`). Every text message goes to everyone else in the room as
//! `nick: text`; joins, leaves and nick changes are announced. Commands:
//! `/nick NAME`, `/join ROOM` (moves you), `/who` (how many are here).
//!
//! The nick and room live in the host-kept connection state, so they survive
//! plugin reloads; the guest counter lives in the plugin's key-value store.

wit_bindgen::generate!({
    path: "../../wit",
    world: "websocket-plugin",
    // Also the WASI interfaces the world imports (wasi:config).
    generate_all,
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use wasmsocket::plugin::{connections, kv, rooms, state};

struct Chat;

/// What the host keeps for each connection: `room\nnick`.
struct Seat {
    room: String,
    nick: String,
}

impl Seat {
    fn load(id: &str) -> Option<Seat> {
        let bytes = state::get(id).ok().flatten()?;
        let text = String::from_utf8(bytes).ok()?;
        let (room, nick) = text.split_once('\n')?;
        Some(Seat { room: room.into(), nick: nick.into() })
    }

    fn save(&self, id: &str) {
        let _ = state::set(id, format!("{}\n{}", self.room, self.nick).as_bytes());
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 32 && name.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

fn say(room: &str, text: String, except: Option<&str>) {
    let _ = rooms::broadcast(room, &Message::Text(text), except);
}

fn tell(id: &str, text: String) {
    let _ = connections::send(id, &Message::Text(text));
}

fn enter(id: &str, seat: &Seat) {
    let _ = rooms::join(id, &seat.room);
    seat.save(id);
    say(&seat.room, format!("* {} joined {}", seat.nick, seat.room), Some(id));
    tell(id, format!("* you are {} in {} ({} here)", seat.nick, seat.room, rooms::count(&seat.room)));
}

impl Guest for Chat {
    fn on_open(id: ConnectionId, request: Request) -> OpenResponse {
        let room = query_param(&request.query, "room").filter(|r| valid_name(r)).unwrap_or("lobby");
        let nick = match query_param(&request.query, "nick").filter(|n| valid_name(n)) {
            Some(nick) => nick.to_string(),
            None => format!("guest-{}", kv::increment("guests", 1).unwrap_or(0)),
        };
        let seat = Seat { room: room.into(), nick };
        enter(&id, &seat);
        OpenResponse::Accept(None)
    }

    fn on_message(id: ConnectionId, message: Message) {
        let Some(mut seat) = Seat::load(&id) else { return };
        let Message::Text(text) = message else {
            tell(&id, "* only text messages are relayed".into());
            return;
        };
        if let Some(nick) = text.strip_prefix("/nick ") {
            if !valid_name(nick) {
                tell(&id, "* a nick is 1 to 32 letters, digits, '-' or '_'".into());
                return;
            }
            say(&seat.room, format!("* {} is now {nick}", seat.nick), None);
            seat.nick = nick.into();
            seat.save(&id);
        } else if let Some(room) = text.strip_prefix("/join ") {
            if !valid_name(room) {
                tell(&id, "* a room name is 1 to 32 letters, digits, '-' or '_'".into());
                return;
            }
            let _ = rooms::leave(&id, &seat.room);
            say(&seat.room, format!("* {} left {}", seat.nick, seat.room), None);
            seat.room = room.into();
            enter(&id, &seat);
        } else if text == "/who" {
            tell(&id, format!("* {} here in {}", rooms::count(&seat.room), seat.room));
        } else {
            say(&seat.room, format!("{}: {text}", seat.nick), Some(&id));
        }
    }

    fn on_close(id: ConnectionId, _close: Option<CloseFrame>) {
        // The host takes the connection out of its rooms; say goodbye.
        if let Some(seat) = Seat::load(&id) {
            say(&seat.room, format!("* {} left {}", seat.nick, seat.room), Some(&id));
        }
    }

    fn on_timer(_id: ConnectionId, _name: String) {}

    fn on_room_timer(_room: String, _name: String) {}
}

export!(Chat);
