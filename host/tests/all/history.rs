//! Room history (`rooms.history`, `docs/delivery.md`): each room keeps its
//! last broadcasts with their offsets, bounded in count and age, on one
//! host in memory and, scaled out, in Redis, where every host reads the
//! same history whichever host published.

use crate::common::redis::cluster_host_configured;
use crate::common::redis_server::{Redis, RedisCluster, RedisTarget};
use crate::common::*;

const KEEP_3: &str = "[plugins.testbed]\nhistory_size = 3\nhistory_ttl = \"1m\"\n";

on_single_and_cluster!(every_host_reads_the_rooms_history_whichever_host_published);

#[tokio::test]
async fn a_room_keeps_its_last_broadcasts_with_their_offsets() {
    let host = Host::start_with_config(KEEP_3, &[]).await;
    keeps_the_last_broadcasts(&host, &host).await;
}

async fn every_host_reads_the_rooms_history_whichever_host_published(redis: impl RedisTarget) {
    let a = cluster_host_configured(&redis, KEEP_3).await;
    let b = cluster_host_configured(&redis, KEEP_3).await;
    keeps_the_last_broadcasts(&a, &b).await;
}

/// Broadcasts published on `a` and `b` in turn, read on both.
async fn keeps_the_last_broadcasts(a: &Host, b: &Host) {
    let mut member = a.connect("/ws/testbed").await;
    assert_eq!(ask(&mut member, "join lobby").await, "ok");
    let mut x = a.connect("/ws/testbed").await;
    let mut y = b.connect("/ws/testbed").await;
    assert_eq!(ask(&mut y, "history lobby 10").await, "", "nothing kept yet");
    for i in 1..=5 {
        let publisher = if i % 2 == 1 { &mut x } else { &mut y };
        assert_eq!(ask(publisher, &format!("bcastall lobby m{i}")).await, "delivered 1");
    }
    for reader in [&mut x, &mut y] {
        assert_eq!(ask(reader, "history lobby 10").await, "3:m3|4:m4|5:m5", "the last 3, oldest first");
        assert_eq!(ask(reader, "history lobby 2").await, "4:m4|5:m5", "the latest 2");
        assert_eq!(ask(reader, "history lobby 10 3").await, "4:m4|5:m5", "after offset 3");
        assert_eq!(ask(reader, "history lobby 1 3").await, "4:m4", "after offset 3, one");
        assert_eq!(ask(reader, "history lobby 10 5").await, "", "nothing after the last");
    }
    // The member got each broadcast once, live: a history read is not a
    // delivery. (Two hosts' broadcasts may cross on the way: the set, not
    // the order.)
    let mut live = Vec::new();
    for _ in 1..=5 {
        live.push(expect_text(&mut member).await);
    }
    live.sort();
    assert_eq!(live, ["m1", "m2", "m3", "m4", "m5"]);
    assert!(!ask(&mut member, "whoami").await.starts_with('m'), "and nothing more");

    // A room with no member keeps what is broadcast to it, and its
    // numbering is its own.
    assert_eq!(ask(&mut y, "bcastall empty into the void").await, "delivered 0");
    assert_eq!(ask(&mut x, "history empty 10").await, "1:into the void");
    let long = "r".repeat(129);
    assert!(
        ask(&mut y, &format!("history {long} 10")).await.starts_with("error HostError::Invalid"),
        "a bad name is refused"
    );
}

#[tokio::test]
async fn history_is_off_unless_the_operator_turns_it_on() {
    let host = Host::start(&[]).await;
    let mut x = host.connect("/ws/testbed").await;
    ask(&mut x, "bcastall lobby hi").await;
    let answer = ask(&mut x, "history lobby 10").await;
    assert!(answer.starts_with("error HostError::Invalid(") && answer.contains("history_size"), "{answer}");
}

#[tokio::test]
async fn a_room_forgets_broadcasts_older_than_its_ttl() {
    let host = Host::start_with_config("[plugins.testbed]\nhistory_size = 10\nhistory_ttl = \"1s\"\n", &[]).await;
    let mut x = host.connect("/ws/testbed").await;
    ask(&mut x, "bcastall quiet first").await;
    assert_eq!(ask(&mut x, "history quiet 10").await, "1:first");
    eventually("the entry expired", async || ask(&mut x, "history quiet 10").await, |h| h.is_empty()).await;
    // Its bytes are given back by the sweep, not only hidden from reads.
    eventually(
        "the history's bytes were given back",
        async || host.metric("wasmsocket_history_bytes").await,
        |b| *b == Some(0.0),
    )
    .await;
}

#[tokio::test]
async fn a_room_on_redis_forgets_broadcasts_older_than_its_ttl() {
    let redis = Redis::start().await;
    let host = cluster_host_configured(&redis, "[plugins.testbed]\nhistory_size = 10\nhistory_ttl = \"1s\"\n").await;
    let mut x = host.connect("/ws/testbed").await;
    ask(&mut x, "bcastall quiet first").await;
    assert_eq!(ask(&mut x, "history quiet 10").await, "1:first");
    eventually("the stream expired", async || ask(&mut x, "history quiet 10").await, |h| h.is_empty()).await;
}

#[tokio::test]
async fn plugins_built_against_0_2_0_keep_working_under_0_2_1() {
    let compat = std::fs::read(env!("WASMSOCKET_COMPAT_0_2_0_WASM")).unwrap();
    let host = Host::start_with(plugins_dir(&[("old.wasm", &compat)]), &[]).await;
    let entry = host.plugin("old").await.unwrap();
    assert_eq!((&entry["state"], &entry["world"]), (&"ready".into(), &"0.2.0".into()));
    assert_eq!(host.plugin("testbed").await.unwrap()["world"], "0.2.1");
    let mut a = host.connect("/ws/old").await;
    assert_eq!(ask(&mut a, "hi").await, "0.2.0 says hi");
    assert_eq!(ask(&mut a, "join lobby").await, "0.2.0 room lobby has 1");
    assert_eq!(ask(&mut a, "tick").await, "0.2.0 tick", "its timers still fire");
}
