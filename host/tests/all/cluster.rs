//! Scale-out: real host processes on one real `redis-server`, and the same
//! tests on a real Redis Cluster (three masters, three replicas).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::redis::{cluster_host, cluster_host_with};
use crate::common::redis_server::{Redis, RedisCluster, RedisTarget};
use crate::common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

on_single_and_cluster!(
    broadcasts_reach_room_members_on_every_host,
    a_send_reaches_a_connection_on_another_host,
    the_publish_api_reaches_every_host,
    the_key_value_store_is_shared_and_increments_are_atomic,
    the_chat_example_works_across_hosts,
    a_dead_hosts_members_leave_the_counts,
    a_host_receives_a_rooms_broadcasts_only_while_it_has_members_there,
    a_room_timer_runs_on_one_host_and_another_takes_it_over_when_it_stops,
);

async fn healthz(host: &Host) -> serde_json::Value {
    host.get_json("/healthz").await
}

async fn joined(host: &Host, room: &str) -> Client {
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, &format!("join {room}")).await, "ok");
    ws
}

async fn broadcasts_reach_room_members_on_every_host(redis: impl RedisTarget) {
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut a1 = joined(&a, "lobby").await;
    let mut a2 = joined(&a, "lobby").await;
    let mut b1 = joined(&b, "lobby").await;
    let mut b2 = joined(&b, "lobby").await;

    // Counts and listings are cluster-wide, seen the same from both hosts.
    assert_eq!(ask(&mut a1, "count lobby").await, "4");
    assert_eq!(ask(&mut b1, "count lobby").await, "4");
    let b2_id = ask(&mut b2, "whoami").await;
    let listed = ask(&mut a1, "members lobby").await;
    assert_eq!(listed.split(',').count(), 4, "{listed}");
    assert!(listed.split(',').any(|id| id == b2_id), "{listed} lacks {b2_id}");

    assert_eq!(ask(&mut a1, "bcast lobby from-a").await, "delivered 3");
    for ws in [&mut a2, &mut b1, &mut b2] {
        assert_eq!(expect_text(ws).await, "from-a");
    }
    // Order is kept from one sender, across hosts.
    for i in 0..50 {
        send_text(&mut b1, &format!("bcast lobby m{i}")).await;
    }
    for i in 0..50 {
        assert_eq!(expect_text(&mut b1).await, "delivered 3");
        for ws in [&mut a1, &mut a2, &mut b2] {
            assert_eq!(expect_text(ws).await, format!("m{i}"));
        }
    }

    // Leaving is cluster-wide too.
    assert_eq!(ask(&mut b2, "leave lobby").await, "ok");
    assert_eq!(ask(&mut a1, "count lobby").await, "3");
    assert_eq!(ask(&mut a1, "bcast lobby after-leave").await, "delivered 2");
    assert_eq!(expect_text(&mut b1).await, "after-leave");
    assert_eq!(ask(&mut b2, "whoami").await, b2_id, "b2 must not have received the broadcast");
}

async fn a_send_reaches_a_connection_on_another_host(redis: impl RedisTarget) {
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut x = a.connect("/ws/testbed").await;
    let mut y = b.connect("/ws/testbed").await;
    let y_id = ask(&mut y, "whoami").await;
    assert_ne!(y_id.split('-').next(), ask(&mut x, "whoami").await.split('-').next(), "hosts share an id");

    assert_eq!(ask(&mut x, &format!("send {y_id} over-redis")).await, "sent");
    assert_eq!(expect_text(&mut y).await, "over-redis");

    // A host that is not in the cluster: not-found, as for a closed connection.
    assert_eq!(ask(&mut x, "send 0badbeef-1 nobody").await, "error HostError::NotFound");

    // Closing crosses hosts too, with the code and reason.
    assert_eq!(ask(&mut x, &format!("kick {y_id} 4001 moved elsewhere")).await, "ok");
    let frame = expect_close(&mut y).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4001, "moved elsewhere"));

    let metrics = a.get_text("/metrics").await.1;
    for line in
        ["wasmsocket_redis_published_total{kind=\"Send\"} 1", "wasmsocket_redis_published_total{kind=\"Close\"} 1"]
    {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let metrics = b.get_text("/metrics").await.1;
    assert!(metrics.contains("wasmsocket_redis_received_total{kind=\"Send\"} 1"), "{metrics}");
}

