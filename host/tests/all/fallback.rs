//! The HTTP fallback transport, through a real HTTP client: the same
//! plugins, the same semantics and the same limits as a WebSocket.

use crate::common::fallback::{Fallback, Received};
use crate::common::*;

/// A WebSocket client that hears the `on-close` of the sessions it watches.
async fn watcher(host: &Host) -> (Client, String) {
    let mut ws = host.connect("/ws/testbed").await;
    let id = ask(&mut ws, "whoami").await;
    (ws, id)
}

#[tokio::test]
async fn echoes_text_and_binary_with_their_types_and_bytes() {
    let host = Host::start(&[]).await;
    let mut client = Fallback::open(&host.http("/ws")).await.expect("open");
    let text = "line one\r\nline two \"quoted\" \u{1F600}";
    assert_eq!(client.send_text(text).await, 204);
    assert_eq!(client.recv().await, Some(Received::Text(text.into())));
    let bytes = [0u8, 1, 2, 0xfe, 0xff, b'\n', b'\r'];
    assert_eq!(client.send_binary(&bytes).await, 204);
    assert_eq!(client.recv().await, Some(Received::Binary(bytes.to_vec())));
    // An empty text message is a message too.
    assert_eq!(client.send_text("").await, 204);
    assert_eq!(client.recv().await, Some(Received::Text(String::new())));
}

#[tokio::test]
async fn the_plugin_sees_the_request_and_a_connection_like_any_other() {
    let host = Host::start(&[]).await;
    let mut client = Fallback::open(&host.http("/ws/testbed?x=1")).await.expect("open");
    client.send_text("whoami").await;
    let id = client.expect_text().await;
    assert!(client.session.starts_with(&format!("{id}.")), "the session id names the connection: {}", client.session);
    client.send_text("set remembered").await;
    client.expect_text().await;
    client.send_text("get").await;
    assert_eq!(client.expect_text().await, "remembered");
    // A WebSocket client can send to it by id.
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, &format!("send {id} hello over http")).await, "sent");
    assert_eq!(client.expect_text().await, "hello over http");
    // And the plugin's refusal is the response's status.
    let refused = Fallback::open(&host.http("/ws/testbed?reject=451")).await.err().expect("refused");
    assert_eq!(refused.0, 451);
    assert!(refused.1.contains("rejected by testbed"), "{refused:?}");
}

#[tokio::test]
async fn concurrent_posts_reach_the_plugin_in_seq_order() {
    let host = Host::start(&[]).await;
    let mut client = Fallback::open(&host.http("/ws")).await.expect("open");
    let total = 160u64;
    // Windows of 16 in flight at once, each sent in reverse order.
    for window in 0..total / 16 {
        let posts = (1..=16).rev().map(|i| {
            let seq = window * 16 + i;
            let client = &client;
            async move { client.post(seq, "text/plain", seq.to_string().into_bytes(), None).await }
        });
        let statuses = futures_util::future::join_all(posts).await;
        assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    }
    for seq in 1..=total {
        assert_eq!(client.expect_text().await, seq.to_string());
    }
    // A retry is taken once; a post far ahead is refused.
    assert_eq!(client.post(3, "text/plain", b"again".to_vec(), None).await, 204);
    assert_eq!(client.post(total + 100, "text/plain", b"far".to_vec(), None).await, 409);
    assert_eq!(client.post(total + 1, "text/plain", b"next".to_vec(), None).await, 204);
    assert_eq!(client.expect_text().await, "next");
}

#[tokio::test]
async fn close_codes_reach_both_sides() {
    let host = Host::start(&[]).await;
    let (mut watch, watcher_id) = watcher(&host).await;
    // The client closes: the plugin's on-close gets the code and reason,
    // and the stream's last event echoes them.
    let mut client = Fallback::open(&host.http(&format!("/ws/testbed?watch={watcher_id}"))).await.expect("open");
    client.send_text("whoami").await;
    let id = client.expect_text().await;
    assert_eq!(client.close(4000, "bye").await, 204);
    assert_eq!(client.recv().await, Some(Received::Close(4000, "bye".into())));
    assert!(client.ended_within(PATIENCE).await);
    assert_eq!(expect_text(&mut watch).await, format!("closed {id} 4000 bye"));
    assert_eq!(client.send_text("after").await, 404, "a closed session is gone");
    // The plugin closes.
    let mut client = Fallback::open(&host.http("/ws/testbed")).await.expect("open");
    client.send_text("close 4001 done here").await;
    assert_eq!(client.recv().await, Some(Received::Close(4001, "done here".into())));
    assert!(client.ended_within(PATIENCE).await);
    // A code a client may not send is a protocol error, as on a WebSocket.
    let mut client = Fallback::open(&host.http("/ws/testbed")).await.expect("open");
    assert_eq!(client.close(1006, "").await, 400);
    assert!(matches!(client.recv().await, Some(Received::Close(1002, _))));
    // A plugin trap closes with 1011.
    let mut client = Fallback::open(&host.http("/ws/testbed")).await.expect("open");
    client.send_text("trap").await;
    assert_eq!(client.recv().await, Some(Received::Close(1011, "plugin error".into())));
}

