//! Plugins: compiling components, the registry of loaded versions, one
//! instance per connection, and the host side of the WIT imports.

mod bindings;
mod cache;
mod engine;
mod host_api;
mod instance;
mod log_budget;
mod registry;
mod stdio;

pub use bindings::{CloseFrame, Message, OpenResponse, Request};
pub use cache::Origin;
pub use engine::{EngineSettings, LoadError, PluginEngine};
pub use host_api::{HostApi, HostLimits};
pub use instance::{Fault, Instance};
pub use log_budget::LogBudget;
pub use registry::{Plugin, PluginInfo, Registry, SyncOutcome, Version};
