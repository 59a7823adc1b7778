//! What the benchmarks share: starting a server process and learning its
//! address from the line it prints when it listens.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};

/// The tests' HTTP server, the far end of outbound requests.
#[path = "../../tests/all/common/http_server.rs"]
pub mod http_server;
/// The tests' `redis-server` harness, shared.
#[path = "../../tests/all/common/redis_server.rs"]
pub mod redis_server;
use tokio::process::{Child, Command};

/// A server process, killed when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
    /// Its stderr so far, when asked for.
    pub log: Arc<Mutex<String>>,
}

/// The `wasmsocket` binary on a free loopback port, logging warnings only.
pub fn wasmsocket() -> Command {
    wasmsocket_build(None)
}

/// `binary` (an older build), or this build when `None`, on a free
/// loopback port.
pub fn wasmsocket_build(binary: Option<&std::path::Path>) -> Command {
    let mut cmd = Command::new(binary.map_or(std::path::Path::new(env!("CARGO_BIN_EXE_wasmsocket")), |b| b));
    cmd.args(["--listen", "127.0.0.1:0"]);
    cmd
}

/// A scratch plugins directory holding the testbed plugin and a config
/// file `host.toml` with `config`; the caller removes it.
pub fn testbed_dir(tag: &str, config: &str) -> std::path::PathBuf {
    testbed_dir_for(tag, config, None)
}

/// Like `testbed_dir`, for `binary` (an older build): with the testbed
/// plugin built beside it (`TARGET/guests/...` of `TARGET/release/wasmsocket`)
/// when there is one, as a newer testbed may need a newer world.
pub fn testbed_dir_for(tag: &str, config: &str, binary: Option<&std::path::Path>) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmsocket-{tag}-{}-{}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let beside = binary
        .and_then(|b| b.parent()?.parent().map(|target| target.join("guests/wasm32-wasip2/release/testbed.wasm")))
        .filter(|t| t.is_file());
    let testbed = beside.unwrap_or_else(|| env!("WASMSOCKET_TESTBED_WASM").into());
    std::fs::copy(testbed, dir.join("testbed.wasm")).expect("copy testbed");
    std::fs::write(dir.join("host.toml"), config).expect("config");
    dir
}

/// Starts `cmd` and waits for its `listening on http(s)://ADDR` line. With
/// `keep_log`, its stderr is collected in `Server::log`.
pub async fn start(mut cmd: Command, keep_log: bool) -> Server {
    cmd.stdout(Stdio::piped()).stderr(if keep_log { Stdio::piped() } else { Stdio::null() }).kill_on_drop(true);
    let mut child = cmd.spawn().expect("start server");
    let log = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("log").push_str(&(line + "\n"));
            }
        });
    }
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines.next_line().await.expect("read").expect("server exited before listening");
        // http:// or, with TLS, https://
        if let Some(rest) = line.split("listening on http").nth(1) {
            let rest = rest.strip_prefix('s').unwrap_or(rest).trim_start_matches("://");
            break rest.split_whitespace().next().expect("address").parse().expect("socket address");
        }
    };
    // Keep reading, so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { addr, child, log }
}

/// User plus system CPU time of process `pid`, in milliseconds.
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) * 1000.0 / 100.0
}

/// A WebSocket client of the benchmarks.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads a room member's socket in the background, reporting each text
/// message it gets as the number of its round (0, 1, ...).
pub fn report_copies(mut ws: Ws, done: tokio::sync::mpsc::UnboundedSender<usize>) {
    use futures_util::StreamExt;
    tokio::spawn(async move {
        let mut round = 0;
        while let Some(Ok(m)) = ws.next().await {
            if m.is_text() {
                let _ = done.send(round);
                round += 1;
            }
        }
    });
}

/// How long the Redis benchmarks wait for anything; only a guard against a
/// hang on a loaded machine.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until the host's link to Redis is up: it connects in the
/// background, and until then neither publishes nor hears other hosts.
pub async fn linked(addr: SocketAddr) {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let health = match client.get(format!("http://{addr}/healthz")).send().await {
            Ok(response) => response.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        };
        if health.as_ref().and_then(|h| h["redis"]["status"].as_str()) == Some("up") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "host {addr} never linked to Redis; last /healthz: {health:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A client of the testbed plugin on `addr`. A burst of connects can fill
/// the listen backlog: it tries again.
pub async fn connect_testbed(addr: SocketAddr) -> Ws {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws/testbed")).await {
            Ok((ws, _)) => return ws,
            Err(e) => assert!(std::time::Instant::now() < deadline, "connect to {addr}: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The next text message, skipping pings and pongs.
pub async fn text(ws: &mut Ws) -> String {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let next = tokio::time::timeout(PATIENCE, ws.next()).await.expect("no message in time");
        match next.expect("open").expect("frame") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Sends a testbed command; its reply.
pub async fn ask(ws: &mut Ws, command: &str) -> String {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(command)).await.expect("send");
    text(ws).await
}
