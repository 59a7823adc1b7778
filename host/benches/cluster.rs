//! Cluster benchmark: what the Redis backplane adds to a broadcast and to a
//! directed send, against the same work on one host, side by side in one run.
//!
//! ```text
//! cargo bench --bench cluster                      # 1000 members, 10 rounds, 2000 sends
//! cargo bench --bench cluster -- --members 200 --rounds 3 --sends 300
//! ```
//!
//! Needs `redis-server` on PATH: it starts its own on a free port.
//!
//! Fan-out: N connections join one room, then one more connection on host A
//! broadcasts to it; the time from sending the broadcast until every member
//! has received its copy is one round. Three setups, all running at once and
//! taking rounds in turn, so the machine's noise falls on each alike: one
//! host without Redis (the in-process baseline), one host on Redis (the
//! cluster's code path: every broadcast is also published), and two hosts on
//! Redis with the members split evenly between them. The two Redis setups
//! are separate clusters (their own key prefix) on the one Redis.
//!
//! Directed sends: on two hosts on Redis, a client X on host A asks the
//! plugin to send a 64 B text to a connection Y, one at a time, alternately
//! to a Y on host A and a Y on host B; the time from X sending until Y has
//! it is one sample. Hosts, Redis and every client share this machine's
//! cores, so the wall times include the clients.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::redis_server::Redis;
use common::{PATIENCE, Ws, ask, connect_testbed as connect, linked, text};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

struct Options {
    members: usize,
    /// Timed broadcast rounds per setup.
    rounds: usize,
    /// Timed sends per target (same host, other host).
    sends: usize,
}

fn options() -> Options {
    let mut o = Options { members: 1000, rounds: 10, sends: 2000 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--members" => o.members = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.members).max(2),
            "--rounds" => o.rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.rounds).max(1),
            "--sends" => o.sends = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.sends).max(1),
            _ => {} // cargo passes --bench; ignore what we do not know
        }
    }
    o
}

fn main() {
    let o = options();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run(o));
}

