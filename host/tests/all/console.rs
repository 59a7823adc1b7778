//! The live plugin console: `GET /api/plugins/NAME/events`.

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Opens the event stream with a raw request; the caller decides whether
/// to read. A small receive buffer, so a reader that stops stops soon.
async fn subscribe(host: &Host, plugin: &str, headers: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], host.addr.port()));
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!("GET /api/plugins/{plugin}/events HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads until `needle` shows up (or the stream ends); returns what came.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = vec![0; 64 << 10];
    let _ = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&seen).contains(needle) {
                return;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn a_watcher_sees_logs_faults_and_its_figures() {
    let host = Host::start(&[]).await;
    let mut events = subscribe(&host, "testbed", "").await;
    assert!(read_until(&mut events, "event:stats").await.contains("text/event-stream"));
    let mut ws = host.connect("/ws/testbed").await;
    send_text(&mut ws, "logs 2").await;
    let seen = read_until(&mut events, "log line 1").await;
    assert!(seen.contains(r#""kind":"log""#) && seen.contains(r#""level":"info""#), "{seen}");
    assert!(seen.contains(r#""kind":"open""#), "{seen}");
    send_text(&mut ws, "trap").await;
    let seen = read_until(&mut events, "connection closed with 1011: plugin trapped").await;
    assert!(seen.contains(r#""kind":"fault""#) && seen.contains(r#""level":"trap""#), "{seen}");
    let seen = seen + &read_until(&mut events, "\n\n").await;
    assert!(seen.contains("\\ntestbed asked to trap\\n"), "the panic message, on its own line: {seen}");
    let seen = read_until(&mut events, r#""messages_per_s""#).await;
    assert!(seen.contains("p99_ms") && seen.contains("connections"), "{seen}");
}

#[tokio::test]
async fn a_watcher_that_does_not_read_is_closed_and_host_memory_stays_bounded() {
    // A log budget that lets the flood through; the host log filter drops
    // the lines, the console still gets them.
    let host = Host::start_with_config("[plugins.testbed]\nlog_rate = \"1GiB\"\n", &["--log", "warn"]).await;
    let mut stalled = subscribe(&host, "testbed", "").await;
    let mut ws = host.connect("/ws/testbed").await;
    // Warm up, so the figure below measures the flood, not first use.
    send_text(&mut ws, "logs 1000").await;
    assert_eq!(ask(&mut ws, "ping").await, "ping");
    let before = host.rss_kib();
    // About 40 MB of events, far more than socket buffers hold.
    for _ in 0..150 {
        send_text(&mut ws, "logs 2000").await;
    }
    assert_eq!(ask(&mut ws, "ping").await, "ping");
    let grown = host.rss_kib().saturating_sub(before);
    assert!(grown < 20 << 10, "host grew {grown} KiB while a watcher did not read");

    // Reading again, it finds it was closed for falling behind.
    let seen = read_until(&mut stalled, "\r\n0\r\n\r\n").await;
    let tail = &seen[seen.len().saturating_sub(300)..];
    assert!(tail.contains("too slow"), "{tail}");
    assert!(tail.ends_with("\r\n0\r\n\r\n"), "the response ends after the closed event: {tail}");
    // Other watchers are unaffected.
    let mut fresh = subscribe(&host, "testbed", "").await;
    assert!(read_until(&mut fresh, "event:stats").await.contains("200 OK"));
}

#[tokio::test]
async fn off_loopback_the_stream_follows_the_publish_api_token_rule() {
    let status = |text: &str| text.split_whitespace().nth(1).unwrap_or_default().to_string();
    let open = Host::start(&["--listen", "0.0.0.0:0"]).await;
    let mut refused = subscribe(&open, "testbed", "").await;
    let seen = read_until(&mut refused, "}").await;
    assert_eq!(status(&seen), "403", "no token configured: off\n{seen}");

    let guarded = Host::start(&["--listen", "0.0.0.0:0", "--api-token", "console-test-token-0123"]).await;
    let mut anonymous = subscribe(&guarded, "testbed", "").await;
    assert_eq!(status(&read_until(&mut anonymous, "}").await), "401");
    let mut bearer = subscribe(&guarded, "testbed", "Authorization: Bearer console-test-token-0123\r\n").await;
    assert_eq!(status(&read_until(&mut bearer, "event:").await), "200");
    // An EventSource cannot set headers: the token may come in the query.
    let socket = TcpSocket::new_v4().unwrap();
    let mut query = socket.connect(([127, 0, 0, 1], guarded.addr.port()).into()).await.unwrap();
    query
        .write_all(b"GET /api/plugins/testbed/events?token=console-test-token-0123 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status(&read_until(&mut query, "event:").await), "200");

    // On loopback it is open, like /api/plugins.
    let local = Host::start(&[]).await;
    let mut events = subscribe(&local, "testbed", "").await;
    assert_eq!(status(&read_until(&mut events, "event:").await), "200");
    let mut missing = subscribe(&local, "nosuch", "").await;
    assert_eq!(status(&read_until(&mut missing, "}").await), "404");
}

#[tokio::test]
async fn watchers_are_capped_per_plugin_and_per_host() {
    let status = |text: &str| text.split_whitespace().nth(1).unwrap_or_default().to_string();
    let testbed = std::fs::read(TESTBED_WASM).expect("testbed.wasm");
    let dir = plugins_dir(&[("t2.wasm", &testbed[..]), ("t3.wasm", &testbed[..]), ("t4.wasm", &testbed[..])]);
    let host = Host::start_with(dir, &[]).await;
    // 8 per plugin: the ninth is refused.
    let mut held = Vec::new();
    for plugin in ["testbed", "t2", "t3", "t4"] {
        for _ in 0..8 {
            let mut watcher = subscribe(&host, plugin, "").await;
            assert_eq!(status(&read_until(&mut watcher, "event:").await), "200", "a watcher of {plugin}");
            held.push(watcher);
        }
    }
    let mut ninth = subscribe(&host, "testbed", "").await;
    let seen = read_until(&mut ninth, "}").await;
    assert_eq!(status(&seen), "429", "{seen}");
    assert!(seen.contains("at most 8 per plugin"), "{seen}");
    // 32 per host: echo, with no watcher yet, is refused too.
    let mut echo = subscribe(&host, "echo", "").await;
    assert_eq!(status(&read_until(&mut echo, "}").await), "429");
    // One goes: its seat is free for another.
    drop(held.pop());
    let mut again = eventually(
        "a seat comes free",
        async || {
            let mut watcher = subscribe(&host, "echo", "").await;
            (status(&read_until(&mut watcher, "\r\n\r\n").await) == "200").then_some(watcher)
        },
        |w| w.is_some(),
    )
    .await
    .expect("a watcher");
    assert!(read_until(&mut again, "event:stats").await.contains("event:stats"));
}

#[tokio::test]
async fn watchers_that_do_not_read_do_not_slow_another_plugins_echo() {
    let host = Host::start_with_config("[plugins.testbed]\nlog_rate = \"1GiB\"\n", &["--log", "warn"]).await;
    // As many watchers as allowed, none of which reads.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(subscribe(&host, "testbed", "").await);
    }
    let mut loggers = Vec::new();
    for _ in 0..40 {
        loggers.push(host.connect("/ws/testbed").await);
    }
    let logging = tokio::spawn(async move {
        for _ in 0..20 {
            for ws in &mut loggers {
                send_text(ws, "logs 200").await;
            }
            for ws in &mut loggers {
                assert_eq!(ask(ws, "ping").await, "ping");
            }
        }
    });
    let mut echo = host.connect("/ws").await;
    let (worst, ()) = worst_echo_while(&mut echo, logging).await;
    eprintln!("echo on another plugin beside 8 stalled watchers and 40 loggers: worst {worst:?}");
    // A guard against the 1-2 s stalls of unbounded watchers, not a figure.
    assert!(worst < std::time::Duration::from_millis(500), "echo delayed {worst:?}");
}

#[tokio::test]
async fn a_watcher_sees_a_session_go_away_and_resume() {
    let host = Host::start(&[]).await;
    let mut events = subscribe(&host, "testbed", "").await;
    read_until(&mut events, "event:stats").await;
    let mut ws = host.connect("/ws/testbed?resume=new").await;
    let hello: serde_json::Value = serde_json::from_str(&expect_text(&mut ws).await).expect("hello");
    let session = hello["session"].as_str().expect("a session").to_string();
    drop(ws);
    let seen = read_until(&mut events, r#""level":"away""#).await;
    assert!(seen.contains(r#""kind":"session""#) && seen.contains("waits 30s"), "{seen}");
    let _ws = host.connect(&format!("/ws/testbed?resume={session}&last=0")).await;
    let seen = read_until(&mut events, r#""level":"resumed""#).await;
    assert!(seen.contains("session resumed"), "{seen}");
}
