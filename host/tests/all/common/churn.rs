//! Connection churn against a running host: clients that connect, do a
//! little, close (or drop the socket) and connect again, while the host's
//! resident memory is sampled. Shared by `tests/churn.rs` and
//! `benches/churn.rs` (included there by path).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What each cycle does, so the parts of a connection's life can be
/// churned apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// `/ws` (echo): handshake, `on-open`, close frame, `on-close`.
    Close,
    /// `/ws`: one echoed message, then a close frame.
    Echo,
    /// `/ws`: one echoed message, then the TCP connection dropped without
    /// a close frame.
    Abrupt,
    /// A plain GET of `/ws` that is refused (400): the HTTP phase alone.
    Refused,
    /// `/ws/testbed`: `state`, a room (join and broadcast), the key-value
    /// store (a bounded set of keys), then a close frame, or for every
    /// fourth cycle an abrupt drop.
    Mixed,
    /// `/ws` over the HTTP fallback: the event stream opens a session, one
    /// message is posted and echoed, a post closes it.
    Fallback,
}

impl Mix {
    pub fn parse(s: &str) -> Option<Mix> {
        Some(match s {
            "close" => Mix::Close,
            "echo" => Mix::Echo,
            "abrupt" => Mix::Abrupt,
            "refused" => Mix::Refused,
            "mixed" => Mix::Mixed,
            "fallback" => Mix::Fallback,
            _ => return None,
        })
    }

    pub fn path(self) -> &'static str {
        match self {
            Mix::Mixed => "/ws/testbed",
            _ => "/ws",
        }
    }
}

/// One RSS sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub cycles: u64,
    pub secs: f64,
    pub rss_kib: u64,
}

/// What a churn run saw.
#[derive(Debug)]
pub struct Run {
    pub samples: Vec<Sample>,
    pub cycles: u64,
    pub failures: u64,
    pub secs: f64,
}

impl Run {
    /// The samples from the midpoint of the run on.
    fn second_half(&self) -> impl Iterator<Item = &Sample> + Clone {
        let half = self.cycles / 2;
        self.samples.iter().filter(move |s| s.cycles >= half)
    }

    /// RSS growth per cycle over the second half: the least-squares slope
    /// of RSS against cycles, in bytes (single samples move by a few
    /// hundred KiB as the allocator takes and gives back pages; a leak is
    /// a trend).
    pub fn second_half_bytes_per_cycle(&self) -> f64 {
        let points: Vec<(f64, f64)> =
            self.second_half().map(|s| (s.cycles as f64, s.rss_kib as f64 * 1024.0)).collect();
        let n = points.len() as f64;
        if points.len() < 2 {
            return 0.0;
        }
        let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
        let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
        if sxx == 0.0 { 0.0 } else { sxy / sxx }
    }

    /// The trend's growth over the second half, in KiB (0 if it shrank).
    pub fn second_half_growth_kib(&self) -> u64 {
        let span = (self.cycles - self.cycles / 2) as f64;
        (self.second_half_bytes_per_cycle() * span / 1024.0).max(0.0).round() as u64
    }

    /// Highest less lowest RSS over the second half, in KiB: the noise
    /// around the trend.
    pub fn second_half_range_kib(&self) -> u64 {
        let high = self.second_half().map(|s| s.rss_kib).max().unwrap_or(0);
        let low = self.second_half().map(|s| s.rss_kib).min().unwrap_or(0);
        high - low
    }

