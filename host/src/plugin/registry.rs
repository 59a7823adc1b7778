//! The loaded plugins by name, each with the version that serves it now and
//! the last load error, if any.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::cache::Origin;
use super::engine::{EpochClock, LoadError, PluginEngine};
use super::outbound::HttpPolicy;
use super::store::Capabilities;
use super::world::Pre;
use crate::config::{Config, Grants, InMemory, PluginLimits, ReloadMode, is_plugin_name};
use crate::console::{Console, Kind};
use crate::hub::ByteBudget;
use crate::metrics::{Metrics, PluginMetrics};

/// One compiled version of a plugin, ready to instantiate.
#[derive(Clone)]
pub struct Version {
    /// SHA-256 of the component file, hex.
    pub hash: String,
    /// The first 12 hex digits of `hash`, as shown in logs.
    pub short: Arc<str>,
    pub loaded_at: SystemTime,
    /// Where it came from: a file path, or `built-in`.
    pub source: String,
    pub size: usize,
    pub(crate) pre: Pre,
    /// What its instances are granted: variables, outbound HTTP.
    pub(crate) caps: Arc<Capabilities>,
    /// Ticks while this version's calls run (deadlines and yields).
    pub(crate) clock: Arc<EpochClock>,
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
    pub reload: ReloadMode,
    pub metrics: PluginMetrics,
    /// Its live console: logs, output, faults and reloads as they happen.
    pub console: Arc<Console>,
    /// Bytes it has queued for its clients (`limits.outbound_bytes`).
    pub outbound: Arc<ByteBudget>,
    /// Its grants from the configuration, as last applied.
    grants: Mutex<Arc<Grants>>,
    /// Its outbound HTTP requests in flight (`limits.http_in_flight`).
    http_in_flight: Arc<tokio::sync::Semaphore>,
    current: ArcSwapOption<Version>,
    failure: Mutex<Option<LoadFailure>>,
    /// The file is gone: the route answers 404. The entry stays so that
    /// connections still open on it follow a file that comes back.
    removed: AtomicBool,
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
    pub reload: ReloadMode,
    /// The world version it was built against: `0.2.1`, `0.2.0` or `0.1`.
    pub world: Option<String>,
    /// Its variables; secret ones show as `(secret)`.
    pub variables: BTreeMap<String, String>,
    /// Where it may send HTTP requests, as `scheme://host:port`.
    pub allowed_outbound_hosts: Vec<String>,
}

impl Plugin {
    /// The version new events run on, if any loaded.
    pub fn current(&self) -> Option<Arc<Version>> {
        self.current.load_full()
    }

    /// Whether `version` is the one serving (or nothing serves: a removed
    /// file leaves open connections on what they have).
    pub fn is_current(&self, version: &Arc<Version>) -> bool {
        self.current.load().as_ref().is_none_or(|c| Arc::ptr_eq(c, version))
    }

    /// The grants its versions are made with.
    pub fn grants(&self) -> Arc<Grants> {
        self.grants.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// What a version made now is granted.
    fn capabilities(&self) -> Arc<Capabilities> {
        let grants = self.grants();
        let variables = grants.variables.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Arc::new(Capabilities {
            variables,
            http: Arc::new(HttpPolicy {
                plugin: self.name.clone(),
                grants,
                in_flight: self.http_in_flight.clone(),
                max_response: self.limits.http_response_size.as_u64(),
                timeout: self.limits.wait_timeout,
                metrics: self.metrics.outbound.clone(),
                console: self.console.clone(),
            }),
        })
    }

    fn install(&self, version: Arc<Version>) {
        self.current.store(Some(version));
        self.removed.store(false, Ordering::Release);
        if let Ok(mut f) = self.failure.lock() {
            *f = None;
        }
    }

    fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    fn fail(&self, message: String, hash: String) {
        self.removed.store(false, Ordering::Release);
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
            reload: self.reload,
            world: current.as_ref().map(|v| v.pre.world()),
            variables: self.grants().shown_variables(),
            allowed_outbound_hosts: self
                .grants()
                .outbound
                .iter()
                .map(|o| format!("{}://{}:{}", o.scheme, o.host, o.port))
                .collect(),
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
    /// Plugins built into the binary: what serves when no file overrides.
    builtins: BTreeMap<String, &'static [u8]>,
}

/// What syncing a plugin file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncOutcome {
    /// A new version serves.
    Loaded,
    /// The file's content is what already serves (or already failed).
    Unchanged,
    /// The file is back to the content that serves: the last load error,
    /// from a file since replaced, is cleared.
    Restored,
    /// The file is gone: new connections get 404 (or the built-in).
    Removed,
    /// The file failed to load; the previous version, if any, serves.
    Failed,
}

impl Registry {
    pub fn new(engine: PluginEngine, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        Self { engine, config, metrics, plugins: RwLock::new(BTreeMap::new()), builtins: BTreeMap::new() }
    }

