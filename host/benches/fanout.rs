//! Fan-out benchmark: one message broadcast to every member of a room.
//!
//! ```text
//! cargo bench --bench fanout                       # 100, 1000 and 10000 members
//! cargo bench --bench fanout -- --members 1000 --rounds 5
//! cargo bench --bench fanout -- --before OLD_BINARY  # an older build beside this one
//! cargo bench --bench fanout -- --resume             # and members with resumable sessions
//! cargo bench --bench fanout -- --rest               # and again with members whose sockets rest
//! ```
//!
//! Each size runs first against a native tokio-tungstenite server holding
//! the room in a map (`--serve-native`, the same commands as the testbed
//! plugin's `join` and `bcast`), whose time and CPU per copy the other rows
//! are compared to.
//!
//! Starts wasmsocket with the testbed plugin, opens N connections that join
//! one room, then one more connection broadcasts to the room; the time from
//! sending the broadcast until every member has received its copy is one
//! round. Reports the median and worst round, messages delivered per
//! second, and the host's own CPU time per round (the members' clients run
//! in this process, on the same cores, so the wall time includes them).

use std::time::{Duration, Instant};

mod common;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--serve-native") {
        return serve_native();
    }
    let mut members = vec![100, 1_000, 10_000];
    let mut rounds = 5;
    let mut before: Option<std::path::PathBuf> = None;
    let mut resume = false;
    let mut rest = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--members" => {
                members = args.next().map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect()).unwrap_or(members)
            }
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
            "--before" => before = args.next().map(Into::into),
            "--resume" => resume = true,
            "--rest" => rest = true,
            _ => {}
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        println!("fan-out: one 64 B text broadcast to N room members, {rounds} rounds each");
        println!(
            "{:>8} {:>14} {:>10} {:>10} {:>14} {:>12} {:>14}",
            "members", "server", "median ms", "worst ms", "deliveries/s", "CPU ms/round", "CPU µs/copy"
        );
        for n in members {
            for resting in [false, true].into_iter().filter(|r| !r || rest) {
                // The native server first, then the older build, then this one,
                // each on a fresh process.
                let native = run(n, rounds, Server::Native, false, resting).await;
                if let Some(before) = &before {
                    run(n, rounds, Server::Wasmsocket(Some(before)), false, resting).await.compare(&native);
                }
                run(n, rounds, Server::Wasmsocket(None), false, resting).await.compare(&native);
                if resume {
                    run(n, rounds, Server::Wasmsocket(None), true, resting).await.compare(&native);
                }
            }
        }
    });
}

/// What serves the room.
#[derive(Clone, Copy)]
enum Server<'a> {
    /// A tokio-tungstenite server with the room in a map: the floor.
    Native,
    /// wasmsocket with the testbed plugin: `binary`, or this build.
    Wasmsocket(Option<&'a std::path::Path>),
}

/// One run's figures, printed; `compare` adds the ratios to native.
struct Figures {
    median: Duration,
    cpu_per_copy_us: f64,
}

impl Figures {
    fn compare(&self, native: &Figures) {
        println!(
            "{:>23} against native: time {:.2}×, CPU per copy {:.2}×",
            "",
            self.median.as_secs_f64() / native.median.as_secs_f64(),
            self.cpu_per_copy_us / native.cpu_per_copy_us
        );
    }
}

