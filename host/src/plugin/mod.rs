//! Plugins: compiling components, the registry of loaded versions, one
//! instance per connection, and the host side of the WIT imports.

mod bindings;
mod cache;
mod compat;
mod engine;
mod host_api;
mod instance;
mod lane;
mod outbound;
mod pool;
mod registry;
mod stdio;
mod store;
mod trap;
mod wait;
mod world;

pub use bindings::{CloseFrame, Message, OpenResponse, Request};
pub use engine::{EngineSettings, LoadError, PluginEngine};
pub use host_api::{HostApi, HostLimits, Replies};
pub use instance::{Answer, Event, Fault, Instance};
pub use pool::InstancePool;
pub use registry::{Plugin, Registry, SyncOutcome, Version};
pub use world::{PACKAGE, handler_version};
