//! Plugin languages compared, in one run: component size, compile time in
//! the host, connect time (handshake with instantiation and `on-open`), and
//! request-reply throughput at 50 connections relative to the Rust echo
//! plugin.
//!
//! ```text
//! scripts/build-examples.sh out/examples
//! cargo bench --bench languages -- --dir out/examples --seconds 5
//! ```
//!
//! Each plugin gets a fresh host with a cold compile cache; every
//! connection sends one message the plugin answers with exactly one reply,
//! waits for it, and sends the next.
//!
//! Wake-up: the round trip of a message after half a second of idleness,
//! on a connection whose instance hibernated (a fresh instance is made for
//! it) against one whose instance was kept (the same plugin served twice,
//! the second with `hibernate_after = "never"`), taking turns; 100 of each.
//! Both pay what idleness costs the machine (on a virtual machine, waking
//! an idle CPU takes milliseconds); the difference is the wake-up.
//! `--keep-resident SIZE` passes that setting to every host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// (file stem, language, a message it answers once)
const PLUGINS: &[(&str, &str, &str)] = &[
    ("echo", "Rust", "hello, plugin"),
    ("rust-shout", "Rust", "hello, plugin"),
    ("rust-rpc", "Rust", r#"{"jsonrpc":"2.0","id":1,"method":"echo","params":["hello"]}"#),
    ("c-stats", "C", "hello, plugin"),
    ("go-transform", "Go", "Hello, Plugin"),
    ("js-counter", "JavaScript", "inc"),
    ("python-words", "Python", "the cat and the hat"),
];

struct Row {
    size: u64,
    compile_ms: f64,
    connect_ms: f64,
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// Round trips (µs) after idleness on a hibernated instance (p50, p99)
    /// and on a kept one (p50, p99).
    wake: (f64, f64, f64, f64),
}

async fn measure(file: &Path, seconds: f64, message: &'static str, keep_resident: Option<&str>) -> Row {
    let dir = std::env::temp_dir().join(format!("wasmsocket-lang-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let name = "p";
    std::fs::copy(file, dir.join(format!("{name}.wasm"))).expect("copy plugin");
    // The same plugin again, never hibernating: the baseline of the wake-up.
    std::fs::copy(file, dir.join("kept.wasm")).expect("copy plugin");
    std::fs::write(dir.join("host.toml"), "[plugins.kept]\nhibernate_after = \"never\"\n").expect("config");
    let mut cmd = common::wasmsocket();
    // A fresh compile cache: `p` compiles cold, `kept` comes from the cache.
    cmd.args(["--log", "info", "--deadline", "5s", "--hibernate-after", "300ms"])
        .arg("--cache-dir")
        .arg(dir.join(".cache"))
        .arg("--config")
        .arg(dir.join("host.toml"))
        .arg("--plugins")
        .arg(&dir);
    if let Some(keep) = keep_resident {
        cmd.args(["--keep-resident", keep]);
    }
    let server = common::start(cmd, true).await;
    let (addr, log) = (server.addr, server.log.clone());
    // The log line may still be on its way through the pipe.
    let mut compile_ms = f64::NAN;
    for _ in 0..200 {
        // `kept` sorts first: it compiles cold, `p` comes from the cache.
        compile_ms = compile_time(&log.lock().expect("log"), "kept");
        if !compile_ms.is_nan() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let url = format!("ws://{addr}/ws/{name}");

    // Connect time: handshake, instantiation and on-open, then one reply.
    let mut connects = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        connects.push(started.elapsed());
        ws.send(Message::text(message)).await.expect("send");
        let _ = ws.next().await;
    }
    connects.sort();

    let end = Instant::now() + Duration::from_millis(500) + Duration::from_secs_f64(seconds);
    let start = end - Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                ws.send(Message::text(message)).await.expect("send");
                match ws.next().await {
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {}
                    other => panic!("no reply: {other:?}"),
                }
                if now >= start {
                    latencies.push(now.elapsed().as_nanos() as u64);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    all.sort_unstable();
    let pick = |q: f64| all.get(((all.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(0) as f64 / 1e3;
    let wake = wake_up(&url, &format!("ws://{addr}/ws/kept"), message).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Row {
        size: std::fs::metadata(file).map(|m| m.len()).unwrap_or(0),
        compile_ms,
        connect_ms: connects[connects.len() / 2].as_secs_f64() * 1e3,
        rate: all.len() as f64 / seconds,
        p50_us: pick(0.5),
        p99_us: pick(0.99),
        wake,
    }
}

/// Round trips after half a second idle: hibernated and kept, in µs.
async fn wake_up(hibernating: &str, kept: &str, message: &'static str) -> (f64, f64, f64, f64) {
    let round_trip = async |ws: &mut common::Ws| {
        let started = Instant::now();
        ws.send(Message::text(message)).await.expect("send");
        match ws.next().await {
            Some(Ok(Message::Text(_) | Message::Binary(_))) => {}
            other => panic!("no reply: {other:?}"),
        }
        started.elapsed().as_nanos() as u64
    };
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for batch in 0..10 {
        let mut pairs = Vec::new();
        for _ in 0..10 {
            let (mut a, _) = tokio_tungstenite::connect_async(hibernating).await.expect("connect");
            let (mut b, _) = tokio_tungstenite::connect_async(kept).await.expect("connect");
            round_trip(&mut a).await;
            round_trip(&mut b).await;
            pairs.push((a, b));
        }
        // Past hibernate_after (300 ms), within the socket's rest (1 s).
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (a, b) in &mut pairs {
            // Taking turns at going first after the pause.
            if batch % 2 == 0 {
                cold.push(round_trip(a).await);
                warm.push(round_trip(b).await);
            } else {
                warm.push(round_trip(b).await);
                cold.push(round_trip(a).await);
            }
        }
    }
    cold.sort_unstable();
    warm.sort_unstable();
    let pick = |v: &[u64], q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    (pick(&cold, 0.5), pick(&cold, 0.99), pick(&warm, 0.5), pick(&warm, 0.99))
}

/// "plugin loaded (compiled in 1.2s)" → milliseconds.
fn compile_time(log: &str, name: &str) -> f64 {
    let line = log.lines().find(|l| l.contains("plugin loaded") && l.contains(&format!("plugin=\"{name}\"")));
    let Some(took) = line.and_then(|l| l.split("compiled in ").nth(1)).and_then(|r| r.split(')').next()) else {
        return f64::NAN;
    };
    let (number, unit): (String, String) = took.chars().partition(|c| c.is_ascii_digit() || *c == '.');
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit.as_str() {
        "s" => value * 1e3,
        "ms" => value,
        "µs" | "us" => value / 1e3,
        "ns" => value / 1e6,
        _ => f64::NAN,
    }
}

fn main() {
    let mut dir = std::env::var_os("WASMSOCKET_EXAMPLES_DIR").map(PathBuf::from).unwrap_or("out/examples".into());
    let mut seconds = 5.0;
    let mut keep_resident = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from).unwrap_or(dir),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            "--keep-resident" => keep_resident = args.next(),
            _ => {}
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        println!("plugins from {}; 50 connections, {seconds}s each; one fresh host per plugin", dir.display());
        println!(
            "{:<26} {:>10} {:>12} {:>12} {:>10} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "plugin",
            "size KB",
            "compile ms",
            "connect ms",
            "msg/s",
            "p50 µs",
            "p99 µs",
            "× echo",
            "woken p50",
            "woken p99",
            "kept p50",
            "kept p99"
        );
        let mut echo_rate = None;
        for (stem, language, message) in PLUGINS {
            let file = if *stem == "echo" {
                PathBuf::from(env!("WASMSOCKET_ECHO_WASM"))
            } else {
                dir.join(format!("{stem}.wasm"))
            };
            if !file.exists() {
                println!("{stem:<26} (no {}: run scripts/build-examples.sh)", file.display());
                continue;
            }
            let row = measure(&file, seconds, message, keep_resident.as_deref()).await;
            let base = *echo_rate.get_or_insert(row.rate);
            println!(
                "{:<26} {:>10} {:>12.1} {:>12.2} {:>10.0} {:>9.0} {:>9.0} {:>10.2} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
                format!("{stem} ({language})"),
                row.size / 1024,
                row.compile_ms,
                row.connect_ms,
                row.rate,
                row.p50_us,
                row.p99_us,
                row.rate / base,
                row.wake.0,
                row.wake.1,
                row.wake.2,
                row.wake.3
            );
        }
    });
}
