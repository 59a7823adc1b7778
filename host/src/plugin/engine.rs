//! The wasmtime engine every plugin shares: compiler and allocator settings,
//! the epoch clock behind per-call deadlines, and the linker that provides
//! the host interfaces.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{PluginCore, PluginV01};
use super::cache::{CompileCache, Origin};
use super::host_api::HostApi;
use super::store::StoreData;
use super::world::Pre;

/// One epoch tick: a plugin computing this long yields to the async
/// runtime (and moves to the plugin lane, see `lane`), and again every tick.
pub const TICK: Duration = Duration::from_millis(2);

/// Why a component cannot serve as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    #[error("does not fit the wasmsocket:plugin world: {0}")]
    World(String),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
}

/// Sizes for the pooling allocator, and where compiled code is cached.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instances that may exist at once (`max_instances`): what the
    /// instance pool hands out.
    pub max_instances: u32,
    /// The largest linear memory any plugin may have.
    pub max_memory: u64,
    /// Directory of the compile cache; `None` turns it off.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Bytes at the start of each linear memory that an ended instance
    /// leaves resident, reset in place, for the next in its slot
    /// (`keep_resident`).
    pub keep_resident: u64,
}

/// Entries of a table kept resident the same way: a plugin's tables are
/// small, and resetting them in place spares the next instance its faults.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// The pools reserve their address space up front and engine creation fails
/// when it is not there: keep them within half of the 128 TiB a 64-bit
/// Linux process has. With the default 64 MiB memories that is about
/// 250,000 instances.
fn instances_that_fit(max_memory: u64, per_component: u32) -> u32 {
    const ADDRESS_SPACE: u64 = 64 << 40;
    // Each memory slot and its 64 KiB guard, times the memories of one
    // component, plus its 2 MiB fiber stack (see the settings below).
    let per_instance = (max_memory + (64 << 10)).saturating_mul(u64::from(per_component)) + (2 << 20);
    u32::try_from(ADDRESS_SPACE / per_instance).unwrap_or(u32::MAX).max(16)
}

/// Fiber stacks beyond one per instance slot.
const SPARE_STACKS: u32 = 32;

/// Compiles components and prepares them for fast instantiation.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<StoreData>>,
    cache: Option<CompileCache>,
    clock: Arc<EpochClock>,
    /// Instances the pooling allocator holds: what the instance pool hands out.
    instances: u32,
}

impl PluginEngine {
    pub fn new(settings: EngineSettings) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        // Scripting-language components hold several core instances and
        // memories (their runtime plus adapters).
        const PER_COMPONENT: u32 = 4;
        let instances = settings.max_instances.max(16).min(instances_that_fit(settings.max_memory, PER_COMPONENT));
        if instances < settings.max_instances {
            tracing::warn!(
                "the instance pool is cut to {instances} (of {} wanted): that is what fits in the address \
                 space with {} of memory per instance; connections past it will fail",
                settings.max_instances,
                bytesize::ByteSize(settings.max_memory)
            );
        }
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(PER_COMPONENT))
            .total_memories(instances.saturating_mul(PER_COMPONENT))
            .total_tables(instances.saturating_mul(PER_COMPONENT))
            // A few spare stacks: an instance's stack goes back to the pool
            // as its store is torn down, which may be a moment after the
            // slot (the permit) of a wake storm's next instance is taken.
            .total_stacks(instances.saturating_add(SPARE_STACKS))
            .max_memories_per_component(PER_COMPONENT * 4)
            .max_tables_per_component(PER_COMPONENT * 4)
            .max_core_instances_per_component(64)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .table_elements(100_000)
            .max_memory_size(usize::try_from(settings.max_memory).unwrap_or(usize::MAX));
        // Giving an ended instance's pages back (`madvise`) costs every core
        // running the host a TLB shootdown, and the next instance its page
        // faults and copy-on-write faults, each another shootdown: most of
        // the cost of waking a hibernated connection. Resetting the dirty
        // pages in place avoids both; the kernel's PAGEMAP_SCAN (Linux 6.7)
        // tells which pages are dirty. Without it wasmtime would reset the
        // whole range with `memset` at every teardown, so nothing is kept.
        if settings.keep_resident > 0 {
            if PoolingAllocationConfig::is_pagemap_scan_available() {
                pool.pagemap_scan(wasmtime::Enabled::Yes)
                    .linear_memory_keep_resident(usize::try_from(settings.keep_resident).unwrap_or(usize::MAX))
                    .table_keep_resident(TABLE_KEEP_RESIDENT);
            } else {
                tracing::info!(
                    "this kernel has no PAGEMAP_SCAN (Linux 6.7): ended instances give all their pages back, and \
                     waking a connection costs more (keep_resident is ignored)"
                );
            }
        }

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // A trap names the plugin's functions and source lines where
            // the component carries a name section or DWARF. The debug
            // sections are parsed only when a trap is reported.
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
            // A slot per memory sized to the largest allowed memory: bounds
            // checks stay explicit, but many thousands of slots fit in the
            // address space.
            .memory_reservation(settings.max_memory)
            .memory_reservation_for_growth(0)
            .memory_guard_size(64 << 10)
            .async_stack_size(2 << 20)
            .max_wasm_stack(1 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<StoreData>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, StoreData::config)?;
        PluginCore::add_to_linker::<StoreData, HasSelf<HostApi>>(&mut linker, |ctx| &mut ctx.host)?;
        PluginV01::add_to_linker::<StoreData, HasSelf<HostApi>>(&mut linker, |ctx| &mut ctx.host)?;

        let clock = EpochClock::start(&engine)?;
        let cache = match &settings.cache_dir {
            Some(dir) => match CompileCache::open(dir, &engine) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "compile cache off: cannot use its directory: {e}");
                    None
                }
            },
            None => None,
        };
        // The pool hands out what was asked for; the allocator keeps at least
        // 16 slots either way.
        let instances = settings.max_instances.min(instances);
        Ok(Self { engine, linker: Arc::new(linker), cache, clock, instances })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How many instances may exist at once.
    pub fn instances(&self) -> u32 {
        self.instances
    }

    /// Bytes the pool's free slots keep resident for their next instances
    /// (memories and tables, see `keep_resident`).
    pub fn kept_bytes(&self) -> u64 {
        self.engine.pooling_allocator_metrics().map_or(0, |m| {
            u64::try_from(m.unused_memory_bytes_resident() + m.unused_table_bytes_resident()).unwrap_or(u64::MAX)
        })
    }

    pub fn clock(&self) -> &Arc<EpochClock> {
        &self.clock
    }

    /// Compiles `bytes` and checks it against the world. CPU-heavy for
    /// large components: call it off the async runtime.
    pub fn prepare(&self, content_hash: &str, bytes: &[u8]) -> Result<(Pre, Origin), LoadError> {
        let compile_error = |e: wasmtime::Error| LoadError::Compile(lines(&e));
        let (component, origin) = match &self.cache {
            Some(cache) => cache.component(&self.engine, content_hash, bytes).map_err(compile_error)?,
            None => (Component::new(&self.engine, bytes).map_err(compile_error)?, Origin::Compiled),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::World(lines(&e)))?;
        let pre = Pre::new(pre).map_err(|e| LoadError::World(lines(&e)))?;
        Ok((pre, origin))
    }
}

