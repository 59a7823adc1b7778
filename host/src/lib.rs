//! wasmsocket: a WebSocket server whose message handlers are WebAssembly
//! components.
//!
//! The modules are in layers that depend one way (`docs/design.md`). The
//! path of a message through them, top to bottom: `listener` (accept,
//! `tls`, the HTTP phase and its bounds) → `server`'s routes →
//! `handshake` (upgrade and the plugin's `on-open`) or `fallback` (the
//! HTTP transport) → `connection` (one task: events in order, its queue,
//! pings, hibernation, the close handshake) over `socket` (awake or
//! resting, its input metered by `inbound`) and `writer` (replies,
//! batches, the close frame) → `dispatch` (the plugin side of the
//! connection: instances, faults) → `plugin` (the instance pool,
//! wall-time deadlines, the plugin lane, the host side of the WIT imports)
//! → `hub` (every open connection, reachable by id, its byte-bounded
//! queue, rooms and the store) → through the hub's `hub::Cluster` port,
//! `backplane` (other hosts, through Redis, when scaled out).
//!
//! Public: what the binary (`main.rs`) needs, the [`Server`], the
//! configuration, `check` and `new`'s templates; the rest is the host's own.

mod api;
mod backplane;
pub mod check;
mod checkpoint;
pub mod config;
mod connection;
mod console;
mod deadlines;
mod dispatch;
mod fallback;
mod fd_limit;
mod handover;
mod handshake;
mod heap_trim;
mod http2_idle;
mod http_timeouts;
mod hub;
mod inbound;
mod listener;
mod metrics;
mod passthrough;
mod pending;
mod plugin;
mod reload;
mod reply;
mod resume;
mod room_ticks;
pub mod scaffold;
mod server;
mod socket;
mod state;
mod static_files;
mod takeover;
mod tls;
mod writer;

pub use config::Config;
pub use server::{MAPS_PER_INSTANCE, Server, StartError};
