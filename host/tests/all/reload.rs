//! Hot reload: replacing, adding and removing plugin files under live
//! connections.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn testbed_path(host: &Host) -> PathBuf {
    host.dir.as_ref().expect("plugins dir").join("testbed.wasm")
}

#[tokio::test]
async fn live_reload_moves_an_open_connection_at_its_next_message_keeping_state() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "set apples").await, "stored");
    assert_eq!(ask(&mut ws, "hello").await, "hello");

    replace_by_rename(SHOUT_WASM, &testbed_path(&host));
    host.wait_serving("testbed", path(SHOUT_WASM)).await;

    // The very next message is handled by the new version, on the same
    // connection, with the host-kept state intact.
    assert_eq!(ask(&mut ws, "get").await, "apples");
    assert_eq!(ask(&mut ws, "hello").await, "HELLO");
}

#[tokio::test]
async fn messages_in_flight_during_a_reload_are_neither_lost_nor_reordered() {
    let host = Host::start(&[]).await;
    let (mut tx, mut rx) = host.connect("/ws/testbed").await.split();
    let total = 3000;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            tx.send(Message::text(format!("m{i}"))).await.unwrap();
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        tx
    });
    let file = testbed_path(&host);
    let swapper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        replace_by_rename(SHOUT_WASM, &file);
    });
    let mut upper_seen = false;
    for i in 0..total {
        let reply = match tokio::time::timeout(PATIENCE, rx.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => t.to_string(),
            other => panic!("message {i}: connection broke: {other:?}"),
        };
        if reply == format!("M{i}") {
            upper_seen = true;
        } else {
            assert_eq!(reply, format!("m{i}"), "reply {i} lost, reordered, or back on the old version");
            assert!(!upper_seen, "reply {i} went back to the old version");
        }
    }
    swapper.await.unwrap();
    let mut tx = sender.await.unwrap();
    host.wait_serving("testbed", path(SHOUT_WASM)).await;
    tx.send(Message::text("after")).await.unwrap();
    let reply = tokio::time::timeout(PATIENCE, rx.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply, Message::text("AFTER"), "the connection ends up on the new version");
}

#[tokio::test]
async fn drain_mode_keeps_open_connections_on_their_version() {
    let host = Host::start(&["--reload", "drain"]).await;
    let mut old = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut old, "hi").await, "hi");
    replace_by_rename(SHOUT_WASM, &testbed_path(&host));
    host.wait_serving("testbed", path(SHOUT_WASM)).await;

    let mut new = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut new, "hi").await, "HI", "a new connection gets the new version");
    assert_eq!(ask(&mut old, "hi").await, "hi", "the open one stays on the old version");
}

#[tokio::test]
async fn broken_files_change_nothing_and_a_good_file_recovers() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    let file = testbed_path(&host);
    let good_hash = file_hash(&file);
    let testbed = std::fs::read(TESTBED_WASM).unwrap();
    let empty_component: &[u8] = b"\0asm\x0d\0\x01\0";
    let cases: [(&str, &[u8], &str); 3] = [
        ("garbage", b"this is not wasm at all", "not a valid WebAssembly component"),
        ("truncated", &testbed[..testbed.len() / 2], "not a valid WebAssembly component"),
        ("wrong world", empty_component, "does not fit the wasmsocket:plugin world"),
    ];
    for (what, bytes, message) in cases {
        std::fs::write(&file, bytes).unwrap();
        let bad_hash = file_hash(&file);
        host.wait_plugin("testbed", "reported the broken file", |p| {
            p.is_some_and(|p| p["state"] == "error" && p["error_hash"] == bad_hash.as_str())
        })
        .await;
        let entry = host.plugin("testbed").await.unwrap();
        assert!(entry["error"].as_str().unwrap().contains(message), "{what}: {entry}");
        assert_eq!(entry["hash"], good_hash.as_str(), "{what}: the previous version keeps serving");
        assert_eq!(ask(&mut ws, "still up").await, "still up", "{what}");
        let mut fresh = host.connect("/ws/testbed").await;
        assert!(ask(&mut fresh, "whoami").await.len() > 4, "{what}: new connections get the old version");
    }
    let metrics = host.get_text("/metrics").await.1;
    assert!(metrics.contains("wasmsocket_plugin_loads_total{plugin=\"testbed\",outcome=\"error\"} 3"), "{metrics}");

    replace_by_rename(SHOUT_WASM, &file);
    host.wait_plugin("testbed", "recovered", |p| p.is_some_and(|p| p["state"] == "ready")).await;
    assert_eq!(ask(&mut ws, "back").await, "BACK");
}

