//! The loaded plugins by name, each with the version that serves it now and
//! the last load error, if any.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bindings::WebsocketPluginPre;
use super::engine::{LoadError, PluginEngine};
use super::instance::Ctx;
use crate::config::{Config, PluginLimits, is_plugin_name};
use crate::metrics::{Metrics, PluginMetrics};

/// One compiled version of a plugin, ready to instantiate.
pub struct Version {
    /// SHA-256 of the component file, hex.
    pub hash: String,
    /// The first 12 hex digits of `hash`, as shown in logs.
    pub short: Arc<str>,
    pub loaded_at: SystemTime,
    /// Where it came from: a file path, or `built-in`.
    pub source: String,
    pub size: usize,
    pub(crate) pre: WebsocketPluginPre<Ctx>,
}

struct LoadFailure {
    message: String,
    hash: String,
    at: SystemTime,
}

/// A named plugin: its route, limits, current version and last error.
pub struct Plugin {
    pub name: Arc<str>,
    pub limits: PluginLimits,
    pub metrics: PluginMetrics,
    current: ArcSwapOption<Version>,
    failure: Mutex<Option<LoadFailure>>,
}

/// What `/api/plugins` says of a plugin.
#[derive(Debug, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub route: String,
    /// `ready` when a version serves; `error` when the last load failed
    /// (a previous version, if any, keeps serving).
    pub state: &'static str,
    pub hash: Option<String>,
    pub loaded_at: Option<String>,
    pub source: Option<String>,
    pub size: Option<usize>,
    pub error: Option<String>,
    pub error_hash: Option<String>,
    pub error_at: Option<String>,
    pub connections: i64,
    pub default: bool,
}

impl Plugin {
    /// The version new events run on, if any loaded.
    pub fn current(&self) -> Option<Arc<Version>> {
        self.current.load_full()
    }

    fn install(&self, version: Arc<Version>) {
        self.current.store(Some(version));
        if let Ok(mut f) = self.failure.lock() {
            *f = None;
        }
    }

    fn fail(&self, message: String, hash: String) {
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(LoadFailure { message, hash, at: SystemTime::now() });
        }
    }

    fn info(&self, default_plugin: &str) -> PluginInfo {
        let current = self.current();
        let failure = self.failure.lock().ok();
        let failure = failure.as_ref().and_then(|f| f.as_ref());
        let name = self.name.to_string();
        PluginInfo {
            route: if name == default_plugin { "/ws".into() } else { format!("/ws/{name}") },
            state: if failure.is_some() || current.is_none() { "error" } else { "ready" },
            hash: current.as_ref().map(|v| v.hash.clone()),
            loaded_at: current.as_ref().map(|v| humantime::format_rfc3339_millis(v.loaded_at).to_string()),
            source: current.as_ref().map(|v| v.source.clone()),
            size: current.as_ref().map(|v| v.size),
            error: failure.map(|f| f.message.clone()),
            error_hash: failure.map(|f| f.hash.clone()),
            error_at: failure.map(|f| humantime::format_rfc3339_millis(f.at).to_string()),
            connections: self.metrics.connections_open.get(),
            default: name == default_plugin,
            name,
        }
    }
}

/// Every plugin this host knows, by name.
pub struct Registry {
    engine: PluginEngine,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
}

impl Registry {
    pub fn new(engine: PluginEngine, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        Self { engine, config, metrics, plugins: RwLock::new(BTreeMap::new()) }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().ok()?.get(name).cloned()
    }

    /// The plugin served at `/ws`.
    pub fn default_plugin(&self) -> Option<Arc<Plugin>> {
        self.get(&self.config.default_plugin)
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        let plugins = self.plugins.read().map(|p| p.values().cloned().collect::<Vec<_>>()).unwrap_or_default();
        plugins.iter().map(|p| p.info(&self.config.default_plugin)).collect()
    }

    fn entry(&self, name: &str) -> Arc<Plugin> {
        if let Some(p) = self.get(name) {
            return p;
        }
        let plugin = Arc::new(Plugin {
            name: name.into(),
            limits: self.config.limits_for(name),
            metrics: self.metrics.for_plugin(name),
            current: ArcSwapOption::empty(),
            failure: Mutex::new(None),
        });
        match self.plugins.write() {
            Ok(mut map) => map.entry(name.to_string()).or_insert(plugin).clone(),
            Err(_) => plugin,
        }
    }

    /// Compiles `bytes` as plugin `name` off the async runtime and, if it
    /// fits the world, makes it the version that serves. On failure the
    /// previous version, if any, keeps serving and the error is recorded.
    pub async fn load(&self, name: &str, source: String, bytes: Vec<u8>) -> Result<Arc<Version>, LoadError> {
        let plugin = self.entry(name);
        let hash = hex::encode(Sha256::digest(&bytes));
        let engine = self.engine.clone();
        let size = bytes.len();
        let prepared = tokio::task::spawn_blocking(move || engine.prepare(&bytes))
            .await
            .unwrap_or_else(|e| Err(LoadError::Compile(format!("compiler task failed: {e}"))));
        match prepared {
            Ok(pre) => {
                let version = Arc::new(Version {
                    short: hash[..12].into(),
                    hash,
                    loaded_at: SystemTime::now(),
                    source,
                    size,
                    pre,
                });
                plugin.install(version.clone());
                self.metrics.plugin_loaded(name, "ok");
                tracing::info!(plugin = name, version = &*version.short, source = %version.source, "plugin loaded");
                Ok(version)
            }
            Err(e) => {
                plugin.fail(e.to_string(), hash);
                self.metrics.plugin_loaded(name, "error");
                tracing::error!(plugin = name, source = %source, "plugin failed to load: {e}");
                Err(e)
            }
        }
    }

    /// Loads every `NAME.wasm` in `dir`. A file that fails is reported and
    /// skipped; the others serve.
    pub async fn load_dir(&self, dir: &Path) -> Result<(), LoadError> {
        let read_err = |e: std::io::Error| LoadError::Read { path: dir.display().to_string(), message: e.to_string() };
        let mut entries = tokio::fs::read_dir(dir).await.map_err(read_err)?;
        let mut files = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(read_err)? {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
                continue;
            }
            match path.file_stem().and_then(|s| s.to_str()) {
                Some(name) if is_plugin_name(name) => files.push((name.to_string(), path)),
                _ => tracing::warn!(
                    path = %path.display(),
                    "skipped: {}",
                    crate::config::PLUGIN_NAME_RULE.replace("is not", "file name is not")
                ),
            }
        }
        files.sort();
        for (name, path) in files {
            match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    let _ = self.load(&name, path.display().to_string(), bytes).await;
                }
                Err(e) => {
                    let e = LoadError::Read { path: path.display().to_string(), message: e.to_string() };
                    tracing::error!(plugin = %name, "{e}");
                    self.entry(&name).fail(e.to_string(), String::new());
                }
            }
        }
        Ok(())
    }
}
