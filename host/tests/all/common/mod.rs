//! Test harness: the real `wasmsocket` binary on a free loopback port, and a
//! real tokio-tungstenite client.

/// Runs each test body on a single Redis and on a Redis Cluster (the
/// calling module imports `Redis` and `RedisCluster`).
macro_rules! on_single_and_cluster {
    ($($name:ident),* $(,)?) => {
        mod single {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Redis::start().await).await;
            })*
        }
        mod on_cluster {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::RedisCluster::start().await).await;
            })*
        }
    };
}

pub mod churn;
pub mod fallback;
pub mod http_server;
pub mod redis;
pub mod redis_server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Long enough for a slow CI machine; a guard against hangs, not a timing
/// assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const TESTBED_WASM: &str = env!("WASMSOCKET_TESTBED_WASM");
pub const ECHO_WASM: &str = env!("WASMSOCKET_ECHO_WASM");
pub const SHOUT_WASM: &str = env!("WASMSOCKET_SHOUT_WASM");

/// A running host process; killed when dropped.
pub struct Host {
    pub addr: SocketAddr,
    /// The plugins directory, when the host has one.
    pub dir: Option<PathBuf>,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    _dir: Option<TempDir>,
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("wasmsocket-test-{tag}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A plugins directory holding the testbed plugin as `testbed.wasm`, plus
/// any extra `(file name, bytes)`.
pub fn plugins_dir(extra: &[(&str, &[u8])]) -> TempDir {
    let dir = TempDir::new("plugins");
    std::fs::copy(TESTBED_WASM, dir.0.join("testbed.wasm")).expect("copy testbed plugin");
    for (name, bytes) in extra {
        std::fs::write(dir.0.join(name), bytes).expect("write plugin file");
    }
    dir
}

impl Host {
    /// Starts the host with the testbed plugin and `args`.
    pub async fn start(args: &[&str]) -> Host {
        Self::start_with(plugins_dir(&[]), args).await
    }

    pub async fn start_with(dir: TempDir, args: &[&str]) -> Host {
        Self::start_patiently(dir, args, PATIENCE).await
    }

    /// Like `start_with`, waiting up to `patience` for the host to listen:
    /// it compiles every plugin first, which takes tens of seconds for a
    /// JavaScript or Python component without a cache.
    pub async fn start_patiently(dir: TempDir, args: &[&str], patience: Duration) -> Host {
        let mut all = vec!["--plugins".to_string(), dir.0.display().to_string()];
        if !args.contains(&"--cache-dir") {
            // A cache of its own, so tests do not see each other's entries.
            all.extend(["--cache-dir".to_string(), dir.0.join(".cache").display().to_string()]);
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let mut host =
            Self::spawn_patiently(&all, patience).await.unwrap_or_else(|log| panic!("host did not start:\n{log}"));
        host.dir = Some(dir.0.clone());
        host._dir = Some(dir);
        host
    }

    /// Runs the binary with `args` (plus `--listen 127.0.0.1:0` unless
    /// given). Ok once it listens; Err with its log if it exits instead.
    pub async fn spawn(args: &[String]) -> Result<Host, String> {
        Self::spawn_patiently(args, PATIENCE).await
    }

    /// Like `spawn`, with `env` added to the host's environment.
    pub async fn spawn_with_env(args: &[String], env: &[(&str, &str)]) -> Result<Host, String> {
        Self::spawn_inner(args, PATIENCE, env).await
    }

    /// Like `spawn`, waiting up to `patience` for the host to listen.
    pub async fn spawn_patiently(args: &[String], patience: Duration) -> Result<Host, String> {
        Self::spawn_inner(args, patience, &[]).await
    }

    async fn spawn_inner(args: &[String], patience: Duration, env: &[(&str, &str)]) -> Result<Host, String> {
        // WASMSOCKET_HOST_BIN runs the tests against another build (an
        // earlier release, for a before-and-after figure).
        let bin = std::env::var_os("WASMSOCKET_HOST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_wasmsocket").into());
        let mut cmd = Command::new(bin);
        if !args.iter().any(|a| a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .env("WASMSOCKET_LOG", "info,plugin=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn wasmsocket");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(patience, async {
            while let Ok(Some(line)) = lines.next_line().await {
                // http:// or, with TLS, https://
                if let Some(rest) = line.split("listening on http").nth(1) {
                    let rest = rest.strip_prefix('s').unwrap_or(rest).trim_start_matches("://");
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    return addr.parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        // Keep draining stdout so the host never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        match found {
            Some(addr) => Ok(Host { addr, dir: None, child, log, _dir: None }),
            None => {
                let _ = tokio::time::timeout(PATIENCE, child.wait()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(log.lock().unwrap().join("\n"))
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn connect(&self, path: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(self.url(path)).await.expect("connect");
        ws
    }

    /// The handshake's HTTP status when it is refused.
    pub async fn refused_status(&self, request: impl IntoClientRequest + Unpin) -> (u16, String) {
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => panic!("handshake unexpectedly succeeded"),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body =
                    response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                (response.status().as_u16(), body)
            }
            Err(e) => panic!("unexpected handshake error: {e}"),
        }
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.http(path)).await.expect("GET").json().await.expect("JSON body")
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(self.http(path)).await.expect("GET");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// The host's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until the log has a line containing `needle`.
    pub async fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("host is running")
    }

    /// The host's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// The value of the series `series` of `/metrics`, 0 while absent.
    pub async fn metric_or_zero(&self, series: &str) -> f64 {
        self.metric(series).await.unwrap_or(0.0)
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{sig} failed");
    }

    /// Kills the process the hard way, as a crash would.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill host");
    }

    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(PATIENCE, self.child.wait()).await.expect("host did not exit").expect("wait")
    }
}

pub fn path(p: &str) -> &Path {
    Path::new(p)
}

/// SHA-256 of a file, hex: what `/api/plugins` reports as `hash`.
pub fn file_hash(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read file")))
}

impl Host {
    /// The `/api/plugins` entry of `name`, if listed.
    pub async fn plugin(&self, name: &str) -> Option<serde_json::Value> {
        let list = self.get_json("/api/plugins").await;
        list.as_array()?.iter().find(|p| p["name"] == name).cloned()
    }

    /// Waits until `/api/plugins` says `check` of plugin `name`.
    pub async fn wait_plugin(&self, name: &str, what: &str, check: impl Fn(Option<&serde_json::Value>) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let entry = self.plugin(name).await;
            if check(entry.as_ref()) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("plugin {name}: never {what}; last entry {entry:?}\nlog:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until plugin `name` serves the content of `file`.
    pub async fn wait_serving(&self, name: &str, file: &Path) {
        let hash = file_hash(file);
        self.wait_plugin(name, "served the new file", |p| p.is_some_and(|p| p["hash"] == hash.as_str())).await;
    }
}

/// Replaces `to` with the content of `from` the way deploy tools do: write
/// a temporary file beside it, then rename it over.
pub fn replace_by_rename(from: &str, to: &Path) {
    let tmp = to.with_extension("wasm.tmp");
    std::fs::copy(from, &tmp).expect("copy to temp");
    std::fs::rename(&tmp, to).expect("rename over");
}

/// Polls `probe` until it returns what `done` accepts; a guard against a
/// hang, not a timing assertion.
pub async fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}; last seen {value:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The next data or close message (pings and pongs are skipped).
pub async fn next(ws: &mut Client) -> Option<Message> {
    loop {
        let item = tokio::time::timeout(PATIENCE, ws.next()).await.expect("timed out waiting for a message");
        match item {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Echo round trips on `ws` until `busy` ends: the slowest, and what
/// `busy` returned.
pub async fn worst_echo_while<T>(ws: &mut Client, busy: tokio::task::JoinHandle<T>) -> (Duration, T) {
    let mut worst = Duration::ZERO;
    while !busy.is_finished() {
        let started = std::time::Instant::now();
        assert_eq!(ask(ws, "hi").await, "hi");
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (worst, busy.await.expect("the task beside the echo"))
}

pub async fn send_text(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

pub async fn expect_text(ws: &mut Client) -> String {
    match next(ws).await {
        Some(Message::Text(t)) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Sends `text` and returns the reply.
pub async fn ask(ws: &mut Client, text: &str) -> String {
    send_text(ws, text).await;
    expect_text(ws).await
}

/// Reads until the server's close frame and returns it.
pub async fn expect_close(ws: &mut Client) -> CloseFrame {
    loop {
        match next(ws).await {
            Some(Message::Close(Some(frame))) => return frame,
            Some(Message::Close(None)) => panic!("close frame without a code"),
            Some(_) => continue,
            None => panic!("connection ended without a close frame"),
        }
    }
}

impl Host {
    /// Starts the host with the testbed plugin, a config file holding
    /// `toml`, and `args`.
    pub async fn start_with_config(toml: &str, args: &[&str]) -> Host {
        let dir = plugins_dir(&[]);
        let path = dir.0.join("host.toml");
        std::fs::write(&path, toml).expect("write config");
        let path = path.display().to_string();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        Self::start_with(dir, &all).await
    }

    /// The value of one series of `/metrics`, named as exposed (e.g.
    /// `wasmsocket_store_keys{plugin="testbed"}`); `None` while absent.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get_text("/metrics").await.1;
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// Opens a testbed connection watched by another (its `on-close` reports
/// to the watcher), closes it with 1000 "bye", checks the watcher heard
/// exactly that, and returns the watcher.
pub async fn close_watched_with_bye(host: &Host) -> Client {
    let mut watcher = host.connect("/ws/testbed").await;
    let watcher_id = ask(&mut watcher, "whoami").await;
    let mut ws = host.connect(&format!("/ws/testbed?watch={watcher_id}")).await;
    let id = ask(&mut ws, "whoami").await;
    let bye = CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.close(Some(bye)).await.expect("close");
    assert_eq!(expect_text(&mut watcher).await, format!("closed {id} 1000 bye"));
    watcher
}
