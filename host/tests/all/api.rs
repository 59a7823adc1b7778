//! The operator's surfaces: health, plugin list, metrics, start-up errors.

use crate::common::*;

#[tokio::test]
async fn healthz_answers() {
    let host = Host::start(&[]).await;
    let health = host.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn api_plugins_lists_each_plugin_with_its_version_and_connections() {
    let host = Host::start(&[]).await;
    let _ws = host.connect("/ws/testbed").await;
    let list = host.get_json("/api/plugins").await;
    let list = list.as_array().expect("a JSON array");
    let echo = list.iter().find(|p| p["name"] == "echo").expect("echo listed");
    assert_eq!(echo["route"], "/ws");
    assert_eq!(echo["state"], "ready");
    assert_eq!(echo["source"], "built-in");
    assert_eq!(echo["default"], true);
    let testbed = list.iter().find(|p| p["name"] == "testbed").expect("testbed listed");
    assert_eq!(testbed["route"], "/ws/testbed");
    assert_eq!(testbed["connections"], 1);
    let bytes = std::fs::read(TESTBED_WASM).unwrap();
    let hash = testbed["hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(testbed["size"], bytes.len());
    assert!(testbed["loaded_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_broken_plugin_file_is_reported_and_the_others_serve() {
    let dir = plugins_dir(&[("broken.wasm", b"\0asm this is not a component"), ("garbage.wasm", b"hello")]);
    let host = Host::start_with(dir, &[]).await;
    let list = host.get_json("/api/plugins").await;
    let broken = list.as_array().unwrap().iter().find(|p| p["name"] == "broken").expect("broken listed");
    assert_eq!(broken["state"], "error");
    assert!(broken["error"].as_str().unwrap().contains("not a valid WebAssembly component"), "{broken}");
    assert_eq!(broken["error_hash"].as_str().unwrap().len(), 64);
    assert!(host.log().contains("broken") && host.log().contains("failed to load"));
    let (status, body) = host.refused_status(host.url("/ws/broken")).await;
    assert_eq!(status, 503);
    assert!(body.contains("failed to load"), "{body}");

    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "others serve").await, "others serve");
}

#[tokio::test]
async fn a_component_of_another_world_is_refused() {
    // A valid component that exports nothing.
    let empty_component: &[u8] = b"\0asm\x0d\0\x01\0";
    let host = Host::start_with(plugins_dir(&[("other.wasm", empty_component)]), &[]).await;
    let list = host.get_json("/api/plugins").await;
    let other = list.as_array().unwrap().iter().find(|p| p["name"] == "other").expect("listed");
    assert_eq!(other["state"], "error");
    assert!(other["error"].as_str().unwrap().contains("does not fit the wasmsocket:plugin world"), "{other}");
}

#[tokio::test]
async fn metrics_count_connections_messages_and_bytes() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws").await;
    for _ in 0..3 {
        assert_eq!(ask(&mut ws, "12345").await, "12345");
    }
    let (status, metrics) = host.get_text("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "wasmsocket_connections_open{plugin=\"echo\"} 1",
        "wasmsocket_connections_total{plugin=\"echo\"} 1",
        "wasmsocket_messages_received_total{plugin=\"echo\"} 3",
        "wasmsocket_messages_sent_total{plugin=\"echo\"} 3",
        "wasmsocket_received_bytes_total{plugin=\"echo\"} 15",
        "wasmsocket_plugin_call_seconds_count{plugin=\"echo\",event=\"Message\"} 3",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn the_test_page_is_served_at_the_root() {
    let host = Host::start(&[]).await;
    let (status, body) = host.get_text("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html") && body.contains("Connect"), "{body}");
    assert_eq!(host.get_text("/no-such-file").await.0, 404);
}

#[tokio::test]
async fn plugin_output_goes_to_the_host_log_tagged() {
    let host = Host::start(&[]).await;
    let _ws = host.connect("/ws/testbed?x=1").await;
    assert!(host.wait_for_log("opened /ws/testbed").await, "{}", host.log());
    let line = host.log().lines().find(|l| l.contains("opened /ws/testbed")).unwrap().to_string();
    assert!(line.contains("plugin=\"testbed\"") || line.contains("plugin=testbed"), "{line}");
    assert!(line.contains("conn="), "{line}");
}

#[tokio::test]
async fn bad_configuration_names_the_field_and_the_fix() {
    let dir = TempDir::new("config");
    let file = dir.0.join("wasmsocket.toml");
    std::fs::write(&file, "[websocket]\nreceive_buffer_size = \"10B\"\n").unwrap();
    let err = Host::spawn(&["--config".into(), file.display().to_string()]).await.err().expect("must not start");
    assert!(err.contains("websocket.receive_buffer_size") && err.contains("must be from"), "{err}");

    std::fs::write(&file, "[websocket]\nmax_mesage_size = \"1MiB\"\n").unwrap();
    let err = Host::spawn(&["--config".into(), file.display().to_string()]).await.err().expect("must not start");
    assert!(err.contains("max_mesage_size"), "{err}");
}

#[tokio::test]
async fn plugins_built_against_an_older_world_still_load() {
    let compat = std::fs::read(env!("WASMSOCKET_COMPAT_0_1_0_WASM")).unwrap();
    let host = Host::start_with(plugins_dir(&[("old.wasm", &compat)]), &[]).await;
    assert_eq!(host.plugin("old").await.unwrap()["state"], "ready");
    let mut ws = host.connect("/ws/old").await;
    assert_eq!(ask(&mut ws, "hi").await, "0.1.0 says hi");
}

#[tokio::test]
async fn plugins_built_against_0_1_1_keep_their_rooms_and_store() {
    let compat = std::fs::read(env!("WASMSOCKET_COMPAT_0_1_1_WASM")).unwrap();
    let host = Host::start_with(plugins_dir(&[("old.wasm", &compat)]), &[]).await;
    let entry = host.plugin("old").await.unwrap();
    assert_eq!((&entry["state"], &entry["world"]), (&"ready".into(), &"0.1".into()));
    let mut a = host.connect("/ws/old").await;
    let mut b = host.connect("/ws/old").await;
    assert_eq!(ask(&mut a, "hi").await, "0.1.1 says hi");
    assert_eq!(ask(&mut a, "join lobby").await, "0.1.1 room lobby has 1 after 1 joins");
    assert_eq!(ask(&mut b, "join lobby").await, "0.1.1 room lobby has 2 after 2 joins");
}
