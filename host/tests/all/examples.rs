//! The example plugins of `examples/` (Rust, JavaScript, Python, C, Go)
//! running in the real host, driven by a real WebSocket client.
//!
//! They need the examples built first, which needs their toolchains:
//!
//! ```text
//! scripts/build-examples.sh out/examples
//! WASMSOCKET_EXAMPLES_DIR=out/examples cargo test --release --test all -- --ignored examples::
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Every example `scripts/build-examples.sh` builds.
const EXAMPLES: &[&str] =
    &["rust-rpc", "rust-shout", "rust-ticker", "js-counter", "js-fetch", "python-words", "c-stats", "go-transform"];

fn examples_dir() -> PathBuf {
    let dir = std::env::var_os("WASMSOCKET_EXAMPLES_DIR").unwrap_or_else(|| {
        panic!(
            "WASMSOCKET_EXAMPLES_DIR is not set: build the examples with `scripts/build-examples.sh DIR` and \
             run these tests with WASMSOCKET_EXAMPLES_DIR=DIR"
        )
    });
    let dir = PathBuf::from(dir);
    for name in EXAMPLES {
        let file = dir.join(format!("{name}.wasm"));
        assert!(file.is_file(), "{} is missing: run scripts/build-examples.sh {}", file.display(), dir.display());
    }
    dir
}

/// A fresh plugins directory holding copies of the named examples.
fn plugins(names: &[&str]) -> TempDir {
    let from = examples_dir();
    let dir = TempDir::new("examples");
    for name in names {
        let file = format!("{name}.wasm");
        std::fs::copy(from.join(&file), dir.0.join(&file)).expect("copy example");
    }
    dir
}

/// A compile cache shared by these tests, filled once.
///
/// The JavaScript and Python components take seconds to compile (tens of
/// seconds on a busy machine), longer than the harness waits for a host to
/// listen. So the first test runs the host once over every example with a
/// generous wait; the host caches compiled components by content, and every
/// test's host then loads them from the cache in milliseconds. The cache
/// lives in Cargo's target directory, so later runs skip even that.
async fn compile_cache() -> &'static str {
    static CACHE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    CACHE
        .get_or_init(|| async {
            let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("examples-compile-cache");
            let cache = cache.display().to_string();
            // Dropping the host stops it once it listens, its cache filled.
            Host::start_patiently(plugins(EXAMPLES), &["--cache-dir", &cache], Duration::from_secs(600)).await;
            cache
        })
        .await
}

/// The host serving the named examples, compiled components from the cache.
async fn host_with(names: &[&str]) -> Host {
    host_configured(plugins(names), names, None).await
}

/// The host serving `dir`, whose plugins are `names`, with `toml` as its
/// configuration file when given.
async fn host_configured(dir: TempDir, names: &[&str], toml: Option<&str>) -> Host {
    let cache = compile_cache().await;
    let config = dir.0.join("wasmsocket.toml");
    std::fs::write(&config, toml.unwrap_or("")).expect("write config");
    let config = config.display().to_string();
    // A generous call deadline for a loaded CI machine; the examples need
    // well under a millisecond per call once running.
    let host = Host::start_with(dir, &["--cache-dir", cache, "--deadline", "2s", "--config", &config]).await;
    for name in names {
        host.wait_plugin(name, "ready", |p| p.is_some_and(|p| p["state"] == "ready")).await;
    }
    host
}

async fn rpc(ws: &mut Client, request: Value) -> Value {
    let reply = ask(ws, &request.to_string()).await;
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?} is not JSON: {e}"))
}

