//! The open-file limit, and how many WebSocket connections it allows.
//!
//! Every connection holds a file descriptor, so the descriptor limit is the
//! real ceiling on connections. Most systems start processes with a soft
//! limit of 1,024 under a much higher hard limit; like Go's runtime, the
//! host raises the soft limit to the hard one at start-up.

use crate::config::MAX_CONNECTIONS;

/// Descriptors kept back for everything that is not a WebSocket: the
/// listener, epoll and timers, plugin files and the compile cache, the
/// directory watcher, Redis, log files. Connections still in their HTTP
/// phase are reserved for separately (`http.max_pending`).
pub const RESERVE: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limit
/// in force afterwards; `None` when it cannot even be read.
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
        }
    }
}

/// The connection limit in force, and a warning when the configured one
/// cannot be reached.
#[derive(Debug, PartialEq, Eq)]
pub struct ConnectionLimit {
    pub max_connections: usize,
    pub warning: Option<String>,
}

/// `configured` (`websocket.max_connections`) if set, else what `open_files`
/// allows after [`RESERVE`] and the `max_pending` HTTP connections, capped at
/// [`MAX_CONNECTIONS`]. On a limit too small for that reserve, half of it
/// still goes to connections: the pending cap and the accept loop's
/// back-off keep the rest safe.
pub fn connection_limit(configured: Option<usize>, open_files: Option<u64>, max_pending: usize) -> ConnectionLimit {
    // Unknown limit: the figure this host used before it followed the limit.
    let Some(open_files) = open_files else {
        return ConnectionLimit { max_connections: configured.unwrap_or(10_000), warning: None };
    };
    let reserve = RESERVE.saturating_add(max_pending as u64);
    let allowed = open_files.saturating_sub(reserve).max(open_files / 2).max(1);
    let allowed = usize::try_from(allowed).unwrap_or(usize::MAX).min(MAX_CONNECTIONS);
    match configured {
        None => ConnectionLimit { max_connections: allowed, warning: None },
        Some(max) if max > allowed => ConnectionLimit {
            max_connections: max,
            warning: Some(format!(
                "websocket.max_connections = {max} is more than the open-file limit ({open_files}) allows \
                 after {reserve} descriptors kept for other uses (about {allowed}): connections past that \
                 will fail to be accepted; raise the limit (ulimit -n, LimitNOFILE=) or lower the setting"
            )),
        },
        Some(max) => ConnectionLimit { max_connections: max, warning: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_limit_less_the_reserve() {
        let limit = connection_limit(None, Some(20_000), 1024);
        assert_eq!(limit, ConnectionLimit { max_connections: 20_000 - 256 - 1024, warning: None });
    }

    #[test]
    fn capped_at_the_configurable_maximum() {
        assert_eq!(connection_limit(None, Some(u64::MAX), 1024).max_connections, MAX_CONNECTIONS);
        assert_eq!(connection_limit(None, Some(1 << 21), 1024).max_connections, MAX_CONNECTIONS);
    }

    #[test]
    fn a_small_limit_still_gives_half_to_connections() {
        assert_eq!(connection_limit(None, Some(1024), 1024).max_connections, 512);
        assert_eq!(connection_limit(None, Some(1), 1024).max_connections, 1);
        assert_eq!(connection_limit(None, Some(0), 1024).max_connections, 1);
    }

    #[test]
    fn configured_value_wins_and_warns_past_the_limit() {
        let within = connection_limit(Some(500), Some(20_000), 1024);
        assert_eq!(within, ConnectionLimit { max_connections: 500, warning: None });
        let beyond = connection_limit(Some(50_000), Some(20_000), 1024);
        assert_eq!(beyond.max_connections, 50_000);
        let warning = beyond.warning.expect("a warning");
        assert!(warning.contains("websocket.max_connections") && warning.contains("20000"), "{warning}");
    }

    #[test]
    fn unknown_limit_keeps_the_old_default() {
        assert_eq!(connection_limit(None, None, 1024).max_connections, 10_000);
        assert_eq!(connection_limit(Some(7), None, 1024).max_connections, 7);
    }
}
