//! The compile cache: precompiled components stored by content, so a restart
//! or a re-deploy of known bytes skips compilation entirely.
//!
//! Layout: `DIR/<engine>/<digest>.cwasm`, where `<engine>` is a hash of
//! `Engine::precompile_compatibility_hash` (wasmtime version and every setting
//! that affects code) and `<digest>` the sha256 of the component bytes. Each
//! entry is the sha256 of the artifact followed by the artifact, written to a
//! temp file and renamed, so a reader sees a whole entry or none.
//!
//! Entries are never trusted: the checksum is verified before wasmtime sees the
//! bytes, and wasmtime checks the artifact's own header. A corrupt, truncated
//! or foreign entry is deleted and the component recompiled.
//!
//! The folder is bounded (`--cache-max-size`): past the bound, the entries
//! used least recently (a hit touches its entry's modification time) are
//! deleted, except those of the projects' current versions
//! (`CompileCache::evict`).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Length of the checksum that starts every entry.
const CHECKSUM_LEN: usize = 32;

/// Where precompiled components live; `None` when caching is off.
#[derive(Clone, Debug)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

/// What a cache lookup found.
pub enum Lookup {
    /// A verified entry, deserialized.
    Hit(Component),
    /// No entry.
    Miss,
    /// An entry that failed verification; it has been deleted.
    Corrupt(String),
}

impl CompileCache {
    /// A cache under `root` for artifacts of `engine`; `None` disables caching.
    pub fn new(root: Option<&Path>, engine: &Engine) -> Self {
        let dir = root.map(|root| {
            let mut hasher = Sha256Hasher::default();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            root.join(&hex(&hasher.0.finalize())[..16])
        });
        Self { dir }
    }

    /// A cache that stores nothing.
    pub fn disabled() -> Self {
        Self { dir: None }
    }

    /// The folder entries of this engine live in.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn entry(&self, digest: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{digest}.cwasm")))
    }

    /// Loads the entry for `digest`. Blocking: call from a blocking thread.
    pub fn load(&self, engine: &Engine, digest: &str) -> Lookup {
        let Some(path) = self.entry(digest) else {
            return Lookup::Miss;
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(err) => return self.discard(&path, format!("unreadable: {err}")),
        };
        if bytes.len() <= CHECKSUM_LEN {
            return self.discard(&path, "truncated".into());
        }
        let (checksum, artifact) = bytes.split_at(CHECKSUM_LEN);
        if Sha256::digest(artifact).as_slice() != checksum {
            return self.discard(&path, "checksum mismatch".into());
        }
        match deserialize(engine, artifact) {
            Ok(component) => {
                // Recently used: eviction goes by modification time.
                let _ = std::fs::File::open(&path)
                    .and_then(|file| file.set_modified(std::time::SystemTime::now()));
                Lookup::Hit(component)
            }
            Err(err) => self.discard(&path, format!("{err:#}")),
        }
    }

    fn discard(&self, path: &Path, reason: String) -> Lookup {
        if let Err(err) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), cause = %err, "failed to delete a bad cache entry");
        }
        Lookup::Corrupt(reason)
    }

    /// Stores `component` as the entry for `digest`. Blocking.
    pub(crate) fn store(&self, digest: &str, component: &Component) -> anyhow::Result<()> {
        let (Some(dir), Some(path)) = (self.dir.as_ref(), self.entry(digest)) else {
            return Ok(());
        };
        let artifact = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("failed to serialize the compiled component")?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create cache directory {}", dir.display()))?;
        let mut file = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("failed to create a temp file in {}", dir.display()))?;
        file.write_all(&Sha256::digest(&artifact))
            .and_then(|()| file.write_all(&artifact))
            .with_context(|| format!("failed to write cache entry {}", path.display()))?;
        file.persist(&path)
            .with_context(|| format!("failed to write cache entry {}", path.display()))?;
        Ok(())
    }

    /// Deletes the least recently used entries until the folder holds at
    /// most `max_size` bytes, keeping every entry whose digest is in `live`.
    /// Returns how many were deleted. Blocking.
    pub(crate) fn evict(&self, max_size: u64, live: &HashSet<String>) -> usize {
        let Some(dir) = &self.dir else { return 0 };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut found: Vec<(std::time::SystemTime, u64, PathBuf, String)> = entries
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let digest = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".cwasm")?
                    .to_string();
                let meta = entry.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), path, digest))
            })
            .collect();
        let mut total: u64 = found.iter().map(|(_, len, _, _)| len).sum();
        found.sort();
        let mut evicted = 0;
        for (_, len, path, digest) in found {
            if total <= max_size {
                break;
            }
            if live.contains(&digest) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    evicted += 1;
                }
                Err(err) => tracing::warn!(cause = %err, "failed to evict {}", path.display()),
            }
        }
        if evicted > 0 {
            tracing::info!(
                "compile cache over {}: evicted {evicted} least recently used entries",
                crate::units::format_size(max_size)
            );
        }
        evicted
    }
}

/// Deserializes an artifact that passed its checksum.
///
/// From bytes already in memory rather than `deserialize_file`: the checksum
/// was computed over exactly these bytes, so nothing can change them between
/// the check and the load (a file could be replaced in between).
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: wasmtime requires the bytes to come from `Component::serialize`
    // of a compatible engine. They are our own entry, verified against the
    // checksum written with it, under a directory keyed by this engine's
    // compatibility hash; wasmtime additionally checks the header and version.
    unsafe { Component::deserialize(engine, artifact) }.map_err(anyhow::Error::from)
}

/// Feeds `Hash` output into sha256, for a hash that is stable across runs and builds.
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The platform's cache folder for wasmhost: `$XDG_CACHE_HOME/wasmhost`, else
/// `$HOME/.cache/wasmhost`; `None` when neither is set.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("wasmhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, digest: &str, len: usize, age_secs: u64) {
        let path = dir.join(format!("{digest}.cwasm"));
        std::fs::write(&path, vec![0u8; len]).expect("write");
        let at = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
        std::fs::File::open(&path)
            .and_then(|file| file.set_modified(at))
            .expect("mtime");
    }

    #[test]
    fn eviction_drops_the_least_recently_used_entries_no_live_version_uses() {
        let root = tempfile::tempdir().expect("temp dir");
        let cache = CompileCache {
            dir: Some(root.path().to_path_buf()),
        };
        entry(root.path(), "oldest", 400, 400);
        entry(root.path(), "old-but-live", 400, 300);
        entry(root.path(), "older", 400, 200);
        entry(root.path(), "newest", 400, 100);
        let live: HashSet<String> = ["old-but-live".to_string()].into();
        assert_eq!(cache.evict(900, &live), 2);
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["newest.cwasm", "old-but-live.cwasm"]);
        // Under the bound, nothing more goes.
        assert_eq!(cache.evict(900, &live), 0);
    }
}
