//! How connections end: bad input, vanished clients, slow clients, shutdown.

use crate::common::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

#[tokio::test]
async fn oversize_message_is_closed_with_1009() {
    let host = Host::start(&["--max-message-size", "64KiB", "--max-frame-size", "16KiB"]).await;
    let mut ws = host.connect("/ws").await;
    // Frames within max_frame_size that add up past max_message_size.
    for i in 0..5 {
        let opcode = if i == 0 { OpCode::Data(Data::Binary) } else { OpCode::Data(Data::Continue) };
        ws.send(Message::Frame(Frame::message(vec![0u8; 16 * 1024], opcode, i == 4))).await.unwrap();
    }
    assert_eq!(expect_close(&mut ws).await.code, CloseCode::Size);
}

#[tokio::test]
async fn oversize_frame_is_closed_with_1009() {
    let host = Host::start(&["--max-message-size", "64KiB", "--max-frame-size", "16KiB"]).await;
    let mut ws = host.connect("/ws").await;
    ws.send(Message::binary(vec![0u8; 32 * 1024])).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.code, CloseCode::Size);
}

#[tokio::test]
async fn invalid_utf8_text_is_closed_with_1007() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws").await;
    let frame = Frame::message(vec![b'o', b'k', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.code, CloseCode::Invalid);
}

#[tokio::test]
async fn plugin_close_reaches_the_client_with_its_code_and_reason() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    send_text(&mut ws, "close 4000 bye now").await;
    let frame = expect_close(&mut ws).await;
    assert_eq!(frame.code, CloseCode::Library(4000));
    assert_eq!(frame.reason.as_str(), "bye now");
}

#[tokio::test]
async fn plugin_may_not_send_reserved_close_codes() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    let reply = ask(&mut ws, "close 1005 nope").await;
    assert!(reply.starts_with("error HostError::Invalid"), "{reply}");
}

#[tokio::test]
async fn on_close_runs_with_the_close_frame() {
    let host = Host::start(&[]).await;
    close_watched_with_bye(&host).await;
}

#[tokio::test]
async fn on_close_runs_when_the_client_vanishes() {
    let host = Host::start(&[]).await;
    let mut watcher = host.connect("/ws/testbed").await;
    let watcher_id = ask(&mut watcher, "whoami").await;
    let mut ws = host.connect(&format!("/ws/testbed?watch={watcher_id}")).await;
    let id = ask(&mut ws, "whoami").await;
    drop(ws); // TCP goes away with no close frame
    assert_eq!(expect_text(&mut watcher).await, format!("closed {id} none"));
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let host = Host::start(&["--keep-alive-interval", "100ms", "--keep-alive-timeout", "200ms"]).await;
    let mut watcher = host.connect("/ws/testbed").await;
    let watcher_id = ask(&mut watcher, "whoami").await;
    // A raw TCP client that completes the handshake and then never reads
    // or answers again.
    let mut tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let request = format!(
        "GET /ws/testbed?watch={watcher_id} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        host.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 12];
    tcp.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 101");
    let reply = expect_text(&mut watcher).await;
    assert!(reply.starts_with("closed ") && reply.ends_with(" none"), "{reply}");
    drop(tcp);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_not_buffered_forever() {
    let host = Host::start(&["--send-queue", "4"]).await;
    let mut watcher = host.connect("/ws/testbed").await;
    let watcher_id = ask(&mut watcher, "whoami").await;
    let mut slow = host.connect(&format!("/ws/testbed?watch={watcher_id}")).await;
    let slow_id = ask(&mut slow, "whoami").await;
    // Flood the slow client from another connection while it never reads:
    // its socket buffers fill, then its queue, then the host gives up on it.
    let payload = "y".repeat(60_000);
    let mut outcome = String::new();
    for _ in 0..2000 {
        outcome = ask(&mut watcher, &format!("send {slow_id} {payload}")).await;
        if outcome != "sent" {
            break;
        }
    }
    assert!(outcome == "error HostError::QueueFull" || outcome == "error HostError::Closed", "{outcome}");
    // The slow client's connection is over; on-close reported it.
    loop {
        let line = expect_text(&mut watcher).await;
        if line.starts_with(&format!("closed {slow_id}")) {
            break;
        }
    }
    // Other connections are unaffected.
    assert_eq!(ask(&mut watcher, "still fine").await, "still fine");
    drop(slow);
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001() {
    let mut host = Host::start(&[]).await;
    let mut a = host.connect("/ws").await;
    let mut b = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut a, "hi").await, "hi");
    host.signal("TERM");
    assert_eq!(expect_close(&mut a).await.code, CloseCode::Away);
    assert_eq!(expect_close(&mut b).await.code, CloseCode::Away);
    drop((a, b));
    assert!(host.wait_exit().await.success());
}

#[tokio::test]
async fn shutdown_reaches_clients_whose_plugin_calls_run_long_at_once() {
    let mut host = Host::start(&["--deadline", "30s"]).await;
    let mut sleeping = host.connect("/ws/testbed").await;
    let mut looping = host.connect("/ws/testbed").await;
    let mut idle = host.connect("/ws").await;
    assert_eq!(ask(&mut idle, "hi").await, "hi");
    send_text(&mut sleeping, "sleep 20000").await;
    send_text(&mut looping, "loop").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    host.signal("TERM");
    // 1001 to every client without waiting for the calls (20 s and 30 s).
    for ws in [&mut sleeping, &mut looping, &mut idle] {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), expect_close(ws))
            .await
            .expect("1001 while the plugin call still runs");
        assert_eq!(frame.code, CloseCode::Away);
    }
    drop((sleeping, looping, idle));
    let exit = tokio::time::timeout(std::time::Duration::from_secs(15), host.wait_exit()).await;
    assert!(exit.expect("the host exits within its close grace").success());
}
