//! Configuration for plugins: `[plugins.NAME.variables]`, read through
//! `wasi:config/store`, overridden by the environment, secrets never shown,
//! and a change in the file reloads the plugin.

use crate::common::*;

#[tokio::test]
async fn variables_reach_the_plugin_and_secrets_stay_hidden() {
    let dir = plugins_dir(&[]);
    let config = dir.0.join("wasmsocket.toml");
    std::fs::write(
        &config,
        "[plugins.testbed]\nsecret_variables = [\"api_key\"]\n\
         [plugins.testbed.variables]\nbase_url = \"http://file\"\napi_key = \"s3cr3t-value\"\nmode = \"file\"\n",
    )
    .unwrap();
    let args = vec![
        "--plugins".to_string(),
        dir.0.display().to_string(),
        "--cache-dir".to_string(),
        dir.0.join(".cache").display().to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ];
    let env = [("WASMSOCKET_PLUGIN_TESTBED_MODE", "env")];
    let host = Host::spawn_with_env(&args, &env).await.unwrap_or_else(|log| panic!("{log}"));
    let mut ws = host.connect("/ws/testbed").await;
    assert_eq!(ask(&mut ws, "config base_url").await, "config base_url=http://file");
    assert_eq!(ask(&mut ws, "config mode").await, "config mode=env");
    assert_eq!(ask(&mut ws, "config api_key").await, "config api_key=s3cr3t-value");
    assert_eq!(ask(&mut ws, "config missing").await, "config missing none");

    let entry = host.plugin("testbed").await.unwrap();
    assert_eq!(entry["variables"]["base_url"], "http://file");
    assert_eq!(entry["variables"]["api_key"], "(secret)");
    assert_eq!(entry["world"], "0.2.1");

    // A change in the file reloads the plugin with the new values.
    let text = std::fs::read_to_string(&config).unwrap().replace("http://file", "http://changed");
    std::fs::write(config.with_extension("tmp"), text).unwrap();
    std::fs::rename(config.with_extension("tmp"), &config).unwrap();
    let reloaded = eventually(
        "the new variable reached the plugin",
        async || ask(&mut ws, "config base_url").await,
        |v| v == "config base_url=http://changed",
    )
    .await;
    assert_eq!(reloaded, "config base_url=http://changed");
    assert!(host.wait_for_log("configuration changed (variable base_url)").await, "{}", host.log());
    let listed = reqwest::get(host.http("/api/plugins")).await.unwrap().text().await.unwrap();
    assert!(!listed.contains("s3cr3t-value"), "{listed}");
    assert!(!host.log().contains("s3cr3t-value"), "{}", host.log());
}
