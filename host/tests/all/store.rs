//! Each plugin's key-value store holds at most `store.max_bytes`, and keys
//! stop counting toward the limits once they expire, read or not.

use crate::common::*;

const BYTES: &str = "wasmsocket_store_bytes{plugin=\"testbed\"}";
const KEYS: &str = "wasmsocket_store_keys{plugin=\"testbed\"}";

/// `filled N ERROR` split into N and ERROR.
fn filled(reply: &str) -> (usize, String) {
    let rest = reply.strip_prefix("filled ").unwrap_or_else(|| panic!("unexpected reply {reply:?}"));
    let (n, error) = rest.split_once(' ').unwrap_or((rest, ""));
    (n.parse().unwrap_or_else(|_| panic!("unexpected reply {reply:?}")), error.to_string())
}

#[tokio::test]
async fn a_plugin_cannot_hold_more_than_max_bytes() {
    let host = Host::start_with_config("[store]\nmax_bytes = \"1MiB\"\n", &[]).await;
    let mut ws = host.connect("/ws/testbed").await;

    // Keys `fill-0`.. and values of 64 KiB: 15 fit in 1 MiB.
    let (n, error) = filled(&ask(&mut ws, "kvfill 100 65536").await);
    assert_eq!(n, 15, "{error}");
    assert!(error.contains("TooLarge("), "{error}");
    assert!(error.contains("store.max_bytes"), "the error names the setting: {error}");
    let held: usize = (0..15).map(|i| format!("fill-{i}").len() + 65536).sum();
    assert_eq!(host.metric(BYTES).await, Some(held as f64));
    assert_eq!(host.metric(KEYS).await, Some(15.0));

    // The host and the plugin carry on, and deleting a key makes room.
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    let mut other = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut other, "kvdel fill-0").await, "true");
    assert_eq!(ask(&mut other, "kvfill 1 65536").await, "filled 1 none");
    assert_eq!(host.metric(KEYS).await, Some(15.0));
}

#[tokio::test]
async fn expired_keys_stop_counting_without_being_read() {
    let host = Host::start_with_config("[store]\nmax_bytes = \"1MiB\"\n", &[]).await;
    let mut ws = host.connect("/ws/testbed").await;

    // Fill to the limit with 1 KB values that expire after 200 ms.
    let (n, error) = filled(&ask(&mut ws, "kvfill 2000 1000 200").await);
    assert!((1000..2000).contains(&n), "{n} {error}");
    assert!(error.contains("store.max_bytes"), "{error}");

    // Nothing reads them, yet the store empties.
    eventually(
        "the expired keys leave the store",
        async || (host.metric(BYTES).await, host.metric(KEYS).await),
        |v| *v == (Some(0.0), Some(0.0)),
    )
    .await;

    // Growing ten of those keys to 64 KiB would not fit had they stayed.
    assert_eq!(ask(&mut ws, "kvfill 10 65536").await, "filled 10 none");
    assert_eq!(host.metric(KEYS).await, Some(10.0));
}