async fn run(o: Options) {
    let redis = Redis::start().await;
    let dir = std::env::temp_dir().join(format!("wasmsocket-cluster-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("plugins")).expect("temp dir");
    std::fs::copy(env!("WASMSOCKET_TESTBED_WASM"), dir.join("plugins/testbed.wasm")).expect("copy plugin");

    println!(
        "wasmsocket cluster benchmark: redis-server on 127.0.0.1:{}, {} cores; hosts, Redis and clients share them\n",
        redis.port,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let n = o.members;
    println!("fan-out: one 64 B text broadcast to {n} room members, {} rounds per setup, taken in turn", o.rounds);
    println!(
        "{:<30} {:>10} {:>10} {:>14} {:>19} {:>19}",
        "setup", "median ms", "worst ms", "deliveries/s", "hosts CPU ms/round", "Redis CPU ms/round"
    );
    let mut setups = [
        Fanout::start("one host, no Redis", &dir, None, 1, n).await,
        Fanout::start("one host, Redis", &dir, Some((&redis, "bench-one")), 1, n).await,
        Fanout::start(
            &format!("two hosts, Redis ({} + {})", n.div_ceil(2), n / 2),
            &dir,
            Some((&redis, "bench-two")),
            2,
            n,
        )
        .await,
    ];
    // Round 0 is untimed: it proves every member is reachable and warms
    // the plugin's instances on every host. The order turns each round.
    for round in 0..=o.rounds {
        for k in 0..setups.len() {
            let i = (round + k) % setups.len();
            setups[i].round(round, n, &redis).await;
        }
    }
    for setup in &mut setups {
        setup.print(n, o.rounds);
    }
    let [_, one, two] = &setups;
    println!(
        "two hosts / one host (both on Redis): median {:.2}×, worst {:.2}×, deliveries/s {:.2}×",
        two.median().as_secs_f64() / one.median().as_secs_f64(),
        two.worst().as_secs_f64() / one.worst().as_secs_f64(),
        one.median().as_secs_f64() / two.median().as_secs_f64(),
    );
    // Their hosts and clients would only get in the sends' way.
    drop(setups);

    println!("\ndirected sends: X on host A asks to send 64 B to Y, {} sequential sends per Y, alternating", o.sends);
    println!("{:<30} {:>10} {:>10} {:>10}", "target", "p50 µs", "p99 µs", "worst µs");
    let (same, cross) = sends(&dir, &redis, o.sends).await;
    for (name, l) in [("Y on host A", &same), ("Y on host B (through Redis)", &cross)] {
        println!("{name:<30} {:>10.1} {:>10.1} {:>10.1}", p(l, 0.5), p(l, 0.99), p(l, 1.0));
    }
    println!(
        "added by the Redis hop: p50 +{:.1} µs, p99 +{:.1} µs",
        p(&cross, 0.5) - p(&same, 0.5),
        p(&cross, 0.99) - p(&same, 0.99)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host with the testbed plugin of `dir`, on `redis` (with its key
/// prefix) if given.
async fn host(dir: &Path, redis: Option<(&Redis, &str)>) -> common::Server {
    let mut cmd = common::wasmsocket();
    cmd.args(["--log", "warn", "--no-compile-cache", "--max-connections", "10100"]);
    cmd.arg("--plugins").arg(dir.join("plugins"));
    if let Some((redis, prefix)) = redis {
        // The prefix is a config file setting only; the URL is the flag.
        let config = dir.join(format!("{prefix}.toml"));
        std::fs::write(&config, format!("[redis]\nprefix = \"{prefix}\"\n")).expect("write config");
        cmd.arg("--config").arg(config).arg("--redis").arg(redis.url());
    }
    let server = common::start(cmd, false).await;
    if redis.is_some() {
        linked(server.addr).await;
    }
    server
}

/// One fan-out setup: its hosts, the room's members on them, and a
/// broadcaster on the first host.
struct Fanout {
    name: String,
    hosts: Vec<common::Server>,
    clustered: bool,
    sender: Ws,
    /// Each member reports the round of every copy it receives.
    done: tokio::sync::mpsc::UnboundedReceiver<usize>,
    times: Vec<Duration>,
    /// CPU ms spent in the timed rounds, by the hosts and by Redis.
    hosts_cpu: f64,
    redis_cpu: f64,
}

impl Fanout {
    /// `n` members spread evenly over `hosts` fresh hosts.
    async fn start(name: &str, dir: &Path, redis: Option<(&Redis, &str)>, hosts: usize, n: usize) -> Fanout {
        let mut servers = Vec::with_capacity(hosts);
        for _ in 0..hosts {
            servers.push(host(dir, redis).await);
        }
        let (done_tx, done) = tokio::sync::mpsc::unbounded_channel::<usize>();
        for i in 0..n {
            let mut ws = connect(servers[i % hosts].addr).await;
            assert_eq!(ask(&mut ws, "join room").await, "ok", "join");
            common::report_copies(ws, done_tx.clone());
        }
        let mut sender = connect(servers[0].addr).await;
        // Joins on other hosts reach A through Redis: time only once A
        // counts them all.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let count = ask(&mut sender, "count room").await;
            if count == n.to_string() {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: host A counts {count} members, not {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Fanout {
            name: name.into(),
            hosts: servers,
            clustered: redis.is_some(),
            sender,
            done,
            times: Vec::new(),
            hosts_cpu: 0.0,
            redis_cpu: 0.0,
        }
    }

    fn spent(&self) -> f64 {
        self.hosts.iter().map(|s| common::cpu_ms(s.child.id().expect("host running"))).sum()
    }

    /// Broadcasts once and waits for all `n` copies; round 0 is not timed.
    async fn round(&mut self, round: usize, n: usize, redis: &Redis) {
        let (hosts_before, redis_before) = (self.spent(), common::cpu_ms(redis.pid()));
        let started = Instant::now();
        self.sender.send(Message::text(format!("bcast room {}", "x".repeat(64)))).await.expect("broadcast");
        for _ in 0..n {
            let r = tokio::time::timeout(PATIENCE, self.done.recv()).await.expect("deliveries stalled");
            assert_eq!(r, Some(round), "{}: a member got a copy twice or missed one", self.name);
        }
        let elapsed = started.elapsed();
        assert_eq!(text(&mut self.sender).await, format!("delivered {n}"), "{}: broadcast count", self.name);
        if round > 0 {
            self.times.push(elapsed);
            self.hosts_cpu += self.spent() - hosts_before;
            self.redis_cpu += common::cpu_ms(redis.pid()) - redis_before;
        }
    }

    fn median(&self) -> Duration {
        self.times[self.times.len() / 2]
    }

    fn worst(&self) -> Duration {
        self.times[self.times.len() - 1]
    }

    fn print(&mut self, n: usize, rounds: usize) {
        self.times.sort();
        let per_round = |ms: f64| ms / rounds as f64;
        let redis = if self.clustered { format!("{:.1}", per_round(self.redis_cpu)) } else { "-".into() };
        println!(
            "{:<30} {:>10.2} {:>10.2} {:>14.0} {:>19.1} {redis:>19}",
            self.name,
            self.median().as_secs_f64() * 1e3,
            self.worst().as_secs_f64() * 1e3,
            n as f64 / self.median().as_secs_f64(),
            per_round(self.hosts_cpu),
        );
    }
}

/// Send latencies (ns, sorted) to a connection on host A and to one on
/// host B, from a client on host A.
async fn sends(dir: &Path, redis: &Redis, count: usize) -> (Vec<u64>, Vec<u64>) {
    let a = host(dir, Some((redis, "bench-sends"))).await;
    let b = host(dir, Some((redis, "bench-sends"))).await;
    let mut x = connect(a.addr).await;
    let mut targets = [connect(a.addr).await, connect(b.addr).await];
    let mut ids = Vec::new();
    for y in &mut targets {
        ids.push(ask(y, "whoami").await);
    }
    let host_of = |id: &str| id.rsplit_once('-').map(|(host, _)| host.to_string());
    assert_ne!(host_of(&ids[0]), host_of(&ids[1]), "both targets on one host: {ids:?}");

    // A few untimed sends first, as the fan-out's untimed round.
    let warmup = 50;
    let mut latencies = [Vec::with_capacity(count), Vec::with_capacity(count)];
    // Alternating, so the machine's noise falls on both targets alike.
    for i in 0..2 * (count + warmup) {
        let target = i % 2;
        let body = format!("{i:0>64}");
        let started = Instant::now();
        x.send(Message::text(format!("send {} {body}", ids[target]))).await.expect("send");
        let got = text(&mut targets[target]).await;
        let elapsed = started.elapsed();
        assert_eq!(got, body, "Y got another message");
        assert_eq!(text(&mut x).await, "sent", "send outcome");
        if i >= 2 * warmup {
            latencies[target].push(elapsed.as_nanos() as u64);
        }
    }
    let [mut same, mut cross] = latencies;
    same.sort_unstable();
    cross.sort_unstable();
    (same, cross)
}

/// Quantile `q` of sorted nanoseconds, in microseconds.
fn p(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len().max(1) - 1) as f64 * q) as usize;
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}