async fn the_publish_api_reaches_every_host(redis: impl RedisTarget) {
    let token = "a-token-of-sixteen-chars";
    let a = cluster_host(&redis, &["--api-token", token]).await;
    let b = cluster_host(&redis, &["--api-token", token]).await;
    let mut b1 = joined(&b, "news").await;
    let b1_id = ask(&mut b1, "whoami").await;
    let client = reqwest::Client::new();

    let response = client
        .post(a.http("/api/rooms/news/messages?plugin=testbed"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body("headline")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.expect("JSON")["delivered"], 1);
    assert_eq!(expect_text(&mut b1).await, "headline");

    let response = client
        .post(a.http(&format!("/api/connections/{b1_id}/messages")))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body("just-you")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    assert_eq!(expect_text(&mut b1).await, "just-you");
}

async fn the_key_value_store_is_shared_and_increments_are_atomic(redis: impl RedisTarget) {
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut x = a.connect("/ws/testbed").await;
    let mut y = b.connect("/ws/testbed").await;
    assert_eq!(ask(&mut x, "kvset greeting hello").await, "ok");
    assert_eq!(ask(&mut y, "kvget greeting").await, "hello");
    assert_eq!(ask(&mut y, "kvdel greeting").await, "true");
    assert_eq!(ask(&mut x, "kvget greeting").await, "none");
    assert!(ask(&mut y, "kvset greeting text").await == "ok");
    let refused = ask(&mut x, "incr greeting").await;
    assert!(refused.contains("Invalid") && refused.contains("not a decimal integer"), "{refused}");

    // 10 clients on each host, 20 increments each, all at once.
    let mut tasks = Vec::new();
    for host in [&a, &b] {
        for _ in 0..10 {
            let mut ws = host.connect("/ws/testbed").await;
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    send_text(&mut ws, "incr hits").await;
                }
                for _ in 0..20 {
                    let n: i64 = expect_text(&mut ws).await.parse().expect("a number");
                    assert!((1..=400).contains(&n));
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("client task");
    }
    assert_eq!(ask(&mut x, "incr hits 0").await, "400");
}

async fn the_chat_example_works_across_hosts(redis: impl RedisTarget) {
    let chat = std::fs::read(env!("WASMSOCKET_CHAT_WASM")).expect("chat example");
    let a = cluster_host_with(&redis, &[("chat.wasm", &chat)], &[]).await;
    let b = cluster_host_with(&redis, &[("chat.wasm", &chat)], &[]).await;
    let mut ann = a.connect("/ws/chat?room=tea&nick=ann").await;
    assert_eq!(expect_text(&mut ann).await, "* you are ann in tea (1 here)");
    let mut bob = b.connect("/ws/chat?room=tea&nick=bob").await;
    assert_eq!(expect_text(&mut bob).await, "* you are bob in tea (2 here)");
    assert_eq!(expect_text(&mut ann).await, "* bob joined tea");
    send_text(&mut ann, "hello bob").await;
    assert_eq!(expect_text(&mut bob).await, "ann: hello bob");
    drop(bob);
    assert_eq!(expect_text(&mut ann).await, "* bob left tea");

    // Guest numbers come from the shared store: no two hosts hand out the same.
    let mut first = a.connect("/ws/chat?room=x").await;
    let mut second = b.connect("/ws/chat?room=y").await;
    let (first, second) = (expect_text(&mut first).await, expect_text(&mut second).await);
    assert!(first.starts_with("* you are guest-") && second.starts_with("* you are guest-"), "{first} / {second}");
    assert_ne!(first.split(' ').nth(3), second.split(' ').nth(3));
}

#[tokio::test]
async fn a_redis_outage_keeps_local_service_and_cross_host_delivery_resumes() {
    let mut redis = Redis::start().await;
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut a1 = joined(&a, "r").await;
    let mut a2 = joined(&a, "r").await;
    let mut b1 = joined(&b, "r").await;
    assert_eq!(healthz(&a).await["status"], "ok");
    assert_eq!(ask(&mut a1, "count r").await, "3");

    // Echo traffic on host A runs through the outage and the recovery
    // without a single loss.
    let mut echo = a.connect("/ws/echo").await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                send_text(&mut echo, &format!("e{n}")).await;
                assert_eq!(expect_text(&mut echo).await, format!("e{n}"));
                n += 1;
            }
            n
        })
    };

    redis.kill().await;
    let health = eventually("reported the outage", async || healthz(&a).await, |h| h["status"] == "degraded").await;
    assert_eq!(health["redis"]["status"], "down");
    assert!(health["redis"]["error"].is_string(), "{health}");
    let metrics = a.get_text("/metrics").await.1;
    assert!(metrics.contains("wasmsocket_redis_up 0"), "{metrics}");

    // This host's connections and rooms keep working.
    assert_eq!(ask(&mut a1, "whoami").await.split('-').count(), 2);
    assert_eq!(ask(&mut a1, "bcast r local-only").await, "delivered 1");
    assert_eq!(expect_text(&mut a2).await, "local-only");
    assert_eq!(ask(&mut a1, "count r").await, "2", "counts fall back to this host's members");
    assert!(ask(&mut a1, "kvset k v").await.contains("unavailable"));
    // A join during the outage is recorded here and written on reconnection.
    let mut a3 = joined(&a, "r").await;
    assert!(a.wait_for_log("lost Redis").await);

    // A new, empty Redis on the same port: hosts reconnect on their own and
    // write their memberships again.
    redis.restart().await;
    for host in [&a, &b] {
        eventually("recovered", async || healthz(host).await, |h| h["status"] == "ok").await;
    }
    assert!(a.wait_for_log("reconnected to Redis").await);
    assert_eq!(ask(&mut a1, "count r").await, "4");
    assert_eq!(ask(&mut b1, "bcast r back").await, "delivered 3");
    for ws in [&mut a1, &mut a2, &mut a3] {
        assert_eq!(expect_text(ws).await, "back");
    }
    assert_eq!(ask(&mut a1, "kvset k v").await, "ok");
    stop.store(true, Ordering::Relaxed);
    let echoed = traffic.await.expect("echo traffic never failed");
    assert!(echoed > 0);
}

