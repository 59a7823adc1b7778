//! What every request of the host shares: its settings, plugins,
//! connections, instance slots, metrics and the receive budget. The
//! transports and the API take it; the application (`server`) makes it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backplane::Backplane;
use crate::config::{Config, WebSocketConfig};
use crate::hub::Hub;
use crate::inbound::ReceiveBudget;
use crate::metrics::Metrics;
use crate::plugin::{InstancePool, Registry};
use crate::resume::Sessions;

/// What every request handler shares.
pub struct AppState {
    pub config: Arc<Config>,
    pub ws: Arc<WebSocketConfig>,
    pub registry: Arc<Registry>,
    pub hub: Arc<Hub>,
    /// The other hosts, when scaled out (the hub reaches them through its
    /// port; the fallback, the API and shutdown need the backplane itself).
    pub backplane: Option<Arc<Backplane>>,
    /// Slots for live plugin instances (`max_instances`).
    pub pool: Arc<InstancePool>,
    pub metrics: Arc<Metrics>,
    /// Resumable WebSocket sessions.
    pub sessions: Arc<Sessions>,
    /// Bytes of partly received messages, across every connection.
    pub receive_budget: Arc<ReceiveBudget>,
    /// Cancelled when shutdown begins: new upgrades are refused.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
}
