//! Outbound HTTP (`wasi:http/outgoing-handler`): denied unless allowed per
//! plugin, bounded in bytes, in flight and in time, and waiting for an
//! answer is not computing: a 2 s answer fits a 100 ms deadline.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;

/// The far end: `/hello` answers `hello`, `/slow/MS` answers after MS
/// milliseconds, `/big/BYTES` answers that many bytes.
async fn http_server() -> SocketAddr {
    crate::common::http_server::serve(|path| {
        if let Some(ms) = path.strip_prefix("/slow/") {
            (Duration::from_millis(ms.parse().unwrap_or(0)), b"slow".to_vec())
        } else if let Some(n) = path.strip_prefix("/big/") {
            (Duration::ZERO, vec![b'x'; n.parse().unwrap_or(0)])
        } else {
            (Duration::ZERO, b"hello".to_vec())
        }
    })
    .await
}

#[tokio::test]
async fn requests_are_denied_unless_the_host_is_allowed() {
    let server = http_server().await;
    let host =
        Host::start_with_config(&format!("[plugins.testbed]\nallowed_outbound_hosts = [\"http://{server}\"]\n"), &[])
            .await;
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, &format!("fetch http://{server}/hello")).await, "status 200 5");
    // Another port of the same host is another origin.
    let other = http_server().await;
    let denied = ask(&mut ws, &format!("fetch http://{other}/hello")).await;
    assert_eq!(denied, "error ErrorCode::HttpRequestDenied");
    assert!(host.wait_for_log("is not in plugins.testbed.allowed_outbound_hosts").await, "{}", host.log());
    assert!(host.log().contains(&other.to_string()), "the log names the host");
    // The connection stays open.
    assert_eq!(ask(&mut ws, "hi").await, "hi");
    assert_eq!(
        host.metric_or_zero("wasmsocket_outbound_requests_total{plugin=\"testbed\",outcome=\"Denied\"}").await,
        1.0
    );
    assert_eq!(
        host.metric_or_zero("wasmsocket_outbound_requests_total{plugin=\"testbed\",outcome=\"Response\"}").await,
        1.0
    );

    // Nothing is allowed by default.
    let plain = Host::start(&[]).await;
    let mut ws = plain.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, &format!("fetch http://{server}/hello")).await, "error ErrorCode::HttpRequestDenied");
}

#[tokio::test]
async fn a_two_second_answer_fits_a_100ms_deadline_and_delays_no_one_else() {
    let server = http_server().await;
    let host = Host::start_with_config(
        &format!("[limits]\ndeadline = \"100ms\"\n[plugins.testbed]\nallowed_outbound_hosts = [\"http://{server}\"]\n"),
        &[],
    )
    .await;
    let mut waiting = host.connect("/ws/testbed").await;
    let mut other = host.connect("/ws/testbed").await;
    send_text(&mut waiting, &format!("fetch http://{server}/slow/2000")).await;
    // Others are served while it waits (a bound far above an echo, far
    // below the 2 s wait).
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert_eq!(ask(&mut other, "hi").await, "hi");
        assert!(started.elapsed() < Duration::from_millis(1000), "an echo waited {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(expect_text(&mut waiting).await, "status 200 4");
    assert_eq!(ask(&mut waiting, "hi").await, "hi");
    // Compute is still bounded by the deadline after a wait.
    send_text(&mut waiting, "loop").await;
    assert_eq!(expect_close(&mut waiting).await.code, 1011u16.into());
}

#[tokio::test]
async fn waits_are_bounded_by_wait_timeout_and_requests_in_bytes_and_in_flight() {
    let server = http_server().await;
    let host = Host::start_with_config(
        &format!(
            "[plugins.testbed]\nallowed_outbound_hosts = [\"http://{server}\"]\nwait_timeout = \"500ms\"\n\
         http_response_size = \"64KiB\"\nhttp_in_flight = 1\n"
        ),
        &[],
    )
    .await;
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, &format!("fetch http://{server}/big/65536")).await, "status 200 65536");
    let cut = ask(&mut ws, &format!("fetch http://{server}/big/70000")).await;
    assert!(cut.starts_with("error read") || cut.starts_with("error ErrorCode::HttpResponseBodySize"), "{cut}");

    // One in flight: a second request while the first waits fails at once.
    let mut first = host.connect("/ws/testbed").await;
    send_text(&mut first, &format!("fetch http://{server}/slow/300")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = ask(&mut ws, &format!("fetch http://{server}/hello")).await;
    assert_eq!(busy, "error ErrorCode::ConnectionLimitReached");
    assert_eq!(expect_text(&mut first).await, "status 200 4");
    assert_eq!(ask(&mut ws, &format!("fetch http://{server}/hello")).await, "status 200 5");

    // A wait past wait_timeout ends the connection like a deadline.
    send_text(&mut ws, &format!("fetch http://{server}/slow/3000")).await;
    assert_eq!(expect_close(&mut ws).await.code, 1011u16.into());
    // The client may hear the close before the host's log line is read.
    assert!(host.wait_for_log("wait_timeout").await, "{}", host.log());
}
