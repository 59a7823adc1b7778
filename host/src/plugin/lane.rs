//! Where plugin code runs, so that a plugin that computes for long cannot
//! delay other connections' socket I/O.
//!
//! A call starts on the connection's own task: most calls return within
//! microseconds, and a hand-off to another thread would cost more than the
//! call. A call still computing when the epoch clock first interrupts it
//! (one tick) is moved, at that yield, onto the plugin lane: a runtime of
//! its own, whose threads run at a lower CPU priority. The runtime that
//! serves sockets then only waits for the call's result, and its workers
//! stay free to poll I/O however many calls loop at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Niceness of the lane's threads: the kernel gives the socket threads
/// (niceness 0) about nine tenths of a contended core.
const NICENESS: i32 = 10;

fn lane() -> &'static Runtime {
    static LANE: OnceLock<Runtime> = OnceLock::new();
    LANE.get_or_init(|| {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasmsocket-plugin")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the plugin lane's threads: {e}"))
    })
}

fn lower_priority() {
    // SAFETY: setpriority on the calling thread (tid from gettid) only
    // changes its scheduling weight; raising niceness needs no privilege.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, u32::try_from(tid).unwrap_or(0), NICENESS)
    };
    if result != 0 {
        tracing::debug!("cannot lower the plugin lane's priority: {}", std::io::Error::last_os_error());
    }
}

/// Set by the epoch clock's interrupt when a call has computed for a tick.
#[derive(Clone, Default)]
pub struct LongCall(Arc<AtomicBool>);

impl LongCall {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_long(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Runs `call` here until it proves long, then on the plugin lane.
pub fn run<F>(call: F, long: LongCall) -> Offload<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Offload { call: Some(Box::pin(call)), moved: None, long }
}

/// The future of [`run`].
pub struct Offload<F: Future> {
    call: Option<Pin<Box<F>>>,
    moved: Option<JoinHandle<F::Output>>,
    long: LongCall,
}

impl<F> Future for Offload<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if let Some(call) = self.call.as_mut() {
            match call.as_mut().poll(cx) {
                Poll::Ready(out) => return Poll::Ready(out),
                Poll::Pending if !self.long.is_long() => return Poll::Pending,
                Poll::Pending => {
                    if let Some(call) = self.call.take() {
                        self.moved = Some(lane().spawn(call));
                    }
                }
            }
        }
        match self.moved.as_mut().map(|handle| Pin::new(handle).poll(cx)) {
            Some(Poll::Ready(Ok(out))) => Poll::Ready(out),
            Some(Poll::Ready(Err(e))) => std::panic::resume_unwind(e.into_panic()),
            Some(Poll::Pending) | None => Poll::Pending,
        }
    }
}

impl<F: Future> Drop for Offload<F> {
    fn drop(&mut self) {
        // Whoever waited is gone (its connection ended): stop the call too.
        if let Some(handle) = &self.moved {
            handle.abort();
        }
    }
}
