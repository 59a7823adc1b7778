//! What the 0.2 capabilities cost, through the real host:
//!
//! ```text
//! cargo bench --bench capabilities                 # everything
//! cargo bench --bench capabilities -- --rooms 1000 --seconds 10 --calls 1000
//! ```
//!
//! - Timers: `--rooms` rooms, one member each, each with a room timer every
//!   50 ms (20 Hz), for `--seconds`: the spacing of the ticks each member
//!   receives (p50, p99, worst, against the 50 ms asked for), and the host's
//!   CPU per tick (its user plus system time over the run, divided by the
//!   ticks delivered).
//! - Outbound HTTP: `--calls` connections each make one request to a local
//!   server that answers in 50 ms, all at once, while 50 other connections
//!   echo; their echo p50/p99 during the calls against the same echo with
//!   no calls, and how long the calls took.
//! - Room timer handover: two hosts on one `redis-server`, a timer every
//!   50 ms run by the first, a member on the second; the first is stopped
//!   (SIGTERM, then in a second run SIGKILL): the longest gap between two
//!   ticks the member receives.

mod common;

use std::time::{Duration, Instant};

use common::redis_server::{Redis, RedisTarget};
use common::{Ws, ask, connect_testbed, cpu_ms, linked, start, testbed_dir, text, wasmsocket};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

struct Options {
    rooms: usize,
    seconds: f64,
    calls: usize,
}

fn options() -> Options {
    let mut o = Options { rooms: 1000, seconds: 10.0, calls: 1000 };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rooms" => o.rooms = value.parse().expect("--rooms N"),
            "--seconds" => o.seconds = value.parse().expect("--seconds S"),
            "--calls" => o.calls = value.parse().expect("--calls N"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main]
async fn main() {
    let o = options();
    timers(&o).await;
    outbound(&o).await;
    handover().await;
}

async fn host(config: &str) -> (common::Server, std::path::PathBuf) {
    let dir = testbed_dir("capabilities", config);
    let mut cmd = wasmsocket();
    cmd.arg("--plugins").arg(&dir).arg("--config").arg(dir.join("host.toml"));
    cmd.env("WASMSOCKET_LOG", "warn");
    (start(cmd, false).await, dir)
}

async fn timers(o: &Options) {
    let (server, dir) = host("").await;
    let addr = server.addr;
    let mut members = Vec::new();
    for i in 0..o.rooms {
        let mut ws = connect_testbed(addr).await;
        assert_eq!(ask(&mut ws, &format!("join r{i}")).await, "ok");
        members.push(ws);
    }
    for (i, ws) in members.iter_mut().enumerate() {
        assert_eq!(ask(ws, &format!("roomtimer r{i} t every 50")).await, "ok");
    }
    // Settle, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.child.id().expect("pid");
    // Ticks queued in the sockets while the timers were set are read first:
    // measured are only the ones after.
    let from = Instant::now() + Duration::from_millis(200);
    let until = from + Duration::from_secs_f64(o.seconds);
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut spacing = Vec::new();
                let mut last: Option<Instant> = None;
                while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until.into(), ws.next()).await {
                    let now = Instant::now();
                    if m.is_text() && now >= from {
                        if let Some(last) = last {
                            spacing.push((now - last).as_secs_f64() * 1e3);
                        }
                        last = Some(now);
                    }
                }
                (spacing, ws)
            })
        })
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let cpu_before = cpu_ms(pid);
    let mut spacing = Vec::new();
    let mut keep = Vec::new();
    for r in readers {
        let (s, ws) = r.await.expect("reader");
        spacing.extend(s);
        keep.push(ws);
    }
    let cpu = cpu_ms(pid) - cpu_before;
    let ticks = spacing.len();
    spacing.sort_by(f64::total_cmp);
    println!("## Room timers: {} rooms at 20 Hz, one member each, {:.0} s", o.rooms, o.seconds);
    println!("| ticks delivered | per second | spacing p50 | p99 | worst | host CPU per tick |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {ticks} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} µs |",
        ticks as f64 / o.seconds,
        quantile(&spacing, 0.5),
        quantile(&spacing, 0.99),
        spacing.last().copied().unwrap_or(f64::NAN),
        cpu * 1e3 / ticks.max(1) as f64
    );
    drop(keep);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Echo round trips of `echoers` until `until`, in ms.
