//! Echo and protocol behaviour a client relies on.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

#[tokio::test]
async fn echoes_text_as_text_and_binary_as_binary() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws").await;
    ws.send(Message::text("héllo, wörld")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("héllo, wörld")));
    let bytes: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(bytes)));
}

#[tokio::test]
async fn echoes_empty_messages() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/echo").await;
    ws.send(Message::text("")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("")));
    ws.send(Message::binary(Vec::new())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(Vec::new())));
}

#[tokio::test]
async fn echoes_a_message_of_exactly_the_maximum_size() {
    let host = Host::start(&["--max-message-size", "256KiB", "--max-frame-size", "256KiB"]).await;
    let mut ws = host.connect("/ws").await;
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(big)));
    let text = "x".repeat(256 * 1024);
    ws.send(Message::text(text.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text(text)));
}

#[tokio::test]
async fn reassembles_fragmented_messages() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws").await;
    let parts = ["frag", "ment", "ed ✓"];
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
        let frame = Frame::message(part.as_bytes().to_vec(), opcode, i == parts.len() - 1);
        ws.send(Message::Frame(frame)).await.unwrap();
    }
    assert_eq!(next(&mut ws).await, Some(Message::text("fragmented ✓")));
}

#[tokio::test]
async fn answers_pings() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws").await;
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    let reply = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
    assert_eq!(reply.unwrap().unwrap(), Message::Pong(b"are you there".to_vec().into()));
}

#[tokio::test]
async fn close_code_and_reason_are_echoed() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws").await;
    let frame = CloseFrame { code: CloseCode::Library(4321), reason: "done here".into() };
    ws.send(Message::Close(Some(frame.clone()))).await.unwrap();
    assert_eq!(expect_close(&mut ws).await, frame);
    assert!(next(&mut ws).await.is_none(), "the server ends the connection after the handshake");
}

#[tokio::test]
async fn messages_of_one_connection_come_back_in_order_under_concurrency() {
    let host = Host::start(&[]).await;
    let clients = 20;
    let per_client = 200;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut ws = host.connect("/ws").await;
        tasks.push(tokio::spawn(async move {
            // Write everything first, so many messages are in flight at once.
            for i in 0..per_client {
                ws.feed(Message::text(format!("{c}:{i}"))).await.unwrap();
            }
            ws.flush().await.unwrap();
            for i in 0..per_client {
                assert_eq!(expect_text(&mut ws).await, format!("{c}:{i}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn testbed_round_trip_through_host_state_and_other_connections() {
    let host = Host::start(&[]).await;
    let mut a = host.connect("/ws/testbed").await;
    let mut b = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut a, "get").await, "none");
    assert_eq!(ask(&mut a, "set apples").await, "stored");
    assert_eq!(ask(&mut a, "get").await, "apples");
    assert_eq!(ask(&mut b, "get").await, "none", "state is per connection");

    let b_id = ask(&mut b, "whoami").await;
    assert_eq!(ask(&mut a, &format!("send {b_id} hello b")).await, "sent");
    assert_eq!(expect_text(&mut b).await, "hello b");
    assert_eq!(ask(&mut a, "send nobody-1 hi").await, "error HostError::NotFound");
}

#[tokio::test]
async fn sends_between_connections_arrive_with_keep_alive_off() {
    // Keep-alive off with a zero timeout is valid; queued writes must not
    // take that zero as their stall bound.
    let host = Host::start(&["--keep-alive-interval", "0s", "--keep-alive-timeout", "0s"]).await;
    let mut a = host.connect("/ws/testbed").await;
    let mut b = host.connect("/ws/testbed").await;
    let b_id = ask(&mut b, "whoami").await;
    // Large enough that writing it has to wait for the socket.
    assert_eq!(ask(&mut a, &format!("flood {b_id} 4 1000000")).await, "flooded 4 none");
    for _ in 0..4 {
        match next(&mut b).await {
            Some(tokio_tungstenite::tungstenite::Message::Binary(m)) => assert_eq!(m.len(), 1_000_000),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn plugins_cannot_reach_connections_of_other_plugins() {
    let host = Host::start(&[]).await;
    let mut echo = host.connect("/ws/echo").await;
    let mut testbed = host.connect("/ws/testbed").await;
    let _ = &mut echo;
    // The echo connection's id is not visible to testbed: ask testbed for
    // its own id, then find the echo one from the same host counter.
    let own = ask(&mut testbed, "whoami").await;
    let (prefix, seq) = own.rsplit_once('-').unwrap();
    let echo_id = format!("{prefix}-{:x}", u64::from_str_radix(seq, 16).unwrap() - 1);
    assert_eq!(ask(&mut testbed, &format!("send {echo_id} intrusion")).await, "error HostError::NotFound");
}
