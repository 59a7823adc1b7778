//! Echo benchmark: wasmsocket with the echo plugin against native servers
//! (no WebAssembly: the limits of this stack), side by side in one run, each
//! in its own process, driven by the same load from this one.
//!
//! ```text
//! cargo bench --bench echo                      # everything
//! cargo bench --bench echo -- --seconds 3 --connections 1,50 --idle 1000 --loops 2
//! cargo bench --bench echo -- --before OLD_BINARY   # looping calls: before and after, alternating, --rounds each
//!                                                    # (OLD_BINARY in its target dir: its own testbed is used)
//! cargo bench --bench echo -- --against 127.0.0.1:5000 --connections 50   # load only
//! cargo bench --bench echo -- --resume --loops "" --idle "" --accepts 0   # plain against resumable clients
//! cargo bench --bench echo -- --away 1000,10000 --connections "" --loops "" --idle "" --accepts 0
//! ```
//!
//! - Throughput: every connection sends a 1 KiB text message, waits for its
//!   echo, checks it byte for byte, and sends the next (one message in
//!   flight per connection), against native warp.
//! - Looping calls: 50 connections echo while 2 (or 8) others keep a plugin
//!   call computing (the testbed plugin's `loop`); their echo latency
//!   against a run without the loops.
//! - Memory: N idle connections (each has echoed once), the server's
//!   resident memory before and after, divided by N; wasmsocket is measured
//!   once its instances hibernated and its sockets rest. Beside native warp
//!   (its 128 KiB read buffer) and a tokio-tungstenite echo with a 4 KiB
//!   read buffer. Each count gets a fresh server.
//! - Accepts: connections opened per second (handshake, instantiation and
//!   `on-open` for wasmsocket), 64 at a time.
//! - With `--resume`, the throughput table has a third row: the same load
//!   from clients that asked for resumable sessions (each message numbered
//!   and kept until acknowledged by a ping's pong).
//! - Away sessions (`--away N`): N resumable sessions whose sockets dropped,
//!   waiting for their clients; the host's resident memory per session.
//! - Waking (`--wake 50`): the same load with a fresh instance for every
//!   message (`--hibernate-after 0s`), so every event finds its instance
//!   hibernated, beside the default (instances stay), and with
//!   `--keep-resident 1280KiB` (slots keep what their instances dirtied,
//!   reset in place); the server's CPU per message, and what a wake adds.
//!   The idle table has a column with `--keep-resident 1280KiB` too.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

const PAYLOAD: usize = 1024;

/// How long an idle wasmsocket is left quiet before its memory is sampled.
const QUIET: Duration = Duration::from_secs(5);

struct Options {
    seconds: f64,
    /// Looping plugin calls beside 50 echoing connections.
    loops: Vec<usize>,
    /// An older wasmsocket binary, for the looping calls before and after.
    before: Option<std::path::PathBuf>,
    /// Connections opened to measure the accept rate.
    accepts: usize,
    /// With `--against`: only open this many idle connections and hold them.
    hold: Option<usize>,
    /// Rounds per level, alternating which server goes first, merged: the
    /// machine's noise then falls on both servers alike.
    rounds: usize,
    connections: Vec<usize>,
    idle: Vec<usize>,
    /// Only drive load against a server already running (for profiling).
    against: Option<SocketAddr>,
    /// A row of resumable clients in the throughput table.
    resume: bool,
    /// Counts of away sessions to measure the memory of.
    away: Vec<usize>,
    /// Connections for the wake table.
    wake: Vec<usize>,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 3.0,
        loops: vec![2, 8],
        before: None,
        accepts: 5000,
        hold: None,
        rounds: 3,
        connections: vec![1, 50, 200],
        idle: vec![1000, 10_000, 18_000],
        against: None,
        resume: false,
        away: Vec::new(),
        wake: vec![50],
    };
    let list = |v: Option<String>| -> Option<Vec<usize>> {
        v.map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => o.rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.rounds).max(1),
            "--seconds" => o.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.seconds),
            "--connections" => o.connections = list(args.next()).unwrap_or(o.connections),
            "--against" => o.against = args.next().and_then(|v| v.parse().ok()),
            "--idle" => o.idle = list(args.next()).unwrap_or(o.idle),
            "--loops" => o.loops = list(args.next()).unwrap_or(o.loops),
            "--before" => o.before = args.next().map(Into::into),
            "--hold" => o.hold = args.next().and_then(|v| v.parse().ok()),
            "--resume" => o.resume = true,
            "--away" => o.away = list(args.next()).unwrap_or(o.away),
            "--wake" => o.wake = list(args.next()).unwrap_or(o.wake),
            "--accepts" => o.accepts = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.accepts),
            _ => {} // cargo passes --bench; ignore what we do not know
        }
    }
    o
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("--serve-native") => return serve_native(),
        Some("--serve-tungstenite") => return serve_tungstenite(),
        _ => {}
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

