//! Rust types for the WIT world in `wit/`, generated at build time.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "websocket-plugin",
    // Exports run under epoch interruption, which yields to tokio; imports
    // only touch in-memory host state, so they stay synchronous.
    exports: { default: async },
});

pub use self::wasmsocket::plugin::types::HostError;
pub use self::wasmsocket::plugin::{connections, kv, log, rooms, state, types};
pub use exports::wasmsocket::plugin::handler::{CloseFrame, Message, OpenResponse, Request};
