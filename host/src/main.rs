//! The `wasmsocket` command: with no subcommand, flags over a TOML file,
//! then serve until SIGINT or SIGTERM; `check` validates a plugin file.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wasmsocket::{Config, Server};

/// A WebSocket server whose message handlers are WebAssembly components.
///
/// With no arguments it serves the built-in echo plugin at
/// ws://127.0.0.1:5000/ws and the test page at http://127.0.0.1:5000/.
/// Flags override the config file; every setting has a default.
#[derive(Debug, Parser)]
#[command(name = "wasmsocket", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a plugin project into ./NAME: source that answers a message
    /// and uses `state` and `log`, the WIT it targets, a build.sh that
    /// installs the toolchain when missing, and a README.
    New {
        /// Name the templates and exit.
        #[arg(long)]
        list: bool,
        /// The language (see --list).
        #[arg(required_unless_present = "list")]
        lang: Option<String>,
        /// The plugin's name: lowercase letters, digits, - and _.
        #[arg(required_unless_present = "list")]
        name: Option<String>,
    },
    /// Compile a plugin and check it against the world without serving it:
    /// prints the world version, the host interfaces it imports, its size
    /// and compile time; exits 1 with the load error if it would not serve.
    Check {
        /// The component, e.g. target/wasm32-wasip2/release/NAME.wasm.
        file: PathBuf,
        /// The host's TOML config, to check the plugin's grants against it
        /// (the plugin's name is the file's, without `.wasm`).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Serving (no subcommand).
#[derive(Debug, Args)]
struct Serve {
    /// TOML config file (see docs/configuration.md for every key).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory of NAME.wasm plugins, each served at /ws/NAME.
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Plugin served at /ws [default: echo].
    #[arg(long, value_name = "NAME")]
    default_plugin: Option<String>,
    /// Serve the test page from DIR instead of the built-in copy.
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Compile cache directory [default: ~/.cache/wasmsocket/compiled].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every plugin afresh; keep nothing on disk.
    #[arg(long)]
    no_compile_cache: bool,
    /// What a reload does to open connections: live (move at their next
    /// event) or drain (finish on their version) [default: live].
    #[arg(long, value_name = "MODE")]
    reload: Option<wasmsocket::config::ReloadMode>,
    /// Bearer token that turns on the publish API [default: off].
    #[arg(long, env = "WASMSOCKET_API_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Redis URL that joins this host to a cluster: rooms, sends and the
    /// key-value store span every host on the same Redis [default: off].
    #[arg(long, env = "WASMSOCKET_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// Redis Cluster nodes instead, comma-separated (any reachable one is
    /// enough to discover the rest) [default: off].
    #[arg(long, env = "WASMSOCKET_REDIS_CLUSTER", value_name = "URL,URL,...", value_delimiter = ',')]
    redis_cluster: Option<Vec<String>>,
    /// Server ping interval; 0s turns pings off [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    keep_alive_interval: Option<Duration>,
    /// Drop a client silent this long after a ping [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    keep_alive_timeout: Option<Duration>,
    /// Socket read buffer per connection [default: 4KiB].
    #[arg(long, value_name = "SIZE")]
    receive_buffer_size: Option<ByteSize>,
    /// Largest message a client may send [default: 1MiB].
    #[arg(long, value_name = "SIZE")]
    max_message_size: Option<ByteSize>,
    /// Largest frame a client may send [default: 1MiB].
    #[arg(long, value_name = "SIZE")]
    max_frame_size: Option<ByteSize>,
    /// An origin allowed to connect (repeatable; "*" for any)
    /// [default: same origin only].
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Most open connections [default: the open-file limit less a reserve].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Messages queued per client before it is closed as too slow [default: 1024].
    #[arg(long, value_name = "N")]
    send_queue: Option<usize>,
    /// Bytes queued for one client before it is closed as too slow [default: 4MiB].
    #[arg(long, value_name = "SIZE")]
    send_queue_bytes: Option<ByteSize>,
    /// A message must arrive whole within this time of its first byte
    /// [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    message_timeout: Option<Duration>,
    /// Bytes of partly received messages held across all connections
    /// [default: 256MiB].
    #[arg(long, value_name = "SIZE")]
    receive_budget: Option<ByteSize>,
    /// A request's headers must arrive whole within this time [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    header_timeout: Option<Duration>,
    /// Close a keep-alive HTTP connection idle this long [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Connections still in their HTTP phase at once; past it the one
    /// pending longest is closed to make room [default: 1024].
    #[arg(long, value_name = "N")]
    max_pending: Option<usize>,
    /// Plugin instances alive at once, across all connections [default: 1024].
    #[arg(long, value_name = "N")]
    max_instances: Option<u32>,
    /// Bytes at the start of each plugin memory an ended instance leaves
    /// resident for the next (a faster wake; "1280KiB" suits compiled
    /// plugins); "0": give every page back [default: 0].
    #[arg(long, value_name = "SIZE")]
    keep_resident: Option<ByteSize>,
    /// Drop an idle connection's instance after this long; "0s": a fresh
    /// instance per event; "never": keep it [default: 10s].
    #[arg(long, value_name = "DURATION")]
    hibernate_after: Option<wasmsocket::config::Hibernate>,
    /// Time budget of one plugin call [default: 100ms].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    deadline: Option<Duration>,
    /// Memory cap of one plugin instance [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    memory_limit: Option<ByteSize>,
    /// PEM certificate chain: serve https:// and wss:// (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log filter, e.g. "info" or "wasmsocket=debug,plugin=trace".
    #[arg(long, env = "WASMSOCKET_LOG", default_value = "info", value_name = "FILTER")]
    log: String,
}

impl Serve {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let ws = &mut c.websocket;
        set(&mut c.listen, self.listen);
        if self.plugins.is_some() {
            c.plugins_dir = self.plugins;
        }
        set(&mut c.default_plugin, self.default_plugin);
        if self.cache_dir.is_some() {
            c.cache_dir = self.cache_dir;
        }
        if self.no_compile_cache {
            c.compile_cache = false;
        }
        set(&mut c.reload, self.reload);
        if self.api_token.is_some() {
            c.api_token = self.api_token;
        }
        if self.redis.is_some() {
            c.redis.url = self.redis;
        }
        if let Some(nodes) = self.redis_cluster {
            c.redis.cluster_nodes = nodes;
        }
        if self.static_dir.is_some() {
            c.static_dir = self.static_dir;
        }
        set(&mut ws.keep_alive_interval, self.keep_alive_interval);
        set(&mut ws.keep_alive_timeout, self.keep_alive_timeout);
        set(&mut ws.receive_buffer_size, self.receive_buffer_size);
        set(&mut ws.max_message_size, self.max_message_size);
        set(&mut ws.max_frame_size, self.max_frame_size);
        if !self.allowed_origins.is_empty() {
            ws.allowed_origins = self.allowed_origins;
        }
        if self.max_connections.is_some() {
            ws.max_connections = self.max_connections;
        }
        set(&mut ws.send_queue, self.send_queue);
        set(&mut ws.send_queue_bytes, self.send_queue_bytes);
        set(&mut ws.message_timeout, self.message_timeout);
        set(&mut ws.receive_budget, self.receive_budget);
        set(&mut c.http.header_timeout, self.header_timeout);
        set(&mut c.http.idle_timeout, self.idle_timeout);
        set(&mut c.http.max_pending, self.max_pending);
        if self.tls_cert.is_some() {
            c.tls.cert = self.tls_cert;
            c.tls.key = self.tls_key;
        }
        set(&mut c.max_instances, self.max_instances);
        set(&mut c.keep_resident, self.keep_resident);
        set(&mut c.limits.hibernate_after, self.hibernate_after);
        set(&mut c.limits.deadline, self.deadline);
        set(&mut c.limits.memory, self.memory_limit);
        Ok(c)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Check { file, config }) => check(&file, config.as_deref()),
        Some(Command::New { list: true, .. }) => {
            for t in wasmsocket::scaffold::TEMPLATES {
                println!("{:8} {}", t.lang, t.about);
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Some(Command::New { lang, name, .. }) => {
            let (lang, name) = (lang.unwrap_or_default(), name.unwrap_or_default());
            let dir = match wasmsocket::scaffold::generate(&lang, &name, std::path::Path::new(".")) {
                Ok(dir) => dir,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(std::process::ExitCode::FAILURE);
                }
            };
            println!(
                "wrote {}; next:\n  cd {} && ./build.sh && wasmsocket --plugins out",
                dir.display(),
                dir.display()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

fn serve(args: Serve) -> anyhow::Result<std::process::ExitCode> {
    let filter = EnvFilter::try_new(&args.log).with_context(|| format!("invalid --log filter {:?}", args.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = args.into_config()?;
    tokio::runtime::Runtime::new().context("cannot start the async runtime")?.block_on(async {
        let server = Server::start(config).await?;
        let addr = server.local_addr();
        let (http, ws) = if server.state().config.tls.enabled() { ("https", "wss") } else { ("http", "ws") };
        // One line on stdout that scripts (and the tests) can wait for.
        println!("wasmsocket listening on {http}://{addr} (WebSocket: {ws}://{addr}/ws)");
        server.run(shutdown_signal()).await;
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// Exit 1: the file would not serve; exit 2: it cannot be read.
fn check(file: &std::path::Path, config: Option<&std::path::Path>) -> anyhow::Result<std::process::ExitCode> {
    let config = match config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return Ok(std::process::ExitCode::from(2));
        }
    };
    match wasmsocket::check::check(&bytes) {
        Ok(report) => {
            println!("{}: ok\n{report}", file.display());
            for warning in report.warnings(name, &config.grants_for(name)) {
                eprintln!("warning: {warning}");
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
