//! What the HTTP side of a WebSocket route answers.

use crate::common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[tokio::test]
async fn plain_http_request_to_a_websocket_route_gets_400() {
    let host = Host::start(&[]).await;
    let (status, body) = host.get_text("/ws").await;
    assert_eq!(status, 400);
    assert!(body.contains("WebSocket"), "{body}");
    assert_eq!(host.get_text("/ws/testbed").await.0, 400);
}

#[tokio::test]
async fn unknown_plugin_route_gets_404() {
    let host = Host::start(&[]).await;
    let (status, body) = host.refused_status(host.url("/ws/nope")).await;
    assert_eq!(status, 404);
    assert!(body.contains("nope"), "{body}");
    assert_eq!(host.get_text("/ws/nope").await.0, 404);
}

#[tokio::test]
async fn on_open_rejection_becomes_the_http_status() {
    let host = Host::start(&[]).await;
    let (status, body) = host.refused_status(host.url("/ws/testbed?reject=451")).await;
    assert_eq!(status, 451);
    assert!(body.contains("rejected by testbed"), "{body}");
    // The host keeps serving.
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "ping?").await, "ping?");
}

#[tokio::test]
async fn a_trap_in_on_open_refuses_with_500() {
    let host = Host::start(&[]).await;
    let (status, _) = host.refused_status(host.url("/ws/testbed?trap-open")).await;
    assert_eq!(status, 500);
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "still here").await, "still here");
}

#[tokio::test]
async fn cross_origin_browsers_are_refused_by_default() {
    let host = Host::start(&[]).await;
    let mut request = host.url("/ws").into_client_request().unwrap();
    request.headers_mut().insert("origin", HeaderValue::from_static("https://evil.example"));
    assert_eq!(host.refused_status(request).await.0, 403);

    // A page served by the host itself may connect.
    let mut request = host.url("/ws").into_client_request().unwrap();
    let own = format!("http://{}", host.addr);
    request.headers_mut().insert("origin", HeaderValue::from_str(&own).unwrap());
    tokio_tungstenite::connect_async(request).await.expect("same-origin connect");
}

#[tokio::test]
async fn allowed_origins_are_configurable() {
    let host = Host::start(&["--allowed-origin", "https://app.example"]).await;
    let mut request = host.url("/ws").into_client_request().unwrap();
    request.headers_mut().insert("origin", HeaderValue::from_static("https://app.example"));
    tokio_tungstenite::connect_async(request).await.expect("allowed origin connects");
    let mut request = host.url("/ws").into_client_request().unwrap();
    request.headers_mut().insert("origin", HeaderValue::from_static("https://evil.example"));
    assert_eq!(host.refused_status(request).await.0, 403);
}

#[tokio::test]
async fn the_plugin_chooses_among_offered_subprotocols() {
    let host = Host::start(&[]).await;
    let mut request = host.url("/ws/testbed").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("chat.v2, chat.v1"));
    let (_ws, response) = tokio_tungstenite::connect_async(request).await.expect("connect");
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "chat.v2");
}

#[tokio::test]
async fn connections_past_max_connections_get_503() {
    let host = Host::start(&["--max-connections", "2"]).await;
    let _a = host.connect("/ws").await;
    let _b = host.connect("/ws").await;
    assert_eq!(host.refused_status(host.url("/ws")).await.0, 503);
    drop(_a);
    // Once a connection ends its place is free again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio_tungstenite::connect_async(host.url("/ws")).await {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("slot never freed: {e}"),
        }
    }
}
