//! Start-up, the warp routes, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::Filter;

use crate::backplane::Backplane;
use crate::config::{Config, ConfigError, InMemory};
use crate::fallback::Sessions;
use crate::handover::Handover;
use crate::handshake::{RouteRequest, upgrade};
use crate::hub::Hub;
use crate::inbound::ReceiveBudget;
use crate::listener::PeerAddr;
use crate::metrics::Metrics;
use crate::pending::PendingSlot;
use crate::plugin::{EngineSettings, InstancePool, LoadError, PluginEngine, Registry};
use crate::resume::Transfer;
use crate::room_ticks::RoomTicks;
use crate::state::AppState;
use crate::tls::{Tls, TlsError, TlsWatcher};
use crate::{api, fd_limit, heap_trim, listener, reload, resume, static_files};

/// The echo plugin, built from `plugins/echo` and embedded at build time.
pub const BUILTIN_ECHO: &[u8] = include_bytes!(env!("WASMSOCKET_ECHO_WASM"));

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("plugins directory: {0}")]
    Plugins(LoadError),
    #[error("default_plugin {0:?} is neither built in nor in the plugins directory")]
    NoDefaultPlugin(String),
    #[error(transparent)]
    Watch(reload::WatchError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Backplane(#[from] crate::backplane::BackplaneError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A host that has loaded its plugins and bound its socket.
pub struct Server {
    state: Arc<AppState>,
    /// The HTTP fallback's sessions on this host.
    fallback: Arc<Sessions>,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    _watcher: Option<reload::Watcher>,
    _tls_watcher: Option<TlsWatcher>,
    _config_watcher: Option<reload::Watcher>,
}

impl Server {
    /// Validates the configuration, loads the plugins and binds.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        // Before the plugins compile, so a bad file fails start-up at once.
        let tls = Tls::load(&config.tls)?;
        let tls_watcher = tls.as_ref().map(|tls| tls.watch()).transpose()?;
        let config = Arc::new(config);
        let mut metrics = Metrics::new();
        let backplane_metrics = config.redis.enabled().then(|| metrics.register_backplane());
        let pool_metrics = metrics.register_pool();
        let resume_metrics = metrics.register_resume();
        let history_metrics = metrics.register_history();
        let open_files = fd_limit::raise_open_file_limit();
        if let Some(limit) = open_files {
            tracing::info!("open-file limit: {limit}");
        }
        let limit = fd_limit::connection_limit(config.websocket.max_connections, open_files, config.http.max_pending);
        if let Some(warning) = &limit.warning {
            tracing::warn!("{warning}");
        }
        let max_connections = limit.max_connections;
        tracing::info!("max_connections: {max_connections}");
        let engine = PluginEngine::new(EngineSettings {
            max_instances: config.max_instances,
            max_memory: config.largest_memory(),
            cache_dir: config.compile_cache_dir(),
            keep_resident: config.keep_resident.as_u64(),
        })
        .map_err(|e| StartError::Engine(format!("{e:#}")))?;
        let pool_engine = engine.clone();
        metrics.register_sampled(
            "pool_kept_bytes",
            "Bytes the instance pool's free slots keep resident for their next instances (keep_resident)",
            move || i64::try_from(pool_engine.kept_bytes()).unwrap_or(i64::MAX),
        );
        let metrics = Arc::new(metrics);
        heap_trim::spawn(pool_metrics.live.clone());
        let pool = InstancePool::new(engine.instances(), pool_metrics);
        warn_if_too_few_memory_maps(config.max_instances);
        let mut registry = Registry::new(engine, config.clone(), metrics.clone());

        // Built-in first, so a file of the same name in the directory wins.
        registry.add_builtin("echo", BUILTIN_ECHO).await;
        let registry = Arc::new(registry);
        let watcher = match &config.plugins_dir {
            Some(dir) => {
                // Watch before the first scan, so no change falls between.
                let watcher = reload::watch(dir, registry.clone()).map_err(StartError::Watch)?;
                registry.load_dir(dir).await.map_err(StartError::Plugins)?;
                Some(watcher)
            }
            None => None,
        };
        let config_watcher = match &config.file {
            Some(file) => Some(reload::watch_config(file, registry.clone()).map_err(StartError::Watch)?),
            None => None,
        };
        if registry.default_plugin().is_none() {
            return Err(StartError::NoDefaultPlugin(config.default_plugin.clone()));
        }

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let hub = Hub::new(
            max_connections,
            crate::hub::kv::KvLimits {
                max_keys: config.store.max_keys,
                max_value: config.store.value_size.in_memory(),
                max_bytes: config.store.max_bytes.in_memory(),
            },
            metrics.store_gauges(),
            history(&config, history_metrics),
        );
        let fallback = Arc::new(Sessions::default());
        let sessions = Arc::new(resume::Sessions::new(config.websocket.resume_budget.in_memory(), resume_metrics));
        let backplane = match backplane_metrics {
            Some(backplane_metrics) => {
                let backplane = Backplane::start(&config.redis, &hub, backplane_metrics)?;
                backplane.take_posts(fallback.clone());
                backplane.take_moves(Arc::new(Handover { sessions: sessions.clone(), hub: hub.clone() }));
                tokio::spawn(crate::checkpoint::write(sessions.clone(), backplane.clone()));
                backplane.ready(config.redis.timeout * 2).await?;
                hub.attach(backplane.clone());
                Some(backplane)
            }
            None => None,
        };
        let receive_budget = ReceiveBudget::new(
            config.websocket.receive_budget.as_u64(),
            config.websocket.message_timeout,
            metrics.inbound(),
        );
        let ws = Arc::new(config.websocket.clone());
        hub.room_timers.attach(Arc::new(RoomTicks {
            registry: registry.clone(),
            hub: hub.clone(),
            pool: pool.clone(),
            settings: ws.clone(),
        }));
        let state = Arc::new(AppState {
            sessions,
            ws,
            hub,
            backplane,
            pool,
            config,
            registry,
            metrics,
            receive_budget,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        Ok(Self {
            state,
            fallback,
            listener,
            tls,
            _watcher: watcher,
            _tls_watcher: tls_watcher,
            _config_watcher: config_watcher,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.config.listen)
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `signal` completes, then closes every WebSocket with
    /// 1001 (going away), waits for their close handshakes, and returns.
    pub async fn run(self, signal: impl Future<Output = ()> + Send + 'static) {
        let Server { state, fallback, listener, tls, .. } = self;
        spawn_reload_on_sighup(state.clone(), tls.clone());
        let stop_http = CancellationToken::new();
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes(state.clone(), fallback)));
        let http = tokio::spawn(listener::serve(
            listener,
            state.config.http.clone(),
            state.ws.clone(),
            state.metrics.clone(),
            service,
            tls,
            stop_http.clone(),
        ));

        signal.await;
        state.shutdown.cancel();
        stop_http.cancel();
        drain(&state).await;
        tracing::info!(connections = state.hub.len(), "shutting down: closing every connection with 1001");
        state.hub.close_all(&CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() });
        state.tasks.close();
        let grace = state.ws.close_timeout + Duration::from_secs(1);
        // Meanwhile room timers stop: ticks in progress finish (a call's
        // longest is its deadline or wait_timeout) before other hosts may
        // take their timers over.
        let config = &state.config;
        let longest_tick = config
            .plugins
            .keys()
            .map(|n| config.limits_for(n))
            .chain([config.limits])
            .map(|l| l.deadline.max(l.wait_timeout))
            .max()
            .unwrap_or_default();
        let (closed, ()) =
            tokio::join!(tokio::time::timeout(grace, state.tasks.wait()), state.hub.room_timers.stop_all(longest_tick));
        if closed.is_err() {
            tracing::warn!("some connections did not close within {grace:?}; exiting anyway");
        }
        if let Some(backplane) = &state.backplane {
            backplane.shutdown().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    }
}

/// With Redis, before the host stops: every client is told the server
/// restarts (1012), and each resumable session waits, up to
/// `websocket.drain_timeout`, for its client to resume it on another host,
/// which takes it over (see `takeover`). New connections are refused
/// already.
async fn drain(state: &AppState) {
    let within = state.ws.drain_timeout;
    let Some(backplane) = &state.backplane else { return };
    if within.is_zero() || !backplane.is_up() {
        return;
    }
    let sessions = state.sessions.all();
    tracing::info!(
        connections = state.hub.len(),
        sessions = sessions.len(),
        "draining: closing every connection with 1012; resumable sessions wait up to {} to be resumed on another host",
        humantime::format_duration(within)
    );
    let started = tokio::time::Instant::now();
    let resumable: std::collections::HashSet<Arc<str>> = sessions.iter().map(|s| s.conn.id.clone()).collect();
    for session in &sessions {
        let _ = session.handoff.give(&session.conn, Transfer::Drain);
    }
    let restart = CloseFrame { code: CloseCode::Restart, reason: "server restarting".into() };
    state.hub.close_all_but(&restart, &resumable);
    while state.sessions.len() > 0 && started.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = state.sessions.len();
    tracing::info!(
        moved = sessions.len().saturating_sub(left),
        left,
        "drained in {}",
        humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64))
    );
}

/// Memory mappings one live instance may cost the process. Its linear
/// memory's slot splits into 4 (the pages before its copy-on-write image,
/// the image, the pages after it, the rest of the slot), the floor with
/// memory images; measured 3.2 (C) to 5.8 (Python) per instance across the
/// examples' languages, 4.0 for the Rust testbed (a test holds it to this).
pub const MAPS_PER_INSTANCE: usize = 6;

/// Linux allows 65,530 mappings by default. Idle connections hold no
/// instance, so only `max_instances` matters here.
fn warn_if_too_few_memory_maps(max_instances: u32) {
    let Ok(text) = std::fs::read_to_string("/proc/sys/vm/max_map_count") else { return };
    let Ok(limit) = text.trim().parse::<usize>() else { return };
    let instances = usize::try_from(max_instances).unwrap_or(usize::MAX);
    let needed = instances.saturating_mul(MAPS_PER_INSTANCE) + 2_000;
    if needed > limit {
        tracing::warn!(
            "max_instances = {max_instances} may need about {needed} memory mappings, but vm.max_map_count \
             is {limit}: lower max_instances to {} or raise the limit (sysctl -w vm.max_map_count={}); \
             instances past it fail with 503 or close 1011",
            limit.saturating_sub(2_000) / MAPS_PER_INSTANCE,
            needed.next_power_of_two()
        );
    }
}

/// SIGHUP rescans the plugin directory and reloads the TLS certificate,
/// for filesystems whose change events are unreliable (network
/// filesystems, some container mounts).
fn spawn_reload_on_sighup(state: Arc<AppState>, tls: Option<Arc<Tls>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let dir = state.config.plugins_dir.clone();
    let file = state.config.file.clone();
    if dir.is_none() && tls.is_none() && file.is_none() {
        return;
    }
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP, reloads come only from file changes and the API: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Some(dir) = &dir {
                tracing::info!(dir = %dir.display(), "SIGHUP: rescanning the plugin directory");
                if let Err(e) = state.registry.rescan(dir).await {
                    tracing::error!("rescan failed: {e}");
                }
            }
            if let Some(tls) = &tls {
                tls.clone().reload_off_runtime("SIGHUP").await;
            }
            if let Some(file) = &file {
                reload::regrant(file, &state.registry).await;
            }
        }
    });
}

