//! What a client on the internet, or a crowd of ordinary ones, can do to a
//! host: each attack run against this build and, with `--before OLD_BINARY`,
//! against an earlier one in the same run.
//!
//! ```text
//! cargo bench --bench attacks                          # this build
//! cargo bench --bench attacks -- --before OLD_BINARY   # before and after
//! cargo bench --bench attacks -- --wake 10000          # a bigger wake storm
//! cargo bench --bench attacks -- --only wake --rounds 3 # one attack, 3 runs
//! cargo bench --bench attacks -- --host-arg --max-instances --host-arg 8192
//! ```
//!
//! - `watchers`: 1,000 clients of the console stream of the testbed plugin
//!   that never read, while 40 testbed connections log; the figure is an
//!   echo on the built-in echo plugin meanwhile.
//! - `joins`: 1,000 connections, 50 at a time, each asking for 1,000 rooms
//!   (256 allowed); an echo beside them.
//! - `wake`: N hibernated connections each send one message at the same
//!   moment; how long each waited for its answer, and how many failed.
//! - `posts`: 1,100 fallback POSTs that send most of a 64 KiB body and stall;
//!   then how long `/healthz` and a new WebSocket take to be served.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Server, Ws, ask, start};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

struct Options {
    before: Option<PathBuf>,
    wake: usize,
    /// Only this attack (`watchers`, `joins`, `wake`, `posts`).
    only: Option<String>,
    /// Runs of each, alternating between the builds.
    rounds: usize,
    /// More arguments for every host (`--host-arg --max-instances --host-arg 8192`).
    host_args: Vec<String>,
}

fn options() -> Options {
    let mut o = Options { before: None, wake: 5000, only: None, rounds: 1, host_args: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--before" => o.before = args.next().map(Into::into),
            "--wake" => o.wake = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.wake),
            "--only" => o.only = args.next(),
            "--host-arg" => o.host_args.extend(args.next()),
            "--rounds" => o.rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

/// A host of `binary` (this build when `None`) with the testbed plugin.
async fn host(binary: Option<&PathBuf>, args: &[&str]) -> (Server, PathBuf) {
    let dir = common::testbed_dir("attacks", "[plugins.testbed]\nlog_rate = \"1GiB\"\n");
    let mut cmd = common::wasmsocket_build(binary.map(PathBuf::as_path));
    cmd.arg("--plugins").arg(&dir).arg("--config").arg(dir.join("host.toml")).args(["--log", "error"]).args(args);
    (start(cmd, false).await, dir)
}

async fn connect(server: &Server, path: &str) -> Ws {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        match tokio_tungstenite::connect_async(format!("ws://{}{path}", server.addr)).await {
            Ok((ws, _)) => return ws,
            Err(e) => assert!(Instant::now() < deadline, "connect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// p50, p99 and worst of `samples`, in milliseconds.
fn quantiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| samples.get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    (ms(at(0.5)), ms(at(0.99)), ms(samples.last()))
}

/// Echo round trips on the built-in echo plugin until `busy` is done.
async fn echo_while(server: &Server, busy: tokio::task::JoinHandle<String>) -> (Vec<Duration>, String) {
    let mut ws = connect(server, "/ws").await;
    let mut samples = Vec::new();
    while !busy.is_finished() {
        let started = Instant::now();
        assert_eq!(ask(&mut ws, "hi").await, "hi");
        samples.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (samples, busy.await.expect("attack"))
}

async fn watchers(server: &Server) -> String {
    let addr = server.addr;
    let mut refused = 0;
    let mut held = Vec::new();
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = "GET /api/plugins/testbed/events HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(request.as_bytes()).await.expect("request");
        held.push(stream);
    }
    // Give the refusals a moment to arrive, then count them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for stream in &mut held {
        let mut buf = [0u8; 12];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(5), stream.peek(&mut buf)).await
            && buf[..n].starts_with(b"HTTP/1.1 429")
        {
            refused += 1;
        }
    }
    let mut loggers = Vec::new();
    for _ in 0..40 {
        loggers.push(connect(server, "/ws/testbed").await);
    }
    let logging = tokio::spawn(async move {
        for _ in 0..20 {
            for ws in &mut loggers {
                ws.send(Message::text("logs 200")).await.expect("send");
            }
            for ws in &mut loggers {
                assert_eq!(ask(ws, "ping").await, "ping");
            }
        }
        String::new()
    });
    let (mut samples, _) = echo_while(server, logging).await;
    drop(held);
    let (p50, p99, worst) = quantiles(&mut samples);
    format!("echo p50 {p50:.1} ms, p99 {p99:.1} ms, worst {worst:.1} ms; {refused} of 1,000 watchers refused")
}

async fn joins(server: &Server) -> String {
    let addr = server.addr;
    let storm = tokio::spawn(async move {
        let mut joined = Vec::new();
        for _ in 0..20 {
            let batch: Vec<_> = (0..50)
                .map(|_| {
                    tokio::spawn(async move {
                        let (mut ws, _) =
                            tokio_tungstenite::connect_async(format!("ws://{addr}/ws/testbed")).await.expect("connect");
                        let answer = ask(&mut ws, "joinmany storm 1000").await;
                        (ws, answer)
                    })
                })
                .collect();
            for task in batch {
                joined.push(task.await.expect("joiner"));
            }
        }
        let kept = joined.iter().filter(|(_, a)| a.starts_with("joined 256 ")).count();
        format!("{kept} of 1,000 joined 256 rooms")
    });
    let (mut samples, outcome) = echo_while(server, storm).await;
    let (p50, p99, worst) = quantiles(&mut samples);
    format!("echo p50 {p50:.1} ms, p99 {p99:.1} ms, worst {worst:.1} ms; {outcome}")
}

async fn wake(server: &Server, n: usize) -> String {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(connect(server, "/ws/testbed").await);
    }
    // --hibernate-after 200ms: every instance is gone after this.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.wait().await;
                let sent = Instant::now();
                ws.send(Message::text("wake")).await.expect("send");
                loop {
                    match tokio::time::timeout(common::PATIENCE, ws.next()).await {
                        Ok(Some(Ok(Message::Text(_)))) => return Ok(sent.elapsed()),
                        Ok(Some(Ok(Message::Close(frame)))) => {
                            return Err(frame.map_or(1005, |f| u16::from(f.code)));
                        }
                        Ok(Some(Ok(_))) => continue,
                        _ => return Err(1006),
                    }
                }
            })
        })
        .collect();
    let mut took = Vec::new();
    let mut failed = std::collections::BTreeMap::<u16, usize>::new();
    for task in tasks {
        match task.await.expect("client") {
            Ok(d) => took.push(d),
            Err(code) => *failed.entry(code).or_default() += 1,
        }
    }
    let (p50, p99, worst) = quantiles(&mut took);
    format!("{n} at once: p50 {p50:.0} ms, p99 {p99:.0} ms, worst {worst:.0} ms; failed {failed:?}")
}

