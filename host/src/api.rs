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
    let metrics = warp::path!("metrics").and(warp::get()).and(with_state).map(|state: Arc<AppState>| {
        let mut response = state.metrics.encode().into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    });
    healthz.or(plugins).unify().or(metrics).unify()
}
