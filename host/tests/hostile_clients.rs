//! Clients that try to hold the host's file descriptors: half-sent HTTP
//! requests, idle keep-alive connections, floods of pending connections.

mod common;

use std::time::Duration;

use common::{Host, PATIENCE, ask, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
async fn past_max_pending_new_connections_are_closed_at_once() {
    let host = Host::start(&["--max-pending", "20", "--header-timeout", "4s"]).await;
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(half_request(&host).await);
    }
    // The first 20 are held until their header timeout; the other 30 are
    // closed on arrival, long before it.
    let mut closed = 0;
    for stream in &mut streams[20..] {
        if closed_within(stream, Duration::from_secs(2)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 30, "connections past max_pending closed at once");
    // Once the stalled ones time out, a WebSocket connects as usual.
    let mut ws = eventually(
        "a WebSocket connects after the stalled requests time out",
        async || tokio_tungstenite::connect_async(host.url("/ws")).await.ok().map(|(ws, _)| ws),
        |ws| ws.is_some(),
    )
    .await
    .expect("connected");
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    let refused = metric(&host, "wasmsocket_http_refused_total{reason=\"pending\"}").await;
    assert!(refused >= 30.0, "refusals counted: {refused}");
}
