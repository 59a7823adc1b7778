//! Hot-reload benchmark.
//!
//! ```text
//! cargo bench --bench reload
//! cargo bench --bench reload -- --large out/examples/python-words.wasm --seconds 10
//! ```
//!
//! 1. Time from `rename(2)` of a new plugin file into the watched directory
//!    until `/api/plugins` reports the new version serving: for a small Rust
//!    plugin, and for a large component when `--large FILE` names one (e.g.
//!    a Python example built by `scripts/build-examples.sh`); with the
//!    compile cache cold (content never seen) and warm (seen before).
//! 2. A 50-connection echo load while the plugin file is replaced every
//!    second, alternating between two versions: verified echoes per second,
//!    and any error or disconnect (there should be none).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use futures_util::{SinkExt, StreamExt};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;

struct Host {
    addr: std::net::SocketAddr,
    _server: common::Server,
    dir: PathBuf,
}

async fn start(dir: &Path, cache: &Path) -> Host {
    let mut cmd = common::wasmsocket();
    cmd.args(["--log", "warn"]).arg("--plugins").arg(dir).arg("--cache-dir").arg(cache);
    let server = common::start(cmd, false).await;
    Host { addr: server.addr, _server: server, dir: dir.to_owned() }
}

fn hash(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Renames `bytes` into place as `name.wasm`; returns the time until the
/// host reports that content serving.
async fn swap(host: &Host, http: &reqwest::Client, name: &str, bytes: &[u8]) -> Duration {
    let want = hash(bytes);
    let tmp = host.dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write temp file");
    let started = Instant::now();
    std::fs::rename(&tmp, host.dir.join(format!("{name}.wasm"))).expect("rename");
    let url = format!("http://{}/api/plugins", host.addr);
    loop {
        let list: serde_json::Value = http.get(&url).send().await.expect("GET").json().await.expect("JSON");
        let serving = list.as_array().into_iter().flatten().any(|p| p["name"] == name && p["hash"] == want.as_str());
        if serving {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "reload never happened");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmsocket-reload-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Cold: contents the cache has never seen. Warm: the same contents again.
async fn latency(label: &str, a: &[u8], b: &[u8]) {
    let (dir, cache) = (scratch("dir"), scratch("cache"));
    std::fs::write(dir.join("p.wasm"), a).expect("write");
    let host = start(&dir, &cache).await;
    let http = reqwest::Client::new();
    // Let the first load finish.
    swap(&host, &http, "p", a).await;
    let cold = swap(&host, &http, "p", b).await;
    let mut warm = Vec::new();
    for i in 0..6 {
        warm.push(swap(&host, &http, "p", if i % 2 == 0 { a } else { b }).await);
    }
    warm.sort();
    println!("{label:<28} {:>12.1} {:>16.1}", cold.as_secs_f64() * 1e3, warm[warm.len() / 2].as_secs_f64() * 1e3);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(cache);
}

/// 50 connections echo while the plugin is replaced every second.
async fn under_load(seconds: u64) {
    let (dir, cache) = (scratch("load"), scratch("load-cache"));
    let echo = std::fs::read(env!("WASMSOCKET_ECHO_WASM")).expect("echo");
    let shout = std::fs::read(env!("WASMSOCKET_SHOUT_WASM")).expect("shout");
    std::fs::write(dir.join("p.wasm"), &echo).expect("write");
    let host = start(&dir, &cache).await;
    let url = format!("ws://{}/ws/p", host.addr);
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for c in 0..50 {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        clients.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0u64, 0u64);
            let mut i = 0u64;
            while Instant::now() < stop {
                let text = format!("client {c} message {i} {}", "x".repeat(64));
                if ws.send(Message::text(text.clone())).await.is_err() {
                    bad += 1;
                    break;
                }
                match ws.next().await {
                    // echo returns it as is, shout in capitals: both are right.
                    Some(Ok(Message::Text(t))) if t.as_str() == text || t.as_str() == text.to_uppercase() => ok += 1,
                    _ => {
                        bad += 1;
                        break;
                    }
                }
                i += 1;
            }
            (ok, bad)
        }));
    }
    let http = reqwest::Client::new();
    let mut reloads = 0;
    while Instant::now() + Duration::from_secs(1) < stop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        swap(&host, &http, "p", if reloads % 2 == 0 { &shout } else { &echo }).await;
        reloads += 1;
    }
    let (mut ok, mut bad) = (0, 0);
    for c in clients {
        let (o, b) = c.await.expect("client");
        ok += o;
        bad += b;
    }
    println!(
        "\n50 connections, {reloads} reloads in {seconds}s: {:.0} verified echoes/s, {bad} errors or disconnects",
        ok as f64 / seconds as f64
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(cache);
}

fn main() {
    let mut large: Option<PathBuf> = None;
    let mut seconds = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--large" => large = args.next().map(PathBuf::from),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            _ => {}
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        println!("rename to serving, ms        {:>12} {:>16}", "cache cold", "cache warm (p50)");
        let echo = std::fs::read(env!("WASMSOCKET_ECHO_WASM")).expect("echo");
        let shout = std::fs::read(env!("WASMSOCKET_SHOUT_WASM")).expect("shout");
        latency(&format!("small Rust ({} KB)", shout.len() / 1024), &echo, &shout).await;
        match large.as_deref().map(std::fs::read) {
            Some(Ok(big)) => {
                // A second, different large version: the same bytes plus a
                // custom section, so the cold case really compiles.
                let mut other = big.clone();
                other.extend_from_slice(&[0, 8, 7, b'b', b'e', b'n', b'c', b'h', b'-', b'x']);
                latency(&format!("large ({} MB)", big.len() >> 20), &big, &other).await;
            }
            Some(Err(e)) => println!("--large: {e}"),
            None => println!("(no --large FILE given: the large-component row is skipped)"),
        }
        under_load(seconds).await;
    });
}