#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn rust_rpc_answers_json_rpc_2() {
    let host = host_with(&["rust-rpc"]).await;
    let mut ws = host.connect("/ws/rust-rpc").await;

    let r = rpc(&mut ws, json!({"jsonrpc": "2.0", "method": "add", "params": [1, 2, 39], "id": 1})).await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": 42, "id": 1}));
    let r = rpc(&mut ws, json!({"jsonrpc": "2.0", "method": "add", "params": {"a": 1.5, "b": 2}, "id": "x"})).await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": 3.5, "id": "x"}));
    let r = rpc(&mut ws, json!({"jsonrpc": "2.0", "method": "echo", "params": {"k": ["v", 1]}, "id": 2})).await;
    assert_eq!(r["result"], json!({"k": ["v", 1]}));

    // The counter is kept in host state, per connection.
    let r = rpc(&mut ws, json!({"jsonrpc": "2.0", "method": "counter.increment", "params": {"by": 5}, "id": 3})).await;
    assert_eq!(r["result"], 5);
    let r = rpc(&mut ws, json!({"jsonrpc": "2.0", "method": "counter.increment", "id": 4})).await;
    assert_eq!(r["result"], 6);
    let mut other = host.connect("/ws/rust-rpc").await;
    let r = rpc(&mut other, json!({"jsonrpc": "2.0", "method": "counter.get", "id": 1})).await;
    assert_eq!(r["result"], 0, "another connection has a counter of its own");

    // Errors.
    let r = rpc(&mut ws, json!({"jsonrpc": "2.0", "method": "nope", "id": 5})).await;
    assert_eq!((r["error"]["code"].clone(), r["id"].clone()), (json!(-32601), json!(5)), "{r}");
    let r: Value = serde_json::from_str(&ask(&mut ws, "{not json").await).unwrap();
    assert_eq!((r["error"]["code"].clone(), r["id"].clone()), (json!(-32700), Value::Null), "{r}");
    let r = rpc(&mut ws, json!({"method": "add", "params": [1], "id": 6})).await;
    assert_eq!(r["error"]["code"], -32600, "no jsonrpc member: {r}");
    let r = rpc(&mut ws, json!({"jsonrpc": "2.0", "method": "add", "params": ["a"], "id": 7})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");

    // A notification gets no response; a batch gets one array, without the
    // notification's entry.
    send_text(&mut ws, &json!({"jsonrpc": "2.0", "method": "counter.increment"}).to_string()).await;
    let r = rpc(
        &mut ws,
        json!([
            {"jsonrpc": "2.0", "method": "counter.get", "id": "a"},
            {"jsonrpc": "2.0", "method": "counter.increment", "params": [10]},
            {"jsonrpc": "2.0", "method": "counter.get", "id": "b"},
            1
        ]),
    )
    .await;
    let batch = r.as_array().unwrap_or_else(|| panic!("batch reply is not an array: {r}"));
    assert_eq!(batch.len(), 3, "{r}");
    assert_eq!(batch[0], json!({"jsonrpc": "2.0", "result": 7, "id": "a"}));
    assert_eq!(batch[1], json!({"jsonrpc": "2.0", "result": 17, "id": "b"}));
    assert_eq!(batch[2]["error"]["code"], -32600);
}

#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn rust_shout_answers_in_capitals() {
    let host = host_with(&["rust-shout"]).await;
    let mut ws = host.connect("/ws/rust-shout").await;
    assert_eq!(ask(&mut ws, "hello").await, "HELLO");
    assert_eq!(ask(&mut ws, "count").await, "2");
}

#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn js_counter_counts_in_host_state() {
    let host = host_with(&["js-counter"]).await;
    let mut ws = host.connect("/ws/js-counter").await;
    assert_eq!(ask(&mut ws, "inc").await, "1");
    assert_eq!(ask(&mut ws, "inc 5").await, "6");
    assert_eq!(ask(&mut ws, "-").await, "5");
    assert_eq!(ask(&mut ws, "dec 10").await, "-5");
    assert_eq!(ask(&mut ws, "get").await, "-5");
    let stats: Value = serde_json::from_str(&ask(&mut ws, "stats").await).unwrap();
    assert_eq!(stats, json!({"count": -5, "ops": 4}));
    assert!(ask(&mut ws, "jump").await.starts_with("error: unknown command 'jump'"));
    assert_eq!(ask(&mut ws, "inc x").await, "error: not an integer: x");
    assert_eq!(ask(&mut ws, "reset").await, "0");

    let mut other = host.connect("/ws/js-counter").await;
    assert_eq!(ask(&mut other, "inc 2").await, "2");
    assert_eq!(ask(&mut ws, "inc").await, "1", "each connection counts on its own");
    ws.send(Message::binary(vec![1, 2])).await.unwrap();
    assert_eq!(expect_text(&mut ws).await, "error: send text commands");
}