#[tokio::test]
async fn a_hung_redis_is_detected_and_the_host_recovers_when_it_answers_again() {
    let redis = Redis::start().await;
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut a1 = joined(&a, "r").await;
    let mut a2 = joined(&a, "r").await;
    let mut b1 = joined(&b, "r").await;

    // Frozen, not dead: connections stay open but nothing answers, as in a
    // network partition. Commands time out (redis.timeout) and the host
    // goes degraded instead of waiting forever.
    redis.signal("STOP");
    eventually("noticed the hung Redis", async || healthz(&a).await, |h| h["status"] == "degraded").await;
    assert_eq!(ask(&mut a1, "bcast r during").await, "delivered 1");
    assert_eq!(expect_text(&mut a2).await, "during");

    redis.signal("CONT");
    for host in [&a, &b] {
        eventually("recovered", async || healthz(host).await, |h| h["status"] == "ok").await;
    }
    assert_eq!(ask(&mut b1, "bcast r after").await, "delivered 2");
    assert_eq!(expect_text(&mut a1).await, "after");
    assert_eq!(expect_text(&mut a2).await, "after");
}

async fn a_dead_hosts_members_leave_the_counts(redis: impl RedisTarget) {
    let a = cluster_host(&redis, &[]).await;
    let mut b = cluster_host(&redis, &[]).await;
    let mut a1 = joined(&a, "r").await;
    let _b1 = joined(&b, "r").await;
    let _b2 = joined(&b, "r").await;
    assert_eq!(ask(&mut a1, "count r").await, "3");

    // A crash: no clean-up by the host itself, its lease runs out.
    b.kill().await;
    eventually("dropped the dead host's members", async || ask(&mut a1, "count r").await, |n| n == "1").await;
    assert!(a.wait_for_log("swept the room memberships").await);

    // A clean shutdown leaves at once.
    let c = cluster_host(&redis, &[]).await;
    let _c1 = joined(&c, "r").await;
    assert_eq!(ask(&mut a1, "count r").await, "2");
    c.signal("TERM");
    eventually("dropped the stopped host's members", async || ask(&mut a1, "count r").await, |n| n == "1").await;
}

