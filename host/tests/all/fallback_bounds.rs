//! The fallback's posts under attack: bodies sent in part and left hanging,
//! declared too large, posted out of order or to sessions that do not
//! exist. Each is bounded as a WebSocket message is, and none keeps
//! `/healthz` or a new WebSocket client from being served.

use std::time::{Duration, Instant};

use crate::common::fallback::{Fallback, Received};
use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUDGET: &str = "wasmsocket_receive_budget_bytes";

/// A POST whose headers announce `declared` bytes, of which `sent` are
/// sent; the rest never comes.
async fn stalled_post(host: &Host, session: &str, seq: u64, declared: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(host.addr).await.expect("connect");
    let head = format!(
        "POST /ws?session={session}&seq={seq} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {declared}\r\n\r\n",
        host.addr
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&vec![b'x'; sent]).await;
    stream
}

/// The status of the response the host sends on `stream` within `within`,
/// or `None` if it sent none (closing, or keeping silent).
async fn response_status(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(within, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&head);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Meanwhile, the host serves everyone else at once.
async fn still_served(host: &Host) {
    let started = Instant::now();
    let (status, _) = host.get_text("/healthz").await;
    assert_eq!(status, 200, "/healthz");
    let mut ws = host.connect("/ws").await;
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    // A guard against a lock-out, not a timing figure.
    assert!(started.elapsed() < Duration::from_secs(5), "served only after {:?}", started.elapsed());
}

#[tokio::test]
async fn stalled_posts_can_lock_out_neither_healthz_nor_new_websockets() {
    let host = Host::start(&["--max-pending", "20", "--message-timeout", "2s", "--header-timeout", "30s"]).await;
    let client = Fallback::open(&host.http("/ws")).await.expect("open");
    // Twice max_pending: half to the real session, half to forged ones,
    // alternately. A forged session's post is refused before its body is
    // read (the body never ends): each is answered before the next
    // connection comes, so none is the oldest that gives way.
    let mut to_session = Vec::new();
    let mut forged = Vec::new();
    for i in 0..20u64 {
        to_session.push(stalled_post(&host, &client.session, 1 + i % 16, 64 << 10, 60 << 10).await);
        let mut stream = stalled_post(&host, &format!("c{i}.{}", "0".repeat(32)), 1, 64 << 10, 60 << 10).await;
        let status = response_status(&mut stream, PATIENCE).await;
        assert_eq!(status, Some(404), "forged session {i}: refused, not read");
        forged.push(stream);
    }
    still_served(&host).await;
    // The rest are cut at the message timeout, their bytes given back.
    let started = Instant::now();
    for stream in &mut to_session {
        let status = response_status(stream, Duration::from_secs(10)).await;
        assert!(matches!(status, None | Some(408)), "a stalled body ends with 408 or a close: {status:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "stalled bodies held past the message timeout");
    let held = eventually("the budget given back", async || host.metric_or_zero(BUDGET).await, |b| *b == 0.0).await;
    assert_eq!(held, 0.0);
    still_served(&host).await;
}

#[tokio::test]
async fn a_stalled_body_counts_against_the_receive_budget_and_times_out() {
    let host = Host::start(&["--message-timeout", "2s"]).await;
    let mut client = Fallback::open(&host.http("/ws")).await.expect("open");
    let mut stalled = stalled_post(&host, &client.session, 1, 512 << 10, 300 << 10).await;
    let held =
        eventually("the body counted", async || host.metric_or_zero(BUDGET).await, |b| *b >= (300 << 10) as f64).await;
    assert!(held >= (300 << 10) as f64, "{held}");
    assert_eq!(response_status(&mut stalled, Duration::from_secs(10)).await, Some(408));
    assert_eq!(host.metric_or_zero(BUDGET).await, 0.0, "given back at the timeout");
    assert!(host.metric_or_zero("wasmsocket_receive_refused_total{reason=\"message_timeout\"}").await >= 1.0);
    // The session lives on: a retry of the same seq goes through.
    assert_eq!(client.send_text("after").await, 204);
    assert_eq!(client.recv().await, Some(Received::Text("after".into())));
}

#[tokio::test]
async fn a_declared_length_past_the_limit_is_refused_before_any_body() {
    let host = Host::start(&["--max-message-size", "64KiB", "--max-frame-size", "64KiB"]).await;
    let mut client = Fallback::open(&host.http("/ws")).await.expect("open");
    // Headers only: the answer must not wait for the body.
    let mut stream = stalled_post(&host, &client.session, 1, 1 << 20, 0).await;
    assert_eq!(response_status(&mut stream, Duration::from_secs(5)).await, Some(413));
    // As a WebSocket closes with 1009 for a message too big.
    match client.recv().await {
        Some(Received::Close(code, _)) => assert_eq!(code, 1009),
        other => panic!("expected the session to close with 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn posts_waiting_for_an_earlier_one_are_bounded_per_session() {
    let host =
        Host::start(&["--max-message-size", "64KiB", "--max-frame-size", "64KiB", "--message-timeout", "10s"]).await;
    let mut client = Fallback::open(&host.http("/ws")).await.expect("open");
    let body = |c: u8| vec![c; 40 << 10];
    // Post 2 waits for post 1, holding its bytes.
    let early = {
        let (http, url) = (client.http.clone(), format!("{}?session={}&seq=2", client.url, client.session));
        let body = body(b'2');
        tokio::spawn(async move { http.post(url).body(body).send().await.map(|r| r.status().as_u16()) })
    };
    eventually("post 2 held", async || host.metric_or_zero(BUDGET).await, |b| *b >= (40 << 10) as f64).await;
    // Another 40 KiB would take the waiting bytes past one message's worth.
    assert_eq!(client.post(3, "application/octet-stream", body(b'3'), None).await, 429);
    assert_eq!(client.post(1, "application/octet-stream", body(b'1'), None).await, 204);
    assert_eq!(early.await.expect("task").expect("post 2"), 204);
    // Retried, as the client library does on 429.
    assert_eq!(client.post(3, "application/octet-stream", body(b'3'), None).await, 204);
    for c in [b'1', b'2', b'3'] {
        assert_eq!(client.recv().await, Some(Received::Binary(body(c))));
    }
    assert_eq!(host.metric_or_zero(BUDGET).await, 0.0);
}

#[tokio::test]
async fn posts_to_forged_sessions_cost_no_memory_however_large_their_bodies() {
    let host = Host::start(&["--message-timeout", "6s"]).await;
    let before = host.rss_kib();
    // 400 posts each sending all but the last byte of a 1 MiB body (once
    // +644 MiB held until the sockets closed).
    let mut posts = Vec::new();
    for i in 0..400 {
        let addr = host.addr;
        posts.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let head = format!(
                "POST /ws?session=c{i}.{}&seq=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                "0".repeat(32),
                1 << 20
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let body = vec![b'x'; (1 << 20) - 1];
            // The host answers without reading: the write may fail or block.
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&body)).await;
            response_status(&mut stream, Duration::from_secs(5)).await
        }));
    }
    let mut answered = 0;
    for post in posts {
        if post.await.expect("post") == Some(404) {
            answered += 1;
        }
    }
    assert!(answered >= 390, "only {answered} of 400 forged posts answered 404");
    let grown = host.rss_kib().saturating_sub(before);
    assert!(grown < 64 << 10, "the host grew {grown} KiB for posts to sessions that do not exist");
    assert_eq!(host.metric_or_zero(BUDGET).await, 0.0);
    still_served(&host).await;
}