/// Every route of the host.
pub fn routes(
    state: Arc<AppState>,
    fallback: Arc<Sessions>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };

    let plugin_name =
        warp::path("ws").and(warp::path::end()).map(|| None).or(warp::path!("ws" / String).map(Some)).unify();
    // Both transports share the plugin routes: the fallback's requests are
    // told apart by method and `Accept`, the rest go to the upgrade.
    let plugin_routes = plugin_name
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<PeerAddr>().map(|peer: Option<PeerAddr>| peer.map(|PeerAddr(addr)| addr)))
        .and(warp::ext::optional::<hyper::upgrade::OnUpgrade>())
        .and(warp::ext::optional::<PendingSlot>())
        .map(|plugin, method, path: warp::path::FullPath, query, headers, remote, on_upgrade, pending| RouteRequest {
            plugin,
            method,
            path: path.as_str().to_string(),
            query,
            headers,
            remote,
            on_upgrade,
            pending,
        })
        .and(warp::body::stream())
        .and(with_state.clone())
        .then(move |request: RouteRequest, body, state| {
            let fallback = fallback.clone();
            async move {
                if crate::fallback::is_fallback(&request) {
                    crate::fallback::handle(state, fallback, request, body).await
                } else {
                    upgrade(state, request).await
                }
            }
        });

    let api = api::routes(with_state.clone());
    let page = static_files::routes(state.config.static_dir.clone());

    plugin_routes
        .or(api)
        .unify()
        .or(page)
        .unify()
        .recover(|rejection: warp::Rejection| async move { Ok::<_, std::convert::Infallible>(not_found(rejection)) })
        .unify()
}

fn not_found(rejection: warp::Rejection) -> warp::reply::Response {
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return crate::reply::text(http::StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    crate::reply::text(http::StatusCode::NOT_FOUND, "not found")
}

/// What each plugin's rooms keep, from the configuration.
fn history(config: &Config, metrics: crate::metrics::HistoryMetrics) -> crate::hub::history::History {
    use crate::hub::history::{History, Keep};
    let keep = |l: crate::config::PluginLimits| Keep { size: l.history_size, ttl: l.history_ttl };
    let plugins = config.plugins.keys().map(|name| (name.clone(), keep(config.limits_for(name)))).collect();
    History::new(keep(config.limits), plugins, config.websocket.history_budget.in_memory(), metrics)
}
