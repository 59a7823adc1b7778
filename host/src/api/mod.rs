//! The operator's HTTP API: `/healthz`, `/api/plugins`, `/metrics`, plugin
//! reloads, publishing to rooms and connections, and the console's event
//! stream.

mod console_events;

use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use warp::Filter;
use warp::reply::{Reply, Response};

use crate::state::AppState;

pub fn routes(
    with_state: impl Filter<Extract = (Arc<AppState>,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let healthz = warp::path!("healthz").and(warp::get()).and(with_state.clone()).map(|state: Arc<AppState>| {
        let mut body = serde_json::json!({ "status": "ok", "connections": state.hub.len() });
        // Degraded, not failing: a host without Redis still serves its own
        // connections, so a load balancer should keep sending it clients.
        if let Some(backplane) = &state.backplane {
            let link = backplane.status();
            if link.status != "up" {
                body["status"] = "degraded".into();
            }
            body["redis"] = serde_json::to_value(link).unwrap_or_default();
        }
        warp::reply::json(&body).into_response()
    });
    let plugins = warp::path!("api" / "plugins")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<AppState>| warp::reply::json(&state.registry.list()).into_response());
    let metrics = warp::path!("metrics").and(warp::get()).and(with_state.clone()).map(|state: Arc<AppState>| {
        let mut response = state.metrics.encode().into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    });
    let reload = warp::path!("api" / "plugins" / String / "reload")
        .and(warp::post())
        .and(with_state.clone())
        .then(|name: String, state: Arc<AppState>| async move { reload(&state, &name).await });
    let publish_body = warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::bytes());
    let to_room = warp::path!("api" / "rooms" / String / "messages")
        .and(warp::post())
        .and(warp::query::<PublishQuery>())
        .and(publish_body)
        .and(with_state.clone())
        .then(|room: String, query: PublishQuery, auth, content_type, body, state: Arc<AppState>| async move {
            publish(&state, Target::Room { room, plugin: query.plugin }, auth, content_type, body).await
        });
    let with_state_events = with_state.clone();
    let to_connection = warp::path!("api" / "connections" / String / "messages")
        .and(warp::post())
        .and(publish_body)
        .and(with_state)
        .then(|id: String, auth, content_type, body, state: Arc<AppState>| async move {
            publish(&state, Target::Connection(id), auth, content_type, body).await
        });
    let events = console_events::route(with_state_events);
    healthz
        .or(plugins)
        .unify()
        .or(metrics)
        .unify()
        .or(reload)
        .unify()
        .or(to_room)
        .unify()
        .or(to_connection)
        .unify()
        .or(events)
        .unify()
}

/// `POST /api/plugins/NAME/reload`: reread `NAME.wasm` now, for when file
/// events do not arrive. An unchanged file stays as it is.
async fn reload(state: &AppState, name: &str) -> Response {
    use http::StatusCode;
    let Some(dir) = &state.config.plugins_dir else {
        let body = serde_json::json!({ "error": "no plugins directory: start with --plugins DIR" });
        return json_status(StatusCode::CONFLICT, body);
    };
    if !crate::config::is_plugin_name(name) {
        let body = serde_json::json!({ "error": format!("{name:?} is not a plugin name") });
        return json_status(StatusCode::BAD_REQUEST, body);
    }
    let outcome = state.registry.sync(dir, name).await;
    let plugin = state.registry.list().into_iter().find(|p| p.name == name);
    let status = match (&outcome, &plugin) {
        (crate::plugin::SyncOutcome::Failed, _) => StatusCode::UNPROCESSABLE_ENTITY,
        (_, None) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    json_status(status, serde_json::json!({ "outcome": outcome, "plugin": plugin }))
}

#[derive(serde::Deserialize)]
struct PublishQuery {
    /// The plugin whose room it is; the default plugin when absent.
    plugin: Option<String>,
}

enum Target {
    Room { room: String, plugin: Option<String> },
    Connection(String),
}

pub(crate) fn json_status(status: http::StatusCode, body: serde_json::Value) -> Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Compares digests, so the time taken says nothing about the token.
fn token_matches(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// The guard of the token-protected API (`what` names it in the error):
/// without a configured `api_token` it is off (403); otherwise the bearer
/// token must match (401). `None`: let it through.
pub(crate) fn refused_by_token(state: &AppState, given: Option<&str>, what: &str) -> Option<Response> {
    use http::StatusCode;
    let Some(expected) = &state.config.api_token else {
        return Some(json_status(
            StatusCode::FORBIDDEN,
            serde_json::json!({ "error": format!("{what} is off: set api_token in the config to turn it on") }),
        ));
    };
    if !token_matches(given.unwrap_or(""), expected) {
        let mut response =
            json_status(StatusCode::UNAUTHORIZED, serde_json::json!({ "error": "missing or wrong bearer token" }));
        response.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(response);
    }
    None
}

/// `POST /api/rooms/ROOM/messages` and `POST /api/connections/ID/messages`:
/// a backend publishes to WebSocket clients. Needs `Authorization: Bearer
/// TOKEN` with the configured `api_token`; without one configured the API is
/// off. A `text/*` or JSON body is sent as a text message, anything else as
/// binary. Both reach every host of a cluster.
async fn publish(
    state: &AppState,
    target: Target,
    authorization: Option<String>,
    content_type: Option<String>,
    body: bytes::Bytes,
) -> Response {
    use http::StatusCode;
    use tokio_tungstenite::tungstenite::Message;
    let given = authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "));
    if let Some(refused) = refused_by_token(state, given, "the publish API") {
        return refused;
    }
    if body.len() as u64 > state.ws.max_message_size.as_u64() {
        return json_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({ "error": "body exceeds websocket.max_message_size" }),
        );
    }
    let is_text = content_type.as_deref().is_some_and(|t| t.starts_with("text/") || t.starts_with("application/json"));
    let message = if is_text {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => Message::text(text),
            Err(_) => {
                return json_status(StatusCode::BAD_REQUEST, serde_json::json!({ "error": "text body is not UTF-8" }));
            }
        }
    } else {
        Message::Binary(body)
    };
    match target {
        Target::Room { room, plugin } => {
            let plugin = plugin.unwrap_or_else(|| state.config.default_plugin.clone());
            let delivered = state.hub.broadcast(&plugin, &room, &message, None).await;
            json_status(StatusCode::OK, serde_json::json!({ "delivered": delivered }))
        }
        Target::Connection(id) => match state.hub.send_to(None, &id, message).await {
            Ok(()) => json_status(StatusCode::OK, serde_json::json!({ "delivered": 1 })),
            Err(crate::hub::DeliveryError::NotFound) => {
                json_status(StatusCode::NOT_FOUND, serde_json::json!({ "error": "no such connection" }))
            }
            Err(e) => json_status(StatusCode::CONFLICT, serde_json::json!({ "error": e.to_string() })),
        },
    }
}
