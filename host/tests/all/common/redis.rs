//! Hosts joined to a real Redis, for the scale-out tests.

use std::path::Path;

pub use super::redis_server::RedisTarget;
use super::{Host, TempDir, plugins_dir};

/// Settings that make a cluster react within a test's patience: a host is
/// declared dead half a second after its last heartbeat.
pub fn cluster_config(redis: &impl RedisTarget, dir: &Path) -> String {
    cluster_config_with(redis, dir, "")
}

/// Same, followed by `more` (other tables of the configuration).
pub fn cluster_config_with(redis: &impl RedisTarget, dir: &Path, more: &str) -> String {
    let path = dir.join("cluster.toml");
    let toml = format!(
        "[redis]\n{}heartbeat = \"100ms\"\nhost_timeout = \"500ms\"\ntimeout = \"500ms\"\nmax_backoff = \"200ms\"\n\n{more}",
        redis.toml()
    );
    std::fs::write(&path, toml).expect("write config");
    path.display().to_string()
}

/// A host with the testbed plugin on `redis`, plus `args`.
pub async fn cluster_host(redis: &impl RedisTarget, args: &[&str]) -> Host {
    cluster_host_with(redis, &[], args).await
}

/// A host with the testbed plugin on `redis`, configured also by `more`.
pub async fn cluster_host_configured(redis: &impl RedisTarget, more: &str) -> Host {
    let dir: TempDir = plugins_dir(&[]);
    let config = cluster_config_with(redis, &dir.0, more);
    Host::start_with(dir, &["--config", config.as_str()]).await
}

/// Same, with more plugins as `(file name, bytes)`.
pub async fn cluster_host_with(redis: &impl RedisTarget, plugins: &[(&str, &[u8])], args: &[&str]) -> Host {
    let dir: TempDir = plugins_dir(plugins);
    let config = cluster_config(redis, &dir.0);
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    Host::start_with(dir, &all).await
}
