//! The ticks of room timers: the session layer's side of the hub's
//! [`RoomTicker`]. Each timer runs its ticks on an instance of its own,
//! bound to a connection that no client holds, kept between ticks like a
//! connection's (the pool may take it back) and made again after a fault.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;

use crate::config::WebSocketConfig;
use crate::console::Kind;
use crate::dispatch::Parts;
use crate::hub::room_timers::{RoomTick, RoomTicker};
use crate::hub::{Hub, QueueLimits};
use crate::metrics::Call;
use crate::plugin::{Event, Instance, InstancePool, Registry};

/// Makes the runners of room timers.
pub struct RoomTicks {
    pub registry: Arc<Registry>,
    pub hub: Arc<Hub>,
    pub pool: Arc<InstancePool>,
    pub settings: Arc<WebSocketConfig>,
}

impl RoomTicker for RoomTicks {
    fn serves(&self, plugin: &str) -> bool {
        self.registry.get(plugin).is_some_and(|p| p.current().is_some())
    }

    fn runner(&self, plugin: &Arc<str>, room: &Arc<str>, name: &Arc<str>) -> Option<Box<dyn RoomTick>> {
        let plugin = self.registry.get(plugin)?;
        let queue = QueueLimits {
            messages: self.settings.send_queue,
            bytes: self.settings.queue_bytes(),
            outbound: plugin.outbound.clone(),
        };
        let conn = self.hub.detached(plugin.name.clone(), &format!("room-timer:{room}"), queue);
        plugin.metrics.timers.room_timers.inc();
        let parts =
            Parts { conn, plugin, hub: self.hub.clone(), pool: self.pool.clone(), settings: self.settings.clone() };
        Some(Box::new(Runner { parts, instance: None, room: room.clone(), name: name.clone(), faults: 0 }))
    }
}

struct Runner {
    parts: Parts,
    instance: Option<Instance>,
    room: Arc<str>,
    name: Arc<str>,
    /// Ticks in a row whose call failed.
    faults: u32,
}

/// Ticks in a row that may fail before their timer is cancelled: a handler
/// that always traps would otherwise cost an instance and a log line per
/// tick for ever.
const MAX_FAULTS: u32 = 3;

impl Drop for Runner {
    fn drop(&mut self) {
        self.parts.plugin.metrics.timers.room_timers.dec();
    }
}

impl RoomTick for Runner {
    fn tick(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(self.run_tick())
    }
}

impl Runner {
    /// Runs one tick; false once `MAX_FAULTS` ticks in a row failed.
    async fn run_tick(&mut self) -> bool {
        let plugin = self.parts.plugin.clone();
        // A removed plugin's timers wait for it to come back.
        let Some(current) = plugin.current() else { return true };
        let instance = match self.instance.take() {
            Some(held) if held.permit().resume() && plugin.is_current(held.version()) => held,
            _ => match self.parts.new_instance(current).await {
                Ok(fresh) => fresh,
                // Reported by `new_instance`; the next tick tries again.
                Err(_) => return true,
            },
        };
        plugin.metrics.timers.room_fired.inc();
        let (room, name) = (&self.room, &self.name);
        plugin.console.publish(Kind::Timer, None, Some("fired"), || format!("timer {name:?} of room {room:?} fired"));
        let started = Instant::now();
        let event = Event::RoomTimer { room: self.room.to_string(), name: self.name.to_string() };
        let (mut instance, result) = instance.handle(event).await;
        plugin.metrics.observe_call(Call::RoomTimer, started.elapsed());
        // Sends to itself have no client to reach.
        drop(instance.take_replies());
        match result {
            Ok(_) => {
                instance.permit().idle();
                self.instance = Some(instance);
                self.faults = 0;
                true
            }
            Err(fault) => {
                self.faults += 1;
                plugin.metrics.fault(fault.kind());
                plugin.console.publish(Kind::Fault, None, Some(fault.kind().as_str()), || {
                    format!("plugin {fault} in on-room-timer of room {room}, timer {name}")
                });
                tracing::warn!(
                    plugin = &*plugin.name,
                    room = &**room,
                    timer = &**name,
                    "plugin {fault} in on-room-timer"
                );
                if self.faults < MAX_FAULTS {
                    return true;
                }
                plugin.console.publish(Kind::Timer, None, Some("refused"), || {
                    format!("timer {name:?} of room {room:?} cancelled: its last {MAX_FAULTS} ticks failed")
                });
                tracing::warn!(
                    plugin = &*plugin.name,
                    room = &**room,
                    timer = &**name,
                    "room timer cancelled: its last {MAX_FAULTS} ticks failed"
                );
                false
            }
        }
    }
}
