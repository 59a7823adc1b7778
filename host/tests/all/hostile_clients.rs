//! Clients that try to hold the host's file descriptors or memory: half-sent
//! HTTP requests, idle keep-alive connections, floods of pending
//! connections, and WebSocket messages sent in part and left hanging.

use std::time::Duration;

use crate::common::{Host, PATIENCE, ask};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

const HALF_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\n";

/// Reads until the host closes the connection (EOF or reset); returns
/// whether it did within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// The value of a counter in `/metrics`, 0 when absent.
async fn metric(host: &Host, series: &str) -> f64 {
    let (_, text) = host.get_text("/metrics").await;
    text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

async fn half_request(host: &Host) -> TcpStream {
    let mut stream = TcpStream::connect(host.addr).await.expect("connect");
    // A refused connection may already be reset: the write can fail.
    let _ = stream.write_all(HALF_REQUEST).await;
    stream
}

#[tokio::test]
async fn half_sent_requests_are_closed_after_the_header_timeout() {
    let host = Host::start(&["--header-timeout", "1s"]).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(half_request(&host).await);
    }
    // Meanwhile the host serves everyone else.
    let (status, _) = host.get_text("/healthz").await;
    assert_eq!(status, 200);
    for stream in &mut stalled {
        assert!(closed_within(stream, Duration::from_secs(3)).await, "a half-sent request was still open");
    }
    let timeouts = metric(&host, "wasmsocket_http_timeouts_total{reason=\"header\"}").await;
    assert!(timeouts >= 20.0, "header timeouts counted: {timeouts}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    // The idle timeout, not the shorter header timeout, governs the pause
    // between requests.
    let host = Host::start(&["--header-timeout", "1s", "--idle-timeout", "3s"]).await;
    let mut stream = TcpStream::connect(host.addr).await.expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    for round in 0..2 {
        stream.write_all(request).await.expect("send request");
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await.expect("response").expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "round {round}: {}", String::from_utf8_lossy(&buf[..n]));
        if round == 0 {
            // Longer than the header timeout, well within the idle timeout.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    assert!(closed_within(&mut stream, Duration::from_secs(9)).await, "an idle keep-alive connection stayed open");
    let idle = metric(&host, "wasmsocket_http_timeouts_total{reason=\"idle\"}").await;
    assert!(idle >= 1.0, "idle timeouts counted: {idle}");
}

#[tokio::test]
async fn past_max_pending_the_oldest_gives_way_and_new_clients_are_served() {
    let host = Host::start(&["--max-pending", "20", "--header-timeout", "30s"]).await;
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(half_request(&host).await);
    }
    // The 30 oldest gave way to newer ones, long before their header
    // timeout; the 20 newest are still held.
    let mut closed = 0;
    for stream in &mut streams[..30] {
        if closed_within(stream, Duration::from_secs(2)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 30, "the oldest pending connections closed");
    for stream in &mut streams[30..] {
        assert!(!closed_within(stream, Duration::from_millis(100)).await, "a newer pending connection was closed");
    }
    // While the stalled ones would hold every slot, a WebSocket connects
    // and /healthz answers at once.
    let mut ws = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(host.url("/ws")))
        .await
        .expect("a WebSocket connects while max_pending stalled requests are held")
        .expect("connected")
        .0;
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    let (status, _) = host.get_text("/healthz").await;
    assert_eq!(status, 200);
    let displaced = metric(&host, "wasmsocket_http_refused_total{reason=\"pending\"}").await;
    assert!(displaced >= 30.0, "displaced connections counted: {displaced}");
}

/// A WebSocket handshake over a raw socket, so the test can send frames by
/// hand.
async fn raw_websocket(host: &Host) -> TcpStream {
    let mut stream = TcpStream::connect(host.addr).await.expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        host.addr
    );
    stream.write_all(request.as_bytes()).await.expect("send handshake");
    // Byte by byte, so nothing after the response is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, stream.read_u8()).await.expect("handshake reply").expect("read");
        head.push(byte);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// A masked binary frame header announcing `len` payload bytes.
fn binary_frame_header(len: u64) -> Vec<u8> {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]); // mask: payload bytes go as they are
    header
}