#[tokio::test]
async fn a_flood_of_cross_host_broadcasts_does_not_cost_a_host_its_lease() {
    let redis = Redis::start().await;
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut member = joined(&a, "busy").await;
    // Senders on B keep A's subscription busy for several host timeouts
    // (500 ms here); A must keep renewing its lease throughout.
    let mut senders = Vec::new();
    for _ in 0..8 {
        let mut ws = b.connect("/ws/testbed").await;
        senders.push(tokio::spawn(async move {
            let until = tokio::time::Instant::now() + Duration::from_secs(3);
            let mut sent = 0u64;
            while tokio::time::Instant::now() < until {
                for _ in 0..50 {
                    send_text(&mut ws, "bcast busy x").await;
                }
                for _ in 0..50 {
                    assert_eq!(expect_text(&mut ws).await, "delivered 1");
                }
                sent += 50;
            }
            sent
        }));
    }
    let mut sent = 0;
    for s in senders {
        sent += s.await.expect("sender");
    }
    for _ in 0..sent {
        assert_eq!(expect_text(&mut member).await, "x");
    }
    assert!(!b.log().contains("swept"), "host A was swept under load:\n{}", b.log());
    assert!(!a.log().contains("lease had run out"), "{}", a.log());
    assert_eq!(ask(&mut member, "count busy").await, "1");
}

#[tokio::test]
async fn a_host_starts_without_redis_and_joins_when_it_appears() {
    // A Redis that is not there yet: the host serves regardless.
    let mut redis = Redis::start().await;
    redis.kill().await;
    let a = cluster_host(&redis, &[]).await;
    let health = healthz(&a).await;
    assert_eq!(health["status"], "degraded", "{health}");
    let mut ws = a.connect("/ws/echo").await;
    send_text(&mut ws, "still here").await;
    assert_eq!(expect_text(&mut ws).await, "still here");
    assert!(a.wait_for_log("cannot reach Redis").await);

    redis.restart().await;
    eventually("joined", async || healthz(&a).await, |h| h["status"] == "ok").await;
}

#[tokio::test]
async fn a_bad_redis_url_is_refused_at_start_naming_the_field() {
    let err = Host::spawn(&["--redis".into(), "http://127.0.0.1:6379".into()]).await.err().expect("must not start");
    assert!(err.contains("redis.url") && err.contains("redis://"), "{err}");
}

