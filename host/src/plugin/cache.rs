//! Compiled components on disk, keyed by the component's content and the
//! engine's settings, so a restart or a reload of an unchanged file skips
//! compilation (seconds for a large Python or JavaScript component).
//!
//! Entries are written to a temporary file and renamed into place, so
//! concurrent writers never expose half an entry; each entry carries a
//! SHA-256 of its payload, checked before wasmtime is asked to trust it, so a
//! truncated or corrupted entry is recompiled instead of loaded.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Feeds `Hash` values into SHA-256, which, unlike `DefaultHasher`, is the
/// same in every build.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0 // only the digest is used
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A directory of compiled components.
#[derive(Clone, Debug)]
pub struct CompileCache {
    dir: PathBuf,
    /// SHA-256 of the engine's compatibility hash and this crate's version.
    engine_key: [u8; 32],
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Compiled,
}

impl CompileCache {
    /// Opens (creating it, private to this user) the cache in `dir`.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        create_private_dir(dir)?;
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        Ok(Self { dir: dir.to_owned(), engine_key: h.0.finalize().into() })
    }

    fn entry_path(&self, content_hash: &str) -> PathBuf {
        let key = Sha256::new().chain_update(self.engine_key).chain_update(content_hash.as_bytes()).finalize();
        self.dir.join(format!("{}.cwasm", hex::encode(key)))
    }

    /// The component for `bytes` (whose SHA-256 is `content_hash`), from
    /// the cache when a sound entry exists, else compiled and stored.
    pub fn component(
        &self,
        engine: &Engine,
        content_hash: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Origin)> {
        let path = self.entry_path(content_hash);
        if let Some(payload) = read_entry(&path) {
            // SAFETY: the payload is what `precompile_component` produced for
            // this engine configuration (the key covers it), written by this
            // host into a private directory, and its checksum matched.
            match unsafe { Component::deserialize(engine, &payload) } {
                Ok(component) => return Ok((component, Origin::Cache)),
                Err(e) => tracing::warn!(path = %path.display(), "compile cache entry unusable, recompiling: {e}"),
            }
        }
        let payload = engine.precompile_component(bytes)?;
        if let Err(e) = write_entry(&path, &payload) {
            tracing::warn!(path = %path.display(), "cannot store compiled plugin in the cache: {e}");
        }
        // SAFETY: produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &payload)? };
        Ok((component, Origin::Compiled))
    }
}

/// An entry is the SHA-256 of the payload followed by the payload.
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 32 {
        tracing::warn!(path = %path.display(), "compile cache entry truncated; recompiling");
        return None;
    }
    let (sum, payload) = data.split_at(32);
    if Sha256::digest(payload).as_slice() != sum {
        tracing::warn!(path = %path.display(), "compile cache entry corrupt; recompiling");
        return None;
    }
    Some(payload.to_vec())
}

fn write_entry(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), rand::random::<u64>()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&Sha256::digest(payload))?;
        file.write_all(payload)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "wasmsocket-cache-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn entries_round_trip_and_corruption_is_detected() {
        let dir = scratch();
        let path = dir.join("x.cwasm");
        write_entry(&path, b"payload bytes").unwrap();
        assert_eq!(read_entry(&path).as_deref(), Some(&b"payload bytes"[..]));

        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&path, &data).unwrap();
        assert_eq!(read_entry(&path), None, "a flipped bit must not be trusted");

        std::fs::write(&path, &data[..10]).unwrap();
        assert_eq!(read_entry(&path), None, "a truncated entry must not be trusted");
        let _ = std::fs::remove_dir_all(dir);
    }
}
