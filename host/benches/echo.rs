//! Echo benchmark: wasmsocket with the echo plugin against a native warp
//! echo server (no WebAssembly: the limit of this stack), side by side in one
//! run, each in its own process, driven by the same load from this one.
//!
//! ```text
//! cargo bench --bench echo                      # everything
//! cargo bench --bench echo -- --seconds 3 --connections 1,50 --idle 1000
//! cargo bench --bench echo -- --against 127.0.0.1:5000 --connections 50   # load only
//! ```
//!
//! Throughput: every connection sends a 1 KiB text message, waits for its
//! echo, checks it byte for byte, and sends the next (one message in flight
//! per connection). Memory: N idle connections (each has echoed once), the
//! server's resident memory before and after, divided by N.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

const PAYLOAD: usize = 1024;

struct Options {
    seconds: f64,
    /// Rounds per level, alternating which server goes first, merged: the
    /// machine's noise then falls on both servers alike.
    rounds: usize,
    connections: Vec<usize>,
    idle: usize,
    /// Only drive load against a server already running (for profiling).
    against: Option<SocketAddr>,
}

fn options() -> Options {
    let mut o = Options { seconds: 3.0, rounds: 3, connections: vec![1, 50, 200], idle: 2000, against: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => o.rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.rounds).max(1),
            "--seconds" => o.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.seconds),
            "--connections" => {
                o.connections = args
                    .next()
                    .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                    .unwrap_or(o.connections)
            }
            "--against" => o.against = args.next().and_then(|v| v.parse().ok()),
            "--idle" => o.idle = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.idle),
            _ => {} // cargo passes --bench; ignore what we do not know
        }
    }
    o
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--serve-native") {
        return serve_native();
    }
    let o = options();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run(o));
}

/// The baseline: warp's own WebSocket echo, as its docs show it.
fn serve_native() {
    use warp::Filter;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let route = warp::path("ws").and(warp::ws()).map(|ws: warp::ws::Ws| {
            ws.on_upgrade(|socket| async move {
                let (mut tx, mut rx) = socket.split();
                while let Some(Ok(msg)) = rx.next().await {
                    if (msg.is_text() || msg.is_binary()) && tx.send(msg).await.is_err() {
                        break;
                    }
                }
            })
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on http://{}", listener.local_addr().expect("addr"));
        warp::serve(route).incoming(listener).run().await;
    });
}

struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: tokio::process::Child,
}

async fn start(name: &'static str, cmd: Command) -> Server {
    let common::Server { addr, child, .. } = common::start(cmd, false).await;
    Server { name, addr, child }
}

async fn start_native() -> Server {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.arg("--serve-native");
    start("native warp", cmd).await
}

async fn start_wasmsocket() -> Server {
    let mut cmd = common::wasmsocket();
    cmd.args(["--log", "warn", "--max-connections", "10000"]);
    start("wasmsocket", cmd).await
}

/// Round-trip times (ns) of every verified echo, and the time measured.
#[derive(Default)]
struct Load {
    latencies: Vec<u64>,
    seconds: f64,
}

impl Load {
    fn merge(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.seconds += other.seconds;
    }

    fn messages(&self) -> usize {
        self.latencies.len()
    }

    /// Quantile `q` in microseconds.
    fn p(&self, q: f64) -> f64 {
        let i = ((self.latencies.len().max(1) - 1) as f64 * q) as usize;
        self.latencies.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// `connections` clients, each with one message in flight, for `seconds`.
async fn drive(addr: SocketAddr, connections: usize, seconds: f64) -> Load {
    let url = format!("ws://{addr}/ws");
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(tokio_tungstenite::connect_async(&url).await.expect("connect").0);
    }
    let warmup = Duration::from_millis(500);
    let start = Instant::now() + warmup;
    let end = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(c, mut ws)| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let mut text = format!("{c}:{i}:");
                    text.extend(std::iter::repeat_n('x', PAYLOAD - text.len()));
                    ws.send(Message::text(text.clone())).await.expect("send");
                    let reply = loop {
                        match ws.next().await.expect("open").expect("frame") {
                            Message::Text(t) => break t,
                            Message::Ping(_) | Message::Pong(_) => continue,
                            other => panic!("unexpected {other:?}"),
                        }
                    };
                    assert_eq!(reply.as_str(), text, "echo differs");
                    if now >= start {
                        latencies.push(now.elapsed().as_nanos() as u64);
                    }
                    i += 1;
                }
                let _ = ws.close(None).await;
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all.sort_unstable();
    Load { latencies: all, seconds }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory each idle connection costs the server, in KiB.
async fn idle_memory(server: &Server, n: usize) -> f64 {
    let pid = server.child.id().expect("running");
    let url = format!("ws://{}/ws", server.addr);
    // One connection first, so lazily made state (pools, caches) is there
    // before the baseline.
    let mut first = tokio_tungstenite::connect_async(&url).await.expect("connect").0;
    first.send(Message::text("warm")).await.expect("send");
    let _ = first.next().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ws = tokio_tungstenite::connect_async(&url).await.expect("connect").0;
        ws.send(Message::text("hello")).await.expect("send");
        let _ = ws.next().await;
        idle.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    drop(idle);
    drop(first);
    (after.saturating_sub(before)) as f64 / n as f64
}

async fn run(o: Options) {
    if let Some(addr) = o.against {
        for &c in &o.connections {
            let l = drive(addr, c, o.seconds).await;
            let rate = l.messages() as f64 / l.seconds;
            println!("{c:>6} conns against {addr}: {rate:.0} msg/s, p50 {:.1} µs, p99 {:.1} µs", l.p(0.5), l.p(0.99));
        }
        return;
    }
    println!(
        "wasmsocket echo benchmark: {PAYLOAD} B text, one message in flight per connection, {} rounds of {}s per server",
        o.rounds, o.seconds
    );
    println!(
        "{} cores; servers and load share them\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "{:>6} {:>12} {:>12} {:>10} {:>10}   {:>10} {:>10} {:>10}",
        "conns", "server", "msg/s", "p50 µs", "p99 µs", "msg/s ×", "p50 ×", "p99 ×"
    );
    for &c in &o.connections {
        let (mut n, mut w) = (Load::default(), Load::default());
        for round in 0..o.rounds {
            // Fresh servers each round, one at a time, alternating order.
            for native_turn in if round % 2 == 0 { [true, false] } else { [false, true] } {
                if native_turn {
                    let server = start_native().await;
                    n.merge(drive(server.addr, c, o.seconds).await);
                } else {
                    let server = start_wasmsocket().await;
                    w.merge(drive(server.addr, c, o.seconds).await);
                }
            }
        }
        let rate = |l: &Load| l.messages() as f64 / l.seconds;
        println!("{c:>6} {:>12} {:>12.0} {:>10.1} {:>10.1}", "native warp", rate(&n), n.p(0.50), n.p(0.99));
        println!(
            "{c:>6} {:>12} {:>12.0} {:>10.1} {:>10.1}   {:>10.2} {:>10.2} {:>10.2}",
            "wasmsocket",
            rate(&w),
            w.p(0.50),
            w.p(0.99),
            rate(&w) / rate(&n),
            w.p(0.50) / n.p(0.50),
            w.p(0.99) / n.p(0.99)
        );
    }
    if o.idle > 0 {
        println!("\nidle connections: {} (each echoed once), server resident memory per connection", o.idle);
        for server in [start_native().await, start_wasmsocket().await] {
            let per = idle_memory(&server, o.idle).await;
            println!("{:>12}: {per:.1} KiB", server.name);
        }
    }
}
