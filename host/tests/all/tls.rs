//! TLS: `https://` and `wss://` on the one listener, with certificates made
//! in each test (rcgen) and trusted by real clients (rustls, reqwest).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Host, PATIENCE, TempDir, eventually};
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A test certificate authority; clients trust it and nothing else.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate for `localhost` and 127.0.0.1, with its key.
struct Leaf {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert");
        Self { issuer }
    }

    fn leaf(&self) -> Leaf {
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf { der: cert.der().clone(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

/// Where the host reads its certificate and key.
struct TlsFiles {
    dir: TempDir,
}

impl TlsFiles {
    fn new(leaf: &Leaf) -> Self {
        let files = Self { dir: TempDir::new("tls") };
        std::fs::write(files.cert(), &leaf.cert_pem).expect("write cert");
        std::fs::write(files.key(), &leaf.key_pem).expect("write key");
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.0.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.0.join("key.pem")
    }

    /// Replaces both files as deploy tools do: write beside, rename over.
    fn replace(&self, leaf: &Leaf) {
        for (path, text) in [(self.key(), &leaf.key_pem), (self.cert(), &leaf.cert_pem)] {
            let tmp = path.with_extension("pem.tmp");
            std::fs::write(&tmp, text).expect("write temp");
            std::fs::rename(&tmp, &path).expect("rename over");
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert().display().to_string(),
            "--tls-key".into(),
            self.key().display().to_string(),
        ]
    }
}

async fn start(files: &TlsFiles, extra: &[&str]) -> Host {
    let mut args: Vec<&str> = Vec::new();
    let owned = files.args();
    args.extend(owned.iter().map(String::as_str));
    args.extend(extra);
    Host::start(&args).await
}

fn connector(ca: &Ca, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).expect("trust the CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(ca: &Ca, addr: SocketAddr, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector(ca, alpn).connect(ServerName::try_from("localhost").expect("name"), tcp).await
}

/// The leaf certificate a new connection is served.
async fn served_certificate(ca: &Ca, addr: SocketAddr) -> Option<CertificateDer<'static>> {
    let stream = tls_connect(ca, addr, &[b"http/1.1"]).await.ok()?;
    stream.get_ref().1.peer_certificates()?.first().map(|c| c.clone().into_owned())
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn wss(ca: &Ca, addr: SocketAddr, path: &str) -> Wss {
    let stream = tls_connect(ca, addr, &[b"http/1.1"]).await.expect("TLS connect");
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.expect("WebSocket handshake");
    ws
}

async fn echo(ws: &mut Wss, message: Message) -> Message {
    ws.send(message).await.expect("send");
    loop {
        let next = tokio::time::timeout(PATIENCE, ws.next()).await.expect("reply in time");
        match next.expect("open").expect("frame") {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

fn https_client(ca: &Ca, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA PEM"))
        .resolve("localhost", addr)
        .timeout(PATIENCE);
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("client")
}

#[tokio::test]
async fn wss_and_https_over_http1_and_http2() {
    let ca = Ca::new();
    let files = TlsFiles::new(&ca.leaf());
    let host = start(&files, &[]).await;

    let mut ws = wss(&ca, host.addr, "/ws").await;
    assert_eq!(echo(&mut ws, Message::text("over wss")).await, Message::text("over wss"));
    let bytes = vec![0u8, 1, 2, 255];
    assert_eq!(echo(&mut ws, Message::binary(bytes.clone())).await, Message::binary(bytes));

    let port = host.addr.port();
    for (http1_only, version) in [(true, reqwest::Version::HTTP_11), (false, reqwest::Version::HTTP_2)] {
        let client = https_client(&ca, host.addr, http1_only);
        let health = client.get(format!("https://localhost:{port}/healthz")).send().await.expect("GET /healthz");
        assert_eq!(health.version(), version);
        let body: serde_json::Value = health.json().await.expect("JSON");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["connections"], 1, "the wss connection is counted");
        let page = client.get(format!("https://localhost:{port}/")).send().await.expect("GET /");
        assert_eq!((page.status().as_u16(), page.version()), (200, version));
        assert!(page.text().await.expect("page").contains("<html"), "the test page");
    }
    // The plain-text scheme is not served on a TLS listener.
    assert!(reqwest::get(host.http("/healthz")).await.is_err());
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_connections_and_spares_open_ones() {
    let ca = Ca::new();
    let (first, second) = (ca.leaf(), ca.leaf());
    let files = TlsFiles::new(&first);
    let host = start(&files, &[]).await;
    let mut open = wss(&ca, host.addr, "/ws").await;
    assert_eq!(served_certificate(&ca, host.addr).await, Some(first.der.clone()));

    files.replace(&second);
    eventually(
        "new connections get the replaced certificate",
        async || served_certificate(&ca, host.addr).await,
        |served| served.as_ref() == Some(&second.der),
    )
    .await;
    assert_eq!(echo(&mut open, Message::text("still here")).await, Message::text("still here"));

    // A broken key is logged and the certificate in use keeps serving.
    std::fs::write(files.key(), "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
        .expect("break the key");
    assert!(host.wait_for_log("not reloaded").await, "{}", host.log());
    assert!(host.log().contains(&files.key().display().to_string()), "names the file:\n{}", host.log());
    assert_eq!(served_certificate(&ca, host.addr).await, Some(second.der.clone()));

    // Files written in place (no rename) and a SIGHUP: either brings the
    // first pair back.
    std::fs::write(files.key(), &first.key_pem).expect("write key");
    std::fs::write(files.cert(), &first.cert_pem).expect("write cert");
    host.signal("HUP");
    eventually(
        "new connections get the restored certificate",
        async || served_certificate(&ca, host.addr).await,
        |served| served.as_ref() == Some(&first.der),
    )
    .await;
    assert_eq!(echo(&mut open, Message::text("and here")).await, Message::text("and here"));
}

/// Starts the host with `cert` and `key` and returns its log; it must fail.
async fn failed_start(cert: &Path, key: &Path) -> String {
    let args = ["--tls-cert", &cert.display().to_string(), "--tls-key", &key.display().to_string()].map(String::from);
    match Host::spawn(&args).await {
        Ok(_) => panic!("the host started with cert {} and key {}", cert.display(), key.display()),
        Err(log) => log,
    }
}

#[tokio::test]
async fn bad_certificate_files_stop_startup_naming_the_file() {
    let ca = Ca::new();
    let (leaf, other) = (ca.leaf(), ca.leaf());
    let files = TlsFiles::new(&leaf);
    let dir = &files.dir.0;

    let missing = dir.join("missing.pem");
    let log = failed_start(&missing, &files.key()).await;
    assert!(log.contains(&format!("cannot read {}", missing.display())), "{log}");

    let log = failed_start(&files.key(), &files.key()).await;
    assert!(log.contains(&format!("{}: no certificate", files.key().display())), "{log}");

    let log = failed_start(&files.cert(), &files.cert()).await;
    assert!(log.contains(&format!("{}: no private key", files.cert().display())), "{log}");

    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).expect("write other key");
    let log = failed_start(&files.cert(), &other_key).await;
    assert!(log.contains(&format!("{}: the private key does not match", other_key.display())), "{log}");
}

/// True once the server has closed `stream` (EOF or reset), draining what
/// it sends first (an HTTP/2 server sends its settings and a GOAWAY).
async fn closed_by_server(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn stalled_tls_and_http2_connections_give_back_their_pending_slot() {
    let ca = Ca::new();
    let files = TlsFiles::new(&ca.leaf());
    let host = start(&files, &["--max-pending", "1", "--header-timeout", "500ms", "--idle-timeout", "500ms"]).await;

    // TCP open, no ClientHello: it holds the only slot, then is closed.
    let mut silent = TcpStream::connect(host.addr).await.expect("connect");
    assert!(closed_by_server(&mut silent).await, "a client that never starts TLS is closed");

    // TLS done with h2 negotiated, but no request: closed as well.
    let mut h2 = tls_connect(&ca, host.addr, &[b"h2"]).await.expect("TLS connect");
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert!(closed_by_server(&mut h2).await, "an HTTP/2 connection without a request is closed");

    // The slot is free again.
    let client = https_client(&ca, host.addr, false);
    let url = format!("https://localhost:{}/healthz", host.addr.port());
    let health = eventually("a request is served", async || client.get(&url).send().await.ok(), |r| r.is_some())
        .await
        .expect("response");
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
}

/// The next complete `event:` name and `data:` of an event stream.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String) -> (String, String) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_string()).unwrap_or_default()
            };
            if block.starts_with(':') {
                continue; // a keep-alive comment
            }
            return (field("event:"), field("data:"));
        }
        let chunk = tokio::time::timeout(PATIENCE, response.chunk()).await.expect("event in time");
        let chunk = chunk.expect("stream").expect("stream open");
        buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
}

/// A fallback post of `text` from a page of `origin`.
async fn post_text(client: &reqwest::Client, origin: &str, session: &str, seq: u64, text: &str) -> reqwest::Response {
    client
        .post(format!("{origin}/ws?session={session}&seq={seq}"))
        .header("origin", origin)
        .header("content-type", "text/plain")
        .body(text.to_string())
        .send()
        .await
        .expect("POST")
}

#[tokio::test]
async fn the_fallback_over_https_and_http2_passes_the_same_origin_check() {
    let ca = Ca::new();
    let files = TlsFiles::new(&ca.leaf());
    // One pending slot: the stream's connection must hand it back.
    let host = start(&files, &["--max-pending", "1"]).await;
    let client = https_client(&ca, host.addr, false);
    let origin = format!("https://localhost:{}", host.addr.port());
    // A browser on this host's page: Origin is the page's, and over HTTP/2
    // the host is only in :authority.
    let mut stream = client
        .get(format!("{origin}/ws"))
        .header("accept", "text/event-stream")
        .header("origin", &origin)
        .send()
        .await
        .expect("open the stream");
    assert_eq!((stream.status().as_u16(), stream.version()), (200, reqwest::Version::HTTP_2));
    let mut buffer = String::new();
    let (event, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(event, "open", "{data}");
    let open: serde_json::Value = serde_json::from_str(&data).expect("open JSON");
    let session = open["session"].as_str().expect("session id").to_string();

    let posted = post_text(&client, &origin, &session, 1, "over h2").await;
    assert_eq!((posted.status().as_u16(), posted.version()), (204, reqwest::Version::HTTP_2));
    let (event, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!((event.as_str(), data.as_str()), ("text", "\"over h2\""));

    // The HTTP/2 connection carrying the stream gave its pending slot back:
    // a new connection is served, and the stream's connection, no longer
    // pending, is not the one that gives way to it.
    let other = https_client(&ca, host.addr, false);
    let health = other.get(format!("{origin}/healthz")).send().await.expect("GET /healthz on a new connection");
    assert_eq!(health.status().as_u16(), 200);
    let posted = post_text(&client, &origin, &session, 2, "still open").await;
    assert_eq!(posted.status().as_u16(), 204);
    let (event, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!((event.as_str(), data.as_str()), ("text", "\"still open\""));

    // Another site's page is refused, over HTTP/2 as over HTTP/1.1.
    let refused = client
        .get(format!("{origin}/ws"))
        .header("accept", "text/event-stream")
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status().as_u16(), 403);
}

#[tokio::test]
async fn stalled_http2_post_bodies_are_cut_and_spare_new_clients() {
    let ca = Ca::new();
    let files = TlsFiles::new(&ca.leaf());
    let host = start(&files, &["--message-timeout", "2s"]).await;
    let origin = format!("https://localhost:{}", host.addr.port());
    let client = https_client(&ca, host.addr, false);
    let mut stream =
        client.get(format!("{origin}/ws")).header("accept", "text/event-stream").send().await.expect("open the stream");
    let mut buffer = String::new();
    let (_, data) = next_event(&mut stream, &mut buffer).await;
    let open: serde_json::Value = serde_json::from_str(&data).expect("open JSON");
    let session = open["session"].as_str().expect("session id").to_string();

    // 4 HTTP/2 connections with 50 streams each, every one sending most of
    // a body and stalling; half to the session, half to forged ones.
    let mut posts = Vec::new();
    for c in 0..4 {
        let conn = https_client(&ca, host.addr, false);
        for s in 0..50u64 {
            let target = if s % 2 == 0 { session.clone() } else { format!("c{c}x{s}.{}", "0".repeat(32)) };
            let part = bytes::Bytes::from(vec![b'x'; 60 << 10]);
            let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(part) })
                .chain(futures_util::stream::pending());
            let request = conn
                .post(format!("{origin}/ws?session={target}&seq={}", 1 + s % 16))
                .body(reqwest::Body::wrap_stream(body));
            posts.push(tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Meanwhile a new client is served over HTTP/2 and over a WebSocket.
    let other = https_client(&ca, host.addr, false);
    let health = other.get(format!("{origin}/healthz")).send().await.expect("GET /healthz");
    assert_eq!(health.status().as_u16(), 200);
    let mut ws = wss(&ca, host.addr, "/ws").await;
    assert_eq!(echo(&mut ws, Message::text("hi")).await, Message::text("hi"));
    // Every stalled body ends: forged sessions at once (404), the real
    // one's at the message timeout (408); none is held on.
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for post in posts {
        let outcome = tokio::time::timeout(Duration::from_secs(15), post).await.expect("a stalled post was held on");
        let key = match outcome.expect("task") {
            Ok(status) => status.to_string(),
            Err(_) => "closed".to_string(),
        };
        *statuses.entry(key).or_default() += 1;
    }
    assert!(statuses.keys().all(|k| ["404", "408", "closed"].contains(&k.as_str())), "{statuses:?}");
    eprintln!("stalled HTTP/2 posts ended: {statuses:?}");
    assert!(statuses.get("404").copied().unwrap_or(0) >= 90, "forged sessions refused: {statuses:?}");
    let held = eventually(
        "the budget given back",
        async || {
            let text = other.get(format!("{origin}/metrics")).send().await.expect("GET /metrics").text().await;
            let text = text.expect("metrics");
            text.lines().find_map(|l| l.strip_prefix("wasmsocket_receive_budget_bytes ")?.trim().parse::<f64>().ok())
        },
        |b| *b == Some(0.0),
    )
    .await;
    assert_eq!(held, Some(0.0), "{statuses:?}");
}
