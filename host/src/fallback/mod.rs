//! The HTTP fallback transport, for clients whose WebSocket cannot open
//! (`docs/transports.md` is its protocol): a `GET` with `Accept:
//! text/event-stream` opens a session and streams what the plugin sends,
//! each `POST` carries one message to it. To the plugin it is a connection
//! like any other.

mod events;
mod inbox;
mod session;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use warp::reply::{Reply, Response};

pub use inbox::{Post, PostError, Taken};
pub use session::Settings;

use crate::backplane::{Backplane, ForwardedPosts, RawPost};
use crate::config::InMemory;
use crate::handshake::{self, Opened, RouteRequest as Request};
use crate::hub::Hub;
use crate::inbound::{BodyHold, InboundError};
use crate::plugin;
use crate::resume::{self, Registry};
use crate::state::AppState;
use session::Shared;

/// The header a fallback client offers subprotocols in: browsers do not let
/// a page set `Sec-WebSocket-Protocol` on a `fetch`.
pub const PROTOCOL_HEADER: &str = "x-websocket-protocol";

/// This host's open fallback sessions, by connection id.
#[derive(Default)]
pub struct Sessions {
    registry: Registry<Shared>,
}

impl Sessions {
    /// Delivers a post to a session of this host, after checking it as a
    /// WebSocket frame is checked: a post that breaks a rule closes the
    /// session with the code a WebSocket would get.
    pub async fn deliver(&self, plugin: &str, session: &str, raw: RawPost) -> Result<Taken, Refused> {
        let shared = self.registry.find(plugin, session).ok_or(Refused::Unknown)?;
        if shared.conn.is_closing() {
            return Err(PostError::Gone.into());
        }
        let seq = raw.seq;
        let post = raw.check().inspect_err(|invalid| {
            shared.conn.abort(CloseFrame { code: invalid.close_code, reason: invalid.message.clone().into() });
        })?;
        Ok(shared.inbox.deliver(seq, post, shared.post_timeout).await?)
    }
}

/// The query parameters of the fallback's own requests.
#[derive(Debug, Default, Deserialize)]
struct Params {
    session: Option<String>,
    seq: Option<u64>,
    close: Option<u16>,
    last: Option<u64>,
}

/// Whether a request on a plugin route is the fallback's rather than a
/// WebSocket's.
pub fn is_fallback(req: &Request) -> bool {
    let upgrade = req.headers.contains_key(header::UPGRADE);
    let wants_stream = req
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/event-stream")));
    match req.method {
        Method::GET => wants_stream && !upgrade,
        Method::POST | Method::OPTIONS => true,
        _ => false,
    }
}

use crate::reply::text as error;

/// Answers a fallback request: open, resume or post, to one of this host's
/// `sessions`.
pub async fn handle(
    state: Arc<AppState>,
    sessions: Arc<Sessions>,
    req: Request,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
) -> Response {
    let params: Params = match serde_urlencoded::from_str(&req.query) {
        Ok(params) => params,
        Err(_) if req.method == Method::GET => Params::default(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad query: {e}")),
    };
    if !handshake::origin_allowed(&state.ws, &req.headers) {
        return handshake::refuse(&state, StatusCode::FORBIDDEN, "origin", "origin not allowed");
    }
    let origin = req.headers.get(header::ORIGIN).cloned();
    let mut response = answer(state, &sessions, req, params, body).await;
    if let Some(origin) = origin {
        // An allowed page of another origin reads the answer too (CORS).
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

async fn answer(
    state: Arc<AppState>,
    sessions: &Arc<Sessions>,
    req: Request,
    params: Params,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
) -> Response {
    match (&req.method, params.session.as_deref()) {
        (&Method::OPTIONS, _) => preflight(),
        (&Method::GET, None) => open(state, sessions.clone(), req).await,
        (&Method::GET, Some(session)) => {
            let last = params.last.or_else(|| last_event_id(&req.headers)).unwrap_or(0);
            resume(&state, sessions, req, session, last)
        }
        (&Method::POST, Some(session)) => {
            let Some(seq) = params.seq.filter(|s| *s > 0) else {
                return error(StatusCode::BAD_REQUEST, "seq (1, 2, 3, ...) is required");
            };
            post(&state, sessions, &req, session, seq, params.close, body).await
        }
        _ => error(StatusCode::BAD_REQUEST, "a fallback post needs ?session=ID&seq=N"),
    }
}

/// Takes one post, bounded as a WebSocket message is: the session is
/// checked before the body is read, a declared length before the first
/// byte, and the body must arrive within `websocket.message_timeout` and
/// within the host's receive budget, which its bytes count against until
/// the session takes them.
async fn post(
    state: &AppState,
    sessions: &Sessions,
    req: &Request,
    session: &str,
    seq: u64,
    close: Option<u16>,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
) -> Response {
    let plugin = req.plugin.as_deref().unwrap_or(&state.config.default_plugin);
    // A session of this host is known here; one of another host is
    // checked by its owner, and its body is bounded here all the same.
    let local = match forwarded_to(state, session) {
        Some(_) => None,
        None => match sessions.registry.find(plugin, session) {
            Some(shared) if !shared.conn.is_closing() => Some(shared),
            Some(_) => return error(StatusCode::NOT_FOUND, PostError::Gone.to_string()),
            None => return error(StatusCode::NOT_FOUND, "no such session"),
        },
    };
    let max = state.ws.max_message_size.in_memory();
    let too_big = || {
        // As a WebSocket closes with 1009 for a message too big.
        if let Some(shared) = &local {
            shared.conn.abort(CloseFrame { code: CloseCode::Size, reason: "message too big".into() });
        }
        error(StatusCode::PAYLOAD_TOO_LARGE, format!("larger than websocket.max_message_size ({max})"))
    };
    if content_length(&req.headers).is_some_and(|len| len > max as u64) {
        return too_big();
    }
    let mut hold = state.receive_budget.hold_body();
    let within = state.receive_budget.message_timeout();
    let bytes = match read_body(body, max, &mut hold, within).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooBig) => return too_big(),
        Err(BodyError::Budget) => {
            if let Some(shared) = &local {
                shared
                    .conn
                    .abort(CloseFrame { code: CloseCode::Size, reason: "server receive budget exhausted".into() });
            }
            return error(StatusCode::SERVICE_UNAVAILABLE, InboundError::BudgetExhausted.to_string());
        }
        Err(BodyError::Timeout) => {
            state.receive_budget.timed_out();
            return error(StatusCode::REQUEST_TIMEOUT, format!("body not received within {within:?}; retry"));
        }
        Err(BodyError::Broken) => return error(StatusCode::BAD_REQUEST, "the body ended early"),
    };
    let answer = post_to(state, sessions, plugin, session, RawPost::new(seq, close, &req.headers, bytes)).await;
    // The session has the message now (or refused it): its bytes are its own.
    drop(hold);
    answer
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The backplane to forward a post through, when another host owns the
/// session.
fn forwarded_to<'a>(state: &'a AppState, session: &str) -> Option<&'a Backplane> {
    let owner = session.split_once('.').and_then(|(id, _)| Hub::host_of(id))?;
    let backplane = state.backplane.as_deref()?;
    (owner != state.hub.host_id()).then_some(backplane)
}