/// A tokio-tungstenite echo with a 4 KiB read buffer: about the least a
/// Rust WebSocket server holds per connection.
fn serve_tungstenite() {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on http://{}", listener.local_addr().expect("addr"));
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else { return };
                let (mut tx, mut rx) = ws.split();
                while let Some(Ok(msg)) = rx.next().await {
                    if (msg.is_text() || msg.is_binary()) && tx.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
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

async fn start_tungstenite() -> Server {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.arg("--serve-tungstenite");
    start("tokio-tungstenite 4 KiB", cmd).await
}

async fn start_wasmsocket() -> Server {
    start_wasmsocket_with(&[]).await
}

async fn start_wasmsocket_with(args: &[&str]) -> Server {
    let mut cmd = common::wasmsocket();
    cmd.args(["--log", "warn"]).args(args);
    start("wasmsocket", cmd).await
}

/// wasmsocket (or `binary`, an older build) with the testbed plugin, whose
/// `loop` computes until its 60 s deadline.
async fn start_with_testbed(binary: Option<&std::path::Path>) -> (Server, std::path::PathBuf) {
    let dir = common::testbed_dir_for("echo-bench", "[plugins.testbed]\ndeadline = \"60s\"\n", binary);
    let mut cmd = common::wasmsocket_build(binary);
    cmd.args(["--log", "warn", "--plugins"]).arg(&dir).arg("--config").arg(dir.join("host.toml"));
    (start(if binary.is_some() { "before" } else { "wasmsocket" }, cmd).await, dir)
}

/// Round-trip times (ns) of every verified echo, and the time measured.
#[derive(Default)]
struct Load {
    latencies: Vec<u64>,
    seconds: f64,
    /// The server's CPU time over the measured seconds, when asked for.
    cpu_ms: f64,
}

impl Load {
    fn merge(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.seconds += other.seconds;
        self.cpu_ms += other.cpu_ms;
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

/// `connections` clients, each with one message in flight, for `seconds`;
/// with `resume`, clients that asked for resumable sessions.
async fn drive(addr: SocketAddr, connections: usize, seconds: f64, resume: bool) -> Load {
    drive_watching(addr, connections, seconds, resume, None).await
}

/// `drive`, also taking the CPU time process `pid` spends over the
/// measured seconds.
async fn drive_watching(addr: SocketAddr, connections: usize, seconds: f64, resume: bool, pid: Option<u32>) -> Load {
    let url = format!("ws://{addr}/ws{}", if resume { "?resume=new" } else { "" });
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut ws = tokio_tungstenite::connect_async(&url).await.expect("connect").0;
        if resume {
            let hello = ws.next().await.expect("open").expect("hello");
            assert!(hello.to_text().is_ok_and(|t| t.contains("\"session\":\"")), "no session: {hello:?}");
        }
        sockets.push(ws);
    }
    let warmup = Duration::from_millis(500);
    let start = Instant::now() + warmup;
    let end = start + Duration::from_secs_f64(seconds);
    let cpu = pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let before = common::cpu_ms(pid);
            tokio::time::sleep_until(end.into()).await;
            common::cpu_ms(pid) - before
        })
    });
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
    let cpu_ms = match cpu {
        Some(task) => task.await.unwrap_or(0.0),
        None => 0.0,
    };
    Load { latencies: all, seconds, cpu_ms }
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

