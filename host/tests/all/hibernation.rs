//! Instances are disposable, connections are not: an idle connection gives
//! its plugin instance up and keeps its socket, its state, its rooms and
//! its store; the number of live instances is bounded, not the number of
//! connections.

use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const INSTANCES: &str = "wasmsocket_instances";

/// `n` clients of the testbed plugin, connected one after another.
async fn testbed_clients(host: &Host, n: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..n {
        let (ws, _) = tokio_tungstenite::connect_async(host.url("/ws/testbed"))
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}\n{}", host.log()));
        clients.push(ws);
    }
    clients
}

#[tokio::test]
async fn a_connection_hibernates_after_hibernate_after_and_keeps_state_rooms_and_store() {
    let host = Host::start(&["--hibernate-after", "300ms"]).await;
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "set apples").await, "stored");
    assert_eq!(ask(&mut ws, "join lobby").await, "ok");
    assert_eq!(ask(&mut ws, "kvset fruit pear").await, "ok");
    // Events in quick succession share one instance: its globals count on.
    assert_eq!(ask(&mut ws, "global").await, "global 1");
    assert_eq!(ask(&mut ws, "global").await, "global 2");

    // Idle: the instance is dropped, the socket stays open.
    eventually("the instance was dropped", async || host.metric_or_zero(INSTANCES).await, |n| *n == 0.0).await;
    assert_eq!(host.metric_or_zero("wasmsocket_connections_open{plugin=\"testbed\"}").await, 1.0);

    // The next event wakes a fresh instance (its globals start again) and
    // finds what the host kept.
    assert_eq!(ask(&mut ws, "global").await, "global 1");
    assert_eq!(ask(&mut ws, "get").await, "apples");
    assert_eq!(ask(&mut ws, "rooms").await, "lobby");
    assert_eq!(ask(&mut ws, "kvget fruit").await, "pear");
    assert_eq!(ask(&mut ws, "count lobby").await, "1");
}

#[tokio::test]
async fn zero_means_a_fresh_instance_for_every_event() {
    let host = Host::start(&["--hibernate-after", "0s"]).await;
    let mut ws = host.connect("/ws/testbed").await;
    for _ in 0..3 {
        assert_eq!(ask(&mut ws, "global").await, "global 1");
    }
    // Dropped once the reply is out, which the client may see first.
    eventually("no instance kept", async || host.metric_or_zero(INSTANCES).await, |n| *n == 0.0).await;
    let mut never = Host::start(&["--hibernate-after", "never"]).await;
    let mut kept = never.connect("/ws/testbed").await;
    for n in 1..=3 {
        assert_eq!(ask(&mut kept, "global").await, format!("global {n}"));
    }
    never.kill().await;
}

/// What one instance left in its linear memory (here, 64 KiB of its stack)
/// is gone for the next in its slot, whether the slot gave its pages back
/// or kept them resident and reset them in place (`keep_resident`).
#[tokio::test]
async fn a_fresh_instance_sees_nothing_the_last_left_in_its_memory() {
    async fn left_over(host: &Host) -> (String, String) {
        let mut ws = host.connect("/ws/testbed").await;
        let scribbled = ask(&mut ws, "scribble").await;
        let addr: usize = scribbled.strip_prefix("scribbled ").and_then(|a| a.parse().ok()).expect("an address");
        // The deeper half of the buffer: nothing of the next call's own
        // frames reaches it.
        let seen = ask(&mut ws, &format!("peek {addr} {}", 32 << 10)).await;
        (scribbled, seen)
    }
    // The same instance sees its own bytes (but a few its later calls
    // wrote): the probe can see them.
    let kept = Host::start(&["--hibernate-after", "never"]).await;
    let seen = left_over(&kept).await.1;
    let nonzero: usize = seen.strip_prefix("nonzero ").and_then(|n| n.parse().ok()).expect("a count");
    assert!(nonzero > 16 << 10, "the instance does not see its own bytes: {seen}");
    for config in ["", "keep_resident = \"1280KiB\"\n"] {
        let host = Host::start_with_config(config, &["--hibernate-after", "0s"]).await;
        for _ in 0..3 {
            let (scribbled, seen) = left_over(&host).await;
            assert_eq!(seen, "nonzero 0", "config {config:?}: a fresh instance read what another left ({scribbled})");
        }
        // What the ended instances' slots kept is there for operators to see.
        eventually("instances ended", async || host.metric_or_zero(INSTANCES).await, |n| *n == 0.0).await;
        let kept = host.metric_or_zero("wasmsocket_pool_kept_bytes").await;
        if config.is_empty() {
            assert_eq!(kept, 0.0, "slots keep nothing by default");
        } else {
            assert!(kept >= 4096.0 && kept <= 4.0 * (1280 << 10) as f64, "kept {kept} bytes");
        }
    }
}

#[tokio::test]
async fn on_close_runs_exactly_once_on_a_hibernated_connection() {
    let host = Host::start(&["--hibernate-after", "0s"]).await;
    let mut watcher = close_watched_with_bye(&host).await;
    // And only once.
    assert_eq!(ask(&mut watcher, "ping").await, "ping");
}

