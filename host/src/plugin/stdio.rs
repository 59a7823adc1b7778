//! A plugin's stdout and stderr, turned into host log lines tagged with the
//! plugin, its version and the connection, within the connection's log
//! budget.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::host_api::{HostApi, clip};
use super::trap::StderrTail;
use crate::console::{Console, Kind};
use crate::hub::LogBudget;

#[derive(Clone, Copy)]
enum Which {
    Stdout,
    Stderr,
}

/// The log tags of one instance, and its connection's log budget.
#[derive(Clone)]
pub struct LogStream {
    tags: Arc<(String, String, String)>,
    budget: Arc<LogBudget>,
    which: Which,
    console: Arc<Console>,
    /// Stderr only: kept for the report of a trap.
    tail: Option<StderrTail>,
}

impl LogStream {
    pub fn stdout(host: &HostApi) -> Self {
        Self::new(host, Which::Stdout, None)
    }

    pub fn stderr(host: &HostApi, tail: StderrTail) -> Self {
        Self::new(host, Which::Stderr, Some(tail))
    }

    fn new(host: &HostApi, which: Which, tail: Option<StderrTail>) -> Self {
        let tags = (host.plugin().to_string(), host.connection().to_string(), host.version().to_string());
        Self { tags: Arc::new(tags), budget: host.log_budget().clone(), which, console: host.console().clone(), tail }
    }

    fn emit(&self, bytes: &[u8]) {
        // Output the filter discards costs nothing, so it is not charged.
        let shown = match self.which {
            Which::Stdout => tracing::enabled!(target: "plugin::stdout", tracing::Level::INFO),
            Which::Stderr => tracing::enabled!(target: "plugin::stderr", tracing::Level::WARN),
        };
        let watched = self.console.watched();
        if !(shown || watched || self.tail.is_some()) {
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        let (plugin, conn, version) = (&self.tags.0, &self.tags.1, &self.tags.2);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line = clip(line);
            if let Some(tail) = &self.tail {
                tail.push(line);
            }
            if !(shown || watched) || !self.budget.admit(line.len()) {
                continue;
            }
            let kind = match self.which {
                Which::Stdout => Kind::Stdout,
                Which::Stderr => Kind::Stderr,
            };
            self.console.publish(kind, Some(conn), None, || line.to_string());
            if !shown {
                continue;
            }
            match self.which {
                Which::Stdout => tracing::info!(target: "plugin::stdout", plugin, conn, version, "{line}"),
                Which::Stderr => tracing::warn!(target: "plugin::stderr", plugin, conn, version, "{line}"),
            }
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.emit(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(4096)
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.emit(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
