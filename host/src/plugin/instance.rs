//! One plugin instance serving one connection: its store, its limits, and
//! the calls into the handler with faults told apart.

use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{CloseFrame, Message, OpenResponse, Request, WebsocketPlugin};
use super::engine::TICK;
use super::host_api::HostApi;
use super::registry::Version;
use super::stdio::LogStream;
use crate::config::PluginLimits;
use crate::metrics::FaultKind;

/// Why a plugin call did not complete. The instance is unusable afterwards.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    #[error("trapped: {0}")]
    Trap(String),
    #[error("ran past its {} deadline", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("exceeded its {0} memory limit")]
    Memory(ByteSize),
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Trap(_) => FaultKind::Trap,
            Fault::Timeout(_) => FaultKind::Timeout,
            Fault::Memory(_) => FaultKind::Memory,
        }
    }
}

/// The data of one store: WASI with nothing granted, the limits, and the
/// host API bound to the connection.
pub struct Ctx {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    pub(super) host: HostApi,
    ticks_left: u64,
    timed_out: bool,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// `StoreLimits`, remembering whether the memory cap was what stopped a call.
struct MemoryLimiter {
    limits: StoreLimits,
    hit: bool,
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

/// A live instance of one plugin version.
pub struct Instance {
    store: Store<Ctx>,
    bindings: WebsocketPlugin,
    version: Arc<Version>,
    limits: PluginLimits,
    /// The connection served, as the bindings want it.
    id: String,
}

impl Instance {
    /// Instantiates `version` for the connection behind `host`.
    pub async fn new(version: Arc<Version>, host: HostApi, limits: PluginLimits) -> Result<Self, Fault> {
        let mut wasi = WasiCtx::builder();
        // Nothing is granted: no preopened directories, no environment, no
        // network. Output goes to the host's log.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(LogStream::stdout(&host))
            .stderr(LogStream::stderr(&host));
        let id = host.connection().to_string();
        let memory = usize::try_from(limits.memory.as_u64()).unwrap_or(usize::MAX);
        let ctx = Ctx {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limits: StoreLimitsBuilder::new().memory_size(memory).instances(64).build(),
                hit: false,
            },
            host,
            ticks_left: 0,
            timed_out: false,
        };
        let mut store = Store::new(version.pre.engine(), ctx);
        store.limiter(|ctx| &mut ctx.limiter);
        store.epoch_deadline_callback(|mut cx| {
            let ctx = cx.data_mut();
            if ctx.ticks_left <= 1 {
                ctx.timed_out = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            ctx.ticks_left -= 1;
            // Let other connections run while this call is busy.
            Ok(UpdateDeadline::Yield(1))
        });
        arm(&mut store, limits.deadline);
        match version.pre.instantiate_async(&mut store).await {
            Ok(bindings) => Ok(Self { store, bindings, version, limits, id }),
            Err(e) => Err(classify(&store, &limits, e)),
        }
    }

    /// What the last calls sent to the instance's own connection.
    pub fn take_replies(&mut self) -> Vec<crate::hub::Outbound> {
        self.store.data_mut().host.take_replies()
    }

    pub fn version(&self) -> &Arc<Version> {
        &self.version
    }

    pub async fn on_open(&mut self, request: &Request) -> Result<OpenResponse, Fault> {
        arm(&mut self.store, self.limits.deadline);
        let result = self.bindings.wasmsocket_plugin_handler().call_on_open(&mut self.store, &self.id, request).await;
        result.map_err(|e| classify(&self.store, &self.limits, e))
    }

    pub async fn on_message(&mut self, message: &Message) -> Result<(), Fault> {
        arm(&mut self.store, self.limits.deadline);
        let result =
            self.bindings.wasmsocket_plugin_handler().call_on_message(&mut self.store, &self.id, message).await;
        result.map_err(|e| classify(&self.store, &self.limits, e))
    }

    pub async fn on_close(&mut self, close: Option<&CloseFrame>) -> Result<(), Fault> {
        arm(&mut self.store, self.limits.deadline);
        let result = self.bindings.wasmsocket_plugin_handler().call_on_close(&mut self.store, &self.id, close).await;
        result.map_err(|e| classify(&self.store, &self.limits, e))
    }
}

/// Gives the next call `deadline`, counted in epoch ticks.
fn arm(store: &mut Store<Ctx>, deadline: Duration) {
    let ticks = deadline.as_nanos().div_ceil(TICK.as_nanos()).max(1);
    let ctx = store.data_mut();
    ctx.ticks_left = u64::try_from(ticks).unwrap_or(u64::MAX);
    ctx.timed_out = false;
    ctx.limiter.hit = false;
    store.set_epoch_deadline(1);
}

fn classify(store: &Store<Ctx>, limits: &PluginLimits, error: wasmtime::Error) -> Fault {
    let ctx = store.data();
    if ctx.timed_out || matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        Fault::Timeout(limits.deadline)
    } else if ctx.limiter.hit {
        Fault::Memory(limits.memory)
    } else {
        Fault::Trap(format!("{error:#}"))
    }
}