#[tokio::test]
async fn live_reload_reaches_a_hibernated_connection_at_its_next_event() {
    let host = Host::start(&["--hibernate-after", "0s"]).await;
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "set apples").await, "stored");
    let file = host.dir.as_ref().expect("plugins dir").join("testbed.wasm");
    replace_by_rename(SHOUT_WASM, &file);
    host.wait_serving("testbed", path(SHOUT_WASM)).await;
    assert_eq!(ask(&mut ws, "hello").await, "HELLO");
}

#[tokio::test]
async fn drain_mode_wakes_a_hibernated_connection_on_the_version_it_started_with() {
    let host = Host::start(&["--hibernate-after", "0s", "--reload", "drain"]).await;
    let mut old = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut old, "hello").await, "hello");
    let file = host.dir.as_ref().expect("plugins dir").join("testbed.wasm");
    replace_by_rename(SHOUT_WASM, &file);
    host.wait_serving("testbed", path(SHOUT_WASM)).await;
    // Woken again after the reload, still on its version.
    assert_eq!(ask(&mut old, "hello").await, "hello");
    let mut new = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut new, "hello").await, "HELLO");
}

#[tokio::test]
async fn a_burst_beyond_max_instances_is_answered_in_order() {
    // Four slots, fifty busy connections: events wait for a slot (the
    // longest idle instance is given up), and none fails.
    let host = Host::start(&["--max-instances", "4", "--deadline", "2s"]).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(host.connect("/ws/testbed").await);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, ws)| {
            tokio::spawn(async move {
                let (mut tx, mut rx) = ws.split();
                for i in 0..20 {
                    tx.send(Message::text(format!("{c}:{i}"))).await.expect("send");
                }
                for i in 0..20 {
                    match tokio::time::timeout(PATIENCE, rx.next()).await.expect("reply in time") {
                        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), format!("{c}:{i}")),
                        other => panic!("connection {c}, message {i}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    assert!(host.metric_or_zero("wasmsocket_instance_evictions_total").await > 0.0, "slots were shared");
    assert_eq!(host.metric_or_zero("wasmsocket_instance_waits_exhausted_total").await, 0.0);
    assert!(host.metric_or_zero(INSTANCES).await <= 4.0);
}

#[tokio::test]
async fn thousands_of_idle_connections_fit_the_default_memory_map_limit() {
    // Linux's default vm.max_map_count (65,530) stopped the old host near
    // 5,100 connections, each holding an instance. Idle connections now
    // hold none.
    let host = Host::start(&["--max-instances", "64", "--hibernate-after", "100ms"]).await;
    let mut clients = testbed_clients(&host, 3000).await;
    for (i, ws) in clients.iter_mut().enumerate() {
        let text = format!("still here {i}");
        assert_eq!(ask(ws, &text).await, text);
    }
    assert!(host.metric_or_zero(INSTANCES).await <= 64.0);
    assert!(!host.log().contains("vm.max_map_count"), "no memory-map warning at these settings");
    let refused = host.get_text("/metrics").await.1;
    assert!(!refused.contains("wasmsocket_handshakes_refused_total{"), "{refused}");
}

#[tokio::test]
async fn an_exhausted_instance_pool_gives_503_and_1011_not_500() {
    // One slot. A testbed call computes for 3 s and cannot be given up;
    // echo events wait at most their 500 ms deadline for the slot.
    let dir = plugins_dir(&[]);
    let config = dir.0.join("host.toml");
    std::fs::write(
        &config,
        "max_instances = 1\n[limits]\ndeadline = \"500ms\"\nhibernate_after = \"0s\"\n\
         [plugins.testbed]\ndeadline = \"3s\"\n",
    )
    .expect("write config");
    let config = config.display().to_string();
    let host = Host::start_with(dir, &["--config", &config]).await;
    let mut waiting = host.connect("/ws").await;
    let mut busy = host.connect("/ws/testbed").await;
    send_text(&mut busy, "loop").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (status, body) = host.refused_status(host.url("/ws")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_instances"), "{body}");
    send_text(&mut waiting, "hello").await;
    let frame = expect_close(&mut waiting).await;
    assert_eq!(frame.code, CloseCode::Error);
    assert_eq!(frame.reason.as_str(), "server busy");
    assert!(host.wait_for_log("host out of resources").await, "{}", host.log());
    assert!(!host.log().contains("trapped"), "not reported as a plugin trap:\n{}", host.log());

    // Once the loop is cut, the slot serves again.
    assert_eq!(expect_close(&mut busy).await.code, CloseCode::Error);
    let mut fresh = host.connect("/ws").await;
    assert_eq!(ask(&mut fresh, "back").await, "back");
}

/// Memory mappings of process `pid` (lines of `/proc/PID/maps`).
fn mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).map_or(0, |maps| maps.lines().count())
}

#[tokio::test]
async fn live_instances_cost_the_mappings_the_start_up_warning_counts() {
    // Each connection keeps its instance: N live instances.
    const N: usize = 200;
    let host = Host::start(&["--hibernate-after", "never"]).await;
    let mut warm = testbed_clients(&host, 1).await;
    assert!(!ask(&mut warm[0], "whoami").await.is_empty());
    let before = mappings(host.pid());
    let mut clients = testbed_clients(&host, N).await;
    for ws in &mut clients {
        ask(ws, "whoami").await;
    }
    assert_eq!(host.metric_or_zero(INSTANCES).await, (N + 1) as f64);
    let per_instance = (mappings(host.pid()).saturating_sub(before)) as f64 / N as f64;
    eprintln!("{per_instance:.2} memory mappings per live instance");
    assert!(
        per_instance <= wasmsocket::MAPS_PER_INSTANCE as f64,
        "{per_instance:.2} mappings per live instance, more than the {} the warning counts",
        wasmsocket::MAPS_PER_INSTANCE
    );
}

#[tokio::test]
async fn a_memory_map_warning_names_max_instances_when_it_is_too_high() {
    let host = Host::start(&["--max-instances", "20000"]).await;
    assert!(host.wait_for_log("max_instances = 20000").await, "{}", host.log());
}

#[tokio::test]
async fn a_resting_socket_wakes_for_messages_broadcasts_and_pings() {
    // Idle past a second, a socket gives its buffers back; everything that
    // reaches it afterwards must still arrive, in order.
    let host = Host::start(&["--keep-alive-interval", "700ms", "--keep-alive-timeout", "2s"]).await;
    let mut member = host.connect("/ws/testbed").await;
    let mut speaker = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut member, "join r").await, "ok");
    let member_id = ask(&mut member, "whoami").await;
    // Answer pings (tungstenite does so while the client reads) across
    // several rest periods; the host must not drop us for silence.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 3 {
            match tokio::time::timeout(PATIENCE, member.next()).await.expect("in time") {
                Some(Ok(Message::Text(t))) => got.push(t.to_string()),
                Some(Ok(_)) => continue,
                other => panic!("member's connection broke: {other:?}"),
            }
        }
        (member, got)
    });
    eventually("both sockets rest", async || host.metric_or_zero("wasmsocket_sockets_resting").await, |n| *n == 2.0)
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(ask(&mut speaker, "bcast r one").await, "delivered 1");
    assert_eq!(ask(&mut speaker, &format!("send {member_id} two")).await, "sent");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ask(&mut speaker, "bcast r three").await, "delivered 1");
    let (mut member, got) = reader.await.expect("reader");
    assert_eq!(got, ["one", "two", "three"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A message split across writes, to a socket that rests.
    assert_eq!(ask(&mut member, "after rest").await, "after rest");
    let long = "x".repeat(100_000);
    assert_eq!(ask(&mut member, &long).await, long);
}

#[tokio::test]
async fn a_client_that_fragments_messages_is_served_after_idling() {
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, coding::Data, coding::OpCode};
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws").await;
    let first = Frame::message(b"hel".to_vec(), OpCode::Data(Data::Text), false);
    let last = Frame::message(b"lo".to_vec(), OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(first)).await.expect("send");
    ws.send(Message::Frame(last)).await.expect("send");
    assert_eq!(expect_text(&mut ws).await, "hello");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ask(&mut ws, "and again").await, "and again");
}

