//! The WebSocket handshake, done here rather than by warp's `ws()` filter so
//! the socket gets our own tungstenite settings (warp cannot set the read
//! buffer size). The plugin's `on-open` runs before the 101 response, so it
//! can refuse a connection with a real HTTP status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig as TungsteniteConfig};
use warp::reply::Response;

use crate::config::{InMemory, WebSocketConfig};
use crate::connection::Resumable;
use crate::dispatch::{Accepted, Parts, fault_closes};
use crate::hub::QueueLimits;
use crate::inbound::MeteredIo;
use crate::metrics::Call;
use crate::plugin::{Answer, Event, Fault, OpenResponse, Plugin, Request};
use crate::resume::{self, Ask, Found, Refused, Session, Transfer};
use crate::socket::Socket;
use crate::state::AppState;
use crate::takeover::{self, Taken, TakenOver};

/// What warp extracted from a request on a plugin route, for either
/// transport.
pub struct RouteRequest {
    /// `None` for `/ws`: the default plugin.
    pub plugin: Option<String>,
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub remote: Option<SocketAddr>,
    pub on_upgrade: Option<OnUpgrade>,
    /// The pending slot of its HTTP connection, which a fallback stream
    /// hands back.
    pub pending: Option<crate::pending::PendingSlot>,
}

/// Refuses a request on a plugin route with `status` and a line of text,
/// counted by `reason`.
pub fn refuse(state: &AppState, status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    state.metrics.handshake_refused(reason);
    let mut response = crate::reply::text(status, message);
    if status == StatusCode::UPGRADE_REQUIRED {
        response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    response
}

/// Answers a request on a WebSocket route.
pub async fn upgrade(state: Arc<AppState>, req: RouteRequest) -> Response {
    let plugin = match route_plugin(&state, req.plugin.as_deref()) {
        Ok(plugin) => plugin,
        Err(refusal) => return *refusal,
    };
    if let Err((status, message)) = check_websocket_request(&req.method, &req.headers) {
        return refuse(&state, status, "not_websocket", message);
    }
    if !origin_allowed(&state.ws, &req.headers) {
        return refuse(&state, StatusCode::FORBIDDEN, "origin", "origin not allowed");
    }
    let Some(on_upgrade) = req.on_upgrade else {
        return refuse(&state, StatusCode::BAD_REQUEST, "not_websocket", "connection cannot be upgraded");
    };
    let key = req.headers.get(header::SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes()));
    let Some(accept_key) = key else {
        return refuse(&state, StatusCode::BAD_REQUEST, "not_websocket", "missing Sec-WebSocket-Key");
    };
    let offered = offered_subprotocols(&req.headers);
    let (ask, query) = resume::ask_of(&req.query);
    let opts_in = ask != Ask::Plain;
    let refused = match ask {
        Ask::Plain | Ask::New => None,
        Ask::Resume { session, last } => match state.sessions.find(&plugin.name, &session, last) {
            Found::Live(_) if state.shutdown.is_cancelled() => {
                return refuse(&state, StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "server is shutting down");
            }
            Found::Live(session) if session.subprotocol.as_ref().is_none_or(|p| offered.contains(p)) => {
                return resume_session(&state, session, last, on_upgrade, &accept_key);
            }
            Found::Live(_) => Some(Refused::Unknown),
            Found::Refused(Refused::Unknown)
                if takeover::elsewhere(&state, &session) && !state.shutdown.is_cancelled() =>
            {
                // Waiting on another host is not an HTTP request stalling:
                // it is bounded by the move's own patience and
                // max_connections, not http.max_pending.
                if let Some(pending) = &req.pending {
                    pending.release();
                }
                match takeover::take_over(&state, plugin.clone(), &session, last).await {
                    Ok(Taken::Over(taken)) => {
                        return resume_moved(&state, taken, last, on_upgrade, &accept_key, &offered);
                    }
                    Ok(Taken::Here(session)) if session.subprotocol.as_ref().is_none_or(|p| offered.contains(p)) => {
                        return resume_session(&state, session, last, on_upgrade, &accept_key);
                    }
                    Ok(Taken::Here(_)) => Some(Refused::Unknown),
                    Err(why) => Some(why),
                }
            }
            Found::Refused(why) => Some(why),
        },
    };
    if let Some(why) = refused {
        state.sessions.metrics.refused(why.as_str());
    }
    let request = wit_request(&req.path, &query, &req.headers, req.remote, offered);
    let Opened { accepted, subprotocol } = match open(&state, plugin, request).await {
        Ok(opened) => opened,
        Err(refusal) => return *refusal,
    };
    // A client that opted in hears first whether it has a session (none
    // when the plugin turned resumption off).
    let limits = accepted.parts.plugin.limits;
    let resumable = (opts_in && !limits.resume_grace.is_zero()).then(|| {
        let buffer = limits.resume_buffer.max(state.ws.max_message_size).in_memory();
        let conn = &accepted.parts.conn;
        let session = state.sessions.open(conn.clone(), subprotocol.clone(), limits.resume_grace, buffer);
        if crate::checkpoint::tracks(state.backplane.is_some(), &limits) {
            conn.track();
            // Rooms `on-open` joined are checkpointed from here on.
            state.hub.rooms.track(conn);
            state.sessions.changed(&conn.id);
        }
        Resumable::new(session, state.sessions.clone())
    });
    let hello = opts_in.then(|| resume::hello(resumable.as_ref().map(|r| &*r.session), false, refused, 0));

    let socket_config = socket_config(&state.ws);
    let receive_budget = state.receive_budget.clone();
    let resting = state.metrics.sockets_resting();
    let task = async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = MeteredIo::new(TokioIo::new(upgraded), receive_budget);
                let stream = Box::pin(WebSocketStream::from_raw_socket(io, Role::Server, Some(socket_config))).await;
                let socket = Socket::new(stream, socket_config, resting);
                crate::connection::run(accepted, socket, hello, resumable).await;
            }
            Err(e) => {
                tracing::debug!(conn = &*accepted.parts.conn.id, "upgrade did not complete: {e}");
                if let Some(r) = resumable {
                    r.sessions.end(&r.session, None);
                }
                Box::pin(accepted.abandon()).await;
            }
        }
    };
    state.tasks.spawn(task);
    switching_protocols(&accept_key, subprotocol.as_deref())
}

