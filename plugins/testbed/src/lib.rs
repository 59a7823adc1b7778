//! A plugin for the host's own tests. It echoes like `echo`, and on command it
//! misbehaves (traps, loops forever, exhausts memory) or exercises a host
//! interface, so the tests can check what the host does about it.
//!
//! Commands are text messages:
//! - `trap`, `loop`, `oom`: fail in that way.
//! - `close CODE REASON`: ask the host to close this connection.
//! - `send ID TEXT`: send TEXT to connection ID; replies `sent` or the error.
//! - `kick ID CODE REASON`: close connection ID; replies `ok` or the error.
//! - `set TEXT` / `get`: store TEXT in the connection's host-kept state / read it back.
//! - `whoami`: replies with this connection's id.
//! - `join ROOM`, `leave ROOM`: room membership; replies `ok` or the error.
//! - `bcast ROOM TEXT` (everyone but me) / `bcastall ROOM TEXT`: replies the count.
//! - `count ROOM`, `members ROOM`, `rooms`: replies the count / ids / my rooms.
//! - `history ROOM LIMIT [SINCE]`: replies the room's history as
//!   `OFFSET:TEXT` entries joined by `|` (binary ones as `OFFSET:#LEN`), or
//!   the error.
//! - `joinmany PREFIX COUNT`: join rooms PREFIX-0 to PREFIX-(COUNT-1) in one call;
//!   replies `joined N ERROR` (N the joins that succeeded).
//! - `kvset KEY VALUE`, `kvget KEY`, `kvdel KEY`, `incr KEY DELTA`: the shared store.
//!
//! - `timer NAME once|every MS` / `untimer NAME`: a timer of this connection; replies
//!   `ok` or the error / `cancelled BOOL`. When it fires: `timer NAME`.
//! - `roomtimer ROOM NAME once|every MS` / `unroomtimer ROOM NAME`: a room's timer;
//!   when it fires, every member gets `roomtimer ROOM NAME` (a timer named `trap` traps).
//! - `config KEY`: replies `config KEY=VALUE` or `config KEY none` (wasi:config/store).
//! - `fetch URL`: GET URL over wasi:http; replies `status CODE BYTES` or `error CODE`.
//!
//! Hostile commands, for the isolation tests (none replies unless it says so):
//! - `sleep MS [TIMES]`: sleep MS milliseconds (WASI clock poll), TIMES times; replies `slept`.
//! - `random BYTES`: ask WASI for BYTES random bytes; replies `random N` or traps.
//! - `flood ID COUNT BYTES`: send COUNT binary messages of BYTES to ID (`self` for this
//!   connection); replies `flooded SENT ERROR` to this connection.
//! - `print BYTES`: write BYTES to stdout in one call, as 80-byte lines.
//! - `logs COUNT`: call `log` COUNT times.
//! - `kvfill COUNT BYTES [TTL_MS]`: set COUNT keys of BYTES each; replies `filled N ERROR`.
//! - `global`: increments a global of the instance and replies it (globals do
//!   not outlive an instance).
//! - `scribble`: fills 64 KiB of its stack with a pattern; replies
//!   `scribbled ADDR` (the buffer's address in linear memory).
//! - `peek ADDR LEN`: reads LEN bytes of linear memory at ADDR, whatever is
//!   there; replies `nonzero N` (what an earlier instance left would show).
//!
//! On open, the query string chooses: `reject=STATUS` refuses the connection;
//! `watch=ID` makes `on-close` report `closed ID CODE REASON` to connection ID
//! (`none` when no close frame came); `trap-open` traps. The first offered
//! subprotocol is accepted.