/// `c` connections echo on wasmsocket with instances kept, with a fresh
/// instance per message, and with a fresh one whose slot kept its pages:
/// throughput, latency, and the server's CPU per message.
async fn wake_table(c: usize, o: &Options) {
    println!("\n{c} connections, every message waking its instance or not ({} rounds of {}s):", o.rounds, o.seconds);
    println!("{:>34} {:>10} {:>10} {:>14} {:>14}", "wasmsocket", "msg/s", "p50 µs", "CPU µs/msg", "wake adds µs");
    let runs: [(&str, &[&str]); 3] = [
        ("instances kept", &[]),
        ("fresh instance per message", &["--hibernate-after", "0s"]),
        ("fresh, slot keeps 1280 KiB", &["--hibernate-after", "0s", "--keep-resident", "1280KiB"]),
    ];
    let mut rows: Vec<Load> = runs.iter().map(|_| Load::default()).collect();
    for round in 0..o.rounds {
        let order: Vec<usize> = if round % 2 == 0 { vec![0, 1, 2] } else { vec![2, 1, 0] };
        for i in order {
            let server = start_wasmsocket_with(runs[i].1).await;
            let pid = server.child.id();
            rows[i].merge(drive_watching(server.addr, c, o.seconds, false, pid).await);
        }
    }
    let per_message = |l: &Load| l.cpu_ms * 1000.0 / l.messages().max(1) as f64;
    let kept = per_message(&rows[0]);
    for ((label, _), row) in runs.iter().zip(&rows) {
        let cpu = per_message(row);
        let adds = if cpu > kept { format!("{:.1}", cpu - kept) } else { String::new() };
        println!(
            "{label:>34} {:>10.0} {:>10.1} {cpu:>14.1} {adds:>14}",
            row.messages() as f64 / row.seconds,
            row.p(0.5)
        );
    }
}

/// Resident memory each of `n` connections costs the server, in KiB. Each
/// client echoes once; with `away` they asked for resumable sessions and
/// then drop their sockets without a close, and what is measured is the
/// sessions waiting for them.
async fn memory_per_connection(server: &Server, n: usize, away: bool) -> f64 {
    let pid = server.child.id().expect("running");
    let url = format!("ws://{}/ws{}", server.addr, if away { "?resume=new" } else { "" });
    // One connection first, so lazily made state (pools, caches) is there
    // before the baseline.
    let first = echoed(&url, away).await.expect("connect");
    settle(server, 1).await;
    let before = rss_kib(pid);
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        match echoed(&url, away).await {
            Ok(ws) => clients.push(ws),
            Err(e) => panic!("{}: connection {i} of {n}: {e}", server.name),
        }
    }
    if away {
        drop(std::mem::take(&mut clients));
        let all_away = |value: &dyn Fn(&str) -> Option<f64>| {
            value("wasmsocket_sessions_away") == Some(n as f64) && value("wasmsocket_instances") == Some(0.0)
        };
        wait_for_metrics(server, Duration::from_secs(30), all_away).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    } else {
        settle(server, n + 1).await;
    }
    let after = rss_kib(pid);
    drop(clients);
    drop(first);
    (after.saturating_sub(before)) as f64 / n as f64
}

