//! Real `redis-server`s of our own on free loopback ports, alone or as a
//! Redis Cluster, for the scale-out tests and the cluster benchmark (which
//! include this file).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long it may take to start; a guard against hangs.
const STARTUP: Duration = Duration::from_secs(20);

/// A Redis server; killed when dropped. Nothing is persisted.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// More `redis-server` arguments, e.g. for a cluster node.
    extra: Vec<String>,
}

/// Stands for a free port of its own in the arguments of `start_with`.
const BUS_PORT: &str = "{free port}";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_with(Vec::new()).await
    }

    /// Starts on a free port; `BUS_PORT` in `extra` becomes another. A port
    /// another test took between being found free and being bound makes
    /// redis-server exit: it is tried again on new ones.
    async fn start_with(extra: Vec<String>) -> Redis {
        for _ in 0..5 {
            let extra = extra.iter().map(|a| if a == BUS_PORT { free_port().to_string() } else { a.clone() }).collect();
            let mut redis = Redis { port: free_port(), child: None, extra };
            if redis.try_start().await {
                return redis;
            }
        }
        panic!("redis-server did not start in 5 tries (on free loopback ports)");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, empty.
    pub async fn restart(&mut self) {
        assert!(self.try_start().await, "redis-server did not start on port {}", self.port);
    }

    /// Starts on its port; false if it exits or does not answer in time.
    async fn try_start(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be on PATH (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            // Another test's redis-server may answer on a port ours could not
            // bind: it counts only if ours is still running a moment later.
            let answered = self.answers().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let exited = self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited || tokio::time::Instant::now() >= deadline {
                self.child = None;
                return false;
            }
            if answered {
                return true;
            }
        }
    }

    /// Kills it the hard way, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("redis-server is running")
    }

    /// Sends a signal, e.g. `STOP` to freeze it and `CONT` to resume.
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{sig} redis-server failed");
    }

    async fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").await.is_ok() && s.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
    }
}

/// How hosts reach a Redis: the `[redis]` lines of their configuration.
pub trait RedisTarget {
    fn toml(&self) -> String;
}

impl<T: RedisTarget> RedisTarget for &T {
    fn toml(&self) -> String {
        (*self).toml()
    }
}

impl RedisTarget for Redis {
    fn toml(&self) -> String {
        format!("url = \"{}\"\n", self.url())
    }
}

/// A Redis Cluster of three masters with a replica each, built with
/// `redis-cli --cluster create` as an operator would; killed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    /// Holds the nodes' cluster configuration files.
    dir: std::path::PathBuf,
}

impl RedisTarget for RedisCluster {
    fn toml(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
        format!("cluster_nodes = [{}]\n", nodes.join(", "))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!("wasmsocket-redis-cluster-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut nodes = Vec::new();
        for i in 0..6 {
            let node_dir = dir.join(i.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let extra = [
                "--cluster-enabled",
                "yes",
                // The bus port would be port + 10000 otherwise, maybe taken.
                "--cluster-port",
                BUS_PORT,
                "--cluster-node-timeout",
                // A failed master is replaced within a few seconds.
                "1000",
                // Replicas are in sync at once, so they can take over.
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                &node_dir.display().to_string(),
            ];
            nodes.push(Redis::start_with(extra.iter().map(|s| s.to_string()).collect()).await);
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli must be on PATH (apt-get install redis-tools)");
        assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout));
        let cluster = RedisCluster { nodes, dir };
        let deadline = tokio::time::Instant::now() + STARTUP;
        for node in &cluster.nodes {
            loop {
                let up = cli(node.port, &["cluster", "info"]).await.contains("cluster_state:ok") && {
                    let replication = cli(node.port, &["info", "replication"]).await;
                    replication.contains("role:master") || replication.contains("master_link_status:up")
                };
                if up {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "the cluster did not come up");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    /// The node now serving `key` as master, if one does.
    pub async fn master_of(&self, key: &str) -> Option<usize> {
        let any = self.live().next().expect("a live node").port;
        let slot: u16 = cli(any, &["cluster", "keyslot", key]).await.trim().parse().expect("a slot");
        let nodes = cli(any, &["cluster", "nodes"]).await;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b),
                None => range.parse::<u16>() == Ok(slot),
            });
            if serves {
                let port: u16 = fields[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).expect("port");
                return self.nodes.iter().position(|n| n.port == port);
            }
        }
        None
    }

    fn live(&self) -> impl Iterator<Item = &Redis> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// Waits until every slot is served again (after a failover).
    pub async fn wait_ok(&self) {
        let deadline = tokio::time::Instant::now() + STARTUP;
        for node in self.live() {
            while !cli(node.port, &["cluster", "info"]).await.contains("cluster_state:ok") {
                assert!(tokio::time::Instant::now() < deadline, "the cluster did not recover");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs `redis-cli -p PORT ARGS`; its output, or empty if it failed.
async fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().await;
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}