wit_bindgen::generate!({
    path: "../../wit",
    world: "websocket-plugin",
    // Also the WASI interfaces the world imports (wasi:config).
    generate_all,
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use wasmsocket::plugin::timers::Schedule;
use wasmsocket::plugin::types::Rejection;
use wasmsocket::plugin::{connections, kv, log, rooms, state, timers};

struct Testbed;

const WATCH_KEY: &str = "watch=";

impl Guest for Testbed {
    fn on_open(id: ConnectionId, request: Request) -> OpenResponse {
        for pair in request.query.split('&') {
            if let Some(status) = pair.strip_prefix("reject=") {
                return OpenResponse::Reject(Rejection {
                    status: status.parse().unwrap_or(403),
                    body: format!("rejected by testbed: {}", request.path),
                });
            }
            if let Some(watcher) = pair.strip_prefix(WATCH_KEY) {
                // Instances are disposable: remember the watcher in host state.
                let _ = state::set(&id, format!("{WATCH_KEY}{watcher}").as_bytes());
            }
            if pair == "trap-open" {
                panic!("testbed asked to trap in on-open");
            }
            if let Some(ms) = pair.strip_prefix("sleep-open=") {
                sleep_ms(ms.parse().unwrap_or(0));
            }
            if let Some(ms) = pair.strip_prefix("sleep-close=") {
                let mut saved = state::get(&id).ok().flatten().unwrap_or_default();
                if !saved.is_empty() {
                    saved.push(b'&');
                }
                saved.extend_from_slice(format!("sleep-close={ms}").as_bytes());
                let _ = state::set(&id, &saved);
            }
        }
        log::log(log::Level::Info, &format!("opened {}", request.path));
        OpenResponse::Accept(request.subprotocols.into_iter().next())
    }

    fn on_message(id: ConnectionId, message: Message) {
        let Message::Text(text) = &message else {
            reply(&id, message);
            return;
        };
        let (command, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        match command {
            "timer" => {
                let mut parts = rest.splitn(3, ' ');
                let (name, kind, ms) =
                    (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let answer = match schedule(kind, ms) {
                    Some(s) => outcome(timers::set(&id, name, s)),
                    None => "usage: timer NAME once|every MS".into(),
                };
                reply(&id, Message::Text(answer));
            }
            "untimer" => reply(&id, Message::Text(format!("cancelled {}", timers::cancel(&id, rest)))),
            "roomtimer" => {
                let mut parts = rest.splitn(4, ' ');
                let (room, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (kind, ms) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let answer = match schedule(kind, ms) {
                    Some(s) => outcome(timers::set_room(room, name, s)),
                    None => "usage: roomtimer ROOM NAME once|every MS".into(),
                };
                reply(&id, Message::Text(answer));
            }
            "unroomtimer" => {
                let (room, name) = rest.split_once(' ').unwrap_or((rest, ""));
                reply(&id, Message::Text(format!("cancelled {}", timers::cancel_room(room, name))));
            }
            "config" => {
                let answer = match wasi::config::store::get(rest) {
                    Ok(Some(value)) => format!("config {rest}={value}"),
                    Ok(None) => format!("config {rest} none"),
                    Err(e) => format!("config error {e:?}"),
                };
                reply(&id, Message::Text(answer));
            }
            "fetch" => reply(&id, Message::Text(fetch(rest))),
            "trap" => panic!("testbed asked to trap"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "close" => {
                let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                let code = code.parse().unwrap_or(1000);
                if let Err(e) = connections::close(&id, code, reason) {
                    reply(&id, Message::Text(format!("error {e:?}")));
                }
            }
            "kick" => {
                // kick ID CODE REASON: close another connection.
                let mut parts = rest.splitn(3, ' ');
                let (target, code, reason) = (parts.next().unwrap_or(""), parts.next(), parts.next().unwrap_or(""));
                let code = code.and_then(|c| c.parse().ok()).unwrap_or(1000);
                reply(&id, Message::Text(outcome(connections::close(target, code, reason))));
            }
            "send" => {
                let (target, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let outcome = match connections::send(target, &Message::Text(body.into())) {
                    Ok(()) => "sent".to_string(),
                    Err(e) => format!("error {e:?}"),
                };
                reply(&id, Message::Text(outcome));
            }
            "set" => {
                let outcome = match state::set(&id, rest.as_bytes()) {
                    Ok(()) => "stored".to_string(),
                    Err(e) => format!("error {e:?}"),
                };
                reply(&id, Message::Text(outcome));
            }
            "get" => {
                let value = match state::get(&id) {
                    Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                    Ok(None) => "none".to_string(),
                    Err(e) => format!("error {e:?}"),
                };
                reply(&id, Message::Text(value));
            }
            "whoami" => reply(&id, Message::Text(id.clone())),
            "join" => reply(&id, Message::Text(outcome(rooms::join(&id, rest)))),
            "leave" => reply(&id, Message::Text(outcome(rooms::leave(&id, rest)))),
            "joinmany" => {
                let (prefix, count) = rest.split_once(' ').unwrap_or((rest, "0"));
                let count: usize = count.parse().unwrap_or(0);
                let mut joined = 0;
                let mut error = "none".to_string();
                for i in 0..count {
                    match rooms::join(&id, &format!("{prefix}-{i}")) {
                        Ok(()) => joined += 1,
                        Err(e) => error = format!("{e:?}"),
                    }
                }
                reply(&id, Message::Text(format!("joined {joined} {error}")));
            }
            "bcast" | "bcastall" => {
                let (room, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let except = (command == "bcast").then(|| id.clone());
                let text = match rooms::broadcast(room, &Message::Text(body.into()), except.as_deref()) {
                    Ok(n) => format!("delivered {n}"),
                    Err(e) => format!("error {e:?}"),
                };
                reply(&id, Message::Text(text));
            }
            "count" => reply(&id, Message::Text(rooms::count(rest).to_string())),
            "history" => {
                let mut args = rest.split(' ');
                let room = args.next().unwrap_or("");
                let limit = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
                let since = args.next().and_then(|n| n.parse().ok());
                let text = match rooms::history(room, since, limit) {
                    Ok(kept) => kept
                        .iter()
                        .map(|k| match &k.message {
                            Message::Text(t) => format!("{}:{t}", k.offset),
                            Message::Binary(b) => format!("{}:#{}", k.offset, b.len()),
                        })
                        .collect::<Vec<_>>()
                        .join("|"),
                    Err(e) => format!("error {e:?}"),
                };
                reply(&id, Message::Text(text));
            }
            "members" => {
                let mut members = rooms::members(rest, 1000);
                members.sort();
                reply(&id, Message::Text(members.join(",")));
            }
            "rooms" => {
                let text = match rooms::rooms_of(&id) {
                    Ok(mut list) => {
                        list.sort();
                        list.join(",")
                    }
                    Err(e) => format!("error {e:?}"),
                };
                reply(&id, Message::Text(text));
            }
            "kvset" => {
                let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
                reply(&id, Message::Text(outcome(kv::set(key, value.as_bytes(), None))));
            }
            "kvget" => {
                let text = match kv::get(rest) {
                    Some(v) => String::from_utf8_lossy(&v).into_owned(),
                    None => "none".into(),
                };
                reply(&id, Message::Text(text));
            }
            "kvdel" => reply(&id, Message::Text(kv::delete(rest).to_string())),
            "incr" => {
                let (key, delta) = rest.split_once(' ').unwrap_or((rest, "1"));
                let text = match kv::increment(key, delta.parse().unwrap_or(1)) {
                    Ok(n) => n.to_string(),
                    Err(e) => format!("error {e:?}"),
                };
                reply(&id, Message::Text(text));
            }
            "sleep" => {
                let mut args = rest.split(' ');
                let ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let times = args.next().and_then(|v| v.parse().ok()).unwrap_or(1);
                for _ in 0..times {
                    sleep_ms(ms);
                }
                reply(&id, Message::Text("slept".into()));
            }
            "random" => {
                let n = rest.parse().unwrap_or(0);
                let bytes = wasip2::random::random::get_random_bytes(n);
                reply(&id, Message::Text(format!("random {}", bytes.len())));
            }
            "flood" => {
                let mut args = rest.split(' ');
                let target = match args.next().unwrap_or("self") {
                    "self" => id.clone(),
                    other => other.to_string(),
                };
                let count: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(1);
                let size: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(1);
                let payload = vec![0x5a; size];
                let mut sent = 0;
                let mut error = "none".to_string();
                for _ in 0..count {
                    match connections::send(&target, &Message::Binary(payload.clone())) {
                        Ok(()) => sent += 1,
                        Err(e) => {
                            error = format!("{e:?}");
                            break;
                        }
                    }
                }
                let _ = connections::send(&id, &Message::Text(format!("flooded {sent} {error}")));
            }
            "print" => {
                let n: usize = rest.parse().unwrap_or(0);
                let line = format!("{}\n", "p".repeat(79));
                let mut out = String::with_capacity(n + 80);
                while out.len() < n {
                    out.push_str(&line);
                }
                print!("{out}");
            }
            "logs" => {
                let n: usize = rest.parse().unwrap_or(0);
                for i in 0..n {
                    log::log(log::Level::Info, &format!("log line {i}"));
                }
            }
            "kvfill" => {
                let mut args = rest.split(' ');
                let count: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let size: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let ttl: Option<u64> = args.next().and_then(|v| v.parse().ok());
                let value = vec![b'v'; size];
                let mut filled = 0;
                let mut error = "none".to_string();
                for i in 0..count {
                    match kv::set(&format!("fill-{i}"), &value, ttl) {
                        Ok(()) => filled += 1,
                        Err(e) => {
                            error = format!("{e:?}");
                            break;
                        }
                    }
                }
                reply(&id, Message::Text(format!("filled {filled} {error}")));
            }
            "scribble" => reply(&id, Message::Text(format!("scribbled {}", scribble()))),
            "peek" => {
                let mut args = rest.split(' ').map(|v| v.parse::<usize>().unwrap_or(0));
                let (addr, len) = (args.next().unwrap_or(0), args.next().unwrap_or(0));
                // SAFETY: linear memory is one flat array; a read past its
                // end traps, and the test asks only for bytes inside it.
                let nonzero =
                    (addr..addr + len).filter(|&a| unsafe { std::ptr::read_volatile(a as *const u8) } != 0).count();
                reply(&id, Message::Text(format!("nonzero {nonzero}")));
            }
            "global" => {
                let n = GLOBAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                reply(&id, Message::Text(format!("global {n}")));
            }
            _ => reply(&id, message),
        }
    }

    fn on_close(id: ConnectionId, close: Option<CloseFrame>) {
        let Ok(Some(saved)) = state::get(&id) else {
            return;
        };
        let saved = String::from_utf8_lossy(&saved);
        for pair in saved.split('&') {
            if let Some(ms) = pair.strip_prefix("sleep-close=") {
                sleep_ms(ms.parse().unwrap_or(0));
            }
        }
        if let Some(watcher) = saved.split('&').find_map(|p| p.strip_prefix(WATCH_KEY)) {
            let how = match close {
                Some(frame) => format!("{} {}", frame.code, frame.reason),
                None => "none".to_string(),
            };
            let _ = connections::send(watcher, &Message::Text(format!("closed {id} {how}")));
        }
    }

    fn on_timer(id: ConnectionId, name: String) {
        let _ = connections::send(&id, &Message::Text(format!("timer {name}")));
    }

    fn on_room_timer(room: String, name: String) {
        if name == "trap" {
            panic!("testbed's room timer `trap` traps");
        }
        let _ = rooms::broadcast(&room, &Message::Text(format!("roomtimer {room} {name}")), None);
    }
}

fn schedule(kind: &str, ms: &str) -> Option<Schedule> {
    let ms = ms.parse().ok()?;
    match kind {
        "once" => Some(Schedule::Once(ms)),
        "every" => Some(Schedule::Every(ms)),
        _ => None,
    }
}

/// GETs `url` (`http://host:port/path`) and reads the whole body.
fn fetch(url: &str) -> String {
    use wasip2::http::types::{ErrorCode, Fields, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some((_, rest)) => (Scheme::Http, rest),
        None => return "error bad-url".into(),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let answer = |e: ErrorCode| format!("error {e:?}");
    let future = match wasip2::http::outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(e) => return answer(e),
    };
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return answer(e),
        _ => return "error no-response".into(),
    };
    let status = response.status();
    let Ok(body) = response.consume() else { return "error no-body".into() };
    let Ok(stream) = body.stream() else { return "error no-stream".into() };
    let mut bytes = 0usize;
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes += chunk.len(),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => return format!("error read {}", e.to_debug_string()),
        }
    }
    format!("status {status} {bytes}")
}

/// Counts calls on this instance; a fresh instance starts from zero.
static GLOBAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Blocks in a WASI clock poll, as `std::thread::sleep` does.
fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

fn outcome(result: Result<(), wasmsocket::plugin::types::HostError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => format!("error {e:?}"),
    }
}

/// Fills 64 KiB of stack below the caller's frame with a pattern and
/// returns its address: a frame of its own, so the caller's later frames
/// and locals do not land in its lower half.
#[inline(never)]
fn scribble() -> usize {
    let mut buffer = [0xa5u8; 64 << 10];
    // Written for real, not optimised away.
    std::hint::black_box(&mut buffer);
    buffer.as_ptr() as usize
}

fn reply(id: &ConnectionId, message: Message) {
    let _ = connections::send(id, &message);
}

export!(Testbed);