#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn python_words_counts_words_across_messages() {
    let host = host_with(&["python-words"]).await;
    let mut ws = host.connect("/ws/python-words").await;
    let r: Value = serde_json::from_str(&ask(&mut ws, "The cat and the hat.").await).unwrap();
    assert_eq!(r, json!({"words": 5, "total": 5, "unique": 4, "top": [["the", 2], ["cat", 1], ["and", 1]]}));
    let r: Value = serde_json::from_str(&ask(&mut ws, "Don't stop the CAT").await).unwrap();
    assert_eq!(r, json!({"words": 4, "total": 9, "unique": 6, "top": [["the", 3], ["cat", 2], ["and", 1]]}));
    let r: Value = serde_json::from_str(&ask(&mut ws, "/top").await).unwrap();
    assert_eq!(r["top"][3], json!(["hat", 1]));
    assert_eq!(r["top"][4], json!(["don't", 1]));
    assert_eq!(ask(&mut ws, "/reset").await, "reset");
    assert_eq!(ask(&mut ws, "/top").await, r#"{"top":[]}"#);
    ws.send(Message::binary(vec![0])).await.unwrap();
    assert_eq!(expect_text(&mut ws).await, r#"{"error":"send text"}"#);
}

#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn c_stats_reverses_text_and_measures_bytes() {
    let host = host_with(&["c-stats"]).await;
    let mut ws = host.connect("/ws/c-stats").await;
    assert_eq!(ask(&mut ws, "héllo wörld 👋").await, "👋 dlröw olléh");
    assert_eq!(ask(&mut ws, "").await, "");

    ws.send(Message::binary(vec![0, 1, 2, 255])).await.unwrap();
    let r: Value = serde_json::from_str(&expect_text(&mut ws).await).unwrap();
    assert_eq!(
        r,
        json!({"bytes": 4, "min": 0, "max": 255, "mean": 64.5, "distinct": 4, "crc32": "3fb23824", "total": 4})
    );
    ws.send(Message::binary(vec![7; 1000])).await.unwrap();
    let r: Value = serde_json::from_str(&expect_text(&mut ws).await).unwrap();
    assert_eq!((r["distinct"].clone(), r["total"].clone()), (json!(1), json!(1004)), "{r}");
}

#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn go_transform_keeps_its_mode_in_state() {
    let host = host_with(&["go-transform"]).await;
    let mut ws = host.connect("/ws/go-transform").await;
    assert_eq!(ask(&mut ws, "Hello, World!").await, "Uryyb, Jbeyq!");
    assert_eq!(ask(&mut ws, "/mode").await, "mode rot13");
    assert_eq!(ask(&mut ws, "/mode snake").await, "mode snake");
    assert_eq!(ask(&mut ws, "Hello World, fooBar").await, "hello_world_foo_bar");
    assert_eq!(ask(&mut ws, "/mode title").await, "mode title");
    assert_eq!(ask(&mut ws, "héllo wörld, it's me").await, "Héllo Wörld, It's Me");
    assert_eq!(ask(&mut ws, "/mode reverse").await, "mode reverse");
    assert_eq!(ask(&mut ws, "abc→d").await, "d→cba");
    assert!(ask(&mut ws, "/mode nope").await.starts_with("error: unknown mode \"nope\""));
    assert_eq!(ask(&mut ws, "/mode").await, "mode reverse");

    let mut upper = host.connect("/ws/go-transform?mode=upper").await;
    assert_eq!(ask(&mut upper, "shout").await, "SHOUT");
}