async fn echo_until(echoers: &mut [Ws], until: Instant) -> Vec<f64> {
    let mut rtts = Vec::new();
    while Instant::now() < until {
        for ws in echoers.iter_mut() {
            let started = Instant::now();
            ws.send(Message::text("hi")).await.expect("send");
            assert_eq!(text(ws).await, "hi");
            rtts.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    rtts.sort_by(f64::total_cmp);
    rtts
}

async fn outbound(o: &Options) {
    let api = common::http_server::serve(|_| (Duration::from_millis(50), b"ok".to_vec())).await;
    let config = format!(
        "max_instances = {}\n[plugins.testbed]\nallowed_outbound_hosts = [\"http://{api}\"]\nhttp_in_flight = {}\n",
        o.calls + 512,
        o.calls
    );
    let (server, dir) = host(&config).await;
    let addr = server.addr;
    let mut echoers = Vec::new();
    for _ in 0..50 {
        echoers.push(connect_testbed(addr).await);
    }
    let mut callers = Vec::new();
    for _ in 0..o.calls {
        callers.push(connect_testbed(addr).await);
    }
    let quiet = echo_until(&mut echoers, Instant::now() + Duration::from_secs(2)).await;
    let started = Instant::now();
    for ws in callers.iter_mut() {
        ws.send(Message::text(format!("fetch http://{api}/"))).await.expect("send");
    }
    let answers = tokio::spawn(async move {
        let mut ok = 0;
        for ws in callers.iter_mut() {
            if text(ws).await == "status 200 2" {
                ok += 1;
            }
        }
        (ok, started.elapsed(), callers)
    });
    let mut during = Vec::new();
    while !answers.is_finished() {
        during.extend(echo_until(&mut echoers, Instant::now() + Duration::from_millis(50)).await);
    }
    during.sort_by(f64::total_cmp);
    let (ok, took, _callers) = answers.await.expect("callers");
    println!(
        "\n## Outbound HTTP: {} calls at once to a server answering in 50 ms, beside 50 echoing connections",
        o.calls
    );
    println!("| echo | round trips | p50 | p99 |");
    println!("|---|---:|---:|---:|");
    println!(
        "| without calls | {} | {:.2} ms | {:.2} ms |",
        quiet.len(),
        quantile(&quiet, 0.5),
        quantile(&quiet, 0.99)
    );
    println!(
        "| during the calls | {} | {:.2} ms | {:.2} ms |",
        during.len(),
        quantile(&during, 0.5),
        quantile(&during, 0.99)
    );
    println!("\n{ok} of {} calls answered `status 200`, all within {:.0} ms", o.calls, took.as_secs_f64() * 1e3);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// The longest gap between ticks a member on host B sees while host A,
/// which runs the timer, is stopped with `signal`.
async fn handover_gap(redis: &Redis, signal: &str) -> (f64, f64) {
    let config = format!("[redis]\n{}heartbeat = \"500ms\"\nhost_timeout = \"2s\"\n", redis.toml());
    let (a, dir_a) = host(&config).await;
    let (b, dir_b) = host(&config).await;
    linked(a.addr).await;
    linked(b.addr).await;
    // A room of its own per run: the last run's hosts were killed holding
    // theirs.
    let room = format!("game-{signal}");
    let mut on_a = connect_testbed(a.addr).await;
    assert_eq!(ask(&mut on_a, &format!("join {room}")).await, "ok");
    assert_eq!(ask(&mut on_a, &format!("roomtimer {room} t every 50")).await, "ok");
    let mut on_b = connect_testbed(b.addr).await;
    assert_eq!(ask(&mut on_b, &format!("join {room}")).await, "ok");
    // Steady ticks first.
    let mut last = Instant::now();
    let mut steady: f64 = 0.0;
    for _ in 0..20 {
        text(&mut on_b).await;
        steady = steady.max(last.elapsed().as_secs_f64() * 1e3);
        last = Instant::now();
    }
    let pid = a.child.id().expect("pid");
    let stopped = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
    assert!(stopped.is_ok_and(|s| s.success()));
    let mut worst: f64 = 0.0;
    for _ in 0..40 {
        text(&mut on_b).await;
        worst = worst.max(last.elapsed().as_secs_f64() * 1e3);
        last = Instant::now();
    }
    drop((a, b));
    let _ = std::fs::remove_dir_all(dir_a);
    let _ = std::fs::remove_dir_all(dir_b);
    (steady, worst)
}

async fn handover() {
    let redis = Redis::start().await;
    println!("\n## Room timer handover: a timer every 50 ms, its host stopped");
    println!("| stop | longest gap before | longest gap across the stop |");
    println!("|---|---:|---:|");
    for signal in ["TERM", "KILL"] {
        let (steady, worst) = handover_gap(&redis, signal).await;
        println!("| SIG{signal} | {steady:.0} ms | {worst:.0} ms |");
    }
}
