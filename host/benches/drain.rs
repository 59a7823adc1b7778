//! Drain benchmark: how long a host told to stop (SIGTERM) takes to hand
//! its resumable sessions to another host (`docs/delivery.md`), and what a
//! move costs Redis.
//!
//! ```text
//! cargo bench --bench drain                          # 1,000 and 10,000 sessions
//! cargo bench --bench drain -- --sessions 2000 --rooms 2
//! ```
//!
//! Two hosts A and B on one `redis-server` (started here, on a free
//! loopback port). `--sessions` clients open resumable sessions on A, each
//! in `--rooms` rooms (of 100 members); A is stopped with SIGTERM; every
//! client, on its 1012, resumes at once on B (as `wasmsocket.js` does
//! through a load balancer). Reported: the time from the signal until A
//! exited (the drain), until every client had resumed, each client's time
//! from its 1012 to its resumed hello (p50, p99), B's CPU, and Redis
//! commands per session moved. Clients, hosts and Redis share this
//! machine's cores.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::redis_server::Redis;
use common::{PATIENCE, Ws, ask, cpu_ms, linked, start, testbed_dir, wasmsocket};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

struct Options {
    sessions: Vec<usize>,
    rooms: usize,
}

fn options() -> Options {
    let mut o = Options { sessions: vec![1_000, 10_000], rooms: 1 };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--sessions" => o.sessions = value.split(',').filter_map(|v| v.trim().parse().ok()).collect(),
            "--rooms" => o.rooms = value.parse().expect("--rooms N"),
            "--bench" => {
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// A resumable testbed session on `addr`: its socket and token.
async fn open(addr: std::net::SocketAddr) -> (Ws, String) {
    let deadline = Instant::now() + PATIENCE;
    let mut ws = loop {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws/testbed?resume=new")).await {
            Ok((ws, _)) => break ws,
            Err(e) => assert!(Instant::now() < deadline, "connect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let hello: serde_json::Value = serde_json::from_str(&common::text(&mut ws).await).expect("hello");
    (ws, hello["session"].as_str().expect("a session").to_string())
}

/// Redis's command counts so far, by command.
async fn commands(port: u16) -> HashMap<String, u64> {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "commandstats"])
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let n = rest.split(',').find_map(|f| f.strip_prefix("calls="))?.parse().ok()?;
            (!matches!(name, "info" | "ping")).then(|| (name.to_string(), n))
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

async fn run(redis: &Redis, sessions: usize, rooms: usize) {
    let config = format!("[redis]\nurl = \"{}\"\n[websocket]\ndrain_timeout = \"120s\"\n", redis.url());
    let dir = testbed_dir("drain", &config);
    let host = |dir: &std::path::Path| {
        let mut cmd = wasmsocket();
        cmd.arg("--plugins").arg(dir).arg("--config").arg(dir.join("host.toml"));
        cmd.args(["--max-connections", "20000"]);
        cmd
    };
    let mut a = start(host(&dir), true).await;
    let b = start(host(&dir), false).await;
    linked(a.addr).await;
    linked(b.addr).await;

    let mut clients = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let (mut ws, token) = open(a.addr).await;
        for r in 0..rooms {
            assert_eq!(ask(&mut ws, &format!("join room-{r}-{}", i / 100)).await, "ok");
        }
        clients.push((ws, token));
    }
    let port: u16 = redis.url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("redis port");
    let before = commands(port).await;
    let cpu_b = cpu_ms(b.child.id().expect("pid"));
    let pid_a = a.child.id().expect("pid");

    let b_addr = b.addr;
    let signal = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(mut ws, token)| {
            tokio::spawn(async move {
                let joined = rooms as u64;
                // Wait for the 1012.
                loop {
                    match tokio::time::timeout(PATIENCE, ws.next()).await.expect("a close in time") {
                        Some(Ok(Message::Close(frame))) => {
                            assert_eq!(frame.map(|f| u16::from(f.code)), Some(1012));
                            break;
                        }
                        Some(Ok(_)) => {}
                        other => panic!("the old host's socket ended without 1012: {other:?}"),
                    }
                }
                let closed = Instant::now();
                let url = format!("ws://{b_addr}/ws/testbed?resume={token}&last={joined}");
                let deadline = Instant::now() + PATIENCE;
                let mut ws = loop {
                    match tokio_tungstenite::connect_async(&url).await {
                        Ok((ws, _)) => break ws,
                        Err(e) => assert!(Instant::now() < deadline, "resume: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                };
                let hello: serde_json::Value = serde_json::from_str(&common::text(&mut ws).await).expect("hello");
                assert_eq!(hello["resumed"], true, "{hello}");
                (closed.elapsed(), Instant::now(), ws)
            })
        })
        .collect();
    let status = std::process::Command::new("kill").args(["-TERM", &pid_a.to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -TERM");
    let mut waits = Vec::with_capacity(sessions);
    let mut last_resumed = signal;
    let mut kept = Vec::with_capacity(sessions);
    for task in tasks {
        let (wait, at, ws) = task.await.expect("client");
        waits.push(wait);
        last_resumed = last_resumed.max(at);
        kept.push(ws);
    }
    let exit = tokio::time::timeout(PATIENCE, a.child.wait()).await.expect("A exits").expect("wait");
    let drained = signal.elapsed();
    let cpu_b = cpu_ms(b.child.id().expect("pid")) - cpu_b;
    let after = commands(port).await;
    let log = a.log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(exit.success(), "A exited with {exit}; its log:\n{log}");
    waits.sort();
    let mut moved: Vec<(String, u64)> = after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    moved.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let total: u64 = moved.iter().map(|(_, n)| n).sum();
    println!(
        "| {sessions} | {rooms} | {:.2} s | {:.2} s | {:.0} ms | {:.0} ms | {:.0} ms ({:.0} µs/session) | {:.1} |",
        drained.as_secs_f64(),
        (last_resumed - signal).as_secs_f64(),
        percentile(&waits, 0.5).as_secs_f64() * 1e3,
        percentile(&waits, 0.99).as_secs_f64() * 1e3,
        cpu_b,
        cpu_b * 1e3 / sessions as f64,
        total as f64 / sessions as f64,
    );
    println!(
        "  Redis commands per session: {}",
        moved
            .iter()
            .map(|(name, n)| format!("{name} {:.2}", *n as f64 / sessions as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(kept);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::main]
async fn main() {
    let o = options();
    let redis = Redis::start().await;
    println!("SIGTERM to a host of resumable sessions; its clients resume on another host at once.\n");
    println!(
        "| sessions | rooms each | A exited after | all resumed after | 1012 → resumed p50 | p99 | B's CPU | Redis cmds / session |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &o.sessions {
        run(&redis, n, o.rooms).await;
    }
}
