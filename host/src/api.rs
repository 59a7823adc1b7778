//! The operator's HTTP API: `/healthz`, `/api/plugins`, `/metrics`.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use warp::Filter;
use warp::reply::{Reply, Response};

use crate::server::AppState;

pub fn routes(
    with_state: impl Filter<Extract = (Arc<AppState>,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let healthz = warp::path!("healthz").and(warp::get()).and(with_state.clone()).map(|state: Arc<AppState>| {
        warp::reply::json(&serde_json::json!({
            "status": "ok",
            "connections": state.hub.len(),
        }))
        .into_response()
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
        .and(with_state)
        .then(|name: String, state: Arc<AppState>| async move { reload(&state, &name).await });
    healthz.or(plugins).unify().or(metrics).unify().or(reload).unify()
}

/// `POST /api/plugins/NAME/reload`: reread `NAME.wasm` now, for when file
/// events do not arrive. An unchanged file stays as it is.
async fn reload(state: &AppState, name: &str) -> Response {
    use http::StatusCode;
    let Some(dir) = &state.config.plugins_dir else {
        let body = serde_json::json!({ "error": "no plugins directory: start with --plugins DIR" });
        return warp::reply::with_status(warp::reply::json(&body), StatusCode::CONFLICT).into_response();
    };
    if !crate::config::is_plugin_name(name) {
        let body = serde_json::json!({ "error": format!("{name:?} is not a plugin name") });
        return warp::reply::with_status(warp::reply::json(&body), StatusCode::BAD_REQUEST).into_response();
    }
    let outcome = state.registry.sync(dir, name).await;
    let plugin = state.registry.list().into_iter().find(|p| p.name == name);
    let status = match (&outcome, &plugin) {
        (crate::plugin::SyncOutcome::Failed, _) => StatusCode::UNPROCESSABLE_ENTITY,
        (_, None) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    let body = serde_json::json!({ "outcome": outcome, "plugin": plugin });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}
