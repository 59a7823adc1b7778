//! The 0.1 interfaces, served by the current implementation: same
//! functions, same types, other names.

use super::bindings::v0_1::wasmsocket::plugin as old;
use super::bindings::{HostError, Message, connections, kv, log, rooms, state};
use super::host_api::HostApi;

impl old::connections::Host for HostApi {
    async fn send(&mut self, id: String, message: Message) -> Result<(), HostError> {
        connections::Host::send(self, id, message).await
    }

    async fn close(&mut self, id: String, code: u16, reason: String) -> Result<(), HostError> {
        connections::Host::close(self, id, code, reason).await
    }
}

impl old::state::Host for HostApi {
    fn get(&mut self, id: String) -> Result<Option<Vec<u8>>, HostError> {
        state::Host::get(self, id)
    }

    fn set(&mut self, id: String, value: Vec<u8>) -> Result<(), HostError> {
        state::Host::set(self, id, value)
    }

    fn clear(&mut self, id: String) -> Result<(), HostError> {
        state::Host::clear(self, id)
    }
}

impl old::rooms::Host for HostApi {
    async fn join(&mut self, id: String, room: String) -> Result<(), HostError> {
        rooms::Host::join(self, id, room).await
    }

    async fn leave(&mut self, id: String, room: String) -> Result<(), HostError> {
        rooms::Host::leave(self, id, room).await
    }

    async fn broadcast(&mut self, room: String, message: Message, except: Option<String>) -> Result<u32, HostError> {
        rooms::Host::broadcast(self, room, message, except).await
    }

    async fn count(&mut self, room: String) -> u32 {
        rooms::Host::count(self, room).await
    }

    async fn members(&mut self, room: String, limit: u32) -> Vec<String> {
        rooms::Host::members(self, room, limit).await
    }

    async fn rooms_of(&mut self, id: String) -> Result<Vec<String>, HostError> {
        rooms::Host::rooms_of(self, id).await
    }
}

impl old::kv::Host for HostApi {
    async fn get(&mut self, key: String) -> Option<Vec<u8>> {
        kv::Host::get(self, key).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), HostError> {
        kv::Host::set(self, key, value, ttl_ms).await
    }

    async fn delete(&mut self, key: String) -> bool {
        kv::Host::delete(self, key).await
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, HostError> {
        kv::Host::increment(self, key, delta).await
    }
}

impl old::log::Host for HostApi {
    fn log(&mut self, level: old::log::Level, message: String) {
        use old::log::Level as Old;
        let level = match level {
            Old::Trace => log::Level::Trace,
            Old::Debug => log::Level::Debug,
            Old::Info => log::Level::Info,
            Old::Warn => log::Level::Warn,
            Old::Error => log::Level::Error,
        };
        log::Host::log(self, level, message)
    }
}