#[tokio::test]
async fn the_origin_policy_applies() {
    let host = Host::start(&[]).await;
    let evil = [("origin", "https://evil.example")];
    let refused = Fallback::open_with(&host.http("/ws"), &evil).await.err().expect("refused");
    assert_eq!(refused.0, 403);
    let same = format!("http://{}", host.addr);
    assert!(Fallback::open_with(&host.http("/ws"), &[("origin", same.as_str())]).await.is_ok());
    // A post from another origin is refused too.
    let client = Fallback::open(&host.http("/ws")).await.expect("open");
    let url = format!("{}?session={}&seq=1", client.url, client.session);
    let response = client.http.post(url).header("origin", "https://evil.example").body("x").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
}

#[tokio::test]
async fn messages_larger_than_the_limit_are_refused() {
    let host = Host::start(&["--max-message-size", "1KiB", "--max-frame-size", "1KiB"]).await;
    let mut client = Fallback::open(&host.http("/ws")).await.expect("open");
    assert_eq!(client.send_binary(&vec![7u8; 1024]).await, 204);
    assert_eq!(client.recv().await, Some(Received::Binary(vec![7u8; 1024])));
    // Too big closes the session with 1009, as it closes a WebSocket.
    assert_eq!(client.send_binary(&vec![7u8; 1025]).await, 413);
    assert_eq!(client.recv().await, Some(Received::Close(1009, "message too big".into())));
    // Text must be UTF-8: 1007.
    let mut client = Fallback::open(&host.http("/ws")).await.expect("open");
    assert_eq!(client.post(1, "text/plain", vec![0xff, 0xfe], None).await, 400);
    assert!(matches!(client.recv().await, Some(Received::Close(1007, _))));
}

#[tokio::test]
async fn a_client_that_does_not_read_its_stream_is_closed() {
    let host = Host::start(&["--send-queue-bytes", "256KiB"]).await;
    let (mut watch, watcher_id) = watcher(&host).await;
    let mut client = Fallback::open(&host.http(&format!("/ws/testbed?watch={watcher_id}"))).await.expect("open");
    client.send_text("whoami").await;
    let id = client.expect_text().await;
    // Far more than the send queue and the socket buffers hold, never read.
    for _ in 0..400 {
        if client.send_text("flood self 1 60000").await != 204 {
            break;
        }
    }
    assert_eq!(expect_text(&mut watch).await, format!("closed {id} none"));
    assert_eq!(client.send_text("still there?").await, 404);
}

#[tokio::test]
async fn a_dropped_stream_resumes_without_losing_or_repeating_messages() {
    let host = Host::start(&[]).await;
    let mut client = Fallback::open(&host.http("/ws")).await.expect("open");
    for i in 1..=3 {
        client.send_text(&format!("m{i}")).await;
    }
    assert_eq!(client.expect_text().await, "m1");
    // Cut while m2 and m3 may already be on the wire, unread.
    client.drop_stream();
    for i in 4..=6 {
        assert_eq!(client.send_text(&format!("m{i}")).await, 204);
    }
    assert_eq!(client.resume().await, 200);
    for i in 2..=6 {
        assert_eq!(client.expect_text().await, format!("m{i}"));
    }
    assert_eq!(client.last_id, 6);
    // A resume from before what is kept would lose messages: refused with 1011.
    let replay = "[fallback]\nreplay_bytes = \"16B\"\n";
    let host = Host::start_with_config(replay, &[]).await;
    let mut client = Fallback::open(&host.http("/ws")).await.expect("open");
    for i in 1..=3 {
        client.send_text(&format!("message {i}")).await;
        client.expect_text().await;
    }
    client.drop_stream();
    client.last_id = 1;
    assert_eq!(client.resume().await, 200);
    assert_eq!(client.recv().await, Some(Received::Close(1011, "resumed too late: messages were lost".into())));
}

