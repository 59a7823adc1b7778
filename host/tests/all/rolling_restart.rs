//! Resumable sessions across hosts (`docs/delivery.md`): a client whose
//! session lives on one host resumes it through another (no sticky
//! sessions), which takes it over with its id, rooms, state, timers and
//! every message sent meanwhile; and a host told to stop (SIGTERM) closes
//! its clients with 1012 and hands their sessions over as they come back.
//! Real host processes on a real Redis, and on a real Redis Cluster.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::redis::{cluster_host, cluster_host_configured};
use crate::common::redis_server::{Redis, RedisCluster, RedisTarget};
use crate::common::*;
use crate::resume::{blink, hello, open, resume};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

on_single_and_cluster!(
    a_session_resumed_through_another_host_keeps_everything,
    a_host_told_to_stop_hands_its_sessions_over_and_nothing_is_lost_or_repeated,
    a_session_whose_host_crashed_is_recovered_from_its_checkpoint_and_the_rooms_history,
);

/// Room history on, so sessions are checkpointed (`docs/delivery.md`).
const CHECKPOINTED: &str = "[plugins.testbed]\nhistory_size = 100\n";

async fn a_session_whose_host_crashed_is_recovered_from_its_checkpoint_and_the_rooms_history(redis: impl RedisTarget) {
    let mut a = cluster_host_configured(&redis, CHECKPOINTED).await;
    let b = cluster_host_configured(&redis, CHECKPOINTED).await;
    let (mut x, session) = open(&a, "").await;
    let id = ask(&mut x, "whoami").await;
    assert_eq!(ask(&mut x, "join lobby").await, "ok");
    assert_eq!(ask(&mut x, "set kept through a crash").await, "stored");
    let mut p = b.connect("/ws/testbed").await;
    assert_eq!(ask(&mut p, "join lobby").await, "ok");
    let written = "wasmsocket_sessions_checkpoints_written_total";
    let before = a.metric_or_zero(written).await;
    for i in 1..=3 {
        assert_eq!(ask(&mut p, &format!("bcast lobby m{i}")).await, "delivered 1");
        assert_eq!(expect_text(&mut x).await, format!("m{i}"));
    }
    // Its host writes where it stands once a second at most: a write
    // begun after m3 has it.
    eventually("a checkpoint written", async || a.metric_or_zero(written).await, |n| *n > before).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    a.kill().await;
    drop(x);
    // Published while the session has no host: the room's history keeps them.
    for i in 4..=5 {
        assert!(ask(&mut p, &format!("bcast lobby m{i}")).await.starts_with("delivered"));
    }

    // A wrong secret learns nothing, and takes nothing.
    let (_, h) = resume(&b, &format!("{id}.{}", "0".repeat(32)), 6).await;
    assert_eq!(h.refused.as_deref(), Some("unknown"), "{h:?}");

    // whoami, ok, stored, m1, m2, m3: 6 messages received.
    let (mut x, h) = resume(&b, &session, 6).await;
    assert!(h.resumed, "{h:?}");
    assert_eq!(expect_text(&mut x).await, "m4", "recovered from the history");
    assert_eq!(expect_text(&mut x).await, "m5");
    assert_eq!(ask(&mut x, "whoami").await, id, "same id");
    assert_eq!(ask(&mut x, "get").await, "kept through a crash", "same state");
    assert_eq!(ask(&mut x, "rooms").await, "lobby", "same rooms");
    assert_eq!(ask(&mut p, "bcast lobby m6").await, "delivered 1");
    assert_eq!(expect_text(&mut x).await, "m6", "live again, once");
    assert_eq!(ask(&mut p, &format!("send {id} direct")).await, "sent");
    assert_eq!(expect_text(&mut x).await, "direct", "directed sends find it on its new host");
    assert_eq!(b.metric_or_zero("wasmsocket_sessions_recovered_total").await, 1.0);
    assert_eq!(b.metric_or_zero("wasmsocket_sessions_recovered_broadcasts_total").await, 2.0);
    assert_eq!(b.metric_or_zero("wasmsocket_sessions_recovery_lost_total").await, 0.0);
}

