//! Which world a plugin was built against, and its handler called the same
//! way whichever it is. The 0.1 handler has no timer events: a timer of a
//! 0.1 plugin cannot exist, as it cannot import `timers`.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{CloseFrame, Message, OpenResponse, PluginCore, PluginCorePre, PluginV01, PluginV01Pre, Request};
use super::store::StoreData;

/// The package every interface of the world is in.
pub const PACKAGE: &str = "wasmsocket:plugin/";

/// The version of the world whose `handler` `component` exports.
pub fn handler_version(component: &wasmtime::component::Component, engine: &wasmtime::Engine) -> Option<String> {
    component
        .component_type()
        .exports(engine)
        .find_map(|(name, _)| name.strip_prefix(PACKAGE)?.strip_prefix("handler@").map(str::to_string))
}

/// A component checked against a world, ready to instantiate.
#[derive(Clone)]
pub enum Pre {
    Current(PluginCorePre<StoreData>),
    V01(PluginV01Pre<StoreData>),
}

/// An instance's exports.
pub enum Handler {
    Current(PluginCore),
    V01(PluginV01),
}

impl Pre {
    /// Checks `pre` against the current world, then the 0.1 one. The error
    /// is the current world's: that is the one to build against.
    pub fn new(pre: InstancePre<StoreData>) -> wasmtime::Result<Self> {
        match PluginCorePre::new(pre.clone()) {
            Ok(current) => Ok(Self::Current(current)),
            Err(e) => PluginV01Pre::new(pre).map(Self::V01).map_err(|_| e),
        }
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            Self::Current(pre) => pre.engine(),
            Self::V01(pre) => pre.engine(),
        }
    }

    pub fn component(&self) -> &wasmtime::component::Component {
        match self {
            Self::Current(pre) => pre.instance_pre().component(),
            Self::V01(pre) => pre.instance_pre().component(),
        }
    }

    /// The world's version, as the API shows it: the one the plugin's
    /// `handler` names (`0.2.0`, `0.2.1`), or `0.1` for the 0.1 line.
    pub fn world(&self) -> String {
        match self {
            Self::Current(pre) => {
                handler_version(pre.instance_pre().component(), self.engine()).unwrap_or_else(|| "0.2".into())
            }
            Self::V01(_) => "0.1".into(),
        }
    }

    pub async fn instantiate(&self, store: &mut Store<StoreData>) -> wasmtime::Result<Handler> {
        Ok(match self {
            Self::Current(pre) => Handler::Current(pre.instantiate_async(store).await?),
            Self::V01(pre) => Handler::V01(pre.instantiate_async(store).await?),
        })
    }
}

impl Handler {
    pub async fn on_open(
        &self,
        store: &mut Store<StoreData>,
        id: &String,
        request: &Request,
    ) -> wasmtime::Result<OpenResponse> {
        match self {
            Self::Current(b) => b.wasmsocket_plugin_handler().call_on_open(store, id, request).await,
            Self::V01(b) => b.wasmsocket_plugin_handler().call_on_open(store, id, request).await,
        }
    }

    pub async fn on_message(
        &self,
        store: &mut Store<StoreData>,
        id: &String,
        message: &Message,
    ) -> wasmtime::Result<()> {
        match self {
            Self::Current(b) => b.wasmsocket_plugin_handler().call_on_message(store, id, message).await,
            Self::V01(b) => b.wasmsocket_plugin_handler().call_on_message(store, id, message).await,
        }
    }

    pub async fn on_close(
        &self,
        store: &mut Store<StoreData>,
        id: &String,
        close: Option<&CloseFrame>,
    ) -> wasmtime::Result<()> {
        match self {
            Self::Current(b) => b.wasmsocket_plugin_handler().call_on_close(store, id, close).await,
            Self::V01(b) => b.wasmsocket_plugin_handler().call_on_close(store, id, close).await,
        }
    }

    pub async fn on_timer(&self, store: &mut Store<StoreData>, id: &String, name: &str) -> wasmtime::Result<()> {
        match self {
            Self::Current(b) => b.wasmsocket_plugin_handler().call_on_timer(store, id, name).await,
            Self::V01(_) => Ok(()),
        }
    }

    pub async fn on_room_timer(&self, store: &mut Store<StoreData>, room: &str, name: &str) -> wasmtime::Result<()> {
        match self {
            Self::Current(b) => b.wasmsocket_plugin_handler().call_on_room_timer(store, room, name).await,
            Self::V01(_) => Ok(()),
        }
    }
}
