//! A plugin writes to the host's log only within `limits.log_rate` per
//! connection; the rest is dropped, counted and reported, and the
//! connection carries on.

use crate::common::*;

const DROPPED: &str = "wasmsocket_plugin_log_dropped_lines_total{plugin=\"testbed\"}";

/// The plugin's own lines in the host's log: `log` calls, stdout, stderr.
fn plugin_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| [" plugin: ", " plugin::stdout: ", " plugin::stderr: "].iter().any(|t| l.contains(t)))
        .map(str::to_string)
        .collect()
}

/// Dropped lines the host's reports add up to.
fn reported(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("over limits.log_rate"))
        .filter_map(|l| l.split("dropped ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Lines of the `logs` command that reached the log, and lines dropped.
async fn kept_and_dropped(host: &Host) -> (usize, usize) {
    let kept = plugin_lines(&host.log()).iter().filter(|l| l.contains(" log line ")).count();
    (kept, host.metric(DROPPED).await.unwrap_or(0.0) as usize)
}

#[tokio::test]
async fn a_flooding_plugin_writes_only_its_budget_to_the_log() {
    let host = Host::start_with_config("[limits]\nlog_rate = \"4KiB\"\n", &["--deadline", "5s"]).await;
    let mut ws = host.connect("/ws/testbed").await;

    // Messages are handled in order: the answer comes after the flood.
    send_text(&mut ws, "logs 100000").await;
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    let (kept, dropped) =
        eventually("every line logged or counted", async || kept_and_dropped(&host).await, |(k, d)| k + d == 100_000)
            .await;
    assert!(kept > 0 && dropped > 0, "kept {kept}, dropped {dropped}");

    // 62,500 lines of 80 bytes on stdout, in one call.
    send_text(&mut ws, "print 5000000").await;
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    let printed = |log: &str| plugin_lines(log).iter().filter(|l| l.contains("ppppp")).count();
    let after = eventually(
        "the printed lines logged or counted",
        async || (printed(&host.log()), kept_and_dropped(&host).await.1 - dropped),
        // stdout arrives in chunks, and a line cut by one counts as two.
        |(kept, dropped)| kept + dropped >= 62_500,
    )
    .await;
    assert!(after.1 > 0, "{after:?}");

    // A burst of 8 KiB plus 4 KiB a second for the few seconds the floods
    // take: far less than the 5 MB asked for.
    let log = host.log();
    let bytes: usize = plugin_lines(&log).iter().map(|l| l.len() + 1).sum();
    assert!(bytes < 64 * 1024, "{bytes} bytes of plugin lines in the host's log");

    // The reports name the setting and, within a second or so, account
    // for every dropped line.
    let total = host.metric(DROPPED).await.unwrap_or(0.0) as u64;
    eventually("the reports count every dropped line", async || reported(&host.log()), |n| *n == total).await;
    let log = host.log();
    let report = log.lines().find(|l| l.contains("over limits.log_rate")).unwrap_or_default();
    assert!(report.contains("plugin output over limits.log_rate") && report.contains("testbed"), "{report}");
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    let mut other = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut other, "hello").await, "hello");
}

#[tokio::test]
async fn a_zero_rate_silences_the_plugin() {
    let host = Host::start_with_config("[plugins.testbed]\nlog_rate = \"0B\"\n", &[]).await;
    let mut ws = host.connect("/ws/testbed").await;
    send_text(&mut ws, "logs 10").await;
    send_text(&mut ws, "print 800").await;
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    // The testbed also logs a line when a connection opens.
    eventually("every line counted as dropped", async || host.metric(DROPPED).await, |d| *d == Some(21.0)).await;
    let log = host.log();
    assert!(plugin_lines(&log).is_empty(), "plugin lines in the log:\n{log}");
    assert!(!log.contains("over limits.log_rate"), "an operator who turned output off is not warned:\n{log}");
}
