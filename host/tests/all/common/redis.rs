//! Hosts joined to a real Redis, for the scale-out tests.

use std::path::Path;

pub use super::redis_server::RedisTarget;
use super::{Host, TempDir, plugins_dir};

/// Settings that make a cluster react within a test's patience: a host is
/// declared dead half a second after its last heartbeat.
pub fn cluster_config(redis: &impl RedisTarget, dir: &Path) -> String {
    let path = dir.join("cluster.toml");
    let toml = format!(
        "[redis]\n{}heartbeat = \"100ms\"\nhost_timeout = \"500ms\"\ntimeout = \"500ms\"\nmax_backoff = \"200ms\"\n",
        redis.toml()
    );
    std::fs::write(&path, toml).expect("write config");
    path.display().to_string()
}

/// A host with the testbed plugin on `redis`, plus `args`.
pub async fn cluster_host(redis: &impl RedisTarget, args: &[&str]) -> Host {
    cluster_host_with(redis, &[], args).await
}

/// Same, with more plugins as `(file name, bytes)`.
pub async fn cluster_host_with(redis: &impl RedisTarget, plugins: &[(&str, &[u8])], args: &[&str]) -> Host {
    let dir: TempDir = plugins_dir(plugins);
    let config = cluster_config(redis, &dir.0);
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    Host::start_with(dir, &all).await
}
