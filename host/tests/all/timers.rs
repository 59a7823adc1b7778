//! Timers (WIT 0.2 `timers`): a connection's fire in order with its other
//! events, survive hibernation and reloads, end with it and are bounded; a
//! room's tick its members until cancelled.

use std::time::Duration;

use crate::common::*;

/// `bytes` with a custom section appended: another file of the same
/// behaviour, which the host loads as a new version.
fn another_version(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut payload = vec![u8::try_from(tag.len()).unwrap()];
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(u8::try_from(payload.len()).unwrap());
    out.extend(payload);
    out
}

/// Texts received within `within` (a quiet period, not a timing assertion).
async fn received_within(ws: &mut Client, within: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let until = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, futures_util::StreamExt::next(ws)).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = message {
            got.push(t.to_string());
        }
    }
    got
}

#[tokio::test]
async fn connection_timers_fire_in_order_with_messages_and_stop_when_cancelled() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "timer once once 60").await, "ok");
    assert_eq!(ask(&mut ws, "timer tick every 25").await, "ok");
    // Setting it again with the same schedule leaves it running.
    assert_eq!(ask(&mut ws, "timer tick every 25").await, "ok");
    let mut ticks = 0;
    let mut once = 0;
    while ticks < 4 || once == 0 {
        match expect_text(&mut ws).await.as_str() {
            "timer tick" => ticks += 1,
            "timer once" => once += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // Replies and timer events share one order: the reply to `get` comes
    // between ticks, never inside a call.
    assert_eq!(ask(&mut ws, "set kept").await, "stored");
    loop {
        let got = ask(&mut ws, "get").await;
        if got == "kept" {
            break;
        }
        assert_eq!(got, "timer tick", "only ticks may come before the reply");
    }
    send_text(&mut ws, "untimer tick").await;
    let mut rest = Vec::new();
    loop {
        let got = expect_text(&mut ws).await;
        if got.starts_with("cancelled") {
            assert_eq!(got, "cancelled true");
            break;
        }
        rest.push(got);
    }
    assert!(rest.iter().all(|t| t == "timer tick"), "{rest:?}");
    let after = received_within(&mut ws, Duration::from_millis(200)).await;
    assert!(after.is_empty(), "no tick after cancel, got {after:?}");
    assert_eq!(ask(&mut ws, "untimer tick").await, "cancelled false");
    assert_eq!(host.metric_or_zero("wasmsocket_timers{plugin=\"testbed\",kind=\"Connection\"}").await, 0.0);
    assert!(host.metric_or_zero("wasmsocket_timers_fired_total{plugin=\"testbed\",kind=\"Connection\"}").await >= 5.0);
}

#[tokio::test]
async fn timers_are_bounded_in_number_and_rate() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    let too_fast = ask(&mut ws, "timer fast every 5").await;
    assert!(too_fast.starts_with("error HostError::Invalid") && too_fast.contains("min_timer_interval"), "{too_fast}");
    let bad_name = ask(&mut ws, &format!("timer {} once 100", "n".repeat(65))).await;
    assert!(bad_name.starts_with("error HostError::Invalid"), "{bad_name}");
    for i in 0..16 {
        assert_eq!(ask(&mut ws, &format!("timer t{i} once 60000")).await, "ok");
    }
    let too_many = ask(&mut ws, "timer t16 once 60000").await;
    assert!(too_many.starts_with("error HostError::TooLarge") && too_many.contains("max_timers"), "{too_many}");
    assert_eq!(host.metric_or_zero("wasmsocket_timers{plugin=\"testbed\",kind=\"Connection\"}").await, 16.0);
    // They end with their connection.
    ws.close(None).await.unwrap();
    drop(ws);
    eventually(
        "the timers gauge back to 0 after the close",
        async || host.metric_or_zero("wasmsocket_timers{plugin=\"testbed\",kind=\"Connection\"}").await,
        |v| *v == 0.0,
    )
    .await;
}