/// The answer to a CORS preflight from an allowed origin: the fallback's
/// methods and headers.
fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, last-event-id, x-websocket-protocol"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers.get("last-event-id")?.to_str().ok()?.trim().parse().ok()
}

/// Why a post's body was not read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyError {
    TooBig,
    Budget,
    Timeout,
    Broken,
}

/// Reads a body of at most `max` bytes within `within`, counting it in `hold`.
async fn read_body(
    mut body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    max: usize,
    hold: &mut BodyHold,
    within: Duration,
) -> Result<Bytes, BodyError> {
    let read = async {
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|_| BodyError::Broken)?;
            if out.len() + chunk.remaining() > max {
                return Err(BodyError::TooBig);
            }
            hold.add(chunk.remaining() as u64).map_err(|_| BodyError::Budget)?;
            while chunk.has_remaining() {
                let part = chunk.chunk();
                out.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(Bytes::from(out))
    };
    tokio::time::timeout(within, read).await.unwrap_or(Err(BodyError::Timeout))
}

/// A post that breaks a rule: its HTTP status, and the close code the
/// session gets for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub status: StatusCode,
    pub close_code: CloseCode,
    pub message: String,
}

impl RawPost {
    fn new(seq: u64, close: Option<u16>, headers: &HeaderMap, body: Bytes) -> Self {
        let text = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/plain"));
        Self { seq, close, text, body: body.into() }
    }

    /// The message, or the close with its reason.
    fn check(self) -> Result<Post, Invalid> {
        let invalid = |close_code, message: String| Invalid { status: StatusCode::BAD_REQUEST, close_code, message };
        let utf8 = |body: Vec<u8>| {
            String::from_utf8(body).map_err(|_| invalid(CloseCode::Invalid, "invalid UTF-8 in text message".into()))
        };
        if let Some(code) = self.close {
            if !(code == 1000 || (3000..=4999).contains(&code)) {
                let message = format!("close code {code} cannot be sent by a client: use 1000 or 3000-4999");
                return Err(invalid(CloseCode::Protocol, message));
            }
            let reason = utf8(self.body)?;
            if reason.len() > 123 {
                return Err(invalid(CloseCode::Protocol, "a close reason is at most 123 bytes".into()));
            }
            return Ok(Post::Close(CloseFrame { code: CloseCode::from(code), reason: reason.into() }));
        }
        Ok(Post::Message(if self.text {
            plugin::Message::Text(utf8(self.body)?)
        } else {
            plugin::Message::Binary(self.body)
        }))
    }
}

