//! Resumable sessions (`docs/delivery.md`): a client that opts in keeps
//! its connection id, rooms, state, timers and every message sent to it
//! across a dropped socket, within the plugin's `resume_grace`; the plugin
//! sees neither a close nor an open. Clients that do not opt in see no
//! change.

use std::time::Duration;

use crate::common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// The host's first message to a client that opted in.
#[derive(Debug)]
pub struct Hello {
    pub session: Option<String>,
    pub resumed: bool,
    pub refused: Option<String>,
    pub received: u64,
}

pub async fn hello(ws: &mut Client) -> Hello {
    let text = expect_text(ws).await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("hello {text:?}: {e}"));
    assert_eq!(v["wasmsocket"], "session", "{text}");
    Hello {
        session: v["session"].as_str().map(str::to_string),
        resumed: v["resumed"].as_bool().expect("resumed"),
        refused: v["refused"].as_str().map(str::to_string),
        received: v["received"].as_u64().expect("received"),
    }
}

/// A testbed client that opted in, with `query` for the plugin.
pub async fn open(host: &Host, query: &str) -> (Client, String) {
    let sep = if query.is_empty() { "" } else { "&" };
    let mut ws = host.connect(&format!("/ws/testbed?{query}{sep}resume=new")).await;
    let h = hello(&mut ws).await;
    assert!(!h.resumed && h.refused.is_none(), "{h:?}");
    (ws, h.session.expect("a session"))
}

pub async fn resume(host: &Host, session: &str, last: u64) -> (Client, Hello) {
    let mut ws = host.connect(&format!("/ws/testbed?resume={session}&last={last}")).await;
    let h = hello(&mut ws).await;
    (ws, h)
}

/// A host whose testbed plugin has `settings` in `[limits]`.
async fn host_with(settings: &str) -> Host {
    Host::start_with_config(&format!("[limits]\n{settings}\n"), &[]).await
}

/// A plain client and its connection id, to watch others close.
async fn watcher(host: &Host) -> (Client, String) {
    let mut w = host.connect("/ws/testbed").await;
    let id = ask(&mut w, "whoami").await;
    (w, id)
}

/// Lets the socket go without a close frame, as a network that blinks.
pub async fn blink(ws: Client) {
    drop(ws);
    // The host notices the socket's end at once on loopback.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_blink_loses_nothing_and_the_plugin_sees_no_close() {
    let host = Host::start(&[]).await;
    let (mut w, watcher_id) = watcher(&host).await;
    let (mut a, session) = open(&host, &format!("watch={watcher_id}")).await;
    let id = ask(&mut a, "whoami").await;
    assert_eq!(ask(&mut a, "join lobby").await, "ok");
    assert_eq!(ask(&mut a, "timer beat once 300").await, "ok");
    // Three replies so far.
    blink(a).await;
    assert_eq!(host.metric_or_zero("wasmsocket_sessions_away").await, 1.0);

    // Sent while it is away: a broadcast, a directed send, its timer.
    let mut b = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut b, "join lobby").await, "ok");
    assert_eq!(ask(&mut b, "bcast lobby during the gap").await, "delivered 1");
    assert_eq!(ask(&mut b, &format!("send {id} direct")).await, "sent");
    tokio::time::sleep(Duration::from_millis(400)).await;

    let (mut a, h) = resume(&host, &session, 3).await;
    assert!(h.resumed, "{h:?}");
    assert_eq!(h.received, 3, "the host took the client's three messages");
    assert_eq!(expect_text(&mut a).await, "during the gap");
    assert_eq!(expect_text(&mut a).await, "direct");
    assert_eq!(expect_text(&mut a).await, "timer beat");
    // Same connection, same rooms, no close and no open in between.
    assert_eq!(ask(&mut a, "whoami").await, id);
    assert_eq!(ask(&mut a, "rooms").await, "lobby");
    assert_eq!(ask(&mut b, "bcast lobby after").await, "delivered 1");
    assert_eq!(expect_text(&mut a).await, "after");
    assert_eq!(ask(&mut w, "ping").await, "ping", "the watcher heard no close");
    assert_eq!(host.metric_or_zero("wasmsocket_sessions_resumed_total").await, 1.0);

    // A close handshake ends it for good.
    a.close(None).await.expect("close");
    assert!(expect_text(&mut w).await.starts_with(&format!("closed {id}")));
}

#[tokio::test]
async fn what_the_client_had_not_received_is_written_again_once() {
    let host = Host::start(&[]).await;
    let (mut a, session) = open(&host, "").await;
    assert_eq!(ask(&mut a, "m1").await, "m1");
    // Four more messages the client never reads (so never acknowledges):
    // three binary ones and the flood's report.
    send_text(&mut a, "flood self 3 8").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    blink(a).await;
    let (mut a, h) = resume(&host, &session, 1).await;
    assert!(h.resumed, "{h:?}");
    assert_eq!(h.received, 2);
    for _ in 0..3 {
        assert_eq!(next(&mut a).await, Some(Message::binary(vec![0x5a; 8])));
    }
    assert_eq!(expect_text(&mut a).await, "flooded 3 none");
    assert_eq!(ask(&mut a, "m6").await, "m6");
    // It cannot claim more than was sent.
    blink(a).await;
    let (_a, h) = resume(&host, &session, 99).await;
    assert!(!h.resumed, "{h:?}");
    assert_eq!(h.refused.as_deref(), Some("gap"));
}

