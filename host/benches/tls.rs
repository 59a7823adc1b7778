//! TLS benchmark: the same wasmsocket build serving `ws://` and `wss://`
//! (two processes, one at a time, alternating), driven by the same load.
//!
//! ```text
//! cargo bench --bench tls
//! cargo bench --bench tls -- --seconds 3 --rounds 3 --connections 1,50 --handshakes 2000 --idle 1000
//! ```
//!
//! - Echo: every connection sends a 1 KiB text message, waits for its echo,
//!   checks it and sends the next; messages per second and round-trip p50
//!   and p99.
//! - Handshakes: full TLS 1.3 handshakes per second (no resumption), 64
//!   clients at once, each TCP connect + handshake + close; then the same
//!   through the WebSocket upgrade (`wss://` against `ws://` connections
//!   opened per second).
//! - Memory: resident memory per idle connection (each has echoed once, its
//!   instance hibernated and its socket resting), `ws://` against `wss://`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const PAYLOAD: usize = 1024;
/// Clients connecting at once in the handshake rates.
const CONNECTORS: usize = 64;

struct Options {
    seconds: f64,
    rounds: usize,
    connections: Vec<usize>,
    handshakes: usize,
    idle: usize,
}

fn options() -> Options {
    let mut o = Options { seconds: 3.0, rounds: 3, connections: vec![1, 50], handshakes: 2000, idle: 1000 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |default: usize| args.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--rounds" => o.rounds = number(o.rounds).max(1),
            "--handshakes" => o.handshakes = number(o.handshakes),
            "--idle" => o.idle = number(o.idle),
            "--seconds" => o.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.seconds),
            "--connections" => {
                if let Some(v) = args.next() {
                    o.connections = v.split(',').filter_map(|n| n.trim().parse().ok()).collect();
                }
            }
            _ => {} // cargo passes --bench
        }
    }
    o
}

/// A self-signed certificate in a scratch directory, and a client that
/// trusts it.
struct Certificate {
    dir: std::path::PathBuf,
    connector: tokio_rustls::TlsConnector,
}

