//! Every integration test of the host, in one binary (it links once): each
//! module is one concern, and starts the real `wasmsocket` binary on a free
//! loopback port and talks to it with real clients. Some are ignored by
//! default and run by `scripts/test.sh`: `churn::` (a soak), `examples::`
//! and `new::` (they need the example plugins built first).

#[macro_use]
mod common;

mod api;
mod check;
mod churn;
mod close;
mod cluster;
mod communication;
mod console;
mod examples;
mod fallback;
mod fallback_bounds;
mod faults;
mod handshakes;
mod hibernation;
mod history;
mod hostile_clients;
mod isolation;
mod logging;
mod new;
mod outbound;
mod reload;
mod resume;
mod rolling_restart;
mod rooms;
mod store;
mod timers;
mod tls;
mod variables;
