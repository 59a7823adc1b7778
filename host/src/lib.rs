//! wasmsocket: a WebSocket server whose message handlers are WebAssembly
//! components.
//!
//! The modules are in layers that depend one way (`docs/design.md`). The
//! path of a message through them, top to bottom: [`listener`] (accept,
//! [`tls`], the HTTP phase and its bounds) → [`server`]'s routes →
//! [`handshake`] (upgrade and the plugin's `on-open`) or [`fallback`] (the
//! HTTP transport) → [`connection`] (one task: events in order, its queue,
//! pings, hibernation, the close handshake) over [`socket`] (awake or
//! resting, its input metered by [`inbound`]) and [`writer`] (replies,
//! batches, the close frame) → [`dispatch`] (the plugin side of the
//! connection: instances, faults) → [`plugin`] (the instance pool,
//! wall-time deadlines, the plugin lane, the host side of the WIT imports)
//! → [`hub`] (every open connection, reachable by id, its byte-bounded
//! queue, rooms and the store) → through the hub's [`hub::Cluster`] port,
//! [`backplane`] (other hosts, through Redis, when scaled out).

pub mod api;
pub mod backplane;
pub mod check;
pub mod config;
pub mod connection;
pub mod console;
pub mod deadlines;
pub mod dispatch;
pub mod fallback;
pub mod fd_limit;
pub mod handshake;
pub mod http2_idle;
pub mod http_timeouts;
pub mod hub;
pub mod inbound;
pub mod listener;
pub mod metrics;
mod passthrough;
pub mod pending;
pub mod plugin;
pub mod reload;
pub mod reply;
pub mod scaffold;
pub mod server;
pub mod socket;
pub mod state;
pub mod static_files;
pub mod tls;
pub mod writer;

pub use config::Config;
pub use server::{Server, StartError};
