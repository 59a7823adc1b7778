//! Fan-out benchmark: one message broadcast to every member of a room.
//!
//! ```text
//! cargo bench --bench fanout                       # 100, 1000 and 10000 members
//! cargo bench --bench fanout -- --members 1000 --rounds 5
//! cargo bench --bench fanout -- --before OLD_BINARY  # an older build beside this one
//! cargo bench --bench fanout -- --resume             # and members with resumable sessions
//! ```
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
    let mut members = vec![100, 1_000, 10_000];
    let mut rounds = 5;
    let mut before: Option<std::path::PathBuf> = None;
    let mut resume = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--members" => {
                members = args.next().map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect()).unwrap_or(members)
            }
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
            "--before" => before = args.next().map(Into::into),
            "--resume" => resume = true,
            _ => {}
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        println!("fan-out: one 64 B text broadcast to N room members, {rounds} rounds each");
        println!(
            "{:>8} {:>8} {:>14} {:>14} {:>16} {:>18}",
            "members", "server", "median ms", "worst ms", "deliveries/s", "host CPU ms/round"
        );
        for n in members {
            // The older build first, then this one, each on a fresh host.
            if let Some(before) = &before {
                run(n, rounds, Some(before), false).await;
            }
            run(n, rounds, None, false).await;
            if resume {
                run(n, rounds, None, true).await;
            }
        }
    });
}

/// One host (`binary`, or this build), `n` members (with resumable
/// sessions if `resume`), `rounds` broadcasts.
async fn run(n: usize, rounds: usize, binary: Option<&std::path::Path>, resume: bool) {
    // An older build gets the testbed built beside it.
    let dir = common::testbed_dir_for("fanout", "", binary);
    let mut cmd = common::wasmsocket_build(binary);
    cmd.args(["--log", "warn", "--max-connections", "10100", "--no-compile-cache"]).arg("--plugins").arg(&dir);
    let common::Server { addr, child, .. } = common::start(cmd, false).await;
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
    println!(
        "{n:>8} {:>8} {:>14.2} {:>14.2} {:>16.0} {:>18.1}",
        match (binary, resume) {
            (Some(_), _) => "before",
            (None, false) => "this",
            (None, true) => "resume",
        },
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        n as f64 / median.as_secs_f64(),
        host_cpu
    );
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
