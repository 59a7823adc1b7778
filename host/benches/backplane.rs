//! Backplane benchmark: what the Redis backplane costs hosts and Redis, the
//! per-operation figures the scaling model (docs/scaling.md) is built from,
//! and a simulation that checks the model's predictions.
//!
//! ```text
//! cargo bench --bench backplane                    # all four parts
//! cargo bench --bench backplane -- --baseline-bin OLD/wasmsocket --only interest
//! cargo bench --bench backplane -- --only simulate --connections 2000
//! # --only calibrate | interest | simulate (which calibrates first);
//! # --seconds (5) per measurement, --rooms (64) --members (8) --history (100) for part 1
//! ```
//!
//! Needs `redis-server` and `redis-cli` on PATH: it starts its own Redis and
//! its own 3-master/3-replica Redis Cluster on free loopback ports.
//!
//! 1. **Interest.** 4 hosts; `--rooms` rooms of `--members` members, each
//!    room living on one host (even rooms) or split over two (odd rooms);
//!    one sender per room on its first host broadcasts in a closed loop for
//!    `--seconds`. Reported per setup: broadcasts and deliveries per second,
//!    the room messages Redis delivered to each host, host and Redis CPU per
//!    broadcast and Redis commands per broadcast (`INFO commandstats` of the
//!    masters). Setups: per-room interest on one Redis and on the cluster,
//!    and, given `--baseline-bin` (a build of the release before per-room
//!    interest), the one-channel design on one Redis. Then both per-room
//!    setups again with room history on (`--history`, 100 broadcasts per
//!    room; 0 skips them): what keeping every broadcast in a Redis stream
//!    costs.
//! 2. **Calibrate.** Per-operation costs on the cluster, two hosts A and B,
//!    offered by 64 clients on A with timers of their own: a broadcast from
//!    A to a room with 1 and with 50 members on B (so host CPU splits into
//!    origin, Redis delivery and per-member copy), a directed send from A
//!    to a connection on B, a broadcast from clients whose instances
//!    hibernated in between (the cost of waking one), and what idle
//!    connections cost; Redis commands per operation and per join. Twice:
//!    at the simulation's pace (its hosts' room messages per second) and at
//!    `--pace` (default 2,000/s) for the model: a busier host spends less
//!    per operation.
//! 3. **Simulate.** 6 hosts with `--connections` (2,500) connections each on
//!    the cluster, placed on hosts at random as a load balancer would: 90%
//!    in rooms of 10, the rest in one big room with one publisher (1
//!    broadcast per second); every small-room member acts every `--period`
//!    (20 s): a directed send to a random connection one time in ten, a
//!    broadcast to its room otherwise. The model, fed with the placement
//!    and part 2's costs, predicts each host's CPU and Redis's commands per
//!    second; measured beside it, with memory per connection.
//! 4. **Model.** A million connections (the mix is stated in `model`):
//!    hosts, their CPU and memory, Redis commands and deliveries per
//!    second and shards, for rooms placed at random, placed by room, and
//!    in the one-channel design.
//!
//! Hosts, Redis and every client share this machine's cores.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::redis_server::{Redis, RedisCluster, RedisTarget};
use common::{PATIENCE, Ws, ask, connect_testbed as connect, linked};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Options {
    only: Option<String>,
    baseline: Option<PathBuf>,
    rooms: usize,
    members: usize,
    seconds: f64,
    pace: u64,
    connections: usize,
    period: f64,
    history: u32,
}

fn options() -> Options {
    let mut o = Options {
        only: None,
        baseline: None,
        rooms: 64,
        members: 8,
        seconds: 5.0,
        pace: 2000,
        connections: 2500,
        period: 20.0,
        history: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--only" => o.only = Some(value()),
            "--baseline-bin" => o.baseline = Some(PathBuf::from(value())),
            "--rooms" => o.rooms = value().parse().unwrap_or(o.rooms).max(4),
            "--members" => o.members = value().parse().unwrap_or(o.members).max(2),
            "--seconds" => o.seconds = value().parse().unwrap_or(o.seconds),
            "--pace" => o.pace = value().parse().unwrap_or(o.pace).max(10),
            "--connections" => o.connections = value().parse().unwrap_or(o.connections).max(100),
            "--period" => o.period = value().parse().unwrap_or(o.period),
            "--history" => o.history = value().parse().unwrap_or(o.history),
            _ => {} // cargo passes --bench
        }
    }
    o
}

/// Every host's warnings so far, printed if the benchmark fails: a client
/// closed with 1011 says little without its host's reason.
static HOST_LOGS: std::sync::Mutex<Vec<Arc<std::sync::Mutex<String>>>> = std::sync::Mutex::new(Vec::new());

fn main() {
    let default_hook = std::panic::take_hook();
    static PRINTED: std::sync::Once = std::sync::Once::new();
    std::panic::set_hook(Box::new(move |info| {
        PRINTED.call_once(|| {
            let Ok(logs) = HOST_LOGS.lock() else { return };
            for (i, log) in logs.iter().enumerate() {
                let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                for line in tail.iter().rev() {
                    eprintln!("host {i}: {line}");
                }
            }
        });
        default_hook(info);
    }));
    let o = options();
    // The simulation's clients need more descriptors than the usual soft limit.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run(o));
}

