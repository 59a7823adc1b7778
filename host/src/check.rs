//! `wasmsocket check FILE.wasm`: compiles a component and checks it against
//! the world without serving it, reporting what `/api/plugins` would say.

use std::time::{Duration, Instant};

use bytesize::ByteSize;
use sha2::{Digest, Sha256};

use crate::config::Grants;
use crate::plugin::{EngineSettings, LoadError, PACKAGE, PluginEngine, handler_version};

/// What a component that fits the world looks like to the host.
#[derive(Debug)]
pub struct Report {
    /// The version of `wasmsocket:plugin` its `handler` export names.
    pub world_version: Option<String>,
    /// The `wasmsocket:plugin` interfaces it imports, e.g. `log@0.1.1`.
    pub host_imports: Vec<String>,
    /// Everything else it imports (WASI).
    pub other_imports: Vec<String>,
    /// What it asks for beyond answering: `timers`, `outbound HTTP`,
    /// `config`.
    pub capabilities: Vec<&'static str>,
    pub size: usize,
    pub compile_time: Duration,
}

/// Compiles `bytes` with the engine settings the host serves with (no
/// compile cache, so the time is the real compile time).
pub fn check(bytes: &[u8]) -> Result<Report, LoadError> {
    let engine = PluginEngine::new(EngineSettings {
        max_instances: 16,
        max_memory: crate::config::PluginLimits::default().memory.as_u64(),
        cache_dir: None,
        // One instance at most: nothing to keep for the next.
        keep_resident: 0,
    })
    .map_err(|e| LoadError::Compile(format!("cannot start the engine: {e:#}")))?;
    let hash = hex::encode(Sha256::digest(bytes));
    let started = Instant::now();
    let (pre, _) = engine.prepare(&hash, bytes)?;
    let compile_time = started.elapsed();
    let ty = pre.component().component_type();
    let mut host_imports = Vec::new();
    let mut other_imports = Vec::new();
    for (name, _) in ty.imports(engine.engine()) {
        match name.strip_prefix(PACKAGE) {
            Some(interface) => host_imports.push(interface.to_string()),
            None => other_imports.push(name.to_string()),
        }
    }
    let world_version = handler_version(pre.component(), engine.engine());
    let imports = |prefix: &str, of: &[String]| of.iter().any(|i| i.starts_with(prefix));
    let capabilities = [
        ("timers", imports("timers@", &host_imports)),
        ("outbound HTTP", imports("wasi:http/outgoing-handler@", &other_imports)),
        ("config", imports("wasi:config/store@", &other_imports)),
    ]
    .into_iter()
    .filter_map(|(name, used)| used.then_some(name))
    .collect();
    Ok(Report { world_version, host_imports, other_imports, capabilities, size: bytes.len(), compile_time })
}

impl Report {
    /// What the operator should know before serving it as `plugin` with
    /// `grants`.
    pub fn warnings(&self, plugin: &str, grants: &Grants) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.capabilities.contains(&"outbound HTTP") && grants.outbound.is_empty() {
            warnings.push(format!(
                "it imports outbound HTTP, but plugins.{plugin}.allowed_outbound_hosts is empty: every request will be denied"
            ));
        }
        warnings
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        writeln!(f, "world:        wasmsocket:plugin@{}", self.world_version.as_deref().unwrap_or("(unversioned)"))?;
        writeln!(f, "host imports: {}", list(&self.host_imports))?;
        writeln!(f, "other imports: {}", list(&self.other_imports))?;
        let caps: Vec<String> = self.capabilities.iter().map(|c| c.to_string()).collect();
        writeln!(f, "capabilities: {}", list(&caps))?;
        writeln!(f, "size:         {}", ByteSize(self.size as u64).display().si())?;
        write!(f, "compile time: {:.1?}", self.compile_time)
    }
}
