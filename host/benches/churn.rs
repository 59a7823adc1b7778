//! Connection churn soak: clients connect, do a little, close and connect
//! again, never more than `--clients` open at once; the host's resident
//! memory must stay flat over the second half of the run.
//!
//! ```text
//! cargo bench --bench churn                          # 1,000,000 `/ws` cycles, then 200,000 mixed
//! cargo bench --bench churn -- --mix close,abrupt --cycles 100000
//! cargo bench --bench churn -- --against 127.0.0.1:5000 --pid PID --mix echo
//! cargo bench --bench churn -- --binary OLD_BINARY   # the same against another build
//! ```
//!
//! Mixes (see `tests/all/common/churn.rs`): `close` (handshake, `on-open`, a
//! close frame, `on-close`), `echo` (one message first), `abrupt` (one
//! message, then the TCP connection dropped without a close frame),
//! `refused` (a plain GET of `/ws`: the HTTP phase alone), `mixed` (the
//! testbed plugin: `state`, a room, the key-value store, a broadcast; every
//! fourth cycle abrupt), `fallback` (`/ws` over the HTTP fallback: open the
//! event stream, post one message, post a close).
//!
//! Each mix runs on a fresh host (unless `--against`). It prints RSS against
//! cycles, then the growth over the second half (the least-squares trend of
//! RSS against cycles, times the cycles), and exits 1 if that is more than
//! `--max-growth-kib` (default 512), if the host's connection count does not
//! return to 0, or if more than 0.1% of cycles failed.

use std::net::SocketAddr;
use std::time::Duration;

#[path = "../tests/all/common/churn.rs"]
mod churn;
mod common;

use churn::Mix;

struct Args {
    mixes: Vec<(Mix, u64)>,
    cycles: Option<u64>,
    clients: usize,
    samples: u64,
    max_growth_kib: u64,
    against: Option<(SocketAddr, u32)>,
    binary: Option<String>,
    host_args: Vec<String>,
}

fn parse() -> Args {
    let mut a = Args {
        mixes: vec![(Mix::Echo, 1_000_000), (Mix::Mixed, 200_000)],
        cycles: None,
        clients: 40,
        samples: 20,
        max_growth_kib: 512,
        against: None,
        binary: None,
        host_args: Vec::new(),
    };
    let mut addr = None;
    let mut pid = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--mix" => {
                a.mixes = value()
                    .split(',')
                    .map(|m| (Mix::parse(m).unwrap_or_else(|| panic!("unknown mix {m:?}")), 200_000))
                    .collect()
            }
            "--cycles" => a.cycles = value().parse().ok(),
            "--clients" => a.clients = value().parse().unwrap_or(a.clients),
            "--samples" => a.samples = value().parse().unwrap_or(a.samples),
            "--max-growth-kib" => a.max_growth_kib = value().parse().unwrap_or(a.max_growth_kib),
            "--against" => addr = value().parse().ok(),
            "--pid" => pid = value().parse().ok(),
            "--binary" => a.binary = Some(value()),
            // Passed to the host, e.g. `--host-arg --max-instances --host-arg 64`.
            "--host-arg" => a.host_args.push(value()),
            _ => {}
        }
    }
    if let (Some(addr), Some(pid)) = (addr, pid) {
        a.against = Some((addr, pid));
    }
    a
}

fn main() {
    let args = parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let ok = rt.block_on(async {
        let mut ok = true;
        for &(mix, default_cycles) in &args.mixes {
            ok &= run(&args, mix, args.cycles.unwrap_or(default_cycles)).await;
        }
        ok
    });
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(args: &Args, mix: Mix, cycles: u64) -> bool {
    let (addr, pid, _server, _dir) = match args.against {
        Some((addr, pid)) => (addr, pid, None, None),
        None => {
            let dir = std::env::temp_dir().join(format!("wasmsocket-churn-{}-{mix:?}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            std::fs::copy(env!("WASMSOCKET_TESTBED_WASM"), dir.join("testbed.wasm")).expect("copy plugin");
            let mut cmd = match &args.binary {
                Some(binary) => {
                    let mut cmd = tokio::process::Command::new(binary);
                    cmd.args(["--listen", "127.0.0.1:0"]);
                    cmd
                }
                None => common::wasmsocket(),
            };
            cmd.args(["--log", "warn", "--no-compile-cache"]).arg("--plugins").arg(&dir).args(&args.host_args);
            let server = common::start(cmd, false).await;
            let pid = server.child.id().expect("host running");
            (server.addr, pid, Some(server), Some(TempDirGuard(dir)))
        }
    };
    println!("churn: {mix:?} at {}, {cycles} cycles, {} clients", mix.path(), args.clients);
    println!("{:>10} {:>8} {:>10}", "cycles", "s", "RSS KiB");
    let result = churn::churn(addr, pid, mix, args.clients, cycles, args.samples).await;
    for s in &result.samples {
        println!("{:>10} {:>8.1} {:>10}", s.cycles, s.secs, s.rss_kib);
    }
    let left = churn::drained(addr, Duration::from_secs(30)).await;
    let growth = result.second_half_growth_kib();
    println!(
        "{mix:?}: {} cycles in {:.1} s ({:.0}/s), {} failed; RSS {} -> {} KiB; second half: +{growth} KiB \
         ({:.1} B per cycle, trend; range {} KiB; bound {} KiB); connections left open: {left:?}",
        result.cycles,
        result.secs,
        result.rate(),
        result.failures,
        result.samples.first().map_or(0, |s| s.rss_kib),
        result.samples.last().map_or(0, |s| s.rss_kib),
        result.second_half_bytes_per_cycle(),
        result.second_half_range_kib(),
        args.max_growth_kib,
    );
    let ok = growth <= args.max_growth_kib && left == Some(0) && result.failures * 1000 <= result.cycles;
    if !ok {
        println!("{mix:?}: FAILED");
    }
    ok
}

/// The plugins directory of a host this bench started.
struct TempDirGuard(std::path::PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