async fn a_session_resumed_through_another_host_keeps_everything(redis: impl RedisTarget) {
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let (mut x, session) = open(&a, "").await;
    let id = ask(&mut x, "whoami").await;
    assert_eq!(ask(&mut x, "join lobby").await, "ok");
    assert_eq!(ask(&mut x, "set kept across hosts").await, "stored");
    assert_eq!(ask(&mut x, "timer beat once 800").await, "ok");
    let mut member = b.connect("/ws/testbed").await;
    assert_eq!(ask(&mut member, "join lobby").await, "ok");
    blink(x).await;

    // Sent while it is away, from the other host.
    let mut p = b.connect("/ws/testbed").await;
    assert_eq!(ask(&mut p, "bcast lobby during the gap").await, "delivered 2");
    assert_eq!(ask(&mut p, &format!("send {id} direct")).await, "sent");
    assert_eq!(expect_text(&mut member).await, "during the gap");

    // Its client comes back through the other host.
    let (mut x, h) = resume(&b, &session, 4).await;
    assert!(h.resumed, "{h:?}");
    assert_eq!(h.received, 4);
    let got: HashSet<String> = [expect_text(&mut x).await, expect_text(&mut x).await].into();
    assert_eq!(got, HashSet::from(["during the gap".to_string(), "direct".to_string()]));
    assert_eq!(expect_text(&mut x).await, "timer beat", "its timer came along");
    assert_eq!(ask(&mut x, "whoami").await, id, "same id");
    assert_eq!(ask(&mut x, "get").await, "kept across hosts", "same state");
    assert_eq!(ask(&mut x, "rooms").await, "lobby", "same rooms");

    // It lives on the new host now: broadcasts and directed sends reach it
    // once, from either host.
    assert_eq!(ask(&mut p, "bcast lobby after").await, "delivered 2");
    assert_eq!(expect_text(&mut x).await, "after");
    let mut q = a.connect("/ws/testbed").await;
    assert_eq!(ask(&mut q, &format!("send {id} from the old host")).await, "sent");
    assert_eq!(expect_text(&mut x).await, "from the old host");
    assert_eq!(ask(&mut q, "join lobby").await, "ok");
    assert_eq!(ask(&mut q, "bcast lobby from the old host too").await, "delivered 2");
    assert_eq!(expect_text(&mut x).await, "from the old host too");
    assert_eq!(ask(&mut x, "bcast lobby from x").await, "delivered 2");
    assert_eq!(expect_text(&mut member).await, "after");
    assert_eq!(expect_text(&mut member).await, "from the old host too");
    assert_eq!(expect_text(&mut member).await, "from x");
    assert_eq!(ask(&mut x, "ping").await, "ping", "nothing arrived twice");
    assert_eq!(a.metric_or_zero("wasmsocket_sessions_moved_out_total").await, 1.0);
    assert_eq!(b.metric_or_zero("wasmsocket_sessions_moved_in_total").await, 1.0);
    assert_eq!(a.metric_or_zero("wasmsocket_connections_open{plugin=\"testbed\"}").await, 1.0, "only q");
    assert_eq!(expect_text(&mut q).await, "from x");
    assert_eq!(ask(&mut q, "count lobby").await, "3", "one member each, counted once");
}

/// Numbered broadcasts "n 1", "n 2", ... to `room` from `publisher`, one
/// every 2 ms, until `count`.
fn publish(mut publisher: Client, room: &'static str, count: u64) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        for n in 1..=count {
            publisher.send(Message::text(format!("bcast {room} n {n}"))).await.expect("publish");
            assert!(expect_text(&mut publisher).await.starts_with("delivered"));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        publisher
    })
}

async fn a_host_told_to_stop_hands_its_sessions_over_and_nothing_is_lost_or_repeated(redis: impl RedisTarget) {
    const COUNT: u64 = 400;
    const CLIENTS: usize = 20;
    let (mut a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (mut ws, session) = open(&a, "").await;
        let id = ask(&mut ws, "whoami").await;
        assert_eq!(ask(&mut ws, "join lobby").await, "ok");
        clients.push((ws, session, id));
    }
    let mut publisher = b.connect("/ws/testbed").await;
    assert_eq!(ask(&mut publisher, "join lobby").await, "ok");
    let stream = publish(publisher, "lobby", COUNT);

    let moving = clients.into_iter().map(|(mut ws, session, id)| {
        let b = b.http("");
        tokio::spawn(async move {
            let mut seen = Vec::new();
            // whoami and join were 2 messages.
            let mut received = 2;
            let code = loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        received += 1;
                        seen.push(t.strip_prefix("n ").expect("numbered").parse::<u64>().expect("n"));
                    }
                    Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    other => panic!("the old host's socket ended without a close frame: {other:?}"),
                }
            };
            let url = format!("{}/ws/testbed?resume={session}&last={received}", b.replace("http", "ws"));
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("resume on the other host");
            let h = hello(&mut ws).await;
            assert!(h.resumed, "{h:?}");
            while seen.last() != Some(&COUNT) {
                let t = expect_text(&mut ws).await;
                seen.push(t.strip_prefix("n ").expect("numbered").parse::<u64>().expect("n"));
            }
            assert_eq!(ask(&mut ws, "whoami").await, id);
            (code, seen)
        })
    });
    let moving: Vec<_> = moving.collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.signal("TERM");
    for client in moving {
        let (code, seen) = client.await.expect("client");
        assert_eq!(code, Some(1012), "told the server restarts");
        assert_eq!(seen, (1..=COUNT).collect::<Vec<_>>(), "no gap and no repeat");
    }
    assert!(a.wait_exit().await.success(), "the stopped host exits cleanly once its sessions moved");
    assert!(a.log().contains("drained"), "{}", a.log());
    drop(stream.await.expect("publisher"));
    assert_eq!(b.metric_or_zero("wasmsocket_sessions_moved_in_total").await, CLIENTS as f64);
}

#[tokio::test]
async fn a_wrong_secret_through_another_host_learns_nothing_and_changes_nothing() {
    let redis = Redis::start().await;
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let (mut x, session) = open(&a, "").await;
    let id = ask(&mut x, "whoami").await;
    blink(x).await;
    let (conn_id, secret) = session.split_once('.').expect("ID.SECRET");
    let wrong = format!("{conn_id}.{}", "0".repeat(secret.len()));
    let (_y, h) = resume(&b, &wrong, 1).await;
    assert!(!h.resumed);
    assert_eq!(h.refused.as_deref(), Some("unknown"));
    let (mut x, h) = resume(&b, &session, 1).await;
    assert!(h.resumed, "{h:?}");
    assert_eq!(ask(&mut x, "whoami").await, id);
}