#[tokio::test]
async fn restoring_the_serving_bytes_after_a_broken_file_clears_the_error() {
    let host = Host::start(&[]).await;
    let file = testbed_path(&host);
    let good = std::fs::read(&file).unwrap();
    let good_hash = file_hash(&file);
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    host.wait_plugin("testbed", "reported the truncated file", |p| p.is_some_and(|p| p["state"] == "error")).await;

    std::fs::write(&file, &good).unwrap();
    host.wait_plugin("testbed", "cleared the error", |p| p.is_some_and(|p| p["state"] == "ready")).await;
    let entry = host.plugin("testbed").await.unwrap();
    assert_eq!(entry["hash"], good_hash.as_str(), "{entry}");
    assert!(entry["error"].is_null() && entry["error_hash"].is_null(), "{entry}");
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "hi").await, "hi");
}

#[tokio::test]
async fn delete_stops_new_connections_and_recreate_serves_again() {
    let host = Host::start(&[]).await;
    let mut open = host.connect("/ws/testbed").await;
    let file = testbed_path(&host);
    std::fs::remove_file(&file).unwrap();
    host.wait_plugin("testbed", "disappeared", |p| p.is_none()).await;
    assert_eq!(host.refused_status(host.url("/ws/testbed")).await.0, 404);
    assert_eq!(ask(&mut open, "open ones finish").await, "open ones finish");

    std::fs::copy(SHOUT_WASM, &file).unwrap();
    host.wait_serving("testbed", path(SHOUT_WASM)).await;
    let mut again = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut again, "back").await, "BACK");
    assert_eq!(ask(&mut open, "moved too").await, "MOVED TOO", "live mode follows the recreated file");
}

#[tokio::test]
async fn touching_a_file_without_changing_it_does_nothing() {
    let host = Host::start(&[]).await;
    let file = testbed_path(&host);
    let loaded_at = host.plugin("testbed").await.unwrap()["loaded_at"].clone();
    // Rewrite the same bytes in place, then touch it.
    std::fs::write(&file, std::fs::read(&file).unwrap()).unwrap();
    let f = std::fs::File::options().append(true).open(&file).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    // Events are handled in order: once a later file has loaded, the
    // touch has been handled too.
    let marker = host.dir.as_ref().unwrap().join("marker.wasm");
    std::fs::copy(ECHO_WASM, &marker).unwrap();
    host.wait_serving("marker", &marker).await;
    assert_eq!(host.plugin("testbed").await.unwrap()["loaded_at"], loaded_at);
    let metrics = host.get_text("/metrics").await.1;
    assert!(metrics.contains("wasmsocket_plugin_loads_total{plugin=\"testbed\",outcome=\"ok\"} 1\n"), "{metrics}");
}

#[tokio::test]
async fn a_reload_storm_ends_on_the_last_content() {
    let host = Host::start(&[]).await;
    let file = testbed_path(&host);
    for i in 0..30 {
        let from = [ECHO_WASM, TESTBED_WASM, SHOUT_WASM][i % 3];
        std::fs::write(&file, std::fs::read(from).unwrap()).unwrap();
    }
    // The last write was shout (29 % 3 == 2).
    host.wait_serving("testbed", path(SHOUT_WASM)).await;
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "last").await, "LAST");
}

#[tokio::test]
async fn a_new_plugin_file_gets_its_route() {
    let host = Host::start(&[]).await;
    assert_eq!(host.refused_status(host.url("/ws/shout")).await.0, 404);
    let file = host.dir.as_ref().unwrap().join("shout.wasm");
    replace_by_rename(SHOUT_WASM, &file);
    host.wait_serving("shout", &file).await;
    let mut ws = host.connect("/ws/shout").await;
    assert_eq!(ask(&mut ws, "new route").await, "NEW ROUTE");
}

#[tokio::test]
async fn forced_reload_through_the_api() {
    let host = Host::start(&[]).await;
    let client = reqwest::Client::new();
    let r = client.post(host.http("/api/plugins/testbed/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["outcome"], "unchanged");
    let r = client.post(host.http("/api/plugins/ghost/reload")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn compiled_plugins_are_cached_across_restarts_and_corrupt_entries_are_recompiled() {
    let cache = TempDir::new("cache");
    let cache_arg = cache.0.display().to_string();
    let args = ["--cache-dir", cache_arg.as_str()];
    let first = Host::start(&args).await;
    assert!(first.wait_for_log("testbed").await);
    assert!(first.log().contains("compiled in"), "{}", first.log());
    drop(first);

    let second = Host::start(&args).await;
    assert!(second.log().contains("from the compile cache"), "{}", second.log());
    let mut ws = second.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "cached").await, "cached");
    drop((ws, second));

    for entry in std::fs::read_dir(&cache.0).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = Host::start(&args).await;
    assert!(third.log().contains("corrupt; recompiling"), "{}", third.log());
    let mut ws = third.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "recompiled").await, "recompiled");
}