/// The 101 answer that accepts a WebSocket.
fn switching_protocols(accept_key: &str, subprotocol: Option<&str>) -> Response {
    let mut response = Response::default();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(value) = subprotocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    response
}

/// Accepts the socket of a client that resumes `session`, and hands it to
/// the session's task. A session that ended meanwhile drops it: the client
/// reconnects and learns why.
fn resume_session(
    state: &AppState,
    session: Arc<Session>,
    last: u64,
    on_upgrade: OnUpgrade,
    accept_key: &str,
) -> Response {
    let socket_config = socket_config(&state.ws);
    let receive_budget = state.receive_budget.clone();
    let resting = state.metrics.sockets_resting();
    let subprotocol = session.subprotocol.clone();
    state.tasks.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let io = MeteredIo::new(TokioIo::new(upgraded), receive_budget);
        let stream = Box::pin(WebSocketStream::from_raw_socket(io, Role::Server, Some(socket_config))).await;
        let socket = Socket::new(stream, socket_config, resting);
        let _ = session.handoff.give(&session.conn, Transfer::Resume(socket, last));
    });
    switching_protocols(accept_key, subprotocol.as_deref())
}

/// Accepts the socket of a client whose session moved here from another
/// host, and serves it.
fn resume_moved(
    state: &AppState,
    taken: TakenOver,
    last: u64,
    on_upgrade: OnUpgrade,
    accept_key: &str,
    offered: &[String],
) -> Response {
    let socket_config = socket_config(&state.ws);
    let receive_budget = state.receive_budget.clone();
    let resting = state.metrics.sockets_resting();
    let backplane = state.backplane.clone();
    let subprotocol = taken.subprotocol().filter(|p| offered.contains(p));
    state.tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = MeteredIo::new(TokioIo::new(upgraded), receive_budget);
                let stream = Box::pin(WebSocketStream::from_raw_socket(io, Role::Server, Some(socket_config))).await;
                let socket = Socket::new(stream, socket_config, resting);
                taken.run(socket, last, backplane).await;
            }
            Err(_) => taken.abandon(backplane).await,
        }
    });
    switching_protocols(accept_key, subprotocol.as_deref())
}