    /// Registers a built-in plugin and loads it.
    pub async fn add_builtin(&mut self, name: &str, bytes: &'static [u8]) {
        self.builtins.insert(name.to_string(), bytes);
        let _ = self.load(name, "built-in".into(), bytes.to_vec()).await;
    }

    /// The plugin served at `/ws/NAME`, unless its file was removed.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().ok()?.get(name).filter(|p| !p.is_removed()).cloned()
    }

    /// The plugin served at `/ws`.
    pub fn default_plugin(&self) -> Option<Arc<Plugin>> {
        self.get(&self.config.default_plugin)
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        let plugins = self.plugins.read().map(|p| p.values().cloned().collect::<Vec<_>>()).unwrap_or_default();
        plugins.iter().filter(|p| !p.is_removed()).map(|p| p.info(&self.config.default_plugin)).collect()
    }

    fn entry(&self, name: &str) -> Arc<Plugin> {
        if let Some(p) = self.plugins.read().ok().and_then(|m| m.get(name).cloned()) {
            return p;
        }
        let limits = self.config.limits_for(name);
        let plugin = Arc::new(Plugin {
            name: name.into(),
            outbound: ByteBudget::new(limits.outbound_bytes.in_memory()),
            grants: Mutex::new(Arc::new(self.config.grants_for(name))),
            http_in_flight: Arc::new(tokio::sync::Semaphore::new(limits.http_in_flight)),
            limits,
            reload: self.config.reload_for(name),
            metrics: self.metrics.for_plugin(name),
            console: Default::default(),
            current: ArcSwapOption::empty(),
            failure: Mutex::new(None),
            removed: AtomicBool::new(false),
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
        let hash = hex::encode(Sha256::digest(&bytes));
        self.load_hashed(name, source, bytes, hash).await
    }

    async fn load_hashed(
        &self,
        name: &str,
        source: String,
        bytes: Vec<u8>,
        hash: String,
    ) -> Result<Arc<Version>, LoadError> {
        let plugin = self.entry(name);
        let engine = self.engine.clone();
        let size = bytes.len();
        let started = std::time::Instant::now();
        let content_hash = hash.clone();
        let prepared = tokio::task::spawn_blocking(move || engine.prepare(&content_hash, &bytes))
            .await
            .unwrap_or_else(|e| Err(LoadError::Compile(format!("compiler task failed: {e}"))));
        match prepared {
            Ok((pre, origin)) => {
                let version = Arc::new(Version {
                    short: hash[..12].into(),
                    hash,
                    loaded_at: SystemTime::now(),
                    source,
                    size,
                    pre,
                    caps: plugin.capabilities(),
                    clock: self.engine.clock().clone(),
                });
                plugin.install(version.clone());
                self.metrics.plugin_loaded(name, "ok");
                let how = if origin == Origin::Cache { "from the compile cache" } else { "compiled" };
                plugin.console.publish(Kind::Reload, None, None, || {
                    format!(
                        "version {} serves ({how} in {:.1?}, from {})",
                        version.short,
                        started.elapsed(),
                        version.source
                    )
                });
                tracing::info!(
                    plugin = name,
                    version = &*version.short,
                    source = %version.source,
                    "plugin loaded ({how} in {:.1?})",
                    started.elapsed()
                );
                Ok(version)
            }
            Err(e) => {
                plugin.console.publish(Kind::LoadError, None, None, || {
                    let serving = plugin
                        .current()
                        .map_or("nothing serves".into(), |v| format!("version {} keeps serving", v.short));
                    format!("{source} failed to load ({serving}):\n{e}")
                });
                plugin.fail(e.to_string(), hash);
                self.metrics.plugin_loaded(name, "error");
                tracing::error!(plugin = name, source = %source, "plugin failed to load: {e}");
                Err(e)
            }
        }
    }

    /// Applies the grants of `config` (re-read from its file): every plugin
    /// whose variables or allowed hosts changed gets a new version of the
    /// same component made with them, as a file change would. What changed
    /// for each, by name (values are not named: some are secret).
    pub fn regrant(&self, config: &Config) -> Vec<(String, Vec<String>)> {
        let plugins = self.plugins.read().map(|p| p.values().cloned().collect::<Vec<_>>()).unwrap_or_default();
        let mut changed = Vec::new();
        for plugin in plugins {
            let fresh = config.grants_for(&plugin.name);
            let Ok(mut grants) = plugin.grants.lock() else { continue };
            if **grants == fresh {
                continue;
            }
            let what = grant_changes(&grants, &fresh);
            *grants = Arc::new(fresh);
            drop(grants);
            if let Some(current) = plugin.current() {
                // The same component, made with the new grants.
                let version =
                    Version { loaded_at: SystemTime::now(), caps: plugin.capabilities(), ..Version::clone(&current) };
                plugin.install(Arc::new(version));
            }
            let list = what.join(", ");
            plugin.console.publish(Kind::Reload, None, None, || format!("configuration changed ({list}): reloaded"));
            tracing::info!(plugin = &*plugin.name, "configuration changed ({list}): reloaded");
            changed.push((plugin.name.to_string(), what));
        }
        changed
    }

    /// Brings plugin `name` in line with `dir/NAME.wasm`: load it if its
    /// content changed, forget it (or fall back to the built-in) if the file
    /// is gone. A file whose content already serves, or already failed,
    /// changes nothing, so touching a file or rereading it is free.
    pub async fn sync(&self, dir: &Path, name: &str) -> SyncOutcome {
        let path = dir.join(format!("{name}.wasm"));
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.remove(name).await,
            Err(e) => {
                let e = LoadError::Read { path: path.display().to_string(), message: e.to_string() };
                tracing::error!(plugin = name, "{e}");
                self.entry(name).fail(e.to_string(), String::new());
                return SyncOutcome::Failed;
            }
        };
        let hash = hex::encode(Sha256::digest(&bytes));
        if let Some(plugin) = self.get(name) {
            let serving = plugin.current().is_some_and(|v| v.hash == hash && v.source != "built-in");
            let Ok(mut failure) = plugin.failure.lock() else { return SyncOutcome::Unchanged };
            if serving {
                // A broken file was replaced by the bytes that still serve:
                // the error no longer describes the file.
                if failure.take().is_some() {
                    tracing::info!(plugin = name, "plugin file restored to the version that serves");
                    plugin.console.publish(Kind::Restored, None, None, || {
                        "the file is back to the version that serves; the load error is cleared".into()
                    });
                    return SyncOutcome::Restored;
                }
                return SyncOutcome::Unchanged;
            }
            if failure.as_ref().is_some_and(|f| f.hash == hash) {
                return SyncOutcome::Unchanged;
            }
        }
        match self.load_hashed(name, path.display().to_string(), bytes, hash).await {
            Ok(_) => SyncOutcome::Loaded,
            Err(_) => SyncOutcome::Failed,
        }
    }

    /// The file of plugin `name` is gone. New connections get 404 (or the
    /// built-in plugin of that name); open ones finish on what they have.
    async fn remove(&self, name: &str) -> SyncOutcome {
        let Some(plugin) = self.get(name) else { return SyncOutcome::Unchanged };
        if let Some(bytes) = self.builtins.get(name) {
            if plugin.current().is_some_and(|v| v.source == "built-in") {
                return SyncOutcome::Unchanged;
            }
            let _ = self.load(name, "built-in".into(), bytes.to_vec()).await;
            tracing::info!(plugin = name, "plugin file removed; the built-in version serves");
        } else {
            plugin.removed.store(true, Ordering::Release);
            plugin.current.store(None);
            if let Ok(mut f) = plugin.failure.lock() {
                *f = None;
            }
            tracing::info!(plugin = name, "plugin file removed; new connections get 404, open ones finish");
            plugin.console.publish(Kind::Removed, None, None, || {
                "file removed: new connections get 404, open ones finish".into()
            });
        }
        SyncOutcome::Removed
    }

    /// Syncs every plugin file in `dir` and every plugin loaded from it,
    /// for a forced rescan (SIGHUP) where file events are unreliable.
    pub async fn rescan(&self, dir: &Path) -> Result<(), LoadError> {
        let known: Vec<String> = self
            .plugins
            .read()
            .map(|m| m.values().filter(|p| !p.is_removed()).map(|p| p.name.to_string()).collect())
            .unwrap_or_default();
        self.load_dir(dir).await?;
        for name in known {
            if !dir.join(format!("{name}.wasm")).exists() {
                self.sync(dir, &name).await;
            }
        }
        Ok(())
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
        for (name, _) in files {
            self.sync(dir, &name).await;
        }
        Ok(())
    }
}

/// What differs between two grants, naming variables but not their values.
fn grant_changes(old: &Grants, new: &Grants) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = old.variables.keys().chain(new.variables.keys()).collect();
    let mut what: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            old.variables.get(*k) != new.variables.get(*k) || old.secret.contains(*k) != new.secret.contains(*k)
        })
        .map(|k| format!("variable {k}"))
        .collect();
    if old.outbound != new.outbound {
        what.push("allowed_outbound_hosts".into());
    }
    what
}