#[tokio::test]
async fn timers_survive_hibernation_and_a_reload() {
    // An instance per event: every tick runs on a fresh one.
    let host = Host::start_with_config("[limits]\nhibernate_after = \"0s\"\n", &[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "timer beat every 40").await, "ok");
    assert_eq!(expect_text(&mut ws).await, "timer beat");
    assert_eq!(expect_text(&mut ws).await, "timer beat");

    let file = host.dir.as_ref().unwrap().join("testbed.wasm");
    let newer = another_version(&std::fs::read(TESTBED_WASM).unwrap(), "v2");
    std::fs::write(file.with_extension("wasm.tmp"), &newer).unwrap();
    std::fs::rename(file.with_extension("wasm.tmp"), &file).unwrap();
    host.wait_serving("testbed", &file).await;
    // The ticks go on, on the new version.
    assert_eq!(expect_text(&mut ws).await, "timer beat");
    assert_eq!(expect_text(&mut ws).await, "timer beat");
}

#[tokio::test]
async fn a_room_timer_ticks_every_member_until_cancelled() {
    let host = Host::start(&[]).await;
    let mut a = host.connect("/ws/testbed").await;
    let mut b = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut a, "join lobby").await, "ok");
    assert_eq!(ask(&mut b, "join lobby").await, "ok");
    assert_eq!(ask(&mut a, "roomtimer lobby loop every 30").await, "ok");
    for ws in [&mut a, &mut b] {
        assert_eq!(expect_text(ws).await, "roomtimer lobby loop");
        assert_eq!(expect_text(ws).await, "roomtimer lobby loop");
    }
    assert!(host.metric_or_zero("wasmsocket_timers{plugin=\"testbed\",kind=\"Room\"}").await >= 1.0);
    send_text(&mut b, "unroomtimer lobby loop").await;
    loop {
        let got = expect_text(&mut b).await;
        if got.starts_with("cancelled") {
            assert_eq!(got, "cancelled true");
            break;
        }
        assert_eq!(got, "roomtimer lobby loop");
    }
    // At most the tick in progress when it was cancelled.
    let after = received_within(&mut b, Duration::from_millis(200)).await;
    assert!(after.len() <= 1, "ticks after cancel: {after:?}");
    assert!(received_within(&mut b, Duration::from_millis(150)).await.is_empty());
    eventually(
        "the room timers gauge back to 0",
        async || host.metric_or_zero("wasmsocket_timers{plugin=\"testbed\",kind=\"Room\"}").await,
        |v| *v == 0.0,
    )
    .await;
    let bad = ask(&mut a, "roomtimer lobby fast every 1").await;
    assert!(bad.starts_with("error HostError::Invalid"), "{bad}");
}

#[tokio::test]
async fn timers_fire_over_the_http_fallback_too() {
    use crate::common::fallback::Fallback;
    let host = Host::start(&[]).await;
    let mut client = Fallback::open(&host.http("/ws/testbed")).await.expect("open");
    assert_eq!(client.send_text("timer soon once 30").await, 204);
    assert_eq!(client.expect_text().await, "ok");
    assert_eq!(client.expect_text().await, "timer soon");
}

#[tokio::test]
async fn a_room_timer_whose_handler_keeps_failing_is_cancelled() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "roomtimer lobby trap every 20").await, "ok");
    eventually(
        "the failing room timer cancelled",
        async || host.metric_or_zero("wasmsocket_timers{plugin=\"testbed\",kind=\"Room\"}").await,
        |v| *v == 0.0,
    )
    .await;
    assert!(host.wait_for_log("room timer cancelled: its last 3 ticks failed").await, "{}", host.log());
    let fired = host.metric_or_zero("wasmsocket_timers_fired_total{plugin=\"testbed\",kind=\"Room\"}").await;
    assert_eq!(fired, 3.0);
    // The connection that set it is untouched, and may set it again.
    assert_eq!(ask(&mut ws, "hi").await, "hi");
    assert_eq!(ask(&mut ws, "unroomtimer lobby trap").await, "cancelled false");
}