#[tokio::test]
async fn a_session_without_a_stream_ends_after_the_grace_period_with_one_on_close() {
    let host = Host::start_with_config("[fallback]\ngrace = \"1s\"\n", &[]).await;
    let (mut watch, watcher_id) = watcher(&host).await;
    let mut client = Fallback::open(&host.http(&format!("/ws/testbed?watch={watcher_id}"))).await.expect("open");
    client.send_text("whoami").await;
    let id = client.expect_text().await;
    client.drop_stream();
    assert_eq!(expect_text(&mut watch).await, format!("closed {id} none"));
    assert_eq!(client.resume().await, 404, "the session is gone after the grace period");
    // on-close came once: the next thing the watcher hears is its own echo.
    assert_eq!(ask(&mut watch, "whoami").await, watcher_id);
}

#[tokio::test]
async fn fallback_and_websocket_clients_share_rooms() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    let mut http = Fallback::open(&host.http("/ws/testbed")).await.expect("open");
    assert_eq!(ask(&mut ws, "join lobby").await, "ok");
    http.send_text("join lobby").await;
    assert_eq!(http.expect_text().await, "ok");
    http.send_text("bcast lobby from http").await;
    assert_eq!(http.expect_text().await, "delivered 1");
    assert_eq!(expect_text(&mut ws).await, "from http");
    assert_eq!(ask(&mut ws, "bcast lobby from ws").await, "delivered 1");
    assert_eq!(http.expect_text().await, "from ws");
    assert_eq!(ask(&mut ws, "count lobby").await, "2");
}

#[tokio::test]
async fn sessions_count_toward_max_connections() {
    let host = Host::start(&["--max-connections", "2"]).await;
    let _ws = host.connect("/ws").await;
    let _http = Fallback::open(&host.http("/ws")).await.expect("open");
    let refused = Fallback::open(&host.http("/ws")).await.err().expect("full");
    assert_eq!(refused.0, 503);
}

#[tokio::test]
async fn posts_through_another_host_reach_the_session_in_order() {
    use crate::common::redis::cluster_host;
    use crate::common::redis_server::Redis;
    let redis = Redis::start().await;
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut client = Fallback::open(&a.http("/ws/testbed")).await.expect("open on A");
    let on_b = b.http("/ws/testbed");
    // No sticky sessions: every post goes to host B, 16 in flight at once,
    // sent in reverse order.
    for window in 0..2u64 {
        let posts = (1..=16).rev().map(|i| {
            let (client, on_b, seq) = (&client, on_b.as_str(), window * 16 + i);
            async move { client.post_to(on_b, seq, "text/plain", seq.to_string().into_bytes(), None).await }
        });
        let statuses = futures_util::future::join_all(posts).await;
        assert!(statuses.iter().all(|s| *s == 204), "the owner's answers: {statuses:?}");
    }
    for seq in 1..=32u64 {
        assert_eq!(client.expect_text().await, seq.to_string());
    }
    // The owner's refusals come back through B: far ahead, then a retry.
    assert_eq!(client.post_to(&on_b, 100, "text/plain", b"far".to_vec(), None).await, 409);
    assert_eq!(client.post_to(&on_b, 5, "text/plain", b"again".to_vec(), None).await, 204);
    // A close posted to B closes the session on A.
    assert_eq!(client.post_to(&on_b, 33, "text/plain", b"bye".to_vec(), Some(4000)).await, 204);
    assert_eq!(client.recv().await, Some(Received::Close(4000, "bye".into())));
}

#[tokio::test]
async fn an_allowed_page_of_another_origin_gets_cors_headers() {
    let host = Host::start(&["--allowed-origin", "https://app.example"]).await;
    let http = reqwest::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, host.http("/ws"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status().as_u16(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://app.example");
    assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(headers["access-control-allow-headers"].to_str().unwrap().contains("last-event-id"));
    let mut client = Fallback::open_with(&host.http("/ws"), &[("origin", "https://app.example")]).await.expect("open");
    assert_eq!(client.send_text("cross-origin").await, 204);
    assert_eq!(client.expect_text().await, "cross-origin");
    let other = http
        .request(reqwest::Method::OPTIONS, host.http("/ws"))
        .header("origin", "https://other.example")
        .send()
        .await
        .expect("preflight");
    assert_eq!(other.status().as_u16(), 403);
}