/// A client of `url` that has echoed once (after the session's hello, with
/// `resume`).
async fn echoed(url: &str, resume: bool) -> Result<common::Ws, tokio_tungstenite::tungstenite::Error> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    if resume {
        let _ = ws.next().await;
    }
    ws.send(Message::text("hello")).await?;
    let _ = ws.next().await;
    Ok(ws)
}

/// Polls wasmsocket's metrics until `ready` holds of them (true), or
/// `within` has passed (false).
async fn wait_for_metrics(
    server: &Server,
    within: Duration,
    ready: impl Fn(&dyn Fn(&str) -> Option<f64>) -> bool,
) -> bool {
    let url = format!("http://{}/metrics", server.addr);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let text = match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let value =
            |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
        if ready(&value) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Waits until an idle server is at rest: wasmsocket's instances
/// hibernated and its sockets rested (at most 20 s), then a quiet period in
/// which it gives freed heap pages back; others, half a second.
async fn settle(server: &Server, connections: usize) {
    if server.name != "wasmsocket" {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    }
    let rested = |value: &dyn Fn(&str) -> Option<f64>| {
        value("wasmsocket_instances") == Some(0.0)
            && value("wasmsocket_sockets_resting").is_some_and(|r| r as usize >= connections)
    };
    if wait_for_metrics(server, Duration::from_secs(20), rested).await {
        // Its heap trim looks every 2 s.
        tokio::time::sleep(QUIET).await;
    } else {
        eprintln!("warning: wasmsocket did not settle within 20 s; measuring anyway");
    }
}

/// Connections opened per second, 64 at a time, each answered once.
async fn accept_rate(server: &Server, n: usize) -> f64 {
    let url = format!("ws://{}/ws", server.addr);
    let started = Instant::now();
    let per_task = n.div_ceil(64);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut open = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
                    ws.send(Message::text("hi")).await.expect("send");
                    let _ = ws.next().await;
                    open.push(ws);
                }
                open
            })
        })
        .collect();
    let mut open = Vec::new();
    for t in tasks {
        open.extend(t.await.expect("connector"));
    }
    let rate = open.len() as f64 / started.elapsed().as_secs_f64();
    drop(open);
    rate
}