async fn posts(server: &Server) -> String {
    let mut stalled = Vec::new();
    for i in 0..1100 {
        let Ok(mut stream) = TcpStream::connect(server.addr).await else { continue };
        let head = format!(
            "POST /ws?session=c{i}.{}&seq=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n",
            "0".repeat(32)
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&vec![b'x'; 60 << 10]).await;
        stalled.push(stream);
    }
    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let health = client.get(format!("http://{}/healthz", server.addr)).send().await;
    let health = match health {
        Ok(r) => format!("{} in {:.1} ms", r.status().as_u16(), started.elapsed().as_secs_f64() * 1e3),
        Err(_) => format!("refused ({:.0} ms)", started.elapsed().as_secs_f64() * 1e3),
    };
    let started = Instant::now();
    let ws = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)),
    )
    .await;
    let ws = match ws {
        Ok(Ok(_)) => format!("connected in {:.1} ms", started.elapsed().as_secs_f64() * 1e3),
        _ => format!("refused ({:.0} ms)", started.elapsed().as_secs_f64() * 1e3),
    };
    drop(stalled);
    format!("with 1,100 stalled posts: /healthz {health}; a new WebSocket {ws}")
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut builds: Vec<(&str, Option<&PathBuf>)> = Vec::new();
        if let Some(before) = &o.before {
            builds.push(("before", Some(before)));
        }
        builds.push(("this build", None));
        let mut rows = Vec::new();
        let attacks = ["watchers", "joins", "wake", "posts"];
        for attack in attacks.into_iter().filter(|a| o.only.as_deref().is_none_or(|only| only == *a)) {
            for _ in 0..o.rounds {
                for (name, binary) in &builds {
                    let args: &[&str] = match attack {
                        "wake" => &["--hibernate-after", "200ms", "--deadline", "30s"],
                        "posts" => &["--message-timeout", "6s"],
                        _ => &[],
                    };
                    let mut args: Vec<&str> = args.to_vec();
                    args.extend(o.host_args.iter().map(String::as_str));
                    let (server, dir) = host(*binary, &args).await;
                    let outcome = match attack {
                        "watchers" => watchers(&server).await,
                        "joins" => joins(&server).await,
                        "wake" => wake(&server, o.wake).await,
                        _ => posts(&server).await,
                    };
                    rows.push((attack, *name, outcome));
                    drop(server);
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        println!("| attack | build | outcome |\n|---|---|---|");
        for (attack, build, outcome) in rows {
            println!("| {attack} | {build} | {outcome} |");
        }
    });
}
