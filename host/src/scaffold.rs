//! `wasmsocket new LANG NAME`: writes a plugin project from templates built
//! into the binary (`templates/`), so it works outside this repository.

use std::path::{Path, PathBuf};

/// The world every template targets, copied into each project.
const WIT: &str = include_str!("../../wit/plugin.wit");
const README: &str = include_str!("../../templates/README.md");
/// Pinned guest toolchain versions live in one place, the examples' script.
const TOOLCHAINS: &str = include_str!("../../examples/toolchains.sh");

/// One language's project.
pub struct Template {
    pub lang: &'static str,
    pub about: &'static str,
    /// The file an author edits.
    source: &'static str,
    files: &'static [(&'static str, &'static str)],
}

pub const TEMPLATES: &[Template] = &[
    Template {
        lang: "rust",
        about: "Rust, cargo build for wasm32-wasip2 (rustup adds the target)",
        source: "src/lib.rs",
        files: &[
            ("Cargo.toml", include_str!("../../templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("../../templates/rust/src/lib.rs")),
            ("build.sh", include_str!("../../templates/rust/build.sh")),
        ],
    },
    Template {
        lang: "python",
        about: "Python, componentize-py from PyPI",
        source: "app.py",
        files: &[
            ("app.py", include_str!("../../templates/python/app.py")),
            ("build.sh", include_str!("../../templates/python/build.sh")),
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
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{lang}}", template.lang)
            .replace("{{source}}", template.source)
            .replace("{{wit_version}}", &wit_version())
            .replace("{{componentize_py_version}}", &pinned("COMPONENTIZE_PY_VERSION"))
    };
    let mut files: Vec<(&str, String)> = template.files.iter().map(|(path, text)| (*path, fill(text))).collect();
    files.push(("README.md", fill(README)));
    files.push(("wit/plugin.wit", WIT.to_string()));
    files.push((".gitignore", "/out/\n/target/\n/wit_world/\n".to_string()));
    for (rel, text) in files {
        let path = root.join(rel);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text)?;
            if rel.ends_with(".sh") {
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

/// A version pinned in the examples' toolchains script (`KEY=VALUE`).
fn pinned(key: &str) -> String {
    TOOLCHAINS
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}
