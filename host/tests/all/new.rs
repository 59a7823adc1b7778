//! `wasmsocket new`: projects written from the templates built into the
//! binary, outside the repository.
//!
//! The `#[ignore]` tests build each generated project with its own
//! `./build.sh`, which installs the language's toolchain when missing (as
//! the examples' builds do, into the same cache), then serve it with the real
//! host. `scripts/test.sh` runs them after building the examples:
//!
//! ```text
//! cargo test --release --test all -- --ignored new::
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn wasmsocket(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmsocket")).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn new_lists_its_templates_and_writes_a_self_contained_project() {
    let dir = TempDir::new("new");
    let list = String::from_utf8(wasmsocket(&dir.0, &["new", "--list"]).stdout).unwrap();
    let langs: Vec<&str> = list.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(langs, ["rust", "js", "python", "c", "go"], "{list}");
    for lang in langs {
        let name = format!("my-{lang}");
        let out = wasmsocket(&dir.0, &["new", lang, &name]);
        assert!(out.status.success(), "{lang}: {}", String::from_utf8_lossy(&out.stderr));
        let project = dir.0.join(&name);
        let wit = std::fs::read_to_string(project.join("wit/plugin.wit")).unwrap();
        assert_eq!(wit, include_str!("../../../wit/plugin.wit"), "{lang}: the WIT it targets");
        let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
        assert!(readme.contains("./build.sh") && readme.contains("wasmsocket --plugins out"), "{readme}");
        assert!(!readme.contains("{{"), "{lang}: a placeholder left: {readme}");
        let build = project.join("build.sh");
        use std::os::unix::fs::PermissionsExt;
        assert!(std::fs::metadata(&build).unwrap().permissions().mode() & 0o111 != 0, "{lang}: build.sh runs");
        let script = std::fs::read_to_string(&build).unwrap();
        assert!(script.contains(&format!("out/{name}.wasm")), "{lang}: {script}");
        if script.contains("source ./toolchains.sh") {
            assert!(project.join("toolchains.sh").is_file(), "{lang}: build.sh sources a file it lacks");
        }
    }
}

#[test]
fn new_refuses_an_unknown_language_a_bad_name_and_an_existing_directory() {
    let dir = TempDir::new("new-refused");
    let out = wasmsocket(&dir.0, &["new", "cobol", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no template for \"cobol\""));
    let out = wasmsocket(&dir.0, &["new", "rust", "Bad Name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(wasmsocket(&dir.0, &["new", "rust", "twice"]).status.success());
    let out = wasmsocket(&dir.0, &["new", "rust", "twice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

/// Generates the `lang` template into a temporary directory outside the
/// repository, builds it with its own `./build.sh`, passes it through
/// `wasmsocket check`, serves it and talks to it: `NAME #1: hello`, then
/// `#2` (the count kept in host state), and its `log` lines in the host's
/// log.
async fn generated_project_answers(lang: &str) {
    let dir = TempDir::new(&format!("new-{lang}"));
    let name = format!("hello-{lang}");
    let out = wasmsocket(&dir.0, &["new", lang, &name]);
    assert!(out.status.success(), "{lang}: {}", String::from_utf8_lossy(&out.stderr));
    let project = dir.0.join(&name);

    // One build at a time: builds share the toolchain cache, where two
    // first-time installs (pip into one venv) would race.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let serial = BUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let build = Command::new("./build.sh")
        .current_dir(&project)
        // The Rust template's crates, compiled once for every run; never the
        // target directory of the cargo running this test, whose lock it holds.
        .env("CARGO_TARGET_DIR", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("new-rust-target"))
        .output()
        .unwrap();
    drop(serial);
    let log = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(build.status.success(), "{lang}: ./build.sh failed:\n{}", log(&build));
    let wasm = format!("out/{name}.wasm");

    let check = wasmsocket(&project, &["check", &wasm]);
    assert!(check.status.success(), "{lang}: check failed:\n{}", log(&check));
    let report = String::from_utf8_lossy(&check.stdout);
    for needle in ["world:        wasmsocket:plugin@", "state@", "log@", "connections@"] {
        assert!(report.contains(needle), "{lang}: {needle:?} not in\n{report}");
    }

    let plugins = TempDir::new(&format!("new-{lang}-plugins"));
    std::fs::copy(project.join(&wasm), plugins.0.join(format!("{name}.wasm"))).unwrap();
    // Compiled components are cached by content across runs: without the
    // cache the host spends tens of seconds compiling a JavaScript or Python
    // component before it listens. A generous call deadline: a fresh Python
    // instance may take longer than the default 100 ms on a loaded machine.
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("new-compile-cache").display().to_string();
    let args = ["--cache-dir", cache.as_str(), "--deadline", "2s"];
    let host = Host::start_patiently(plugins, &args, Duration::from_secs(600)).await;
    host.wait_plugin(&name, "ready", |p| p.is_some_and(|p| p["state"] == "ready")).await;
    let mut ws = host.connect(&format!("/ws/{name}")).await;
    assert_eq!(ask(&mut ws, "hello").await, format!("{name} #1: hello"));
    assert_eq!(ask(&mut ws, "again").await, format!("{name} #2: again"), "{lang}: the count lives in state");
    assert!(host.wait_for_log("message 2: again").await, "{lang}: no log line\n{}", host.log());
}

#[tokio::test]
#[ignore = "builds the generated project: installs its toolchain when missing"]
async fn the_rust_template_builds_and_answers() {
    generated_project_answers("rust").await;
}

#[tokio::test]
#[ignore = "builds the generated project: installs its toolchain when missing"]
async fn the_js_template_builds_and_answers() {
    generated_project_answers("js").await;
}

#[tokio::test]
#[ignore = "builds the generated project: installs its toolchain when missing"]
async fn the_python_template_builds_and_answers() {
    generated_project_answers("python").await;
}

#[tokio::test]
#[ignore = "builds the generated project: installs its toolchain when missing"]
async fn the_c_template_builds_and_answers() {
    generated_project_answers("c").await;
}

#[tokio::test]
#[ignore = "builds the generated project: installs its toolchain when missing"]
async fn the_go_template_builds_and_answers() {
    generated_project_answers("go").await;
}
