//! One plugin instance serving one connection: its store, its limits, and
//! the calls into the handler with faults told apart.

use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{CloseFrame, Message, OpenResponse, Request};
use super::engine::TICK;
use super::host_api::HostApi;
use super::lane::{self, LongCall};
use super::pool::Permit;
use super::registry::Version;
use super::store::StoreData;
use super::wait::{self, OutOfTime, WaitMark};
use super::world::Handler;
use crate::config::PluginLimits;
use crate::metrics::FaultKind;

/// Why a plugin call did not complete. The instance is unusable afterwards.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    #[error("trapped: {0}")]
    Trap(String),
    #[error("ran past its {} deadline", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("waited on outbound I/O past its {} wait_timeout", humantime::format_duration(*.0))]
    Waited(Duration),
    #[error("exceeded its {0} memory limit")]
    Memory(ByteSize),
    /// The host, not the plugin, ran short: no instance slot came free in
    /// time, or the system refused memory. Not the plugin's fault.
    #[error("could not be instantiated: {0}")]
    Resources(String),
    /// The engine's pools (fiber stacks, memories, tables) were full for a
    /// moment: a slot held by an instance still being torn down. Worth
    /// another try within the event's deadline.
    #[error("could not be instantiated: {0}")]
    PoolFull(String),
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Trap(_) => FaultKind::Trap,
            Fault::Timeout(_) | Fault::Waited(_) => FaultKind::Timeout,
            Fault::Memory(_) => FaultKind::Memory,
            Fault::Resources(_) | Fault::PoolFull(_) => FaultKind::Resources,
        }
    }
}

/// An event for the plugin.
pub enum Event {
    Open(Request),
    Message(Message),
    Close(Option<CloseFrame>),
    /// A timer of the connection fired.
    Timer(String),
    /// A timer of a room fired; the instance serves no connection.
    RoomTimer {
        room: String,
        name: String,
    },
}

/// What the plugin answered.
pub enum Answer {
    Open(OpenResponse),
    Done,
}

/// A live instance of one plugin version. It holds one of the pool's slots
/// for as long as it lives.
pub struct Instance {
    store: Store<StoreData>,
    handler: Handler,
    version: Arc<Version>,
    limits: PluginLimits,
    /// The connection served, as the bindings want it.
    id: String,
    /// Set when the call in progress waits on outbound I/O.
    waited: WaitMark,
    // Last, so the store's pool slot is free before the permit is.
    permit: Permit,
}