/// An error and its causes, one per line, as the page and the log show
/// them (wasmtime's chains are long).
fn lines(e: &wasmtime::Error) -> String {
    e.chain().map(|cause| cause.to_string()).collect::<Vec<_>>().join("\n")
}

/// Advances the engine's epoch every tick while a plugin call is running,
/// and sleeps otherwise: an idle host spends no CPU on it.
pub struct EpochClock {
    running: AtomicUsize,
    /// The clock thread is parked (or about to be): the next call wakes it.
    parked: AtomicBool,
    /// Set once the thread runs; it parks only after that.
    thread: OnceLock<thread::Thread>,
}

/// Ticks the clock keeps going after the last call ended, so a busy host
/// does not pay a wake-up (a system call) for every call.
const IDLE_TICKS: u32 = 50;

/// A call in progress; the clock ticks while any exists.
pub struct Ticking(Arc<EpochClock>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EpochClock {
    fn start(engine: &Engine) -> std::io::Result<Arc<Self>> {
        let weak = engine.weak();
        let clock =
            Arc::new(Self { running: AtomicUsize::new(0), parked: AtomicBool::new(false), thread: OnceLock::new() });
        let this = Arc::downgrade(&clock);
        let handle = thread::Builder::new().name("wasmsocket-epoch".into()).spawn(move || {
            let clock = this;
            let mut idle = 0;
            loop {
                let Some(strong) = clock.upgrade() else { return };
                if strong.running.load(Ordering::SeqCst) == 0 {
                    idle += 1;
                    if idle > IDLE_TICKS {
                        // Say so before looking again: a call that starts
                        // after the look sees `parked` and unparks (an
                        // unpark before the park makes it return at once).
                        strong.parked.store(true, Ordering::SeqCst);
                        if strong.running.load(Ordering::SeqCst) == 0 {
                            drop(strong);
                            thread::park();
                        }
                        if let Some(strong) = clock.upgrade() {
                            strong.parked.store(false, Ordering::SeqCst);
                        }
                        idle = 0;
                        continue;
                    }
                } else {
                    idle = 0;
                }
                drop(strong);
                // A tick first, then the increment: a call that woke the
                // clock gets a whole tick before its first interruption.
                thread::sleep(TICK);
                let Some(engine) = weak.upgrade() else { return };
                engine.increment_epoch();
                drop(engine);
            }
        })?;
        let _ = clock.thread.set(handle.thread().clone());
        Ok(clock)
    }

    /// Marks a call as running until the guard drops.
    pub fn enter(self: &Arc<Self>) -> Ticking {
        self.running.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Ticking(self.clone())
    }
}
