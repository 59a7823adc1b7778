//! A real `redis-server` on a free loopback port, for the scale-out tests.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{Host, PATIENCE, TempDir, plugins_dir};

/// A Redis server; killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut redis = Redis { port, child: None };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, empty: nothing is persisted.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed for the scale-out tests (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.answers().await {
            assert!(tokio::time::Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it the hard way, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// Sends a signal, e.g. `STOP` to freeze it and `CONT` to resume.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("redis-server is running");
        let status = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{sig} redis-server failed");
    }

    async fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").await.is_ok() && s.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
    }
}

/// Settings that make a cluster react within a test's patience: a host is
/// declared dead half a second after its last heartbeat.
pub fn cluster_config(redis: &Redis, dir: &Path) -> String {
    let path = dir.join("cluster.toml");
    let toml = format!(
        "[redis]\nurl = \"{}\"\nheartbeat = \"100ms\"\nhost_timeout = \"500ms\"\ntimeout = \"500ms\"\nmax_backoff = \"200ms\"\n",
        redis.url()
    );
    std::fs::write(&path, toml).expect("write config");
    path.display().to_string()
}

/// A host with the testbed plugin on `redis`, plus `args`.
pub async fn cluster_host(redis: &Redis, args: &[&str]) -> Host {
    cluster_host_with(redis, &[], args).await
}

/// Same, with more plugins as `(file name, bytes)`.
pub async fn cluster_host_with(redis: &Redis, plugins: &[(&str, &[u8])], args: &[&str]) -> Host {
    let dir: TempDir = plugins_dir(plugins);
    let config = cluster_config(redis, &dir.0);
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    Host::start_with(dir, &all).await
}
