//! Hot reload: watch the plugin directory and keep the registry in line
//! with it. Events are debounced, so an editor's burst of writes, a
//! write-then-rename or a delete-and-recreate ends in one reload of the
//! final content. The host's own reads of plugin files raise only access
//! events, which are ignored, so reading never triggers a reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use crate::config::is_plugin_name;
use crate::plugin::Registry;

/// Quiet time after the last change before a file is read: long enough
/// for a copy tool to finish, short enough to feel instant.
pub const DEBOUNCE: Duration = Duration::from_millis(75);

/// Keeps the directory watched while it lives.
pub struct Watcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {dir}: {source}")]
pub struct WatchError {
    dir: PathBuf,
    source: notify::Error,
}

/// Starts watching `dir`; changes are applied to `registry` on the runtime.
pub fn watch(dir: &Path, registry: Arc<Registry>) -> Result<Watcher, WatchError> {
    let (tx, mut rx) = mpsc::channel::<BTreeSet<String>>(64);
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let names: BTreeSet<String> = events
                .iter()
                .filter(|e| relevant(&e.kind))
                .flat_map(|e| e.paths.iter())
                .filter_map(|p| plugin_name(p))
                .collect();
            // The debouncer thread may block briefly; the queue is bounded.
            if !names.is_empty() && tx.blocking_send(names).is_err() {
                tracing::debug!("plugin watcher stopped: the host is shutting down");
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!("plugin directory watch error: {e}");
            }
        }
    };
    let error = |source| WatchError { dir: dir.to_owned(), source };
    let mut debouncer = new_debouncer(DEBOUNCE, None, handler).map_err(error)?;
    debouncer.watch(dir, RecursiveMode::NonRecursive).map_err(error)?;

    let dir = dir.to_owned();
    tokio::spawn(async move {
        while let Some(mut names) = rx.recv().await {
            // Coalesce whatever else arrived meanwhile.
            while let Ok(more) = rx.try_recv() {
                names.extend(more);
            }
            for name in names {
                let outcome = registry.sync(&dir, &name).await;
                tracing::debug!(plugin = %name, ?outcome, "plugin file changed");
            }
        }
    });
    Ok(Watcher { _debouncer: debouncer })
}

/// Watches the configuration file: when the plugins' grants in it change
/// (variables, allowed hosts), those plugins reload with them. The rest of
/// the file applies at the next start. A file that fails to read or
/// validate is reported and changes nothing.
pub fn watch_config(file: &Path, registry: Arc<Registry>) -> Result<Watcher, WatchError> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    let name = file.file_name().map(|n| n.to_owned());
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let handler = move |result: DebounceEventResult| {
        if let Ok(events) = result
            && events.iter().any(|e| relevant(&e.kind) && e.paths.iter().any(|p| p.file_name() == name.as_deref()))
        {
            // One pending reread is enough.
            let _ = tx.try_send(());
        }
    };
    let error = |source| WatchError { dir: dir.clone(), source };
    let mut debouncer = new_debouncer(DEBOUNCE, None, handler).map_err(error)?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive).map_err(error)?;
    let file = file.to_owned();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            regrant(&file, &registry).await;
        }
    });
    Ok(Watcher { _debouncer: debouncer })
}

/// Rereads the configuration file and applies its plugins' grants.
pub async fn regrant(file: &Path, registry: &Registry) {
    let path = file.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let config = crate::config::Config::from_file(&path)?;
        config.validate()?;
        Ok::<_, crate::config::ConfigError>(config)
    })
    .await;
    match read {
        Ok(Ok(config)) => {
            registry.regrant(&config);
        }
        Ok(Err(e)) => tracing::error!(file = %file.display(), "configuration not reloaded: {e}"),
        Err(e) => tracing::error!(file = %file.display(), "configuration not reloaded: {e}"),
    }
}

/// Creates, writes, renames, removals and write-closes; not reads.
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// `DIR/NAME.wasm` → `NAME`, for valid plugin names only (editor backups,
/// temporary files and hidden files are not plugins).
fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()?.to_str()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    is_plugin_name(stem).then(|| stem.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind};

    #[test]
    fn names_come_from_plugin_files_only() {
        assert_eq!(plugin_name(Path::new("/p/echo.wasm")).as_deref(), Some("echo"));
        assert_eq!(plugin_name(Path::new("/p/.echo.wasm.swp")), None);
        assert_eq!(plugin_name(Path::new("/p/echo.wasm~")), None);
        assert_eq!(plugin_name(Path::new("/p/echo.wasm.tmp")), None);
        assert_eq!(plugin_name(Path::new("/p/Echo.wasm")), None);
    }

    #[test]
    fn reads_are_not_changes() {
        assert!(!relevant(&EventKind::Access(AccessKind::Open(AccessMode::Read))));
        assert!(!relevant(&EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(relevant(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(relevant(&EventKind::Create(CreateKind::File)));
        assert!(relevant(&EventKind::Modify(ModifyKind::Any)));
    }
}