    pub fn rate(&self) -> f64 {
        self.cycles as f64 / self.secs.max(1e-9)
    }
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs `cycles` connect/close cycles of `mix` from `clients` concurrent
/// clients against the host at `addr` (process `pid`), sampling its RSS
/// about `samples` times.
pub async fn churn(addr: SocketAddr, pid: u32, mix: Mix, clients: usize, cycles: u64, samples: u64) -> Run {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let url = format!("ws://{addr}{}", mix.path());
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (next, done, failures, url) = (next.clone(), done.clone(), failures.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cycles {
                    break;
                }
                let ok = tokio::time::timeout(Duration::from_secs(10), cycle(addr, &url, mix, i)).await;
                if !matches!(ok, Ok(true)) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    // A refused connect (a full backlog) is tried again
                    // later, not in a tight loop.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let every = (cycles / samples.max(1)).max(1);
    let mut out = vec![Sample { cycles: 0, secs: 0.0, rss_kib: rss_kib(pid) }];
    let mut next_sample = every;
    loop {
        let d = done.load(Ordering::Relaxed);
        if d >= next_sample || d >= cycles {
            out.push(Sample { cycles: d, secs: started.elapsed().as_secs_f64(), rss_kib: rss_kib(pid) });
            next_sample = (d / every + 1) * every;
        }
        if d >= cycles {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in workers {
        let _ = w.await;
    }
    Run { samples: out, cycles, failures: failures.load(Ordering::Relaxed), secs: started.elapsed().as_secs_f64() }
}

/// One connection's life; false if anything went wrong.
async fn cycle(addr: SocketAddr, url: &str, mix: Mix, i: u64) -> bool {
    if mix == Mix::Refused {
        return refused(addr).await;
    }
    if mix == Mix::Fallback {
        return fallback(&format!("http://{addr}{}", mix.path()), i).await.is_some();
    }
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else { return false };
    let ok = match mix {
        Mix::Close => true,
        Mix::Echo | Mix::Abrupt => ask(&mut ws, &format!("hello {i}")).await.is_some_and(|r| r == format!("hello {i}")),
        Mix::Mixed => mixed(&mut ws, i).await,
        Mix::Refused | Mix::Fallback => unreachable!("handled above"),
    };
    let abrupt = mix == Mix::Abrupt || (mix == Mix::Mixed && i % 4 == 3);
    if abrupt {
        // No close frame: the host sees the TCP connection end.
        drop(ws);
        return ok;
    }
    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    if ws.close(Some(bye)).await.is_err() {
        return false;
    }
    // Read until the host's close frame and the end of the stream.
    while let Some(Ok(_)) = ws.next().await {}
    ok
}

/// What the mixed cycle asks the testbed plugin: every piece of per-
/// connection and shared state a plugin can touch.
async fn mixed(ws: &mut Ws, i: u64) -> bool {
    let room = format!("room{}", i % 8);
    let steps = [
        (format!("set state-{i}"), Some("stored".to_string())),
        (format!("join {room}"), Some("ok".to_string())),
        (format!("kvset key{} value-{i}", i % 64), Some("ok".to_string())),
        (format!("bcast {room} hi-{i}"), None),
        (format!("incr counter{}", i % 16), None),
        ("get".to_string(), Some(format!("state-{i}"))),
    ];
    for (ask_for, want) in steps {
        match ask(ws, &ask_for).await {
            Some(got) if want.as_ref().is_none_or(|w| *w == got) => {}
            _ => return false,
        }
    }
    true
}

/// Sends `text`; the next text that is not another client's broadcast.
async fn ask(ws: &mut Ws, text: &str) -> Option<String> {
    ws.send(Message::text(text)).await.ok()?;
    loop {
        match ws.next().await? {
            // Another client's broadcast to the room.
            Ok(Message::Text(t)) if t.starts_with("hi-") => continue,
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

/// A GET without an upgrade: the host answers 400 and the client closes.
async fn refused(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = TcpStream::connect(addr).await else { return false };
    let request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    response.starts_with(b"HTTP/1.1 400")
}

/// One fallback session's life; `None` if anything went wrong.
async fn fallback(url: &str, i: u64) -> Option<()> {
    let http = reqwest::Client::new();
    let mut stream = http.get(url).header("accept", "text/event-stream").send().await.ok()?;
    if stream.status() != 200 {
        return None;
    }
    let mut buf = String::new();
    let open = next_event(&mut stream, &mut buf).await?;
    let data: serde_json::Value = serde_json::from_str(&open.1).ok()?;
    let session = data["session"].as_str()?.to_string();
    let post = |seq: u64, body: String, close: &str| {
        let url = format!("{url}?session={session}&seq={seq}{close}");
        http.post(url).header("content-type", "text/plain;charset=utf-8").body(body).send()
    };
    let text = format!("hello {i}");
    post(1, text.clone(), "").await.ok()?.status().is_success().then_some(())?;
    let echo = next_event(&mut stream, &mut buf).await?;
    (echo.0 == "text" && serde_json::from_str::<String>(&echo.1).ok()? == text).then_some(())?;
    post(2, "bye".into(), "&close=1000").await.ok()?.status().is_success().then_some(())?;
    // The close event, then the end of the stream.
    while next_event(&mut stream, &mut buf).await.is_some() {}
    Some(())
}

/// The next server-sent event (name, data) of a fallback stream.
async fn next_event(stream: &mut reqwest::Response, buf: &mut String) -> Option<(String, String)> {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut data, mut any) = ("message".to_string(), String::new(), false);
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_string(),
                    "data" => data.push_str(value),
                    _ => continue,
                }
                any = true;
            }
            if any {
                return Some((event, data));
            }
            continue;
        }
        let chunk = stream.chunk().await.ok()??;
        buf.push_str(std::str::from_utf8(&chunk).ok()?);
    }
}

/// The host's open connections, from `/healthz`.
pub async fn open_connections(addr: SocketAddr) -> Option<u64> {
    let health: serde_json::Value = reqwest::get(format!("http://{addr}/healthz")).await.ok()?.json().await.ok()?;
    health["connections"].as_u64()
}

/// Waits (at most `within`) for the host's connection count to reach 0;
/// the last count seen.
pub async fn drained(addr: SocketAddr, within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    loop {
        let n = open_connections(addr).await;
        if n == Some(0) || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
