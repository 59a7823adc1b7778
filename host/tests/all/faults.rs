//! A misbehaving plugin costs only its own connection.

use crate::common::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn misbehaviour_closes_only_that_connection(command: &str, kind: &str) {
    let host = Host::start(&["--deadline", "200ms", "--memory-limit", "16MiB"]).await;
    let mut bystander = host.connect("/ws").await;
    let mut neighbour = host.connect("/ws/testbed").await;
    let mut culprit = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut culprit, "warm up").await, "warm up");

    send_text(&mut culprit, command).await;
    let frame = expect_close(&mut culprit).await;
    assert_eq!(frame.code, CloseCode::Error, "{command}: expected 1011, got {frame:?}");

    // Other connections, on the same plugin and on echo, carry on.
    assert_eq!(ask(&mut bystander, "echo lives").await, "echo lives");
    assert_eq!(ask(&mut neighbour, "testbed lives").await, "testbed lives");
    let mut fresh = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut fresh, "new connections too").await, "new connections too");

    let metrics = host.get_text("/metrics").await.1;
    let series = format!("wasmsocket_plugin_faults_total{{plugin=\"testbed\",kind=\"{kind}\"}} 1");
    assert!(metrics.contains(&series), "missing {series} in\n{metrics}");
}

#[tokio::test]
async fn a_trap_closes_only_its_connection_with_1011() {
    misbehaviour_closes_only_that_connection("trap", "Trap").await;
}

#[tokio::test]
async fn an_endless_loop_is_stopped_at_its_deadline_with_1011() {
    misbehaviour_closes_only_that_connection("loop", "Timeout").await;
}

#[tokio::test]
async fn memory_exhaustion_closes_only_its_connection_with_1011() {
    misbehaviour_closes_only_that_connection("oom", "Memory").await;
}

#[tokio::test]
async fn a_looping_plugin_does_not_stall_other_connections() {
    // With a long deadline, the loop runs for seconds; meanwhile other
    // connections must still be answered (the plugin yields every tick).
    let host = Host::start(&["--deadline", "3s"]).await;
    let mut culprit = host.connect("/ws/testbed").await;
    let mut others: Vec<_> = Vec::new();
    for _ in 0..3 {
        others.push(host.connect("/ws").await);
    }
    send_text(&mut culprit, "loop").await;
    for round in 0..20 {
        for ws in &mut others {
            let text = format!("round {round}");
            assert_eq!(ask(ws, &text).await, text);
        }
    }
    // The echoes above all finished while the loop was still running.
    assert!(!host.log().contains("ran past its"), "the loop ended before the others were served");
    assert_eq!(expect_close(&mut culprit).await.code, CloseCode::Error);
}

#[tokio::test]
async fn after_a_fault_the_plugin_still_gets_on_close() {
    let host = Host::start(&[]).await;
    let mut watcher = host.connect("/ws/testbed").await;
    let watcher_id = ask(&mut watcher, "whoami").await;
    let mut culprit = host.connect(&format!("/ws/testbed?watch={watcher_id}")).await;
    let id = ask(&mut culprit, "whoami").await;
    send_text(&mut culprit, "trap").await;
    assert_eq!(expect_close(&mut culprit).await.code, CloseCode::Error);
    drop(culprit);
    assert_eq!(expect_text(&mut watcher).await, format!("closed {id} none"));
}
