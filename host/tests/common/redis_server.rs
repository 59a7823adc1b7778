//! A real `redis-server` of our own on a free loopback port, for the
//! scale-out tests and the cluster benchmark (which include this file).

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
}

impl Redis {
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut redis = Redis { port, child: None };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, empty.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be on PATH (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + STARTUP;
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