/// The native baseline: connections join the room with `join room`, and
/// `bcast room TEXT` queues TEXT for every other member's writer and
/// answers `delivered N`, as the testbed plugin does.
fn serve_native() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;
    type Room = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on http://{}", listener.local_addr().expect("addr"));
        let room: Room = Arc::default();
        let mut next = 0u64;
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            next += 1;
            let (id, room) = (next, room.clone());
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
                let writer = tokio::spawn(async move {
                    while let Some(message) = rx.recv().await {
                        if sink.send(message).await.is_err() {
                            break;
                        }
                    }
                });
                while let Some(Ok(Message::Text(text))) = stream.next().await {
                    let reply = if text.as_str() == "join room" {
                        room.lock().expect("room").insert(id, tx.clone());
                        "ok".to_string()
                    } else if let Some(body) = text.strip_prefix("bcast room ") {
                        let message = Message::text(body);
                        let members = room.lock().expect("room");
                        let n = members
                            .iter()
                            .filter(|(m, _)| **m != id)
                            .filter(|(_, t)| t.send(message.clone()).is_ok())
                            .count();
                        format!("delivered {n}")
                    } else {
                        continue;
                    };
                    let _ = tx.send(Message::text(reply));
                }
                room.lock().expect("room").remove(&id);
                writer.abort();
            });
        }
    });
}

/// One server, `n` members (with resumable sessions if `resume`), `rounds`
/// broadcasts; with `resting`, 1.5 s between rounds, so that wasmsocket's
/// idle sockets have given their buffers back when the broadcast comes.
async fn run(n: usize, rounds: usize, server: Server<'_>, resume: bool, resting: bool) -> Figures {
    let (common::Server { addr, child, .. }, dir) = match server {
        Server::Native => {
            let mut cmd = tokio::process::Command::new(std::env::current_exe().expect("own path"));
            cmd.arg("--serve-native");
            (common::start(cmd, false).await, None)
        }
        Server::Wasmsocket(binary) => {
            // An older build gets the testbed built beside it.
            let dir = common::testbed_dir_for("fanout", "", binary);
            let mut cmd = common::wasmsocket_build(binary);
            cmd.args(["--log", "warn", "--max-connections", "10100", "--no-compile-cache"]).arg("--plugins").arg(&dir);
            (common::start(cmd, false).await, Some(dir))
        }
    };
    let url = format!("ws://{addr}/ws/testbed");
    let member_url = if resume { format!("{url}?resume=new") } else { url.clone() };

    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(&member_url).await.expect("connect");
        if resume {
            let _ = ws.next().await; // the session's hello
        }
        ws.send(Message::text("join room")).await.expect("join");
        let _ = ws.next().await; // "ok"
        readers.push(ws);
    }
    let (mut sender, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");

    // Each member task reports when it has its copy of each round.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    for ws in readers {
        common::report_copies(ws, done_tx.clone());
    }
    let payload = "x".repeat(64);
    let pid = child.id().expect("host running");
    let cpu_before = common::cpu_ms(pid);
    let mut times = Vec::new();
    for round in 0..rounds {
        if resting {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let started = Instant::now();
        sender.send(Message::text(format!("bcast room {payload}"))).await.expect("broadcast");
        let mut got = 0;
        while got < n {
            let r = tokio::time::timeout(Duration::from_secs(30), done_rx.recv()).await.expect("deliveries stalled");
            assert_eq!(r, Some(round), "a member got a copy twice or missed one");
            got += 1;
        }
        times.push(started.elapsed());
        let _ = sender.next().await; // "delivered N"
    }
    let host_cpu = (common::cpu_ms(pid) - cpu_before) / rounds as f64;
    times.sort();
    let median = times[times.len() / 2];
    let worst = times[times.len() - 1];
    let name = match (server, resume) {
        (Server::Native, _) => "native",
        (Server::Wasmsocket(Some(_)), _) => "before",
        (Server::Wasmsocket(None), false) => "this",
        (Server::Wasmsocket(None), true) => "resume",
    };
    let cpu_per_copy_us = host_cpu * 1e3 / n as f64;
    println!(
        "{n:>8} {:>14} {:>10.2} {:>10.2} {:>14.0} {:>12.1} {:>14.2}",
        format!("{name}{}", if resting { ", resting" } else { "" }),
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        n as f64 / median.as_secs_f64(),
        host_cpu,
        cpu_per_copy_us,
    );
    drop(child);
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Figures { median, cpu_per_copy_us }
}