#[tokio::test]
async fn a_resume_after_the_grace_starts_afresh() {
    let host = host_with("resume_grace = \"300ms\"").await;
    let (mut w, watcher_id) = watcher(&host).await;
    let (mut a, session) = open(&host, &format!("watch={watcher_id}")).await;
    let id = ask(&mut a, "whoami").await;
    blink(a).await;
    // The plugin hears of it when the grace runs out, with no close frame.
    assert_eq!(expect_text(&mut w).await, format!("closed {id} none"));
    let (mut a, h) = resume(&host, &session, 1).await;
    assert!(!h.resumed);
    assert_eq!(h.refused.as_deref(), Some("unknown"));
    assert_ne!(h.session.as_deref(), Some(session.as_str()), "a new session");
    assert_ne!(ask(&mut a, "whoami").await, id);
    assert_eq!(host.metric_or_zero("wasmsocket_sessions_lost_total{reason=\"grace\"}").await, 1.0);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_as_if_the_session_did_not_exist() {
    let host = Host::start(&[]).await;
    let (mut a, session) = open(&host, "").await;
    let id = ask(&mut a, "whoami").await;
    blink(a).await;
    let (conn_id, secret) = session.split_once('.').expect("ID.SECRET");
    let wrong = format!("{conn_id}.{}", "0".repeat(secret.len()));
    let (_x, forged) = resume(&host, &wrong, 1).await;
    let (_y, made_up) = resume(&host, "nobody.0123", 1).await;
    for h in [&forged, &made_up] {
        assert!(!h.resumed);
        assert_eq!(h.refused.as_deref(), Some("unknown"), "nothing tells a real id from a made-up one");
    }
    // The real one is untouched.
    let (mut a, h) = resume(&host, &session, 1).await;
    assert!(h.resumed, "{h:?}");
    assert_eq!(ask(&mut a, "whoami").await, id);
}

#[tokio::test]
async fn an_away_session_whose_buffer_overflows_ends_and_its_client_is_told() {
    // 1 MiB messages at most: each session keeps that much.
    let host = host_with("resume_buffer = \"1MiB\"").await;
    let (mut w, watcher_id) = watcher(&host).await;
    let (mut a, session) = open(&host, &format!("watch={watcher_id}")).await;
    let id = ask(&mut a, "whoami").await;
    blink(a).await;
    // 40 x 32 KiB = 1.25 MiB: more than the session keeps.
    assert!(ask(&mut w, &format!("flood {id} 40 32768")).await.starts_with("flooded"));
    assert_eq!(expect_text(&mut w).await, format!("closed {id} none"));
    let (_a, h) = resume(&host, &session, 1).await;
    assert!(!h.resumed);
    assert_eq!(h.refused.as_deref(), Some("overflow"));
    assert_eq!(host.metric_or_zero("wasmsocket_sessions_lost_total{reason=\"overflow\"}").await, 1.0);
    assert_eq!(host.metric_or_zero("wasmsocket_sessions_buffered_bytes").await, 0.0, "its bytes are given back");
}

#[tokio::test]
async fn a_close_from_the_plugin_while_away_reaches_the_client_after_its_messages() {
    let host = Host::start(&[]).await;
    let (mut a, session) = open(&host, "").await;
    let id = ask(&mut a, "whoami").await;
    blink(a).await;
    let mut b = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut b, &format!("send {id} you are being kicked")).await, "sent");
    assert_eq!(ask(&mut b, &format!("kick {id} 4000 bye")).await, "ok");
    let (mut a, h) = resume(&host, &session, 1).await;
    assert!(h.resumed, "{h:?}");
    assert_eq!(expect_text(&mut a).await, "you are being kicked");
    let frame = expect_close(&mut a).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4000, "bye"));
}

#[tokio::test]
async fn a_resume_while_the_old_socket_seems_alive_takes_over() {
    let host = Host::start(&[]).await;
    let (mut old, session) = open(&host, "").await;
    let id = ask(&mut old, "whoami").await;
    // The client moved on; the host has not noticed the old socket died.
    let (mut a, h) = resume(&host, &session, 1).await;
    assert!(h.resumed, "{h:?}");
    assert_eq!(ask(&mut a, "whoami").await, id);
    // The old socket is let go without a close frame.
    assert!(matches!(next(&mut old).await, None | Some(Message::Close(_))));
}

#[tokio::test]
async fn plain_clients_see_nothing_new() {
    let host = Host::start(&[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    // The first message is the plugin's reply, not a hello.
    ws.send(Message::text("ping")).await.expect("send");
    assert_eq!(expect_text(&mut ws).await, "ping");
    let id = ask(&mut ws, "whoami").await;
    drop(ws);
    // Dropped is closed: no session waits for it.
    eventually(
        "the connection is gone",
        async || host.metric_or_zero("wasmsocket_connections_open{plugin=\"testbed\"}").await,
        |n| *n == 0.0,
    )
    .await;
    assert_eq!(host.metric_or_zero("wasmsocket_sessions_away").await, 0.0);
    let (_a, h) = resume(&host, &format!("{id}.00"), 0).await;
    assert_eq!(h.refused.as_deref(), Some("unknown"));
}

#[tokio::test]
async fn a_plugin_with_resumption_off_says_so() {
    let host = host_with("resume_grace = \"0s\"").await;
    let mut ws = host.connect("/ws/testbed?resume=new").await;
    let h = hello(&mut ws).await;
    assert_eq!(h.session, None);
    assert_eq!(ask(&mut ws, "ping").await, "ping");
}
