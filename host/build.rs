//! Builds the plugins the host embeds (echo, the default) or its tests use
//! (testbed), and embeds the test page from `static/`.
//!
//! The plugins are their own Cargo workspace (`plugins/`) built for
//! `wasm32-wasip2` with a nested cargo, as wasmtime's own test programs are.
//! They get a target directory of their own beside ours so the nested cargo
//! never waits on the lock the outer one holds.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUESTS: &[&str] = &["echo", "testbed", "shout", "chat", "compat-0-1-0", "compat-0-1-1", "compat-0-2-0"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ lives inside the workspace").to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    build_guests(&root, &out_dir);
    embed_static(&root.join("static"), &out_dir);
}

fn build_guests(root: &Path, out_dir: &Path) {
    let plugins = root.join("plugins");
    for dir in ["plugins", "wit", "host/wit", "examples/rust-shout", "examples/rust-chat"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out: share one guest
    // build per target directory instead of one per profile.
    let target_dir = out_dir.ancestors().nth(4).map(|t| t.join("guests")).unwrap_or_else(|| out_dir.join("guests"));

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for name in GUESTS {
        cmd.args(["-p", name]);
    }
    // Do not leak the outer build's settings (RUSTFLAGS for the host, the
    // rustc wrapper of clippy, ...) into the wasm build.
    for (key, _) in env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE" {
            cmd.env_remove(&key);
        }
    }
    for key in ["RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "RUSTC"] {
        cmd.env_remove(key);
    }
    let status = cmd.status().expect("could not run cargo to build the plugins");
    if !status.success() {
        panic!(
            "building the plugins in {} failed (is the target installed? run `rustup target add {GUEST_TARGET}`)",
            plugins.display()
        );
    }

    let built = target_dir.join(GUEST_TARGET).join("release");
    for name in GUESTS {
        // Cargo names a cdylib after the crate, with '-' as '_'.
        let from = built.join(format!("{}.wasm", name.replace('-', "_")));
        let to = out_dir.join(format!("{name}.wasm"));
        fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
        let var = format!("WASMSOCKET_{}_WASM", name.to_uppercase().replace('-', "_"));
        println!("cargo:rustc-env={var}={}", to.display());
    }
}

/// Writes `static_files.rs`: a table of (path, bytes) for every file under
/// `static/`, so the binary serves the test page with no files beside it.
fn embed_static(dir: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    if dir.is_dir() {
        collect(dir, dir, &mut files);
    }
    files.sort();
    let mut table = String::from("&[\n");
    for (rel, abs) in &files {
        println!("cargo:rerun-if-changed={}", abs.display());
        writeln!(table, "    ({rel:?}, include_bytes!({:?}) as &[u8]),", abs.display().to_string())
            .expect("writing to a String");
    }
    table.push(']');
    fs::write(out_dir.join("static_files.rs"), table).expect("write static_files.rs");
}

fn collect(base: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(base, &path, files);
        } else if let Ok(rel) = path.strip_prefix(base) {
            files.push((rel.to_string_lossy().replace('\\', "/"), path));
        }
    }
}
