//! The HTTP fallback against WebSocket on the same host, in one run: echo
//! throughput and round-trip p50/p99 at 1 and 50 connections (each with one
//! message in flight), then the memory each idle session costs the host.
//!
//! `cargo bench --bench transports [-- --seconds S --connections 1,50 --idle N]`

mod common;
#[path = "../tests/all/common/fallback.rs"]
mod fallback;

use std::time::{Duration, Instant};

use fallback::{Fallback, Received};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// How long a client waits for anything before the run counts as broken.
const PATIENCE: Duration = Duration::from_secs(20);
const PAYLOAD: usize = 64;

struct Options {
    seconds: f64,
    connections: Vec<usize>,
    idle: usize,
}

fn options() -> Options {
    let mut o = Options { seconds: 5.0, connections: vec![1, 50], idle: 1000 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => o.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.seconds),
            "--connections" => {
                o.connections =
                    args.next().map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect()).unwrap_or(o.connections)
            }
            "--idle" => o.idle = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.idle),
            _ => {}
        }
    }
    o
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    WebSocket,
    Http,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "WebSocket",
            Transport::Http => "HTTP fallback",
        }
    }
}

fn payload(c: usize, i: u64) -> String {
    let mut text = format!("{c}:{i}:");
    text.extend(std::iter::repeat_n('x', PAYLOAD - text.len()));
    text
}

/// One client's round trips (ns) between `start` and `end`.
async fn ws_client(url: String, c: usize, start: Instant, end: Instant) -> Vec<u64> {
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
    let mut latencies = Vec::new();
    let mut i = 0;
    while Instant::now() < end {
        let now = Instant::now();
        let text = payload(c, i);
        ws.send(Message::text(text.clone())).await.expect("send");
        let reply = loop {
            match tokio::time::timeout(PATIENCE, ws.next()).await.expect("reply").expect("open").expect("frame") {
                Message::Text(t) => break t,
                _ => continue,
            }
        };
        assert_eq!(reply.as_str(), text, "echo differs");
        if now >= start {
            latencies.push(now.elapsed().as_nanos() as u64);
        }
        i += 1;
    }
    latencies
}

async fn http_client(url: String, c: usize, start: Instant, end: Instant) -> Vec<u64> {
    let mut client = Fallback::open(&url).await.expect("open a fallback session");
    let mut latencies = Vec::new();
    let mut i = 0;
    while Instant::now() < end {
        let now = Instant::now();
        let text = payload(c, i);
        assert_eq!(client.send_text(&text).await, 204, "post");
        assert_eq!(client.recv().await, Some(Received::Text(text)), "echo differs");
        if now >= start {
            latencies.push(now.elapsed().as_nanos() as u64);
        }
        i += 1;
    }
    latencies
}

/// `connections` clients, one message in flight each; messages/s, p50 and
/// p99 in microseconds.
async fn load(addr: std::net::SocketAddr, transport: Transport, connections: usize, seconds: f64) -> (f64, f64, f64) {
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| match transport {
            Transport::WebSocket => tokio::spawn(ws_client(format!("ws://{addr}/ws"), c, start, end)),
            Transport::Http => tokio::spawn(http_client(format!("http://{addr}/ws"), c, start, end)),
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    all.sort_unstable();
    let p = |q: f64| all.get(((all.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(0) as f64 / 1000.0;
    (all.len() as f64 / seconds, p(0.5), p(0.99))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// KiB of host memory per idle connection of `transport`, each having
/// echoed one message, measured over `n` of them.
async fn idle_memory(server: &common::Server, transport: Transport, n: usize) -> f64 {
    let pid = server.child.id().expect("running");
    let addr = server.addr;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut ws = Vec::new();
    let mut http = Vec::new();
    for c in 0..n {
        match transport {
            Transport::WebSocket => {
                let (mut s, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("connect");
                s.send(Message::text(payload(c, 0))).await.expect("send");
                let _ = s.next().await;
                ws.push(s);
            }
            Transport::Http => {
                let mut s = Fallback::open(&format!("http://{addr}/ws")).await.expect("open");
                s.send_text(&payload(c, 0)).await;
                let _ = s.recv().await;
                http.push(s);
            }
        }
    }
    // Past the socket rest (1 s) and the instance hibernation (10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = rss_kib(pid);
    let per = after.saturating_sub(before) as f64 / n as f64;
    drop(ws);
    drop(http);
    per
}

#[tokio::main]
async fn main() {
    let o = options();
    let mut cmd = common::wasmsocket();
    cmd.args(["--log", "warn"]);
    let server = common::start(cmd, false).await;
    println!(
        "echo through the built-in plugin, {PAYLOAD}-byte text, one message in flight per connection, {}s each",
        o.seconds
    );
    println!("{:<14} {:>11} {:>12} {:>10} {:>10}", "transport", "connections", "messages/s", "p50 µs", "p99 µs");
    for &connections in &o.connections {
        for transport in [Transport::WebSocket, Transport::Http] {
            let (rate, p50, p99) = load(server.addr, transport, connections, o.seconds).await;
            println!("{:<14} {:>11} {:>12.0} {:>10.0} {:>10.0}", transport.name(), connections, rate, p50, p99);
        }
    }
    drop(server);
    println!("\nidle memory per connection, {} connections each, after one echo (fresh host per transport)", o.idle);
    for transport in [Transport::WebSocket, Transport::Http] {
        let mut cmd = common::wasmsocket();
        cmd.args(["--log", "warn"]);
        let server = common::start(cmd, false).await;
        let per = idle_memory(&server, transport, o.idle).await;
        println!("{:<14} {:>8.1} KiB", transport.name(), per);
    }
}