/// `wasmsocket --plugins DIR` over the build output serves every example.
#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn one_host_serves_every_example() {
    let host = host_with(EXAMPLES).await;
    let checks: &[(&str, &str, &str)] = &[
        ("rust-rpc", r#"{"jsonrpc":"2.0","method":"add","params":[2,2],"id":1}"#, r#""result":4"#),
        ("rust-shout", "hi", "HI"),
        ("rust-ticker", "join here", "joined here"),
        ("js-counter", "inc 3", "3"),
        ("js-fetch", "fetch /x", "error"),
        ("python-words", "one two two", r#""total":3"#),
        ("c-stats", "abc", "cba"),
        ("go-transform", "abc", "nop"),
    ];
    for (name, send, expect) in checks {
        let mut ws = host.connect(&format!("/ws/{name}")).await;
        let reply = ask(&mut ws, send).await;
        assert!(reply.contains(expect), "{name}: {send:?} -> {reply:?}, expected it to contain {expect:?}");
    }
}

/// The next `tick ROOM N` on `ws`, as N (other messages are skipped).
async fn next_tick(ws: &mut Client, room: &str) -> u64 {
    let prefix = format!("tick {room} ");
    loop {
        let text = expect_text(ws).await;
        if let Some(n) = text.strip_prefix(&prefix) {
            return n.parse().unwrap_or_else(|_| panic!("bad tick {text:?}"));
        }
    }
}

/// Sends `text` and returns the first reply that is not a tick.
async fn ask_between_ticks(ws: &mut Client, text: &str) -> String {
    send_text(ws, text).await;
    loop {
        let got = expect_text(ws).await;
        if !got.starts_with("tick ") {
            return got;
        }
    }
}

#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn rust_ticker_ticks_a_room_and_its_count_goes_on_after_it_empties() {
    let host = host_configured(
        plugins(&["rust-ticker"]),
        &["rust-ticker"],
        Some("[plugins.rust-ticker.variables]\ntick_ms = \"20\"\n"),
    )
    .await;
    let mut a = host.connect("/ws/rust-ticker").await;
    assert_eq!(ask(&mut a, "join arena").await, "joined arena");
    let mut seen = vec![next_tick(&mut a, "arena").await, next_tick(&mut a, "arena").await];
    assert_eq!(seen, [1, 2], "N counts up from 1 per room");
    let mut b = host.connect("/ws/rust-ticker").await;
    assert_eq!(ask_between_ticks(&mut b, "join arena").await, "joined arena");
    // Both see one sequence.
    let (from_a, from_b) = (next_tick(&mut a, "arena").await, next_tick(&mut b, "arena").await);
    assert!(from_a > 2 && from_b >= from_a, "{from_a} {from_b}");
    seen.push(from_a);
    assert_eq!(ask_between_ticks(&mut a, "leave arena").await, "left arena");
    assert_eq!(ask_between_ticks(&mut b, "leave arena").await, "left arena");
    let last = next_tick_or_none(&mut b).await;
    // Empty, it stops; a join goes on from where it stopped.
    let mut c = host.connect("/ws/rust-ticker").await;
    assert_eq!(ask(&mut c, "join arena").await, "joined arena");
    let first = next_tick(&mut c, "arena").await;
    assert!(first > from_b.max(last.unwrap_or(0)), "the count goes on: {first} after {from_b}");
    assert_eq!(next_tick(&mut c, "arena").await, first + 1);
    assert_eq!(ask(&mut c, "hello").await, "unknown hello");
}