async fn a_host_receives_a_rooms_broadcasts_only_while_it_has_members_there(redis: impl RedisTarget) {
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    const ROOM_IN: &str = "wasmsocket_redis_incoming_total{kind=\"Room\"}";
    let mut a1 = joined(&a, "r").await;
    let mut b1 = b.connect("/ws/testbed").await;
    let b1_id = ask(&mut b1, "whoami").await;

    // No member of r on B: r's broadcasts never reach B.
    for i in 0..5 {
        assert_eq!(ask(&mut a1, &format!("bcast r before{i}")).await, "delivered 0");
    }
    // A direct message goes to B's own channel and arrives after anything
    // published before it, so B has had every chance to receive those.
    assert_eq!(ask(&mut a1, &format!("send {b1_id} sync")).await, "sent");
    assert_eq!(expect_text(&mut b1).await, "sync");
    assert_eq!(b.metric_or_zero(ROOM_IN).await, 0.0);
    assert_eq!(b.metric_or_zero("wasmsocket_redis_rooms_listened").await, 0.0);

    // The first member starts it: every broadcast after its join arrives.
    assert_eq!(ask(&mut b1, "join r").await, "ok");
    assert_eq!(b.metric_or_zero("wasmsocket_redis_rooms_listened").await, 1.0);
    for i in 0..3 {
        assert_eq!(ask(&mut a1, &format!("bcast r during{i}")).await, "delivered 1");
    }
    for i in 0..3 {
        assert_eq!(expect_text(&mut b1).await, format!("during{i}"));
    }
    assert_eq!(b.metric_or_zero(ROOM_IN).await, 3.0);

    // The last one leaving stops it.
    assert_eq!(ask(&mut b1, "leave r").await, "ok");
    assert_eq!(b.metric_or_zero("wasmsocket_redis_rooms_listened").await, 0.0);
    for i in 0..4 {
        assert_eq!(ask(&mut a1, &format!("bcast r after{i}")).await, "delivered 0");
    }
    assert_eq!(ask(&mut a1, &format!("send {b1_id} sync")).await, "sent");
    assert_eq!(expect_text(&mut b1).await, "sync");
    assert_eq!(b.metric_or_zero(ROOM_IN).await, 3.0);

    // And joining again starts it again.
    assert_eq!(ask(&mut b1, "join r").await, "ok");
    assert_eq!(ask(&mut a1, "bcast r again").await, "delivered 1");
    assert_eq!(expect_text(&mut b1).await, "again");
    assert_eq!(b.metric_or_zero(ROOM_IN).await, 4.0);
    assert_eq!(b.metric_or_zero("wasmsocket_redis_lost_total").await, 0.0);
}

#[tokio::test]
async fn on_cluster_a_master_failover_during_traffic_is_followed_without_restarting_hosts() {
    let mut redis = RedisCluster::start().await;
    let (a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut a1 = joined(&a, "r").await;
    let mut b1 = joined(&b, "r").await;
    let a1_id = ask(&mut a1, "whoami").await;

    // B broadcasts to r without pause; a1 counts what it gets. A broadcast
    // caught waiting on the dead master can outlast wait_timeout, which
    // closes that client (1011): the sender then connects again.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let url = b.url("/ws/testbed");
        let mut ws = b.connect("/ws/testbed").await;
        tokio::spawn(async move {
            let (mut sent, mut closed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                send_text(&mut ws, "bcast r tick").await;
                match ws.next().await {
                    Some(Ok(Message::Text(reply))) if reply.starts_with("delivered ") => sent += 1,
                    Some(Ok(Message::Close(_))) => {
                        closed += 1;
                        ws = tokio_tungstenite::connect_async(url.as_str()).await.expect("reconnect").0;
                    }
                    other => return Err(format!("{other:?}")),
                }
            }
            Ok((sent, closed))
        })
    };
    assert_eq!(expect_text(&mut a1).await, "tick");

    // Kill the master that holds room r.
    let master = redis.master_of("wasmsocket:room:{testbed:r}").await.expect("a master");
    redis.nodes[master].kill().await;
    eventually(
        "a replica took over",
        async || redis.master_of("wasmsocket:room:{testbed:r}").await,
        |m| m.is_some_and(|m| m != master),
    )
    .await;
    redis.wait_ok().await;

    // Broadcasts and directed sends flow again, with the same host processes.
    let mut got = 0u64;
    let flowing = tokio::time::timeout(PATIENCE, async {
        loop {
            // Sent again each second: one sent during the outage is lost.
            let _ = ask(&mut b1, "bcast r marker").await;
            let round = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout_at(round, a1.next()).await {
                match text.as_str() {
                    "tick" => got += 1,
                    "marker" => return,
                    other => panic!("unexpected {other}"),
                }
            }
        }
    })
    .await;
    assert!(flowing.is_ok(), "broadcasts did not flow again\nA:\n{}\nB:\n{}", a.log(), b.log());
    stop.store(true, Ordering::Relaxed);
    let sent = match sender.await.expect("sender") {
        Ok((sent, closed)) => {
            assert!(closed <= 2, "{closed} senders closed");
            sent
        }
        Err(reply) => panic!("a broadcast failed: {reply}\n{}", b.log()),
    };
    assert!(sent > got, "sent {sent}, got {got}");
    let mut b2 = b.connect("/ws/testbed").await;
    assert_eq!(ask(&mut b2, &format!("send {a1_id} direct")).await, "sent");
    loop {
        match expect_text(&mut a1).await.as_str() {
            "direct" => break,
            "tick" | "marker" => {}
            other => panic!("unexpected {other}"),
        }
    }
    for host in [&a, &b] {
        eventually("healthy", async || healthz(host).await, |h| h["status"] == "ok").await;
    }
    // What the failover cost is counted: broadcasts B could not publish,
    // and those A should have received but Redis never delivered.
    let dropped = b.metric_or_zero("wasmsocket_redis_dropped_total{kind=\"Broadcast\"}").await;
    let lost = a.metric_or_zero("wasmsocket_redis_lost_total").await;
    assert!(dropped + lost > 0.0, "dropped {dropped}, lost {lost}");
    assert!(b.metric_or_zero("wasmsocket_redis_disconnects_total").await >= 1.0);
}