/// Hands a post to its session, on this host or, scaled out, on the host
/// that owns it.
async fn post_to(state: &AppState, sessions: &Sessions, plugin: &str, session: &str, raw: RawPost) -> Response {
    if let Some(backplane) = forwarded_to(state, session) {
        // The owner's answer is the client's: a post forwarded is judged
        // and ordered exactly as one taken there.
        return match backplane.forward_post(plugin, session, &raw, state.ws.message_timeout).await {
            Ok((status, message)) => match StatusCode::from_u16(status) {
                Ok(StatusCode::NO_CONTENT) => StatusCode::NO_CONTENT.into_response(),
                Ok(status) => error(status, message),
                Err(_) => error(StatusCode::BAD_GATEWAY, message),
            },
            Err(_) => error(StatusCode::NOT_FOUND, "no such session (its host is not reachable)"),
        };
    }
    match status_of(&sessions.deliver(plugin, session, raw).await) {
        (StatusCode::NO_CONTENT, _) => StatusCode::NO_CONTENT.into_response(),
        (status, message) => error(status, message),
    }
}

/// Posts that other hosts forward to this one's sessions.
impl ForwardedPosts for Sessions {
    fn deliver_forwarded<'a>(
        &'a self,
        plugin: &'a str,
        session: &'a str,
        post: RawPost,
    ) -> BoxFuture<'a, (u16, String)> {
        Box::pin(async move {
            let (status, message) = status_of(&self.deliver(plugin, session, post).await);
            (status.as_u16(), message)
        })
    }
}

/// The HTTP answer to a post's outcome.
fn status_of(outcome: &Result<Taken, Refused>) -> (StatusCode, String) {
    match outcome {
        Ok(_) => (StatusCode::NO_CONTENT, String::new()),
        Err(Refused::Unknown) => (StatusCode::NOT_FOUND, "no such session".into()),
        Err(Refused::Invalid(invalid)) => (invalid.status, invalid.message.clone()),
        Err(Refused::Post(e @ PostError::TooFarAhead)) => (StatusCode::CONFLICT, e.to_string()),
        Err(Refused::Post(e @ PostError::Timeout)) => (StatusCode::REQUEST_TIMEOUT, e.to_string()),
        Err(Refused::Post(e @ PostError::Gone)) => (StatusCode::NOT_FOUND, e.to_string()),
        Err(Refused::Post(e @ PostError::TooMuchWaiting)) => (StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    }
}

/// Why a post was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no such session")]
    Unknown,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Post(#[from] PostError),
}

/// The SSE response over `rx`.
fn stream_response(req: &Request, rx: mpsc::Receiver<warp::sse::Event>) -> Response {
    if let Some(pending) = &req.pending {
        // A stream is a connection now, bounded by max_connections.
        pending.release();
    }
    let events = ReceiverStream(rx).map(Ok::<_, std::convert::Infallible>);
    let mut response = warp::sse::reply(events).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform"));
    // nginx and some other proxies buffer responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn open(state: Arc<AppState>, sessions: Arc<Sessions>, req: Request) -> Response {
    let plugin = match handshake::route_plugin(&state, req.plugin.as_deref()) {
        Ok(plugin) => plugin,
        Err(refusal) => return *refusal,
    };
    let offered = handshake::list_header(&req.headers, PROTOCOL_HEADER);
    let request = handshake::wit_request(&req.path, &req.query, &req.headers, req.remote, offered);
    let Opened { accepted, subprotocol } = match handshake::open(&state, plugin, request).await {
        Ok(opened) => opened,
        Err(refusal) => return *refusal,
    };
    let secret = resume::new_secret();
    let id = format!("{}.{secret}", accepted.parts.conn.id);
    let max_waiting = state.ws.max_message_size.in_memory();
    let (inbox, posts) = inbox::Inbox::new(max_waiting);
    let shared = Arc::new(Shared::new(accepted.parts.conn.clone(), secret, inbox, state.ws.message_timeout));
    sessions.registry.insert(shared.clone());
    let settings = Settings::from(&state.config.fallback);
    let (tx, rx) = mpsc::channel(session::STREAM_BUFFER);
    let ping_ms = state.ws.keep_alive_interval.as_millis();
    let _ = tx.try_send(events::opened(&id, subprotocol.as_deref(), settings.grace.as_millis(), ping_ms));
    state.tasks.spawn(async move {
        let conn_id = shared.conn.id.clone();
        session::run(accepted, shared, posts, tx, settings).await;
        sessions.registry.remove(&conn_id);
    });
    stream_response(&req, rx)
}

fn resume(state: &AppState, sessions: &Sessions, req: Request, session: &str, last: u64) -> Response {
    let plugin = req.plugin.as_deref().unwrap_or(&state.config.default_plugin);
    let Some(shared) = sessions.registry.find(plugin, session) else {
        return error(StatusCode::NOT_FOUND, "no such session");
    };
    let (tx, rx) = mpsc::channel(session::STREAM_BUFFER);
    shared.attach(tx, last);
    stream_response(&req, rx)
}

/// A stream over a channel's receiver (tokio's own lives in tokio-stream).
struct ReceiverStream<T>(mpsc::Receiver<T>);

impl<T> Stream for ReceiverStream<T> {
    type Item = T;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}
