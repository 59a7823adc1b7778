//! Rust types for the WIT worlds, generated at build time: the current
//! one (`wit/`, 0.2.1, which also serves plugins built against 0.2.0) and the last of the 0.1 line (`host/wit/0.1.1`),
//! which plugins built against 0.1.0 and 0.1.1 import.

/// `wasmsocket:plugin@0.2.1` without the WASI interfaces wasmtime provides.
pub mod current {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin-core",
        // Exports run under epoch interruption, which yields to tokio.
        // Imports that may reach other hosts through Redis are async;
        // `state` and `log` only touch this host.
        exports: { default: async },
        imports: {
            "wasmsocket:plugin/connections": async,
            "wasmsocket:plugin/rooms": async,
            "wasmsocket:plugin/kv": async,
            "wasmsocket:plugin/timers": async,
        },
    });
}

/// `wasmsocket:plugin@0.1.1`: the same types (structurally equal, so the
/// 0.2 ones serve), its own interface names.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "wit/0.1.1",
        world: "websocket-plugin",
        exports: { default: async },
        imports: {
            "wasmsocket:plugin/connections": async,
            "wasmsocket:plugin/rooms": async,
            "wasmsocket:plugin/kv": async,
        },
        with: {
            "wasmsocket:plugin/types": super::current::wasmsocket::plugin::types,
        },
    });
}

pub use current::exports::wasmsocket::plugin::handler::{CloseFrame, Message, OpenResponse, Request};
pub use current::wasmsocket::plugin::types::HostError;
pub use current::wasmsocket::plugin::{connections, kv, log, rooms, state, timers, types};
pub use current::{PluginCore, PluginCorePre};
pub use v0_1::{WebsocketPlugin as PluginV01, WebsocketPluginPre as PluginV01Pre};