/// The plugin a route serves: `None` is `/ws`, the default plugin.
pub fn route_plugin(state: &AppState, name: Option<&str>) -> Result<Arc<Plugin>, Box<Response>> {
    let plugin = match name {
        None => state.registry.default_plugin(),
        Some(name) => state.registry.get(name),
    };
    plugin.ok_or_else(|| {
        let name = name.unwrap_or(&state.config.default_plugin);
        Box::new(refuse(state, StatusCode::NOT_FOUND, "unknown_plugin", format!("no plugin named {name:?}")))
    })
}

/// A connection the plugin accepted in `on-open`, with the subprotocol it
/// chose, ready for its transport.
pub struct Opened {
    pub accepted: Accepted,
    pub subprotocol: Option<String>,
}

/// What both transports do to open a connection once the request is known
/// to be theirs: capacity, an instance, and the plugin's `on-open`, whose
/// refusal becomes the HTTP response.
pub async fn open(state: &AppState, plugin: Arc<Plugin>, request: Request) -> Result<Opened, Box<Response>> {
    if state.shutdown.is_cancelled() {
        return Err(Box::new(refuse(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "server is shutting down",
        )));
    }
    let Some(version) = plugin.current() else {
        return Err(Box::new(refuse(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "plugin_unavailable",
            format!("plugin {:?} failed to load; see /api/plugins", &*plugin.name),
        )));
    };
    let Some(slot) = state.hub.reserve() else {
        return Err(Box::new(refuse(state, StatusCode::SERVICE_UNAVAILABLE, "full", "too many connections")));
    };
    let queue =
        QueueLimits { messages: state.ws.send_queue, bytes: state.ws.queue_bytes(), outbound: plugin.outbound.clone() };
    let conn = state.hub.register(plugin.name.clone(), queue);
    let parts = Parts { conn, plugin, hub: state.hub.clone(), pool: state.pool.clone(), settings: state.ws.clone() };
    let (conn, plugin) = (&parts.conn, &parts.plugin);
    plugin.metrics.connections_open.inc();
    if plugin.console.watched() {
        let page = page_id(&request);
        plugin.console.opened(&conn.id, page.as_deref(), || match &request.remote_address {
            Some(addr) => format!("connection opened from {addr}"),
            None => "connection opened".into(),
        });
    }
    let instance = match parts.new_instance(version).await {
        Ok(instance) => instance,
        Err(fault @ (Fault::Resources(_) | Fault::PoolFull(_))) => {
            // `new_instance` logged what ran out.
            forget(state, plugin, &conn.id);
            return Err(Box::new(refuse(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("server busy: {fault}"),
            )));
        }
        Err(_) => return Err(Box::new(refuse_after_open(state, plugin, &conn.id, "instance could not start"))),
    };
    let started = Instant::now();
    let offered = request.subprotocols.clone();
    let (instance, decision) = instance.handle(Event::Open(request)).await;
    plugin.metrics.observe_call(Call::Open, started.elapsed());
    let subprotocol = match decision {
        Ok(Answer::Open(OpenResponse::Accept(subprotocol))) => subprotocol,
        Ok(Answer::Done) => None,
        Ok(Answer::Open(OpenResponse::Reject(rejection))) => {
            forget(state, plugin, &conn.id);
            let status = StatusCode::from_u16(rejection.status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::FORBIDDEN);
            let mut body = rejection.body;
            truncate(&mut body, 4096);
            return Err(Box::new(refuse(state, status, "plugin_rejected", body)));
        }
        Err(fault) => {
            fault_closes(conn, plugin, &instance.version().short, &fault, "on-open");
            return Err(Box::new(refuse_after_open(state, plugin, &conn.id, "plugin failed in on-open")));
        }
    };
    if let Some(chosen) = &subprotocol
        && !offered.contains(chosen)
    {
        tracing::warn!(plugin = &*plugin.name, "on-open chose subprotocol {chosen:?}, which the client did not offer");
        // The plugin accepted: it is owed its on-close.
        state.tasks.spawn(Accepted { parts, instance: Box::new(instance), slot }.abandon());
        return Err(Box::new(refuse(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad_subprotocol",
            "plugin chose a subprotocol the client did not offer",
        )));
    }
    plugin.metrics.connections_total.inc();
    Ok(Opened { accepted: Accepted { parts, instance: Box::new(instance), slot }, subprotocol })
}

/// Undo `register` for a connection that never opened.
fn forget(state: &AppState, plugin: &Plugin, id: &str) {
    state.hub.remove(id);
    plugin.metrics.connections_open.dec();
}