async fn a_room_timer_runs_on_one_host_and_another_takes_it_over_when_it_stops(redis: impl RedisTarget) {
    let (mut a, b) = (cluster_host(&redis, &[]).await, cluster_host(&redis, &[]).await);
    let mut on_a = joined(&a, "game").await;
    let mut on_b = joined(&b, "game").await;
    assert_eq!(ask(&mut on_a, "roomtimer game loop every 50").await, "ok");
    // Asked for again from the other host with the same schedule: it keeps
    // running where it runs.
    assert_eq!(ask(&mut on_b, "roomtimer game loop every 50").await, "ok");
    for _ in 0..6 {
        assert_eq!(expect_text(&mut on_b).await, "roomtimer game loop");
    }
    let fired = "wasmsocket_timers_fired_total{plugin=\"testbed\",kind=\"Room\"}";
    assert!(a.metric_or_zero(fired).await >= 6.0);
    assert_eq!(b.metric_or_zero(fired).await, 0.0, "exactly one host runs the timer");

    a.signal("TERM");
    a.wait_exit().await;
    // B takes it over: its member keeps getting ticks.
    for _ in 0..3 {
        assert_eq!(expect_text(&mut on_b).await, "roomtimer game loop");
    }
    assert!(b.metric_or_zero(fired).await >= 1.0);
    assert_eq!(b.metric_or_zero("wasmsocket_redis_timers_taken_over_total").await, 1.0);
    drop(on_a);

    // Cancelled from the host that runs it, it stops everywhere.
    assert_eq!(ask_skipping(&mut on_b, "unroomtimer game loop", "roomtimer").await, "cancelled true");
}

/// Sends `text` and returns the first reply that does not start with `skip`.
async fn ask_skipping(ws: &mut Client, text: &str, skip: &str) -> String {
    send_text(ws, text).await;
    loop {
        let got = expect_text(ws).await;
        if !got.starts_with(skip) {
            return got;
        }
    }
}

#[tokio::test]
async fn a_redis_with_another_releases_key_layout_is_refused_at_start_saying_why() {
    let server = Redis::start().await;
    let client = ::redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    // A later release marked this Redis with its own layout.
    let () = ::redis::cmd("SET").arg("wasmsocket:layout").arg("2").query_async(&mut conn).await.expect("set");
    let dir = plugins_dir(&[]);
    let config = crate::common::redis::cluster_config(&server, &dir.0);
    let err = Host::spawn(&["--config".into(), config]).await.err().expect("must not start");
    assert!(err.contains("backplane version 2") && err.contains("version 1") && err.contains("redis.prefix"), "{err}");
    // A Redis no release marked yet gets this release's mark.
    let _: i64 = ::redis::cmd("DEL").arg("wasmsocket:layout").query_async(&mut conn).await.expect("del");
    let host = cluster_host(&server, &[]).await;
    let mark: String = ::redis::cmd("GET").arg("wasmsocket:layout").query_async(&mut conn).await.expect("get");
    assert_eq!(mark, "1");
    drop(host);
}