impl Instance {
    /// Instantiates `version` for the connection behind `host`, in the slot
    /// `permit`, within the plugin's deadline.
    pub async fn new(
        version: Arc<Version>,
        mut host: HostApi,
        limits: PluginLimits,
        permit: Permit,
    ) -> Result<Self, Fault> {
        let id = host.connection().to_string();
        let long = LongCall::default();
        let waited = WaitMark::default();
        host.set_wait_mark(waited.clone());
        let ctx = StoreData::new(host, limits.memory, long.clone(), version.caps.clone(), waited.clone());
        let mut store = Store::new(version.pre.engine(), ctx);
        store.limiter(|ctx| &mut ctx.limiter);
        store.epoch_deadline_callback(|mut cx| {
            let ctx = cx.data_mut();
            if ctx.ticks_left <= 1 {
                ctx.timed_out = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            ctx.ticks_left -= 1;
            // Let other connections run while this call is busy, and move
            // it off the threads that serve sockets.
            ctx.long.mark();
            Ok(UpdateDeadline::Yield(1))
        });
        let clock = version.clock.clone();
        let call = async move {
            let _ticking = clock.enter();
            arm(&mut store, limits.deadline);
            let made = tokio::time::timeout(limits.deadline, version.pre.instantiate(&mut store)).await;
            match made {
                Ok(Ok(handler)) => Ok(Self { store, handler, version, limits, id, waited, permit }),
                Ok(Err(e)) => Err(classify_instantiation(&store, &limits, e)),
                Err(_) => Err(Fault::Timeout(limits.deadline)),
            }
        };
        lane::run(call, long).await
    }

    /// What the last calls sent to the instance's own connection.
    pub fn take_replies(&mut self) -> super::host_api::Replies {
        self.store.data_mut().host.take_replies()
    }

    pub fn version(&self) -> &Arc<Version> {
        &self.version
    }

    /// The pool slot this instance holds.
    pub fn permit(&self) -> &Permit {
        &self.permit
    }

    /// Delivers `event` within the plugin's deadline in wall time (a sleep
    /// counts), or from its first wait on outbound I/O within its
    /// `wait_timeout`, its own running time still within the deadline
    /// (see `wait`). The instance comes back with the answer; after a
    /// fault it must be dropped.
    pub async fn handle(mut self, event: Event) -> (Self, Result<Answer, Fault>) {
        let long = self.store.data().long.clone();
        long.reset();
        self.waited.reset();
        let clock = self.version.clock.clone();
        let (deadline, wait_timeout) = (self.limits.deadline, self.limits.wait_timeout);
        let call = async move {
            let _ticking = clock.enter();
            arm(&mut self.store, deadline);
            let waited = self.waited.clone();
            let answered = wait::bounded(self.dispatch(&event), deadline, wait_timeout, &waited).await;
            let result = match answered {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(classify(&self.store, &self.limits, e)),
                Err(OutOfTime::Deadline) => Err(Fault::Timeout(deadline)),
                Err(OutOfTime::Wait) => Err(Fault::Waited(wait_timeout)),
            };
            (self, result)
        };
        lane::run(call, long).await
    }

    async fn dispatch(&mut self, event: &Event) -> wasmtime::Result<Answer> {
        let (handler, store, id) = (&self.handler, &mut self.store, &self.id);
        match event {
            Event::Open(request) => handler.on_open(store, id, request).await.map(Answer::Open),
            Event::Message(message) => handler.on_message(store, id, message).await.map(|()| Answer::Done),
            Event::Close(close) => handler.on_close(store, id, close.as_ref()).await.map(|()| Answer::Done),
            Event::Timer(name) => handler.on_timer(store, id, name).await.map(|()| Answer::Done),
            Event::RoomTimer { room, name } => handler.on_room_timer(store, room, name).await.map(|()| Answer::Done),
        }
    }
}

/// Gives the next call `deadline`, counted in epoch ticks.
fn arm(store: &mut Store<StoreData>, deadline: Duration) {
    let ticks = deadline.as_nanos().div_ceil(TICK.as_nanos()).max(1);
    let ctx = store.data_mut();
    ctx.ticks_left = u64::try_from(ticks).unwrap_or(u64::MAX);
    ctx.timed_out = false;
    ctx.limiter.hit = false;
    ctx.stderr_tail.clear();
    // Two tick boundaries, not one: a call interrupted at its first has
    // computed for at least a whole tick, not merely straddled one.
    store.set_epoch_deadline(2);
}

/// A failed instantiation is the plugin's fault when its own code trapped,
/// looped or grew; otherwise the host ran short (pool, memory mappings).
fn classify_instantiation(store: &Store<StoreData>, limits: &PluginLimits, error: wasmtime::Error) -> Fault {
    let ctx = store.data();
    if ctx.timed_out || ctx.limiter.hit || error.downcast_ref::<Trap>().is_some() {
        return classify(store, limits, error);
    }
    if error.is::<wasmtime::PoolConcurrencyLimitError>() {
        return Fault::PoolFull(format!("{error:#}"));
    }
    Fault::Resources(format!("{error:#}"))
}

fn classify(store: &Store<StoreData>, limits: &PluginLimits, error: wasmtime::Error) -> Fault {
    let ctx = store.data();
    if ctx.timed_out || matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        Fault::Timeout(limits.deadline)
    } else if ctx.limiter.hit {
        Fault::Memory(limits.memory)
    } else {
        Fault::Trap(super::trap::describe(&error, &ctx.stderr_tail))
    }
}