/// The code of the host's close frame, skipping other frames; `None` when
/// the connection ends without one.
async fn close_code(read: &mut OwnedReadHalf) -> Option<u16> {
    loop {
        let mut head = [0u8; 2];
        read.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[1] & 0x7f);
        assert!(len < 126, "the host sent only small frames here");
        let mut payload = vec![0u8; len];
        read.read_exact(&mut payload).await.ok()?;
        if head[0] & 0x0f == 0x8 {
            return (len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS");
    kib * 1024
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Closed by the host, with this close code if it sent one.
    Closed(Option<u16>),
    /// Still open: its partial message fitted in the budget.
    Held,
}

#[tokio::test]
async fn partial_messages_are_bounded_by_the_receive_budget() {
    const CLIENTS: usize = 200;
    const ANNOUNCED: u64 = 1 << 20;
    const SENT: usize = 900_000;
    const BUDGET: u64 = 32 << 20;
    let host = Host::start(&["--receive-budget", "32MiB"]).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(raw_websocket(&host).await);
    }
    let before = rss_bytes(host.pid());

    let mut tasks = tokio::task::JoinSet::new();
    for stream in clients {
        tasks.spawn(async move {
            let (mut read, mut write) = stream.into_split();
            let mut bytes = binary_frame_header(ANNOUNCED);
            bytes.resize(bytes.len() + SENT, 0x61);
            // A refused client's writes fail or are never read: either way
            // the answer is on the read side.
            let writer = tokio::spawn(async move {
                let _ = write.write_all(&bytes).await;
                write
            });
            let outcome = match tokio::time::timeout(Duration::from_secs(5), close_code(&mut read)).await {
                Ok(code) => Outcome::Closed(code),
                Err(_) => Outcome::Held,
            };
            // Held clients stay connected until the test ends.
            (outcome, read, writer)
        });
    }
    let mut outcomes = Vec::new();
    let mut keep = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (outcome, read, writer) = done.expect("client task");
        outcomes.push(outcome);
        keep.push((read, writer));
    }
    let after = rss_bytes(host.pid());
    let grown = after.saturating_sub(before);
    let unbounded = (CLIENTS * SENT) as u64;
    assert!(
        grown < BUDGET + (64 << 20),
        "the host grew by {} MiB for partial messages (without a budget: about {} MiB)",
        grown >> 20,
        unbounded >> 20
    );

    let refused = outcomes.iter().filter(|o| matches!(o, Outcome::Closed(_))).count();
    let held = outcomes.iter().filter(|o| **o == Outcome::Held).count();
    let held_bytes = (held * SENT) as u64;
    assert!(held_bytes <= BUDGET + (CLIENTS as u64) * (64 << 10), "{held} clients held {held_bytes} bytes");
    assert!(refused >= CLIENTS / 2, "only {refused} of {CLIENTS} clients were refused");
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Outcome::Held | Outcome::Closed(Some(1009)) | Outcome::Closed(None)),
            "unexpected outcome {outcome:?}"
        );
    }
    assert!(outcomes.contains(&Outcome::Closed(Some(1009))), "no client was told 1009");
    let counted = metric(&host, "wasmsocket_receive_refused_total{reason=\"budget\"}").await;
    assert!(counted >= refused as f64, "refusals counted: {counted}, seen: {refused}");

    // Everyone else is still served.
    let mut ws = host.connect("/ws").await;
    assert_eq!(ask(&mut ws, "still here").await, "still here");
    drop(keep);
}

#[tokio::test]
async fn a_stalled_message_is_closed_after_the_message_timeout() {
    let host = Host::start(&["--message-timeout", "1s"]).await;
    let stream = raw_websocket(&host).await;
    let (mut read, mut write) = stream.into_split();
    let mut bytes = binary_frame_header(1000);
    bytes.extend_from_slice(&[0x61; 10]);
    write.write_all(&bytes).await.expect("send part of a message");
    let code = tokio::time::timeout(Duration::from_secs(5), close_code(&mut read)).await.expect("closed in time");
    assert_eq!(code, Some(1008));
    let counted = metric(&host, "wasmsocket_receive_refused_total{reason=\"message_timeout\"}").await;
    assert_eq!(counted, 1.0);
    // A whole message is not affected.
    let mut ws = host.connect("/ws").await;
    assert_eq!(ask(&mut ws, "whole").await, "whole");
}
