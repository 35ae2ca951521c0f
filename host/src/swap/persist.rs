//! Persist: a deployed component (and config) is on disk before it is live.
//! Each file is staged beside its target and fsynced; then, right before the
//! swap, every file is renamed over its target and the folders fsynced, all
//! or nothing: if any step fails, the files already renamed are put back and
//! the deploy fails with the old version serving. So a version is never live
//! while something else is on disk, and a restart serves what was live.
//!
//! Temp files (`.wasmhost-deploy-*`, `.wasmhost-backup-*`) left by a crash
//! mid-deploy are removed at start-up ([`remove_leftovers`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Name prefixes of this module's temp files.
const STAGED: &str = ".wasmhost-deploy-";
const BACKUP: &str = ".wasmhost-backup-";

/// A file written and fsynced beside its target, not yet in place.
pub(crate) type Staged = (tempfile::NamedTempFile, PathBuf);

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
pub(crate) fn stage(path: &Path, bytes: &[u8]) -> anyhow::Result<Staged> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .with_context(|| format!("failed to find the folder of {}", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    // tempfile makes its files 0600, and the rename carries that over the
    // target: a deployed file that replaces one gets that file's mode, so
    // other users and tools that could read it still can. A new file stays
    // 0600: a `wasmhost.toml` may hold `[env]` secrets. The mode is set
    // before anything is written, so the bytes are never readable more
    // widely than the target's. Where the file system refuses modes, the
    // file keeps 0600, as before.
    let mut file = tempfile::Builder::new()
        .prefix(STAGED)
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temp file in {}", dir.display()))?;
    if let Ok(existing) = std::fs::metadata(path)
        && let Err(err) = file.as_file().set_permissions(existing.permissions())
    {
        tracing::warn!(cause = %err, "failed to give {} the mode of the file it replaces; it is written 0600", path.display());
    }
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok((file, path.to_path_buf()))
}

/// Renames every staged file over its target and fsyncs their folders (and
/// `projects_dir`), all or nothing: on failure, targets already replaced get
/// their old contents back, and the error says which file failed. Blocking.
pub(crate) fn commit(staged: Vec<Staged>, projects_dir: &Path) -> anyhow::Result<()> {
    // Each existing target is kept under a second name (a hard link, no copy)
    // until the whole commit is durable.
    let mut replaced: Vec<(PathBuf, Option<tempfile::TempPath>)> = Vec::new();
    let result = (|| {
        for (file, target) in staged {
            let exists = target
                .try_exists()
                .with_context(|| format!("failed to look at {}", target.display()))?;
            let backup = if exists {
                Some(backup_of(&target)?)
            } else {
                None
            };
            file.persist(&target)
                .map_err(|err| err.error)
                .with_context(|| format!("failed to write {}", target.display()))?;
            replaced.push((target, backup));
        }
        let targets: Vec<PathBuf> = replaced.iter().map(|(path, _)| path.clone()).collect();
        sync_folders(&folders_to_sync(projects_dir, &targets))
    })();
    if result.is_err() {
        for (target, backup) in replaced.into_iter().rev() {
            let restored = match backup {
                Some(backup) => backup.persist(&target).map_err(|err| err.error),
                None => std::fs::remove_file(&target),
            };
            if let Err(err) = restored {
                tracing::error!(cause = %err, "failed to restore {} after a failed deploy", target.display());
            }
        }
    }
    result
}

/// A project folder a deploy may create when it stages its files: removed
/// again on drop, if it is still empty, unless the deploy went through, so a
/// refused deploy of a new project leaves no folder for the watcher to find.
pub(crate) struct NewFolder(Option<PathBuf>);

impl NewFolder {
    /// Remembers `folder` if it does not exist yet.
    pub(crate) fn watch(folder: &Path) -> Self {
        Self((!folder.exists()).then(|| folder.to_path_buf()))
    }

    /// The deploy went through: the folder stays.
    pub(crate) fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for NewFolder {
    fn drop(&mut self) {
        if let Some(folder) = &self.0 {
            // Fails, harmlessly, if anything is in it.
            let _ = std::fs::remove_dir(folder);
        }
    }
}

/// A hidden hard link to `target` beside it, deleted when dropped.
fn backup_of(target: &Path) -> anyhow::Result<tempfile::TempPath> {
    let dir = target
        .parent()
        .with_context(|| format!("failed to find the folder of {}", target.display()))?;
    let name = format!("{BACKUP}{}.tmp", std::process::id());
    let backup = tempfile::Builder::new()
        .prefix(&name)
        .make_in(dir, |path| std::fs::hard_link(target, path))
        .with_context(|| {
            format!(
                "failed to keep the old {} while writing it",
                target.display()
            )
        })?;
    Ok(backup.into_temp_path())
}

/// Removes the temp files a crash mid-deploy left in `projects_dir` and its
/// project folders, and says so. They never hold anything live: a staged file
/// was not renamed into place, a backup is a second name of a file that was.
pub(crate) fn remove_leftovers(projects_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(projects_dir) else {
        return;
    };
    let mut folders = vec![projects_dir.to_path_buf()];
    folders.extend(
        entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.is_dir()),
    );
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for path in entries.flatten().map(|entry| entry.path()) {
            let leftover = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(STAGED) || name.starts_with(BACKUP));
            if leftover && path.is_file() {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!("removed {}, left by an interrupted deploy", path.display())
                    }
                    Err(err) => tracing::warn!(cause = %err, "failed to remove {}", path.display()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A deploy keeps a replaced file's mode (tempfile's own is 0600), and a
    /// new file, which may hold secrets, is 0600.
    #[test]
    fn deployed_files_keep_the_mode_of_what_they_replace() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).expect("mkdir");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o7777
        };
        let component = app.join("app.wasm");
        std::fs::write(&component, "old component").expect("write");
        std::fs::set_permissions(&component, std::fs::Permissions::from_mode(0o640))
            .expect("chmod");
        let config = app.join("wasmhost.toml");
        let staged = vec![
            stage(&component, b"new component").expect("staged"),
            stage(&config, b"").expect("staged"),
        ];
        commit(staged, dir.path()).expect("committed");
        assert_eq!(mode(&component), 0o640);
        assert_eq!(mode(&config), 0o600);
    }

    #[test]
    fn a_commit_that_fails_puts_every_file_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).expect("mkdir");
        let component = app.join("app.wasm");
        std::fs::write(&component, "old component").expect("write");
        let staged = vec![
            stage(&component, b"new component").expect("staged"),
            // A target whose folder is a file: the rename fails.
            stage(&app.join("sub/wasmhost.toml"), b"x").expect("staged"),
        ];
        std::fs::remove_dir_all(app.join("sub")).expect("rm");
        std::fs::write(app.join("sub"), "a file where a folder was").expect("write");
        let err = commit(staged, dir.path()).expect_err("the second rename fails");
        assert!(format!("{err:#}").contains("wasmhost.toml"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(&component).expect("read"),
            "old component"
        );
        let names: Vec<String> = std::fs::read_dir(&app)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn a_commit_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let component = dir.path().join("app/app.wasm");
        std::fs::create_dir_all(dir.path().join("app")).expect("mkdir");
        std::fs::write(&component, "old").expect("write");
        let config = dir.path().join("app/wasmhost.toml");
        commit(
            vec![
                stage(&component, b"new").expect("staged"),
                stage(&config, b"route = \"/a\"\n").expect("staged"),
            ],
            dir.path(),
        )
        .expect("committed");
        assert_eq!(std::fs::read_to_string(&component).expect("read"), "new");
        assert!(config.is_file());
        let entries = std::fs::read_dir(dir.path().join("app"))
            .expect("dir")
            .count();
        assert_eq!(entries, 2);
    }

    #[test]
    fn a_folder_a_failed_deploy_created_is_removed_if_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fresh = dir.path().join("fresh");
        {
            let _folder = NewFolder::watch(&fresh);
            let _staged = stage(&fresh.join("fresh.wasm"), b"x").expect("staged");
            assert!(fresh.is_dir());
        }
        assert!(!fresh.exists());
        {
            let mut folder = NewFolder::watch(&fresh);
            commit(
                vec![stage(&fresh.join("fresh.wasm"), b"x").expect("staged")],
                dir.path(),
            )
            .expect("committed");
            folder.keep();
        }
        assert!(fresh.join("fresh.wasm").is_file());
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).expect("mkdir");
        for name in [
            ".wasmhost-deploy-1.tmp",
            ".wasmhost-backup-2.tmp",
            "app.wasm",
            ".keep",
        ] {
            std::fs::write(app.join(name), "x").expect("write");
        }
        std::fs::write(dir.path().join(".wasmhost-deploy-3.tmp"), "x").expect("write");
        remove_leftovers(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(&app)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".keep", "app.wasm"]);
        assert!(!dir.path().join(".wasmhost-deploy-3.tmp").exists());
    }
}