/// 50 connections echo while `loops` others keep a plugin call computing.
async fn with_loops(binary: Option<&std::path::Path>, loops: usize, seconds: f64) -> Load {
    let (server, dir) = start_with_testbed(binary).await;
    let url = format!("ws://{}/ws/testbed", server.addr);
    let mut loopers = Vec::new();
    for _ in 0..loops {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        ws.send(Message::text("loop")).await.expect("send");
        loopers.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let load = drive(server.addr, 50, seconds, false).await;
    drop(loopers);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
    load
}

async fn run(o: Options) {
    if let Some(addr) = o.against {
        if let Some(n) = o.hold {
            // Idle connections to a server someone else watches (a heap
            // profile, a trimmed allocator).
            let url = format!("ws://{addr}/ws");
            let mut idle = Vec::with_capacity(n);
            for _ in 0..n {
                let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
                ws.send(Message::text("hello")).await.expect("send");
                let _ = ws.next().await;
                idle.push(ws);
            }
            println!("holding {n} idle connections for {} s", o.seconds);
            tokio::time::sleep(Duration::from_secs_f64(o.seconds)).await;
            return;
        }
        for &c in &o.connections {
            let l = drive(addr, c, o.seconds, false).await;
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
        let (mut n, mut w, mut r) = (Load::default(), Load::default(), Load::default());
        for round in 0..o.rounds {
            // Fresh servers each round, one at a time, alternating order.
            let order = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for turn in order {
                match turn {
                    0 => n.merge(drive(start_native().await.addr, c, o.seconds, false).await),
                    1 => w.merge(drive(start_wasmsocket().await.addr, c, o.seconds, false).await),
                    _ if o.resume => r.merge(drive(start_wasmsocket().await.addr, c, o.seconds, true).await),
                    _ => {}
                }
            }
        }
        let rate = |l: &Load| l.messages() as f64 / l.seconds;
        println!("{c:>6} {:>12} {:>12.0} {:>10.1} {:>10.1}", "native warp", rate(&n), n.p(0.50), n.p(0.99));
        let rows = [("wasmsocket", &w), ("resumable", &r)];
        for (name, l) in rows.into_iter().filter(|(_, l)| l.messages() > 0) {
            println!(
                "{c:>6} {name:>12} {:>12.0} {:>10.1} {:>10.1}   {:>10.2} {:>10.2} {:>10.2}",
                rate(l),
                l.p(0.50),
                l.p(0.99),
                rate(l) / rate(&n),
                l.p(0.50) / n.p(0.50),
                l.p(0.99) / n.p(0.99)
            );
        }
    }
    for &c in &o.wake {
        wake_table(c, &o).await;
    }
    for &loops in &o.loops {
        println!("\n50 connections echo while {loops} plugin calls loop (2 cores), {}s:", o.seconds);
        println!("{:>28} {:>12} {:>10} {:>10}", "server", "msg/s", "p50 µs", "p99 µs");
        let mut rows: Vec<(String, Load)> = Vec::new();
        for (label, looping) in [("no loops", 0), ("loops", loops)] {
            // With an older build: `rounds` rounds of both, alternating
            // which goes first, as in the throughput table.
            let (mut old, mut new) = (Load::default(), Load::default());
            let rounds = if o.before.is_some() { o.rounds } else { 1 };
            for round in 0..rounds {
                for old_turn in if round % 2 == 0 { [true, false] } else { [false, true] } {
                    match (&o.before, old_turn) {
                        (Some(before), true) => old.merge(with_loops(Some(before), looping, o.seconds).await),
                        (_, false) => new.merge(with_loops(None, looping, o.seconds).await),
                        (None, true) => {}
                    }
                }
            }
            if o.before.is_some() {
                rows.push((format!("before, {label}"), old));
            }
            rows.push((format!("wasmsocket, {label}"), new));
        }
        for (name, l) in &rows {
            let rate = l.messages() as f64 / l.seconds;
            println!("{name:>28} {rate:>12.0} {:>10.1} {:>10.1}", l.p(0.50), l.p(0.99));
        }
    }
    if !o.idle.is_empty() {
        println!("\nidle connections (each echoed once), server resident memory per connection, KiB");
        println!(
            "{:>8} {:>14} {:>24} {:>12} {:>20}",
            "conns", "native warp", "tokio-tungstenite 4 KiB", "wasmsocket", "keep 1280 KiB"
        );
        for &n in &o.idle {
            let mut row = Vec::new();
            for server in [
                start_native().await,
                start_tungstenite().await,
                start_wasmsocket().await,
                start_wasmsocket_with(&["--keep-resident", "1280KiB"]).await,
            ] {
                row.push(memory_per_connection(&server, n, false).await);
            }
            println!("{n:>8} {:>14.1} {:>24.1} {:>12.1} {:>20.1}", row[0], row[1], row[2], row[3]);
        }
    }
    if !o.away.is_empty() {
        println!(
            "\nresumable sessions away (socket dropped, waiting for the client), resident memory per session, KiB"
        );
        println!("{:>8} {:>12} {:>12}", "sessions", "idle plain", "away");
        for &n in &o.away {
            let plain = memory_per_connection(&start_wasmsocket().await, n, false).await;
            let away = memory_per_connection(&start_wasmsocket().await, n, true).await;
            println!("{n:>8} {plain:>12.1} {away:>12.1}");
        }
    }
    if o.accepts > 0 {
        println!("\nconnections accepted per second ({} connections, 64 connecting at once)", o.accepts);
        for server in [start_native().await, start_tungstenite().await, start_wasmsocket().await] {
            println!("{:>24}: {:.0}", server.name, accept_rate(&server, o.accepts).await);
        }
    }
}