/// A tick that may still come in a short quiet period, if any.
async fn next_tick_or_none(ws: &mut Client) -> Option<u64> {
    let got = tokio::time::timeout(Duration::from_millis(200), expect_text(ws)).await.ok()?;
    got.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn rust_ticker_members_on_two_hosts_see_one_sequence_across_a_stop() {
    use crate::common::redis::cluster_host_with;
    use crate::common::redis_server::Redis;
    let redis = Redis::start().await;
    let ticker = std::fs::read(examples_dir().join("rust-ticker.wasm")).unwrap();
    let cache = compile_cache().await;
    let args = ["--cache-dir", cache, "--deadline", "2s"];
    let mut a = cluster_host_with(&redis, &[("rust-ticker.wasm", &ticker)], &args).await;
    let b = cluster_host_with(&redis, &[("rust-ticker.wasm", &ticker)], &args).await;
    let mut on_a = a.connect("/ws/rust-ticker").await;
    assert_eq!(ask(&mut on_a, "join arena").await, "joined arena");
    next_tick(&mut on_a, "arena").await;
    let mut on_b = b.connect("/ws/rust-ticker").await;
    assert_eq!(ask_between_ticks(&mut on_b, "join arena").await, "joined arena");
    let mut seen = vec![next_tick(&mut on_b, "arena").await];
    while seen.len() < 10 {
        seen.push(next_tick(&mut on_b, "arena").await);
    }
    // A runs the timer (its member joined first); stop it.
    a.signal("TERM");
    a.wait_exit().await;
    while seen.len() < 40 {
        seen.push(next_tick(&mut on_b, "arena").await);
    }
    let expected: Vec<u64> = (seen[0]..seen[0] + 40).collect();
    assert_eq!(seen, expected, "one sequence, no gap and no repeat, across the stop");
    let taken = b.metric_or_zero("wasmsocket_redis_timers_taken_over_total").await;
    assert_eq!(taken, 1.0, "B took the timer over\nA:\n{}\nB:\n{}", a.log(), b.log());
}

/// The far end: `/hello` answers `hello`, any other path 300 bytes of `x`.
async fn http_server() -> std::net::SocketAddr {
    crate::common::http_server::serve(|path| {
        (Duration::ZERO, if path == "/hello" { b"hello".to_vec() } else { vec![b'x'; 300] })
    })
    .await
}

#[tokio::test]
#[ignore = "needs the examples built: scripts/build-examples.sh"]
async fn js_fetch_gets_allowed_hosts_and_names_denied_ones() {
    let server = http_server().await;
    let other = http_server().await;
    // Allowed, but nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = plugins(&["js-fetch"]);
    // The same component twice more: pointed at a host nobody allowed, and
    // at an allowed port where nothing listens.
    std::fs::copy(dir.0.join("js-fetch.wasm"), dir.0.join("js-fetch-denied.wasm")).unwrap();
    std::fs::copy(dir.0.join("js-fetch.wasm"), dir.0.join("js-fetch-refused.wasm")).unwrap();
    let toml = format!(
        "[plugins.js-fetch]\nallowed_outbound_hosts = [\"http://{server}\"]\n\
         [plugins.js-fetch.variables]\nbase_url = \"http://{server}\"\n\
         [plugins.js-fetch-denied]\nallowed_outbound_hosts = [\"http://{server}\"]\n\
         [plugins.js-fetch-denied.variables]\nbase_url = \"http://{other}\"\n\
         [plugins.js-fetch-refused]\nallowed_outbound_hosts = [\"http://{closed}\"]\n\
         [plugins.js-fetch-refused.variables]\nbase_url = \"http://{closed}\"\n"
    );
    let host = host_configured(dir, &["js-fetch", "js-fetch-denied", "js-fetch-refused"], Some(&toml)).await;
    let mut ws = host.connect("/ws/js-fetch").await;
    assert_eq!(ask(&mut ws, "fetch /hello").await, "status 200 hello");
    assert_eq!(ask(&mut ws, "fetch /big").await, format!("status 200 {}", "x".repeat(200)), "cut to 200 bytes");
    let mut denied = host.connect("/ws/js-fetch-denied").await;
    assert_eq!(ask(&mut denied, "fetch /hello").await, format!("denied {other}"));
    // Any other failure is an error; every connection stays open.
    let mut refused = host.connect("/ws/js-fetch-refused").await;
    let error = ask(&mut refused, "fetch /hello").await;
    assert!(error.starts_with("error "), "{error}");
    assert!(ask(&mut refused, "fetch /hello").await.starts_with("error "));
    assert_eq!(ask(&mut denied, "fetch /hello").await, format!("denied {other}"));
    assert_eq!(ask(&mut ws, "fetch /hello").await, "status 200 hello");
}