fn refuse_after_open(state: &AppState, plugin: &Plugin, id: &str, message: &str) -> Response {
    forget(state, plugin, id);
    refuse(state, StatusCode::INTERNAL_SERVER_ERROR, "plugin_fault", message)
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The tungstenite settings of every accepted socket.
pub fn socket_config(ws: &WebSocketConfig) -> TungsteniteConfig {
    let max_message = ws.max_message_size.in_memory();
    let max_frame = ws.max_frame_size.in_memory();
    let read_buffer = usize::try_from(ws.receive_buffer_size.as_u64()).unwrap_or(4096);
    // Frames are batched up to this size before a write; the cap bounds what
    // a stalled socket may hold beyond it (one more whole message).
    let write_buffer = 64 << 10;
    TungsteniteConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(write_buffer)
        .max_write_buffer_size(write_buffer + max_message + 64)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_frame))
}

/// RFC 6455 section 4.2.1: what makes a request a WebSocket upgrade.
fn check_websocket_request(method: &Method, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))).unwrap_or(false))
    };
    if method != Method::GET || !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err((StatusCode::BAD_REQUEST, "this is a WebSocket endpoint: connect with a WebSocket client"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err((StatusCode::UPGRADE_REQUIRED, "unsupported WebSocket version: use 13"));
    }
    if headers.get(header::SEC_WEBSOCKET_KEY).is_none() {
        return Err((StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
    }
    Ok(())
}

/// Browsers send Origin; other clients usually do not. By default only a
/// page from this same host may connect (guards against cross-site
/// WebSocket hijacking); `allowed_origins` widens that.
pub fn origin_allowed(ws: &WebSocketConfig, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    if ws.allowed_origins.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    if !ws.allowed_origins.is_empty() {
        return false;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// The subprotocols a WebSocket client offers.
fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    list_header(headers, header::SEC_WEBSOCKET_PROTOCOL)
}

/// A comma-separated header's items, across its lines.
pub fn list_header(headers: &HeaderMap, name: impl header::AsHeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The request as `on-open` sees it.
pub fn wit_request(
    path: &str,
    query: &str,
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
    subprotocols: Vec<String>,
) -> Request {
    Request {
        path: path.to_string(),
        query: query.to_string(),
        headers: headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
            .collect(),
        remote_address: remote.map(|a| a.to_string()),
        subprotocols,
    }
}

/// The id the test page gives itself in its `wasmsocket-page` cookie, so
/// its console can tell its own connection.
fn page_id(request: &Request) -> Option<String> {
    request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, value)| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("wasmsocket-page="))
        .filter(|id| id.len() <= 64)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_by_default() {
        let ws = WebSocketConfig::default();
        assert!(origin_allowed(&ws, &headers(&[("host", "127.0.0.1:5000")])));
        assert!(origin_allowed(&ws, &headers(&[("host", "127.0.0.1:5000"), ("origin", "http://127.0.0.1:5000")])));
        assert!(!origin_allowed(&ws, &headers(&[("host", "127.0.0.1:5000"), ("origin", "https://evil.example")])));
    }

    #[test]
    fn configured_origins() {
        let ws = WebSocketConfig { allowed_origins: vec!["https://app.example".into()], ..Default::default() };
        assert!(origin_allowed(&ws, &headers(&[("host", "h"), ("origin", "https://app.example")])));
        assert!(!origin_allowed(&ws, &headers(&[("host", "h"), ("origin", "https://other.example")])));
        let any = WebSocketConfig { allowed_origins: vec!["*".into()], ..Default::default() };
        assert!(origin_allowed(&any, &headers(&[("host", "h"), ("origin", "https://other.example")])));
    }

    #[test]
    fn upgrade_headers_are_required() {
        let ok = headers(&[
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert!(check_websocket_request(&Method::GET, &ok).is_ok());
        assert_eq!(check_websocket_request(&Method::POST, &ok).unwrap_err().0, StatusCode::BAD_REQUEST);
        assert_eq!(check_websocket_request(&Method::GET, &HeaderMap::new()).unwrap_err().0, StatusCode::BAD_REQUEST);
        let old = headers(&[("upgrade", "websocket"), ("connection", "upgrade"), ("sec-websocket-version", "8")]);
        assert_eq!(check_websocket_request(&Method::GET, &old).unwrap_err().0, StatusCode::UPGRADE_REQUIRED);
    }
}