impl Certificate {
    fn new() -> Self {
        let key = KeyPair::generate().expect("key");
        let cert =
            CertificateParams::new(vec!["localhost".to_string()]).expect("params").self_signed(&key).expect("cert");
        let dir = std::env::temp_dir().join(format!("wasmsocket-tls-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("trust");
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        // Every handshake a full one, as a new visitor's.
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { dir, connector: tokio_rustls::TlsConnector::from(Arc::new(config)) }
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

impl Target {
    async fn connect(&self) -> Ws {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let (io, url): (Box<dyn Io>, _) = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from("localhost").expect("name");
                let stream = tls.connect(name, tcp).await.expect("TLS handshake");
                (Box::new(stream), format!("wss://localhost:{}/ws", self.addr.port()))
            }
            None => (Box::new(tcp), format!("ws://{}/ws", self.addr)),
        };
        tokio_tungstenite::client_async(url, io).await.expect("WebSocket handshake").0
    }
}

async fn start(cert: Option<&Certificate>) -> common::Server {
    let mut cmd = common::wasmsocket();
    cmd.args(["--log", "warn"]);
    if let Some(cert) = cert {
        cmd.arg("--tls-cert").arg(cert.dir.join("cert.pem")).arg("--tls-key").arg(cert.dir.join("key.pem"));
    }
    common::start(cmd, false).await
}

/// Round-trip times (ns) of every verified echo, and the time measured.
#[derive(Default)]
struct Load {
    latencies: Vec<u64>,
    seconds: f64,
}

impl Load {
    fn merge(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.seconds += other.seconds;
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    /// Quantile `q` in microseconds.
    fn p(&self, q: f64) -> f64 {
        let i = ((self.latencies.len().max(1) - 1) as f64 * q) as usize;
        self.latencies.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
}

async fn drive(target: &Target, connections: usize, seconds: f64) -> Load {
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(target.connect().await);
    }
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(seconds);
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
    Load { latencies: all, seconds }
}

/// Full TLS handshakes per second: TCP connect, handshake, close.
async fn handshake_rate(addr: SocketAddr, tls: &tokio_rustls::TlsConnector, n: usize) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTORS)
        .map(|_| {
            let tls = tls.clone();
            tokio::spawn(async move {
                for _ in 0..n.div_ceil(CONNECTORS) {
                    let tcp = TcpStream::connect(addr).await.expect("connect");
                    let name = ServerName::try_from("localhost").expect("name");
                    let mut stream = tls.connect(name, tcp).await.expect("handshake");
                    let _ = stream.shutdown().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("connector");
    }
    (n.div_ceil(CONNECTORS) * CONNECTORS) as f64 / started.elapsed().as_secs_f64()
}

/// WebSocket connections opened (and answered once) per second.
async fn upgrade_rate(target: &Target, n: usize) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTORS)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                for _ in 0..n.div_ceil(CONNECTORS) {
                    let mut ws = target.connect().await;
                    ws.send(Message::text("hi")).await.expect("send");
                    let _ = ws.next().await;
                    let _ = ws.close(None).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("connector");
    }
    (n.div_ceil(CONNECTORS) * CONNECTORS) as f64 / started.elapsed().as_secs_f64()
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

/// Resident KiB per idle connection: each echoes once, then the host gets
/// time to hibernate its instance (1 s here) and rest its socket.
async fn idle_memory(target: &Target, pid: u32, n: usize) -> f64 {
    let mut first = target.connect().await;
    first.send(Message::text("warm")).await.expect("send");
    let _ = first.next().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = rss_kib(pid);
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ws = target.connect().await;
        ws.send(Message::text("hello")).await.expect("send");
        let _ = ws.next().await;
        idle.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    drop(idle);
    after.saturating_sub(before) as f64 / n as f64
}

fn main() {
    let o = options();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run(o));
}

async fn run(o: Options) {
    let cert = Certificate::new();
    println!(
        "wasmsocket ws:// against wss:// (rustls, ring, TLS 1.3, ECDSA P-256): {PAYLOAD} B text, one message in flight \
         per connection, {} rounds of {}s per server; {} cores shared by servers and load\n",
        o.rounds,
        o.seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("{:>6} {:>6} {:>10} {:>10} {:>10}", "conns", "scheme", "msg/s", "p50 µs", "p99 µs");
    for &c in &o.connections {
        let (mut plain, mut tls) = (Load::default(), Load::default());
        for round in 0..o.rounds {
            for tls_turn in if round % 2 == 0 { [false, true] } else { [true, false] } {
                let server = start(tls_turn.then_some(&cert)).await;
                let target = Target { addr: server.addr, tls: tls_turn.then(|| cert.connector.clone()) };
                let load = drive(&target, c, o.seconds).await;
                if tls_turn { tls.merge(load) } else { plain.merge(load) }
            }
        }
        for (scheme, l) in [("ws", &plain), ("wss", &tls)] {
            println!("{c:>6} {scheme:>6} {:>10.0} {:>10.1} {:>10.1}", l.rate(), l.p(0.5), l.p(0.99));
        }
    }
    if o.handshakes > 0 {
        let plain = start(None).await;
        let secure = start(Some(&cert)).await;
        let ws = Target { addr: plain.addr, tls: None };
        let wss = Target { addr: secure.addr, tls: Some(cert.connector.clone()) };
        println!("\n{} connections, {CONNECTORS} connecting at once, per second:", o.handshakes);
        println!(
            "  TLS handshakes (TCP + full handshake + close): {:.0}",
            handshake_rate(secure.addr, &cert.connector, o.handshakes).await
        );
        println!("  ws:// connections opened and answered once:    {:.0}", upgrade_rate(&ws, o.handshakes).await);
        println!("  wss:// connections opened and answered once:   {:.0}", upgrade_rate(&wss, o.handshakes).await);
    }
    if o.idle > 0 {
        println!("\n{} idle connections (each echoed once), server resident memory per connection:", o.idle);
        for tls in [false, true] {
            let mut cmd = common::wasmsocket();
            cmd.args(["--log", "warn", "--hibernate-after", "1s"]);
            if tls {
                cmd.arg("--tls-cert").arg(cert.dir.join("cert.pem")).arg("--tls-key").arg(cert.dir.join("key.pem"));
            }
            let server = common::start(cmd, false).await;
            let target = Target { addr: server.addr, tls: tls.then(|| cert.connector.clone()) };
            let pid = server.child.id().expect("running");
            let kib = idle_memory(&target, pid, o.idle).await;
            println!("  {:>3}: {kib:.1} KiB", if tls { "wss" } else { "ws" });
        }
    }
}
