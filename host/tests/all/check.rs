//! `wasmsocket check FILE.wasm`: what an author runs in CI before serving.

use std::process::Output;

use crate::common::*;

fn check(bytes: &[u8]) -> Output {
    let dir = TempDir::new("check");
    let file = dir.0.join("plugin.wasm");
    std::fs::write(&file, bytes).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_wasmsocket")).arg("check").arg(&file).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_plugin_that_fits_reports_its_world_imports_size_and_compile_time() {
    let bytes = std::fs::read(TESTBED_WASM).unwrap();
    let out = check(&bytes);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("world:        wasmsocket:plugin@0.2.1"), "{stdout}");
    for interface in ["state@0.2.1", "log@0.2.1", "rooms@0.2.1", "kv@0.2.1", "connections@0.2.1", "timers@0.2.1"] {
        assert!(stdout.contains(interface), "{interface}: {stdout}");
    }
    assert!(stdout.contains("capabilities: timers, outbound HTTP, config"), "{stdout}");
    assert!(stdout.contains("size:") && stdout.contains("compile time:"), "{stdout}");
    // It fetches, and nothing allows it to: the author hears so.
    let stderr = text(&out.stderr);
    assert!(stderr.contains("warning:") && stderr.contains("plugins.plugin.allowed_outbound_hosts"), "{stderr}");

    // A plugin built against the first world names that version.
    let out = check(&std::fs::read(env!("WASMSOCKET_COMPAT_0_1_0_WASM")).unwrap());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("wasmsocket:plugin@0.1.0"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("capabilities: none"), "{}", text(&out.stdout));
    assert!(!text(&out.stderr).contains("warning"), "{}", text(&out.stderr));
}

#[test]
fn a_plugin_allowed_its_hosts_in_the_config_gets_no_warning() {
    let dir = TempDir::new("check");
    let file = dir.0.join("fetcher.wasm");
    std::fs::copy(TESTBED_WASM, &file).unwrap();
    let config = dir.0.join("wasmsocket.toml");
    std::fs::write(&config, "[plugins.fetcher]\nallowed_outbound_hosts = [\"https://api.example.com\"]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmsocket"))
        .arg("check")
        .arg(&file)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("warning"), "{}", text(&out.stderr));
}

#[test]
fn files_that_would_not_serve_exit_1_with_the_load_error() {
    let testbed = std::fs::read(TESTBED_WASM).unwrap();
    // A core module (not a component), and a component exporting nothing.
    let core_module: &[u8] = b"\0asm\x01\0\0\0";
    let empty_component: &[u8] = b"\0asm\x0d\0\x01\0";
    let cases: [(&str, &[u8], &str); 4] = [
        ("garbage", b"this is not wasm at all", "not a valid WebAssembly component"),
        ("truncated", &testbed[..testbed.len() / 2], "not a valid WebAssembly component"),
        ("core module", core_module, "not a valid WebAssembly component"),
        ("wrong world", empty_component, "does not fit the wasmsocket:plugin world"),
    ];
    for (what, bytes, message) in cases {
        let out = check(bytes);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains(message), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}");
    }
}

#[test]
fn a_missing_file_exits_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmsocket"))
        .args(["check", "/nonexistent/plugin.wasm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/plugin.wasm"));
}

#[test]
fn serving_flags_still_work_without_a_subcommand() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmsocket")).arg("--help").output().unwrap();
    let help = text(&out.stdout);
    assert!(help.contains("check") && help.contains("--listen") && help.contains("--plugins"), "{help}");
}
