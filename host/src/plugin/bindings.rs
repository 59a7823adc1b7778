//! Rust types for the WIT world in `wit/`, generated at build time.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "websocket-plugin",
    // Exports run under epoch interruption, which yields to tokio. Imports
    // that may reach other hosts through Redis are async; `state` and `log`
    // only touch this host, so they stay synchronous.
    exports: { default: async },
    imports: {
        "wasmsocket:plugin/connections": async,
        "wasmsocket:plugin/rooms": async,
        "wasmsocket:plugin/kv": async,
    },
});

pub use self::wasmsocket::plugin::types::HostError;
pub use self::wasmsocket::plugin::{connections, kv, log, rooms, state, types};
pub use exports::wasmsocket::plugin::handler::{CloseFrame, Message, OpenResponse, Request};
