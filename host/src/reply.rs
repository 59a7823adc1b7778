//! The host's own plain-text HTTP answers (refusals, errors, not found):
//! one line, with its status.

use http::StatusCode;
use warp::Reply;
use warp::reply::Response;

/// `message` and a newline, with `status`.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut text = message.into();
    text.push('\n');
    warp::reply::with_status(text, status).into_response()
}
