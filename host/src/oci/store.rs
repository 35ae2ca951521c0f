//! Pulled components on disk, by manifest digest, and what each reference
//! last resolved to: a restart with the registry down serves from here.
//!
//! ```text
//! ROOT/components/HEX.wasm   the one layer of manifest sha256:HEX
//! ROOT/refs/HEX              "REFERENCE\nsha256:…": what REFERENCE (hashed to HEX) last resolved to
//! ```
//!
//! Every write goes to a temporary file in the same folder and is renamed
//! into place, so a crash never leaves a half-written component behind. A
//! store that cannot be written only costs the offline restart: it is
//! logged, never fatal.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::model::oci_ref::OciReference;

/// The folder pulled components are kept in.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    root: PathBuf,
}

impl Store {
    /// A store under `root` (created on first write).
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn component_path(&self, manifest_digest: &str) -> Option<PathBuf> {
        let hex = manifest_digest.strip_prefix("sha256:")?;
        let sane = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        sane.then(|| self.root.join("components").join(format!("{hex}.wasm")))
    }

    fn ref_path(&self, reference: &OciReference) -> PathBuf {
        let hex = format!("{:x}", Sha256::digest(reference.to_string().as_bytes()));
        self.root.join("refs").join(hex)
    }

    /// The component of manifest `manifest_digest`, if kept.
    pub(crate) fn component(&self, manifest_digest: &str) -> Option<Vec<u8>> {
        std::fs::read(self.component_path(manifest_digest)?).ok()
    }

    /// Keeps `bytes` as the component of manifest `manifest_digest`.
    pub(crate) fn put(&self, manifest_digest: &str, bytes: &[u8]) {
        if let Some(path) = self.component_path(manifest_digest) {
            write_atomically(&path, bytes);
        }
    }

    /// Notes that `reference` resolved to `manifest_digest`.
    pub(crate) fn remember(&self, reference: &OciReference, manifest_digest: &str) {
        let text = format!("{reference}\n{manifest_digest}\n");
        let path = self.ref_path(reference);
        if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
            write_atomically(&path, text.as_bytes());
        }
    }

    /// Deletes every kept component that no reference last served, so the
    /// store holds one component per reference followed, not one per push.
    pub(crate) fn evict_unserved(&self) {
        let Ok(refs) = std::fs::read_dir(self.root.join("refs")) else {
            return;
        };
        let served: std::collections::HashSet<String> = refs
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .filter_map(|text| text.lines().nth(1).map(str::to_string))
            .filter_map(|digest| {
                digest
                    .strip_prefix("sha256:")
                    .map(|hex| format!("{hex}.wasm"))
            })
            .collect();
        let Ok(components) = std::fs::read_dir(self.root.join("components")) else {
            return;
        };
        for entry in components.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".wasm") && !served.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// What `reference` last served, and that component, if both are kept.
    pub(crate) fn last(&self, reference: &OciReference) -> Option<(String, Vec<u8>)> {
        let text = std::fs::read_to_string(self.ref_path(reference)).ok()?;
        let mut lines = text.lines();
        // The file names its reference, so a hash collision cannot mix two up.
        if lines.next()? != reference.to_string() {
            return None;
        }
        let digest = lines.next()?.to_string();
        let bytes = self.component(&digest)?;
        Some((digest, bytes))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let result = (|| -> std::io::Result<()> {
        let folder = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(folder)?;
        let mut file = tempfile::NamedTempFile::new_in(folder)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|err| err.error)?;
        Ok(())
    })();
    if let Err(err) = result {
        tracing::warn!(
            "failed to store {} for offline restarts: {err}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_remembers_its_last_component() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::new(dir.path().to_path_buf());
        let reference = OciReference::parse("oci://127.0.0.1:5000/app:v1").expect("ref");
        assert!(store.last(&reference).is_none());
        let digest = format!("sha256:{}", "1".repeat(64));
        store.put(&digest, b"component");
        store.remember(&reference, &digest);
        assert_eq!(
            store.last(&reference),
            Some((digest.clone(), b"component".to_vec()))
        );
        assert_eq!(store.component(&digest).as_deref(), Some(&b"component"[..]));
        // Kept while a reference serves it, deleted once none does.
        let other_digest = format!("sha256:{}", "2".repeat(64));
        store.put(&other_digest, b"refused");
        store.evict_unserved();
        assert!(store.component(&other_digest).is_none());
        assert!(store.component(&digest).is_some());
        // A digest that is not sha256 hex never becomes a path.
        assert!(store.component("sha256:../../etc/passwd").is_none());
        let other = OciReference::parse("oci://127.0.0.1:5000/app:v2").expect("ref");
        assert!(store.last(&other).is_none());
    }
}
