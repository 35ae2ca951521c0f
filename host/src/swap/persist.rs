//! Persist: a deployed component (and config) is staged beside its target
//! and fsynced before the swap, renamed into place after it, and its folder
//! fsynced, so a restart serves what was live.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The folders whose entries changed when `paths` were renamed into
/// place: each file's folder, and the projects folder when a project
/// folder may have just been created in it.
pub(crate) fn folders_to_sync(projects_dir: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .filter_map(|path| path.parent().map(Path::to_path_buf))
        .collect();
    dirs.push(projects_dir.to_path_buf());
    dirs.sort();
    dirs.dedup();
    dirs
}

/// fsyncs each folder in `dirs`, so the renames in them are on disk: a
/// rename is only durable once its directory is.
pub(crate) fn sync_folders(dirs: &[PathBuf]) -> anyhow::Result<()> {
    for dir in dirs {
        std::fs::File::open(dir)
            .and_then(|folder| folder.sync_all())
            .with_context(|| format!("failed to sync folder {}", dir.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to a hidden temp file next to `path` and fsyncs it, ready
/// to be renamed over `path` once the version is live.
pub(crate) fn stage(
    path: &Path,
    bytes: &[u8],
) -> anyhow::Result<(tempfile::NamedTempFile, PathBuf)> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .with_context(|| format!("failed to find the folder of {}", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mut file = tempfile::Builder::new()
        .prefix(".wasmhost-deploy-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temp file in {}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok((file, path.to_path_buf()))
}