async fn run(o: Options) {
    let dir = std::env::temp_dir().join(format!("wasmsocket-backplane-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("plugins")).expect("temp dir");
    std::fs::copy(env!("WASMSOCKET_TESTBED_WASM"), dir.join("plugins/testbed.wasm")).expect("copy plugin");
    println!(
        "wasmsocket backplane benchmark: {} cores shared by hosts, Redis and clients; testbed plugin, 64 B texts\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let wants = |part: &str| o.only.as_deref().is_none_or(|only| only == part);
    let cluster = RedisCluster::start().await;
    let pushes = if wants("interest") { interest(&o, &dir, &cluster).await } else { None };
    if wants("calibrate") || wants("simulate") {
        // The simulation's hosts each take about this many room messages a
        // second; the costs it is predicted with are measured at that pace.
        let sim_pace = (o.connections as f64 * 0.09 * span(SIM_HOSTS as f64) * 9.0 / o.period) as u64;
        let sim_costs = calibrate(&o, &dir, &cluster, sim_pace.max(10), "at the simulation's pace").await;
        let costs = calibrate(&o, &dir, &cluster, o.pace, "at a high pace, for the model").await;
        if wants("simulate") {
            let sim = simulate(&o, &dir, &cluster, &sim_costs).await;
            model(&costs, pushes, &sim);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- Redis side

/// The Redis servers a setup runs on, as the benchmark measures them.
enum Backplane<'a> {
    Single(&'a Redis),
    Cluster(&'a RedisCluster),
}

impl Backplane<'_> {
    fn toml(&self) -> String {
        match self {
            Backplane::Single(r) => r.toml(),
            Backplane::Cluster(c) => c.toml(),
        }
    }

    fn nodes(&self) -> Vec<&Redis> {
        match self {
            Backplane::Single(r) => vec![r],
            Backplane::Cluster(c) => c.nodes.iter().collect(),
        }
    }

    /// The nodes serving as masters now: replicas repeat every write, so
    /// only masters' commands count as work asked of Redis.
    async fn masters(&self) -> Vec<&Redis> {
        let mut masters = Vec::new();
        for node in self.nodes() {
            if cli(node.port, &["info", "replication"]).await.contains("role:master") {
                masters.push(node);
            }
        }
        masters
    }

    async fn reset_stats(&self) {
        for node in self.nodes() {
            cli(node.port, &["config", "resetstat"]).await;
        }
    }

    /// Commands executed per master since the last reset (scripts' inner
    /// commands included), by command name.
    async fn commands(&self) -> Vec<HashMap<String, u64>> {
        let mut out = Vec::new();
        for node in self.masters().await {
            let mut calls = HashMap::new();
            for line in cli(node.port, &["info", "commandstats"]).await.lines() {
                // cmdstat_evalsha:calls=12,usec=...
                let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
                    continue;
                };
                let n = rest.split(',').find_map(|f| f.strip_prefix("calls=")).and_then(|v| v.parse().ok());
                // What the benchmark itself asks (INFO, CONFIG) is not the hosts' work.
                let base = name.split('|').next().unwrap_or(name);
                if !matches!(base, "info" | "config" | "cluster" | "ping" | "replconf") {
                    calls.insert(name.to_string(), n.unwrap_or(0));
                }
            }
            out.push(calls);
        }
        out
    }

    /// CPU ms the masters spent so far (replicas run on machines of their own).
    async fn cpu_ms(&self) -> f64 {
        self.masters().await.iter().map(|n| common::cpu_ms(n.pid())).sum()
    }
}

/// Runs `redis-cli -p PORT ARGS`; its output, or empty if it failed.
async fn cli(port: u16, args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().await;
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

fn total(per_master: &[HashMap<String, u64>]) -> u64 {
    per_master.iter().flat_map(|m| m.values()).sum()
}

// ---------------------------------------------------------------- hosts

struct Host {
    server: common::Server,
}

impl Host {
    /// A host on `backplane` with key prefix `prefix`, running `bin` (this
    /// build when None).
    async fn start(dir: &Path, backplane: &Backplane<'_>, prefix: &str, bin: Option<&Path>) -> Host {
        Host::start_with(dir, backplane, prefix, bin, "").await
    }

    /// With more lines in its `[limits]` table. Calls may take up to 1 s: on
    /// a saturated machine a broadcast's Redis round trip can pass the
    /// default 100 ms, which would end the client, not measure it.
    async fn start_with(dir: &Path, backplane: &Backplane<'_>, prefix: &str, bin: Option<&Path>, limits: &str) -> Host {
        static CONFIGS: AtomicU64 = AtomicU64::new(0);
        let mut cmd = match bin {
            Some(bin) => {
                let mut cmd = tokio::process::Command::new(bin);
                cmd.args(["--listen", "127.0.0.1:0"]);
                cmd
            }
            None => common::wasmsocket(),
        };
        let config = dir.join(format!("host{}.toml", CONFIGS.fetch_add(1, Ordering::Relaxed)));
        let redis = backplane.toml();
        // The testbed is a compiled plugin: its hosts keep its slots'
        // pages, as docs/performance.md advises for such hosts (an older
        // build knows no such key).
        let keep = if bin.is_none() { "keep_resident = \"1280KiB\"\n" } else { "" };
        std::fs::write(
            &config,
            format!(
                "max_instances = 5000\n{keep}[redis]\nprefix = \"{prefix}\"\n{redis}[limits]\ndeadline = \"1s\"\n{limits}"
            ),
        )
        .expect("write config");
        cmd.args(["--log", "warn", "--no-compile-cache", "--max-connections", "18000"]);
        cmd.arg("--plugins").arg(dir.join("plugins")).arg("--config").arg(config);
        let server = common::start(cmd, true).await;
        HOST_LOGS.lock().expect("host logs").push(server.log.clone());
        linked(server.addr).await;
        Host { server }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn cpu_ms(&self) -> f64 {
        common::cpu_ms(self.server.child.id().expect("host running"))
    }

    fn rss_kib(&self) -> f64 {
        let pid = self.server.child.id().expect("host running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
        rss.and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
    }

    /// A counter of its `/metrics`, summed over the label sets whose text
    /// contains `labels`.
    async fn metric(&self, name: &str, labels: &str) -> f64 {
        let body = reqwest::get(format!("http://{}/metrics", self.addr()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        body.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    /// Room messages Redis delivered to this host so far. The one-channel
    /// release counts those from other hosts only, and got its own back too.
    async fn room_messages(&self, baseline: bool) -> f64 {
        if baseline {
            self.metric("wasmsocket_redis_received_total", "Broadcast").await
                + self.metric("wasmsocket_redis_published_total", "Broadcast").await
        } else {
            self.metric("wasmsocket_redis_incoming_total", "Room").await
        }
    }
}

// ---------------------------------------------------------------- clients

/// Counts what a connection receives in the background: replies to its
/// own commands (`delivered N`, `sent`) and copies of others' messages.
#[derive(Default)]
struct Tally {
    replies: AtomicU64,
    copies: AtomicU64,
}

fn tally(mut stream: SplitStream<Ws>, tally: Arc<Tally>) {
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Text(t) = m {
                let reply = t.starts_with("delivered ") || t == "sent";
                let counter = if reply { &tally.replies } else { &tally.copies };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// A member of `room` on `addr`, counting the copies it gets.
async fn member(addr: SocketAddr, room: &str, counts: &Arc<Tally>) {
    let mut ws = connect(addr).await;
    assert_eq!(ask(&mut ws, &format!("join {room}")).await, "ok", "join {room}");
    tally(ws.split().1, counts.clone());
}

/// Waits until `counter` reaches `want`.
async fn reach(counter: &AtomicU64, want: u64, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while counter.load(Ordering::Relaxed) < want {
        assert!(Instant::now() < deadline, "{what}: {} of {want}", counter.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until host `addr` counts `n` members in `room`, wherever they are.
async fn counted(addr: SocketAddr, room: &str, n: usize) {
    let mut ws = connect(addr).await;
    let deadline = Instant::now() + PATIENCE;
    while ask(&mut ws, &format!("count {room}")).await != n.to_string() {
        assert!(Instant::now() < deadline, "{room} never counted {n} members");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- part 1

/// Part 1's prices, known when the baseline ran: CPU µs of one room
/// message Redis delivers to a host, for Redis and for a host that throws
/// it away (the one-channel design); and of a broadcast on the cluster's
/// masters without its deliveries.
#[derive(Clone, Copy)]
struct PushCost {
    redis: f64,
    host: f64,
    cluster_broadcast: f64,
}

/// Hosts of part 1.
const INTEREST_HOSTS: usize = 4;

async fn interest(o: &Options, dir: &Path, cluster: &RedisCluster) -> Option<PushCost> {
    let hosts = INTEREST_HOSTS;
    println!(
        "1. interest: {hosts} hosts, {} rooms of {} members (even rooms on one host, odd rooms on two), \
         one sender per room broadcasting in a closed loop for {} s",
        o.rooms, o.members, o.seconds
    );
    println!(
        "{:<34} {:>9} {:>11} {:>24} {:>10} {:>10} {:>10} {:>10}",
        "setup", "bcast/s", "deliveries/s", "room msgs per host", "Redis→hosts", "host CPU", "Redis CPU", "Redis cmds"
    );
    println!(
        "{:<34} {:>9} {:>11} {:>24} {:>10} {:>10} {:>10} {:>10}",
        "", "", "", "(per bcast, hosts 0..3)", "per bcast", "µs/bcast", "µs/bcast", "per bcast"
    );
    let single = Redis::start().await;
    let mut setups: Vec<(String, Backplane, Option<&Path>)> = Vec::new();
    if let Some(bin) = &o.baseline {
        setups.push(("one channel (baseline), one Redis".into(), Backplane::Single(&single), Some(bin.as_path())));
    }
    setups.push(("per-room interest, one Redis".into(), Backplane::Single(&single), None));
    setups.push(("per-room interest, 3-master cluster".into(), Backplane::Cluster(cluster), None));
    let mut rows = Vec::new();
    for (i, (name, backplane, bin)) in setups.iter().enumerate() {
        rows.push(interest_setup(o, dir, name, backplane, *bin, &format!("interest{i}"), "").await);
    }
    // The same with room history on: what keeping each broadcast costs.
    if o.history > 0 {
        let keep = format!("history_size = {}\nhistory_ttl = \"5m\"\n", o.history);
        for (i, (name, backplane)) in [
            (format!("history {}, one Redis", o.history), Backplane::Single(&single)),
            (format!("history {}, 3-master cluster", o.history), Backplane::Cluster(cluster)),
        ]
        .iter()
        .enumerate()
        {
            interest_setup(o, dir, name, backplane, None, &format!("history{i}"), &keep).await;
        }
    }
    // One Redis, both designs: the same broadcasts, fewer room messages
    // delivered. The difference prices one room message on each side.
    let [one_channel, per_room, cluster] = rows[..] else { return None };
    let fewer = one_channel.delivered - per_room.delivered;
    let redis = (one_channel.redis_cpu - per_room.redis_cpu) / fewer;
    let cost = PushCost {
        redis,
        host: (one_channel.host_cpu - per_room.host_cpu) / fewer,
        // A price lost in the noise counts as nothing.
        cluster_broadcast: cluster.redis_cpu - cluster.delivered * redis.max(0.0),
    };
    println!(
        "one Redis: per-room interest delivers {fewer:.2} fewer room messages per broadcast; each cost Redis \
         {:.1} µs and the hosts {:.1} µs; a broadcast costs the cluster's masters {:.1} µs besides its deliveries",
        cost.redis, cost.host, cost.cluster_broadcast
    );
    Some(cost)
}

/// One setup's figures per broadcast.
#[derive(Clone, Copy)]
struct Interest {
    /// Room messages Redis delivered to hosts.
    delivered: f64,
    /// CPU µs of all hosts and of the Redis masters.
    host_cpu: f64,
    redis_cpu: f64,
}

async fn interest_setup(
    o: &Options,
    dir: &Path,
    name: &str,
    backplane: &Backplane<'_>,
    bin: Option<&Path>,
    prefix: &str,
    limits: &str,
) -> Interest {
    let hosts = INTEREST_HOSTS;
    let mut servers = Vec::new();
    for _ in 0..hosts {
        servers.push(Host::start_with(dir, backplane, prefix, bin, limits).await);
    }
    let copies = Arc::new(Tally::default());
    let mut senders = Vec::new();
    for r in 0..o.rooms {
        let room = format!("room{r}");
        let first = r % hosts;
        let spans: Vec<usize> = if r % 2 == 1 { vec![first, (first + 1) % hosts] } else { vec![first] };
        for m in 0..o.members {
            member(servers[spans[m % spans.len()]].addr(), &room, &copies).await;
        }
        senders.push((room, servers[first].addr()));
    }
    for (room, addr) in &senders {
        counted(*addr, room, o.members).await;
    }
    // A few untimed rounds warm every instance, then the counters start.
    let mut sockets = Vec::new();
    for (room, addr) in &senders {
        let mut ws = connect(*addr).await;
        assert!(ask(&mut ws, &format!("bcast {room} {PAYLOAD}")).await.starts_with("delivered"));
        sockets.push((room.clone(), ws));
    }
    reach(&copies.copies, (o.rooms * o.members) as u64, name).await;
    copies.copies.store(0, Ordering::Relaxed);
    backplane.reset_stats().await;
    let baseline = bin.is_some();
    let mut before = Vec::new();
    for h in &servers {
        before.push((h.room_messages(baseline).await, h.cpu_ms()));
    }
    let redis_cpu = backplane.cpu_ms().await;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(o.seconds);
    let mut loops = Vec::new();
    for (room, mut ws) in sockets {
        loops.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                let reply = ask(&mut ws, &format!("bcast {room} {PAYLOAD}")).await;
                assert!(reply.starts_with("delivered"), "{room}: {reply}");
                n += 1;
            }
            n
        }));
    }
    let mut broadcasts = 0;
    for l in loops {
        broadcasts += l.await.expect("sender");
    }
    let sent_for = started.elapsed().as_secs_f64();
    reach(&copies.copies, broadcasts * o.members as u64, &format!("{name}: copies")).await;
    let mut per_host = Vec::new();
    let mut host_cpu = 0.0;
    for (h, (messages, cpu)) in servers.iter().zip(&before) {
        per_host.push((h.room_messages(baseline).await - messages) / broadcasts as f64);
        host_cpu += h.cpu_ms() - cpu;
    }
    let commands = backplane.commands().await;
    let redis_cpu = backplane.cpu_ms().await - redis_cpu;
    let b = broadcasts as f64;
    println!(
        "{name:<34} {:>9.0} {:>11.0} {:>24} {:>10.2} {:>10.1} {:>10.1} {:>10.2}",
        b / sent_for,
        b * o.members as f64 / sent_for,
        per_host.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" "),
        per_host.iter().sum::<f64>(),
        host_cpu * 1e3 / b,
        redis_cpu * 1e3 / b,
        total(&commands) as f64 / b,
    );
    Interest { delivered: per_host.iter().sum(), host_cpu: host_cpu * 1e3 / b, redis_cpu: redis_cpu * 1e3 / b }
}

// ---------------------------------------------------------------- part 2

/// Measured per-operation costs: host CPU in µs, Redis commands executed.
struct Costs {
    /// On the broadcasting host, per broadcast (the client's frame, the
    /// plugin call, the script, the reply).
    origin: f64,
    /// More on the sender's host when the sender's instance had hibernated
    /// (`limits.hibernate_after`) and is made afresh for the call.
    wake: f64,
    /// On a host with members, per room message Redis delivers to it.
    incoming: f64,
    /// Per copy written to a member's socket.
    copy: f64,
    /// More on the receiver's host when the receiver's socket rested (its
    /// buffers are made again).
    rest_wake: f64,
    /// A directed send to another host's connection: on the sender's host
    /// and on the receiver's.
    send_origin: f64,
    send_incoming: f64,
    /// Per open connection and second with no traffic (keep-alive pings).
    idle: f64,
    /// Redis commands executed per broadcast, per directed send, per join.
    redis_bcast: f64,
    redis_send: f64,
    redis_join: f64,
    /// Redis CPU µs per broadcast with one listening host.
    redis_cpu_bcast: f64,
}

/// What one host does per second, as the model counts it.
#[derive(Default)]
struct Load {
    /// Open connections.
    connections: f64,
    /// Broadcasts its clients ask for.
    origins: f64,
    /// The share of its clients' broadcasts and sends whose instance had
    /// hibernated.
    woken: f64,
    /// Room messages Redis delivers to it (its own broadcasts included,
    /// when it has members in the room).
    incoming: f64,
    /// Copies written to its members' sockets.
    copies: f64,
    /// Copies and sends that find their receiver's socket resting.
    socket_wakes: f64,
    /// Directed sends its clients ask for, and those it receives from
    /// other hosts.
    sends_out: f64,
    sends_in: f64,
}

impl Costs {
    /// CPU µs per second a host spends on `load`.
    fn host_cpu(&self, load: &Load) -> f64 {
        load.connections * self.idle
            + load.origins * self.origin
            + (load.origins + load.sends_out) * load.woken * self.wake
            + load.incoming * self.incoming
            + load.copies * self.copy
            + load.socket_wakes * self.rest_wake
            + load.sends_out * self.send_origin
            + load.sends_in * self.send_incoming
    }

    /// Redis commands per second: broadcasts, sends that cross hosts, joins.
    fn redis_commands(&self, broadcasts: f64, cross_sends: f64, joins: f64) -> f64 {
        broadcasts * self.redis_bcast + cross_sends * self.redis_send + joins * self.redis_join
    }
}

/// Offers `total` commands at `pace` per second from `senders`, each
/// `command(i)`; waits for every reply. Each sender ticks on its own
/// timer, their phases spread over the period, as clients' timers are:
/// what a host spends per operation depends on how arrivals bunch.
async fn offer(
    senders: &mut [(SplitSink<Ws, Message>, Arc<Tally>)],
    total: u64,
    pace: u64,
    command: &(dyn Fn(u64) -> String + Sync),
) {
    let n = senders.len() as u64;
    let period = Duration::from_secs_f64(n as f64 / pace as f64);
    let before: u64 = senders.iter().map(|(_, t)| t.replies.load(Ordering::Relaxed)).sum();
    let start = tokio::time::Instant::now();
    futures_util::future::join_all(senders.iter_mut().enumerate().map(|(k, (sink, _))| async move {
        let mut tick = tokio::time::interval_at(start + period.mul_f64(k as f64 / n as f64), period);
        let mut i = k as u64;
        while i < total {
            tick.tick().await;
            sink.send(Message::text(command(i))).await.expect("send");
            i += n;
        }
    }))
    .await;
    let deadline = Instant::now() + PATIENCE;
    while senders.iter().map(|(_, t)| t.replies.load(Ordering::Relaxed)).sum::<u64>() < before + total {
        assert!(Instant::now() < deadline, "replies missing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn senders(addr: SocketAddr, n: usize) -> Vec<(SplitSink<Ws, Message>, Arc<Tally>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (sink, stream) = connect(addr).await.split();
        let t = Arc::new(Tally::default());
        tally(stream, t.clone());
        out.push((sink, t));
    }
    out
}

async fn calibrate(o: &Options, dir: &Path, cluster: &RedisCluster, pace: u64, why: &str) -> Costs {
    let backplane = Backplane::Cluster(cluster);
    let prefix = format!("calibrate{pace}");
    let a = Host::start(dir, &backplane, &prefix, None).await;
    let b = Host::start(dir, &backplane, &prefix, None).await;
    let ops = (pace as f64 * o.seconds) as u64;
    println!(
        "\n2. calibrate ({why}): hosts A and B on the 3-master cluster, {ops} operations per row offered at \
         {pace} per second by 64 clients on A"
    );
    println!(
        "{:<46} {:>12} {:>12} {:>12} {:>12}",
        "operation", "A CPU µs/op", "B CPU µs/op", "Redis cmds", "Redis CPU µs"
    );
    let mut from_a = senders(a.addr(), 64).await;
    let mut rows = Vec::new();
    for (room, k) in [("one", 1usize), ("fifty", 50)] {
        let copies = Arc::new(Tally::default());
        backplane.reset_stats().await;
        for _ in 0..k {
            member(b.addr(), room, &copies).await;
        }
        let joins = total(&backplane.commands().await) as f64 / k as f64;
        counted(a.addr(), room, k).await;
        let command = |_: u64| format!("bcast {room} {PAYLOAD}");
        offer(&mut from_a, 200, pace, &command).await; // warm-up
        reach(&copies.copies, 200 * k as u64, "warm-up copies").await;
        let meter = Meter::start(&a, &b, &backplane).await;
        offer(&mut from_a, ops, pace, &command).await;
        reach(&copies.copies, (200 + ops) * k as u64, "copies").await;
        let row = meter.finish(&a, &b, &backplane).await;
        print_row(&format!("broadcast, {k} member(s) on B"), row, ops);
        rows.push((row, joins));
    }
    // Directed sends from A to a connection on B.
    let mut target = connect(b.addr()).await;
    let id = ask(&mut target, "whoami").await;
    let (_, stream) = target.split();
    let got = Arc::new(Tally::default());
    tally(stream, got.clone());
    let command = |_: u64| format!("send {id} {PAYLOAD}");
    offer(&mut from_a, 200, pace, &command).await;
    reach(&got.copies, 200, "warm-up sends").await;
    let meter = Meter::start(&a, &b, &backplane).await;
    offer(&mut from_a, ops, pace, &command).await;
    reach(&got.copies, 200 + ops, "sends").await;
    let send = meter.finish(&a, &b, &backplane).await;
    print_row("directed send, A to a connection on B", send, ops);
    // The same sends to many connections on B in turn, each getting one
    // every few seconds: its socket rests in between, as a simulated
    // member's does (it rests after a second without traffic).
    let idle_clients = (4 * pace as usize).clamp(512, 4096);
    let mut targets = Vec::with_capacity(idle_clients);
    for chunk in 0..idle_clients.div_ceil(256) {
        let n = 256.min(idle_clients - chunk * 256);
        targets.extend(
            futures_util::future::join_all((0..n).map(|_| async {
                let mut ws = connect(b.addr()).await;
                let id = ask(&mut ws, "whoami").await;
                tally(ws.split().1, got.clone());
                id
            }))
            .await,
        );
    }
    let command = |i: u64| format!("send {} {PAYLOAD}", targets[i as usize % targets.len()]);
    tokio::time::sleep(Duration::from_millis(1500)).await; // their sockets rest
    let meter = Meter::start(&a, &b, &backplane).await;
    offer(&mut from_a, ops, pace, &command).await;
    reach(&got.copies, 200 + 2 * ops, "sends to resting sockets").await;
    let send_resting = meter.finish(&a, &b, &backplane).await;
    print_row(&format!("directed send, A to {idle_clients} resting on B"), send_resting, ops);
    // Broadcasts from clients whose instance hibernated and whose socket
    // rests: on a host A' whose instances hibernate 100 ms after their
    // event, as many clients taking turns, so each comes back after both.
    let woken = Host::start_with(dir, &backplane, &prefix, None, "hibernate_after = \"100ms\"\n").await;
    let mut from_woken = senders(woken.addr(), idle_clients).await;
    let command = |_: u64| format!("bcast one {PAYLOAD}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let meter = Meter::start(&woken, &b, &backplane).await;
    offer(&mut from_woken, ops, pace, &command).await;
    let hibernated = meter.finish(&woken, &b, &backplane).await;
    print_row("broadcast, 1 member on B, from A' (woken)", hibernated, ops);
    // What open connections cost with no traffic: keep-alive pings (every
    // 30 s), timers. On a fresh host, as many as a simulated host holds.
    let quiet = Host::start(dir, &backplane, &prefix, None).await;
    let mut held = Vec::new();
    for chunk in 0..o.connections.div_ceil(256) {
        let n = 256.min(o.connections - chunk * 256);
        held.extend(futures_util::future::join_all((0..n).map(|_| connect(quiet.addr()))).await);
    }
    // Past `hibernate_after` (10 s), so their instances are gone as an idle
    // connection's are.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (cpu, idle_for) = (quiet.cpu_ms(), Duration::from_secs_f64(o.seconds.max(30.0)));
    tokio::time::sleep(idle_for).await;
    let idle = (quiet.cpu_ms() - cpu) * 1e3 / idle_for.as_secs_f64() / held.len() as f64;
    println!("{:<46} {idle:>12.2} µs per second per connection", format!("{} idle connections", held.len()));
    drop(held);
    let per = |x: f64| x / ops as f64;
    let ((one, join_one), (fifty, join_fifty)) = (rows[0], rows[1]);
    let copy = (per(fifty.1) - per(one.1)) / 49.0;
    let costs = Costs {
        origin: (per(one.0) + per(fifty.0)) / 2.0,
        wake: per(hibernated.0) - per(one.0),
        idle,
        incoming: per(one.1) - copy,
        copy,
        send_origin: per(send.0),
        send_incoming: per(send.1),
        rest_wake: per(send_resting.1) - per(send.1),
        redis_bcast: per(one.2),
        redis_send: per(send.2),
        // The first join of a room on a host also subscribes; most do not.
        redis_join: join_fifty.min(join_one),
        redis_cpu_bcast: per(one.3),
    };
    println!(
        "per operation: origin {:.1} µs (+{:.1} µs woken), room message in {:.1} µs, copy {:.1} µs (+{:.1} µs to a \
         resting socket); send out {:.1} µs, \
         in {:.1} µs; idle {:.2} µs/s per connection; Redis commands: broadcast {:.2}, send {:.2}, join {:.2}; \
         Redis CPU per broadcast {:.1} µs",
        costs.origin,
        costs.wake,
        costs.incoming,
        costs.copy,
        costs.rest_wake,
        costs.send_origin,
        costs.send_incoming,
        costs.idle,
        costs.redis_bcast,
        costs.redis_send,
        costs.redis_join,
        costs.redis_cpu_bcast
    );
    costs
}

/// One operation's row: per operation, host A CPU µs, host B CPU µs,
/// Redis commands, Redis CPU µs.
fn print_row(name: &str, (a, b, commands, redis): (f64, f64, f64, f64), ops: u64) {
    let ops = ops as f64;
    println!("{name:<46} {:>12.1} {:>12.1} {:>12.2} {:>12.1}", a / ops, b / ops, commands / ops, redis / ops);
}

/// What hosts A and B and Redis spend from `start` to `finish`.
struct Meter {
    a: f64,
    b: f64,
    redis: f64,
}

impl Meter {
    async fn start(a: &Host, b: &Host, backplane: &Backplane<'_>) -> Meter {
        backplane.reset_stats().await;
        Meter { a: a.cpu_ms(), b: b.cpu_ms(), redis: backplane.cpu_ms().await }
    }

    /// Host A CPU µs, host B CPU µs, Redis commands and Redis CPU µs.
    async fn finish(self, a: &Host, b: &Host, backplane: &Backplane<'_>) -> (f64, f64, f64, f64) {
        let commands = total(&backplane.commands().await) as f64;
        (
            (a.cpu_ms() - self.a) * 1e3,
            (b.cpu_ms() - self.b) * 1e3,
            commands,
            (backplane.cpu_ms().await - self.redis) * 1e3,
        )
    }
}

// ---------------------------------------------------------------- part 3

/// A small pseudo-random generator (xorshift): the placement is the same
/// in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// What the simulation measured that the model reuses.
struct Simulated {
    /// Resident KiB per connection at the simulation's activity.
    kib_per_conn: f64,
    /// A fresh host's resident MiB.
    base_mib: f64,
    /// Redis masters' CPU µs per broadcast.
    redis_cpu_per_bcast: f64,
    /// Hosts' measured CPU over the model's prediction.
    host_cpu_ratio: f64,
    /// The share of connections holding a plugin instance.
    instance_share: f64,
}

const SIM_HOSTS: usize = 6;

/// The chance that a message finds its receiver's socket resting, when the
/// receiver's traffic (all it sends and gets) comes at `rate` per second at
/// random: a socket rests after a second without any (connection.rs).
fn resting(rate: f64) -> f64 {
    (-rate).exp()
}

/// Hosts a room of 10 spans when its members land on `hosts` hosts at random.
fn span(hosts: f64) -> f64 {
    hosts * (1.0 - (1.0 - 1.0 / hosts).powf(10.0))
}

async fn simulate(o: &Options, dir: &Path, cluster: &RedisCluster, costs: &Costs) -> Simulated {
    let hosts = SIM_HOSTS;
    let total_conns = hosts * o.connections;
    let small = total_conns * 9 / 10 / 10;
    let big = total_conns - small * 10;
    let direct_share = 0.1;
    println!(
        "\n3. simulate: {hosts} hosts on the 3-master cluster, {total_conns} connections placed at random: \
         {small} rooms of 10, one room of {big} with one publisher at 1/s; each small-room member acts every {} s \
         (1 in 10 a directed send to a random connection, else a broadcast to its room)",
        o.period
    );
    let backplane = Backplane::Cluster(cluster);
    let mut servers = Vec::new();
    for _ in 0..hosts {
        servers.push(Host::start(dir, &backplane, "simulate", None).await);
    }
    let fresh: Vec<f64> = servers.iter().map(Host::rss_kib).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Connection c: its host and its room (None: the big room).
    let placement: Vec<(usize, Option<usize>)> =
        (0..total_conns).map(|c| (rng.below(hosts), (c < small * 10).then_some(c / 10))).collect();
    let copies = Arc::new(Tally::default());
    let mut ids = Vec::with_capacity(total_conns);
    let mut sockets = Vec::with_capacity(total_conns);
    let connect_started = Instant::now();
    for chunk in placement.chunks(256) {
        let joined = futures_util::future::join_all(chunk.iter().map(|&(h, room)| {
            let addr = servers[h].addr();
            async move {
                let mut ws = connect(addr).await;
                let id = ask(&mut ws, "whoami").await;
                let room = room.map_or("big".to_string(), |r| format!("small{r}"));
                assert_eq!(ask(&mut ws, &format!("join {room}")).await, "ok");
                (id, ws)
            }
        }))
        .await;
        for (id, ws) in joined {
            ids.push(id);
            sockets.push(ws);
        }
    }
    println!("connected and joined in {:.1} s", connect_started.elapsed().as_secs_f64());
    counted(servers[0].addr(), "big", big).await;

    // The model's prediction, from the placement and part 2's costs.
    let rate = 1.0 / o.period; // actions per small-room member per second
    let bcast_rate = rate * (1.0 - direct_share);
    let send_rate = rate * direct_share;
    let mut on_host = vec![[0usize; 2]; hosts]; // [small members, big members]
    let mut room_hosts: Vec<HashMap<usize, usize>> = vec![HashMap::new(); small];
    for &(h, room) in &placement {
        match room {
            Some(r) => {
                on_host[h][0] += 1;
                *room_hosts[r].entry(h).or_default() += 1;
            }
            None => on_host[h][1] += 1,
        }
    }
    let publisher = placement.iter().position(|(_, r)| r.is_none()).expect("a big-room member");
    let publisher_host = placement[publisher].0;
    let big_hosts = (0..hosts).filter(|&h| on_host[h][1] > 0).count();
    let predicted_cpu: Vec<f64> = (0..hosts)
        .map(|h| {
            let members_here = on_host[h][0] as f64;
            let publishes = if h == publisher_host { 1.0 } else { 0.0 };
            let mut load = Load {
                connections: (on_host[h][0] + on_host[h][1]) as f64,
                origins: members_here * bcast_rate + publishes,
                // A member idle longer than `hibernate_after` (10 s) lost its instance.
                woken: if o.period > 10.0 { members_here * rate / (members_here * rate + publishes) } else { 0.0 },
                sends_out: members_here * send_rate,
                // The big room: one broadcast a second, a copy to each member but the publisher.
                incoming: if on_host[h][1] > 0 { 1.0 } else { 0.0 },
                copies: on_host[h][1] as f64 - publishes,
                ..Load::default()
            };
            // Every broadcast of a room with a member here comes from Redis;
            // a copy to each member here but the sender.
            for spans in &room_hosts {
                if let Some(&here) = spans.get(&h) {
                    load.incoming += 10.0 * bcast_rate;
                    load.copies += 9.0 * bcast_rate * here as f64;
                }
            }
            // Sends to random connections: those here from elsewhere.
            let share = (on_host[h][0] + on_host[h][1]) as f64 / total_conns as f64;
            load.sends_in = (small * 10) as f64 * send_rate * share * (1.0 - share);
            // A small-room member's traffic: its room's copies, its own
            // actions and their replies; a big-room member's: one a second.
            let big_copies = on_host[h][1] as f64 - publishes;
            let small_traffic = 9.0 * bcast_rate + 2.0 * rate;
            load.socket_wakes =
                (load.copies - big_copies + load.sends_in) * resting(small_traffic) + big_copies * resting(1.0);
            costs.host_cpu(&load)
        })
        .collect();
    let bcasts = (small * 10) as f64 * bcast_rate + 1.0;
    let sends = (small * 10) as f64 * send_rate;
    let avg_room_hosts = room_hosts.iter().map(|s| s.len()).sum::<usize>() as f64 / small as f64;
    // Cross-host sends go through Redis; a send to the same host does not.
    let predicted_redis = costs.redis_commands(bcasts, sends * (1.0 - 1.0 / hosts as f64), 0.0);

    // Drive: each small-room member acts every period, at a random phase.
    let sent_bcasts = Arc::new(AtomicU64::new(0));
    let sent_direct = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (c, ws) in sockets.into_iter().enumerate() {
        let (mut sink, stream) = ws.split();
        tally(stream, copies.clone());
        let room = placement[c].1;
        if room.is_none() && c != publisher {
            continue; // a listener of the big room
        }
        let period = if room.is_some() { Duration::from_secs_f64(o.period) } else { Duration::from_secs(1) };
        let phase = Duration::from_secs_f64(period.as_secs_f64() * rng.below(1000) as f64 / 1000.0);
        let target = ids[rng.below(ids.len())].clone();
        let pick = rng.below(10);
        let (mut stop, sent_bcasts, sent_direct) = (stop.clone(), sent_bcasts.clone(), sent_direct.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
            let mut round = pick;
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => {}
                }
                round += 1;
                let command = match room {
                    Some(_) if round.is_multiple_of(10) => {
                        sent_direct.fetch_add(1, Ordering::Relaxed);
                        format!("send {target} {PAYLOAD}")
                    }
                    Some(r) => {
                        sent_bcasts.fetch_add(1, Ordering::Relaxed);
                        format!("bcast small{r} {PAYLOAD}")
                    }
                    None => {
                        sent_bcasts.fetch_add(1, Ordering::Relaxed);
                        format!("bcast big {PAYLOAD}")
                    }
                };
                if sink.send(Message::text(command)).await.is_err() {
                    break;
                }
            }
        }));
    }
    // One period untimed, so every phase has started and instances are warm.
    tokio::time::sleep(Duration::from_secs_f64(o.period)).await;
    let window = Duration::from_secs_f64(o.seconds.max(o.period * 2.0));
    backplane.reset_stats().await;
    let before: Vec<f64> = servers.iter().map(Host::cpu_ms).collect();
    let redis_before = backplane.cpu_ms().await;
    let (b0, s0) = (sent_bcasts.load(Ordering::Relaxed), sent_direct.load(Ordering::Relaxed));
    tokio::time::sleep(window).await;
    let spent: Vec<f64> = servers.iter().zip(&before).map(|(h, b)| h.cpu_ms() - b).collect();
    let grown: f64 = servers.iter().zip(&fresh).map(|(h, f)| h.rss_kib() - f).sum();
    let mut instances = 0.0;
    for h in &servers {
        instances += h.metric("wasmsocket_instances", "").await;
    }
    let commands = backplane.commands().await;
    let redis_cpu = backplane.cpu_ms().await - redis_before;
    let (b1, s1) = (sent_bcasts.load(Ordering::Relaxed), sent_direct.load(Ordering::Relaxed));
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let secs = window.as_secs_f64();
    println!(
        "memory: {:.1} KiB resident per connection (hosts' growth over their fresh size), \
         {instances:.0} plugin instances live of {total_conns} connections",
        grown / total_conns as f64
    );
    println!(
        "offered {:.0} broadcasts/s and {:.0} directed sends/s (model: {bcasts:.0} and {sends:.0}); \
         a small room spans {avg_room_hosts:.2} hosts on average, the big room {big_hosts}",
        (b1 - b0) as f64 / secs,
        (s1 - s0) as f64 / secs
    );
    println!("{:<10} {:>22} {:>22} {:>8}", "host", "predicted CPU ms/s", "measured CPU ms/s", "ratio");
    for h in 0..hosts {
        let measured = spent[h] / secs;
        let predicted = predicted_cpu[h] / 1e3;
        println!("{:<10} {predicted:>22.1} {measured:>22.1} {:>8.2}", format!("host {h}"), measured / predicted);
    }
    let measured_redis = total(&commands) as f64 / secs;
    println!(
        "{:<10} {predicted_redis:>22.0} {measured_redis:>22.0} {:>8.2}   (Redis commands/s, all masters)",
        "Redis",
        measured_redis / predicted_redis
    );
    for (i, m) in commands.iter().enumerate() {
        let mut by_name: Vec<(&String, &u64)> = m.iter().collect();
        by_name.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = by_name.iter().take(6).map(|(k, v)| format!("{k} {:.0}", **v as f64 / secs)).collect();
        println!("  master {i}: {:.0} commands/s: {}", m.values().sum::<u64>() as f64 / secs, top.join(", "));
    }
    let mut open = 0.0;
    for h in &servers {
        open += h.metric("wasmsocket_connections_open", "").await;
    }
    println!("  connections open at the end: {open:.0} of {total_conns}");
    Simulated {
        kib_per_conn: grown / total_conns as f64,
        base_mib: fresh.iter().sum::<f64>() / fresh.len() as f64 / 1024.0,
        redis_cpu_per_bcast: redis_cpu * 1e3 / (b1 - b0) as f64,
        instance_share: instances / total_conns as f64,
        host_cpu_ratio: spent.iter().sum::<f64>() / secs / (predicted_cpu.iter().sum::<f64>() / 1e3),
    }
}

// ---------------------------------------------------------------- part 4

/// The model for a million connections, from the figures measured above.
/// Its traffic mix and host size are stated here and printed.
fn model(costs: &Costs, push: Option<PushCost>, sim: &Simulated) {
    const CONNECTIONS: f64 = 1_000_000.0;
    /// Connections per host: needs `nofile` raised past this machine's
    /// 20,000 (the host raises its soft limit to the hard one).
    const PER_HOST: f64 = 50_000.0;
    /// 90% of connections in rooms of 10, each member acting every 20 s:
    /// one action in ten a directed send to a random connection, else a
    /// broadcast to its room. 10% in rooms of 10,000 with one broadcast a
    /// second each (a live feed).
    const SMALL_SHARE: f64 = 0.9;
    const ACT_EVERY: f64 = 20.0;
    const DIRECT: f64 = 0.1;
    const BIG_ROOM: f64 = 10_000.0;
    /// Every connection (re)joins its room once an hour.
    const JOINS_PER_CONN_HOUR: f64 = 1.0;
    /// A Redis master is planned at half a core, leaving room for failover
    /// and bursts.
    const SHARD_CPU: f64 = 0.5;
    let hosts = (CONNECTIONS / PER_HOST).ceil();
    let members = CONNECTIONS * SMALL_SHARE;
    let rooms = members / 10.0;
    let big_rooms = (CONNECTIONS - members) / BIG_ROOM;
    let bcast_small = members / ACT_EVERY * (1.0 - DIRECT);
    let sends = members / ACT_EVERY * DIRECT;
    let broadcasts = bcast_small + big_rooms;
    let joins = CONNECTIONS * JOINS_PER_CONN_HOUR / 3600.0;
    println!(
        "\n4. model: {CONNECTIONS:.0} connections on {hosts:.0} hosts of {PER_HOST:.0}: {rooms:.0} rooms of 10 \
         (each member acts every {ACT_EVERY} s, 1 in 10 a directed send), {big_rooms:.0} rooms of {BIG_ROOM:.0} \
         (1 broadcast/s each), a join per connection per hour: {broadcasts:.0} broadcasts/s, {sends:.0} sends/s, \
         {:.0} deliveries/s",
        bcast_small * 9.0 + big_rooms * (BIG_ROOM - 1.0) + sends
    );
    println!(
        "{:<30} {:>10} {:>7} {:>12} {:>13} {:>13} {:>13} {:>12} {:>7} {:>16}",
        "placement",
        "host cores",
        format!("×{:.2}", sim.host_cpu_ratio),
        "host memory",
        "room msgs in",
        "Redis cmds/s",
        "Redis msgs/s",
        "Redis cores",
        "shards",
        "per shard msgs/s"
    );
    // A room of 10 on hosts chosen at random spans this many of them; routed
    // by room (a load balancer hashing the room in the URL), one.
    let random_span = span(hosts);
    let memory_gib = (PER_HOST * sim.kib_per_conn / 1024.0 + sim.base_mib) / 1024.0;
    // Redis CPU: each broadcast's own work, plus each room message it
    // delivers. Without part 1, the simulation's figure per broadcast.
    let (redis_broadcast, redis_push, host_push) = match push {
        Some(p) => (p.cluster_broadcast, p.redis.max(0.0), p.host.max(0.0)),
        None => (sim.redis_cpu_per_bcast, 0.0, costs.incoming),
    };
    let small_room_rate = 10.0 / ACT_EVERY * (1.0 - DIRECT);
    let designs: [(&str, f64, bool); 3] = [
        ("per-room interest, random", random_span, false),
        ("per-room interest, by room", 1.0, false),
        ("one channel (before), random", random_span, true),
    ];
    for (name, span, one_channel) in designs {
        // Room messages for rooms with a member here.
        let wanted = rooms * span / hosts * small_room_rate + big_rooms;
        let small_copies = bcast_small * 9.0 / hosts;
        let big_copies = big_rooms * (BIG_ROOM - 1.0) / hosts;
        let sends_in = sends / hosts * (1.0 - 1.0 / hosts);
        let small_traffic = 9.0 * small_room_rate / 10.0 + 2.0 / ACT_EVERY;
        let load = Load {
            connections: PER_HOST,
            origins: broadcasts / hosts,
            // Members act less often than `hibernate_after` (10 s).
            woken: bcast_small / broadcasts,
            incoming: wanted,
            copies: small_copies + big_copies,
            socket_wakes: (small_copies + sends_in) * resting(small_traffic) + big_copies * resting(1.0),
            sends_out: sends / hosts,
            sends_in,
        };
        // The one-channel design delivers every broadcast to every host.
        let thrown_away = if one_channel { broadcasts - wanted } else { 0.0 };
        let cpu = costs.host_cpu(&load) + thrown_away * host_push;
        let pushes = if one_channel { broadcasts * hosts } else { bcast_small * span + big_rooms * hosts };
        let commands = costs.redis_commands(broadcasts, sends * (1.0 - 1.0 / hosts), joins);
        let redis_cores = (broadcasts * redis_broadcast + pushes * redis_push) / 1e6;
        // One channel lives on one shard: every delivery leaves one Redis.
        let shards = if one_channel { 1.0 } else { (redis_cores / SHARD_CPU).ceil().max(1.0) };
        println!(
            "{name:<30} {:>10.2} {:>7.2} {:>8.1} GiB {:>13.0} {:>13.0} {:>13.0} {:>12.2} {:>7.0} {:>16.0}",
            cpu / 1e6,
            cpu / 1e6 * sim.host_cpu_ratio,
            memory_gib,
            load.incoming + thrown_away,
            commands,
            pushes,
            redis_cores,
            shards,
            (commands + pushes) / shards
        );
    }
    println!(
        "(host cores: from the per-operation costs at the high pace; ×{:.2}: corrected by what the simulation's \
         hosts spent over their prediction)",
        sim.host_cpu_ratio
    );
    println!(
        "(Redis cores: the masters' CPU at this machine's speed; shards: at {SHARD_CPU} core each. The one-channel \
         design cannot shard its deliveries: they all leave the Redis that holds the channel)"
    );
    // The host's own bound on memory mappings per live instance, the one
    // its start-up warning counts (measured: 4 for Rust plugins).
    let instances = PER_HOST * sim.instance_share;
    println!(
        "host memory: {:.1} KiB per connection as measured in the simulation, where {:.0}% of connections held an \
         instance: {instances:.0} instances per host, at most {:.0} memory mappings (vm.max_map_count is 65,530 by \
         default: raise it, or shorten limits.hibernate_after)",
        sim.kib_per_conn,
        sim.instance_share * 100.0,
        instances * wasmsocket::MAPS_PER_INSTANCE as f64
    );
    if push.is_none() {
        println!("(without part 1 and --baseline-bin, Redis CPU is the simulation's per broadcast, whatever the span)");
    }
}