#[tokio::test]
async fn a_wake_storm_of_five_thousand_completes_with_no_1011() {
    // Every connection hibernated, then each sends one message at the same
    // moment, as after a broadcast to a big room of idle users: each event
    // waits for an instance within its deadline, and none fails.
    let host = Host::start(&["--hibernate-after", "200ms", "--deadline", "20s"]).await;
    let clients = testbed_clients(&host, 5000).await;
    eventually("every instance hibernated", async || host.metric_or_zero(INSTANCES).await, |n| *n == 0.0).await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let sent = std::time::Instant::now();
                ws.send(Message::text(format!("wake {i}"))).await.expect("send");
                match tokio::time::timeout(PATIENCE, ws.next()).await.expect("answer in time") {
                    Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), format!("wake {i}")),
                    other => panic!("connection {i}: {other:?}"),
                }
                (sent.elapsed(), ws)
            })
        })
        .collect();
    let mut took = Vec::new();
    let mut kept = Vec::new();
    for task in tasks {
        let (elapsed, ws) = task.await.expect("client");
        took.push(elapsed);
        kept.push(ws);
    }
    took.sort();
    eprintln!("wake storm of {}: p50 {:?}, p99 {:?}", took.len(), took[took.len() / 2], took[took.len() * 99 / 100]);
    assert_eq!(host.metric_or_zero("wasmsocket_instance_waits_exhausted_total").await, 0.0);
    let faults = host.get_text("/metrics").await.1;
    assert!(
        !faults.lines().any(|l| l.starts_with("wasmsocket_plugin_faults_total{") && !l.ends_with(" 0")),
        "{faults}"
    );
}
