//! What one instance's store holds: WASI with nothing granted, its memory
//! limiter, the host API bound to its connection, and the state of its
//! deadline. The engine links against it, the registry pre-instantiates
//! with it, the instance runs in it.

use std::sync::Arc;

use bytesize::ByteSize;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::host_api::HostApi;
use super::lane::LongCall;
use super::outbound::{HttpPolicy, OutboundHooks};
use super::stdio::LogStream;
use super::trap::StderrTail;
use super::wait::WaitMark;
use crate::config::InMemory;

/// Largest WASI random request: 1 MiB takes about a millisecond to make;
/// wasmtime-wasi's own cap (64 MiB) held a runtime thread for 200 ms.
const MAX_RANDOM: u64 = 1 << 20;

/// What the instances of one plugin version are granted beyond the host
/// API: the operator's variables and the outbound HTTP policy.
pub struct Capabilities {
    pub variables: WasiConfigVariables,
    pub http: Arc<HttpPolicy>,
}

/// The data of one store: WASI with nothing granted, the limits, and the
/// host API bound to the connection.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    caps: Arc<Capabilities>,
    pub(super) limiter: MemoryLimiter,
    pub(super) host: HostApi,
    pub(super) ticks_left: u64,
    pub(super) timed_out: bool,
    pub(super) long: LongCall,
    /// What the plugin wrote to stderr in the current call, for a trap.
    pub(super) stderr_tail: StderrTail,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for StoreData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl StoreData {
    /// The view `wasi:config/store` reads.
    pub(super) fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::from(&self.caps.variables)
    }
}

/// `StoreLimits`, remembering whether the memory cap was what stopped a call.
pub(super) struct MemoryLimiter {
    limits: StoreLimits,
    pub(super) hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl StoreData {
    /// A store's data for the connection behind `host`, with `memory` at
    /// most and nothing granted: no preopened directories, no environment,
    /// no network. Output goes to the host's log.
    pub(super) fn new(
        host: HostApi,
        memory: ByteSize,
        long: LongCall,
        caps: Arc<Capabilities>,
        waited: WaitMark,
    ) -> Self {
        let stderr_tail = StderrTail::default();
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_RANDOM)
            .stdout(LogStream::stdout(&host))
            .stderr(LogStream::stderr(&host, stderr_tail.clone()));
        let memory = memory.in_memory();
        let hooks = OutboundHooks::new(caps.http.clone(), waited, host.connection().into());
        Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks,
            caps,
            limiter: MemoryLimiter {
                limits: StoreLimitsBuilder::new().memory_size(memory).instances(64).build(),
                hit: false,
            },
            host,
            ticks_left: 0,
            timed_out: false,
            long,
            stderr_tail,
        }
    }
}
