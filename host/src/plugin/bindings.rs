//! Rust types for the WIT world in `wit/`, generated at build time.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "websocket-plugin",
    // Exports run under epoch interruption, which yields to tokio; imports
    // only touch in-memory host state, so they stay synchronous.
    exports: { default: async },
});

pub use exports::wasmsocket::plugin::handler::{CloseFrame, Message, OpenResponse, Request};
pub use wasmsocket::plugin::types::HostError;
pub use wasmsocket::plugin::{connections, log, state, types};
