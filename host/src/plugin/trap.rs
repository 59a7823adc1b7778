//! A trap as a plugin author reads it: what trapped, what the plugin wrote
//! to stderr during the call (a Rust panic's message), and the backtrace
//! with the plugin's function names and source lines where its name
//! section or DWARF carries them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use wasmtime::{Trap, WasmBacktrace};

/// Stderr lines of the current call kept for a trap's report.
const TAIL_LINES: usize = 8;

/// The last stderr lines of the current call, shared by an instance's
/// stderr stream and its store.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    pub fn push(&self, line: &str) {
        // Rust's hint about RUST_BACKTRACE does not apply: the host shows
        // the backtrace.
        if line.starts_with("note: run with `RUST_BACKTRACE") {
            return;
        }
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(line.to_string());
        }
    }

    /// Forgets the previous call's lines.
    pub fn clear(&self) {
        if let Ok(mut lines) = self.0.lock() {
            lines.clear();
        }
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }
}

/// One line per fact: the trap, then what the plugin said, then the
/// backtrace frames.
pub fn describe(error: &wasmtime::Error, tail: &StderrTail) -> String {
    let mut out = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    for line in tail.lines() {
        out.push('\n');
        out.push_str(&line);
    }
    if let Some(backtrace) = error.downcast_ref::<WasmBacktrace>() {
        out.push('\n');
        let frames = backtrace.to_string();
        let frames = frames.strip_prefix("error while executing at ").unwrap_or(&frames);
        out.push_str(frames.trim_end());
    }
    out
}
