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
const EXAMPLES: &[&str] = &["rust-rpc", "rust-shout", "js-counter", "python-words", "c-stats", "go-transform"];

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
    let cache = compile_cache().await;
    // A generous call deadline for a loaded CI machine; the examples need
    // well under a millisecond per call once running.
    let host = Host::start_with(plugins(names), &["--cache-dir", cache, "--deadline", "2s"]).await;
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
        ("js-counter", "inc 3", "3"),
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
