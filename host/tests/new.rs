//! `wasmsocket new`: projects written from the templates built into the
//! binary, outside the repository. (Building and serving a generated
//! project needs each language's toolchain; see the report in the
//! authoring guide.)

mod common;

use std::process::Command;

use common::*;

fn wasmsocket(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmsocket")).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn new_lists_its_templates_and_writes_a_self_contained_project() {
    let dir = TempDir::new("new");
    let list = String::from_utf8(wasmsocket(&dir.0, &["new", "--list"]).stdout).unwrap();
    let langs: Vec<&str> = list.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(langs.contains(&"rust") && langs.contains(&"python"), "{list}");
    for lang in langs {
        let name = format!("my-{lang}");
        let out = wasmsocket(&dir.0, &["new", lang, &name]);
        assert!(out.status.success(), "{lang}: {}", String::from_utf8_lossy(&out.stderr));
        let project = dir.0.join(&name);
        let wit = std::fs::read_to_string(project.join("wit/plugin.wit")).unwrap();
        assert_eq!(wit, include_str!("../../wit/plugin.wit"), "{lang}: the WIT it targets");
        let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
        assert!(readme.contains("./build.sh") && readme.contains("wasmsocket --plugins out"), "{readme}");
        assert!(!readme.contains("{{"), "{lang}: a placeholder left: {readme}");
        let build = project.join("build.sh");
        use std::os::unix::fs::PermissionsExt;
        assert!(std::fs::metadata(&build).unwrap().permissions().mode() & 0o111 != 0, "{lang}: build.sh runs");
        assert!(std::fs::read_to_string(&build).unwrap().contains(&format!("out/{name}.wasm")));
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
