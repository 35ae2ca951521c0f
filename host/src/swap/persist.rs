//! Persist: a deployed component (and config) is on disk before it is live.
//! Each file is staged beside its target and fsynced; then, right before the
//! swap, every file is renamed over its target and the folders fsynced, all
//! or nothing: if any step fails, the files already renamed are put back and
//! the deploy fails with the old version serving. So a version is never live
//! while something else is on disk, and a restart serves what was live.
//!
//! A crash can stop a commit between two renames, with the new component
//! beside the old config. So before the first rename, a journal
//! (`.wasmhost-commit-*` in the projects folder) names every target, the
//! hard link keeping its old contents, and the new file (by device, inode
//! and SHA-256 of its contents), and all are made durable. At start-up, a
//! journal still there means its commit never finished (its version never
//! went live), and [`remove_leftovers`] puts back every target that still
//! is the journal's new file first; a target that is anything else (never
//! renamed over, already put back, or replaced since by a later deploy) is
//! left alone, so a journal read twice, or late, undoes nothing it should
//! not. The inode alone cannot tell: once the journal's new files are
//! deleted, the file system may give their inode numbers to a later
//! deploy's files (ext4 does), hence the digest. Then the temp files
//! (`.wasmhost-deploy-*`, `.wasmhost-backup-*`) a crash left are removed.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

/// Name prefixes of this module's temp files.
const STAGED: &str = ".wasmhost-deploy-";
const BACKUP: &str = ".wasmhost-backup-";
const JOURNAL: &str = ".wasmhost-commit-";

/// A file written and fsynced beside its target, not yet in place.
pub(crate) struct Staged {
    file: tempfile::NamedTempFile,
    target: PathBuf,
    /// SHA-256 of the contents, for the journal to know the file by.
    digest: [u8; 32],
}

/// The folders whose entries changed when `paths` were renamed into
/// place: each file's folder and every folder above it up to the projects
/// folder (a deploy may have just created them), and the projects folder.
pub(crate) fn folders_to_sync(projects_dir: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    // Every folder from the file's own up to the projects folder: a deploy
    // may have created several for `component = "a/b/c.wasm"`.
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .flat_map(|path| {
            let above = path
                .ancestors()
                .skip(2)
                .take_while(|dir| dir.starts_with(projects_dir) && *dir != projects_dir);
            path.parent()
                .into_iter()
                .chain(above)
                .map(Path::to_path_buf)
        })
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
    Ok(Staged {
        file,
        target: path.to_path_buf(),
        digest: Sha256::digest(bytes).into(),
    })
}

/// Renames every staged file over its target and fsyncs their folders (and
/// `projects_dir`), all or nothing: on failure, targets already replaced get
/// their old contents back, and the error says which file failed; on a
/// crash, the journal lets the next start-up put them back. Blocking.
pub(crate) fn commit(staged: Vec<Staged>, projects_dir: &Path) -> anyhow::Result<()> {
    let mut commit = Commit::begin(staged, projects_dir)?;
    let result = (|| {
        while let Some(renamed) = commit.rename_next() {
            renamed?;
        }
        commit.finish()
    })();
    if result.is_err() {
        commit.undo();
    }
    result
}

/// A commit under way: its journal is durable, and each target's old
/// contents keep a second name (a hard link, no copy) until it is done.
struct Commit {
    projects_dir: PathBuf,
    /// The folders whose entries the commit changes.
    folders: Vec<PathBuf>,
    /// Staged files not renamed yet, with their targets and old contents.
    pending: std::vec::IntoIter<(tempfile::NamedTempFile, PathBuf, Option<tempfile::TempPath>)>,
    /// Targets renamed over, with their old contents.
    replaced: Vec<(PathBuf, Option<tempfile::TempPath>)>,
    /// Present until the commit is done (or undone).
    journal: Option<tempfile::TempPath>,
}

impl Commit {
    /// Keeps every existing target's contents under a hidden name, and
    /// journals the lot, durably, before anything is renamed.
    fn begin(staged: Vec<Staged>, projects_dir: &Path) -> anyhow::Result<Self> {
        let mut plan = Vec::with_capacity(staged.len());
        let mut identities = Vec::with_capacity(staged.len());
        for Staged {
            file,
            target,
            digest,
        } in staged
        {
            let staged = file
                .as_file()
                .metadata()
                .with_context(|| format!("failed to look at the new {}", target.display()))?;
            identities.push(NewFile {
                dev: staged.dev(),
                ino: staged.ino(),
                digest: Some(digest),
            });
            let exists = target
                .try_exists()
                .with_context(|| format!("failed to look at {}", target.display()))?;
            let backup = if exists {
                Some(backup_of(&target)?)
            } else {
                None
            };
            plan.push((file, target, backup));
        }
        let targets: Vec<PathBuf> = plan.iter().map(|(_, target, _)| target.clone()).collect();
        let entries: Vec<JournalEntry<'_>> = plan
            .iter()
            .zip(&identities)
            .map(|((_, target, backup), identity)| (target.as_path(), backup.as_deref(), *identity))
            .collect();
        let journal = write_journal(projects_dir, &entries)?;
        let folders = folders_to_sync(projects_dir, &targets);
        // The backups' and the journal's names must be durable before any
        // rename, or a crash could keep a rename and lose the old contents.
        sync_folders(&folders)?;
        Ok(Self {
            projects_dir: projects_dir.to_path_buf(),
            folders,
            pending: plan.into_iter(),
            replaced: Vec::new(),
            journal: Some(journal),
        })
    }

    /// Renames the next staged file over its target; `None` when all are.
    fn rename_next(&mut self) -> Option<anyhow::Result<()>> {
        let (file, target, backup) = self.pending.next()?;
        let renamed = file
            .persist(&target)
            .map_err(|err| err.error)
            .with_context(|| format!("failed to write {}", target.display()))
            .map(drop);
        if renamed.is_ok() {
            self.replaced.push((target, backup));
        }
        Some(renamed)
    }

    /// Makes the renames durable, then ends the commit by removing its
    /// journal (durably too); the old contents' names go after that.
    fn finish(&mut self) -> anyhow::Result<()> {
        sync_folders(&self.folders)?;
        if let Some(journal) = self.journal.take() {
            journal
                .close()
                .context("failed to remove the deploy's journal")?;
        }
        // The renames are durable: the deploy stands. Were the journal's
        // removal lost in a crash, start-up would put back the files it
        // names, so this is said, not hidden.
        if let Err(err) = sync_folders(std::slice::from_ref(&self.projects_dir)) {
            tracing::error!("{err:#}; a crash now could undo this deploy at the next start-up");
        }
        self.replaced.clear();
        Ok(())
    }

    /// Puts back every target already renamed over. If one cannot be, its
    /// old contents and the journal stay for the next start-up to finish.
    fn undo(mut self) {
        let mut restored_all = true;
        for (target, backup) in std::mem::take(&mut self.replaced).into_iter().rev() {
            let restored = match backup {
                Some(backup) => backup.persist(&target).map_err(|err| {
                    let _ = err.path.keep();
                    err.error
                }),
                None => std::fs::remove_file(&target),
            };
            if let Err(err) = restored {
                restored_all = false;
                tracing::error!(cause = %err, "failed to restore {} after a failed deploy; the next start-up tries again", target.display());
            }
        }
        // The restored names must be durable before the journal goes, and
        // its removal too.
        if let Some(journal) = self.journal.take() {
            if !restored_all || sync_folders(&self.folders).is_err() {
                let _ = journal.keep();
            } else if journal.close().is_ok() {
                let _ = sync_folders(std::slice::from_ref(&self.projects_dir));
            }
        }
    }
}

/// One journal line: a target, the hidden name of its old contents (none
/// for a file that is new), and what the new file is.
type JournalEntry<'a> = (&'a Path, Option<&'a Path>, NewFile);

/// A file a commit renames into place, as the journal knows it.
#[derive(Clone, Copy)]
struct NewFile {
    dev: u64,
    ino: u64,
    /// SHA-256 of its contents. `None` only in a journal an older wasmhost
    /// wrote (four fields a line), which knew files by inode alone.
    digest: Option<[u8; 32]>,
}

impl NewFile {
    /// Whether `path` is this file: the same inode, and the same contents,
    /// since a later file may have been given the inode number back.
    fn is_at(&self, path: &Path) -> bool {
        let same_inode = std::fs::symlink_metadata(path)
            .is_ok_and(|meta| meta.is_file() && (meta.dev(), meta.ino()) == (self.dev, self.ino));
        same_inode
            && self.digest.is_none_or(|digest| {
                let mut hasher = Sha256::new();
                std::fs::File::open(path)
                    .and_then(|mut file| std::io::copy(&mut file, &mut hasher))
                    .is_ok_and(|_| <[u8; 32]>::from(hasher.finalize()) == digest)
            })
    }
}

/// Writes and fsyncs the journal of a commit. Each path is relative to
/// `projects_dir` (so the folder may move before the restart that reads
/// it) and hex-encoded, so any file name fits on its line. It is written
/// under a staged file's name and renamed to a journal's once whole, so a
/// crash never leaves half a journal to act on (a staged file is swept).
fn write_journal(
    projects_dir: &Path,
    entries: &[JournalEntry<'_>],
) -> anyhow::Result<tempfile::TempPath> {
    let mut text = String::new();
    let relative = |path: &Path| hex(path.strip_prefix(projects_dir).unwrap_or(path));
    for (target, backup, new_file) in entries {
        text.push_str(&relative(target));
        text.push(' ');
        text.push_str(&backup.map_or_else(|| "-".to_string(), relative));
        text.push_str(&format!(" {} {}", new_file.dev, new_file.ino));
        if let Some(digest) = new_file.digest {
            text.push(' ');
            text.push_str(&hex_bytes(&digest));
        }
        text.push('\n');
    }
    let failed = || {
        format!(
            "failed to write a deploy journal in {}",
            projects_dir.display()
        )
    };
    let mut file = tempfile::Builder::new()
        .prefix(STAGED)
        .suffix(".tmp")
        .tempfile_in(projects_dir)
        .with_context(failed)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .with_context(failed)?;
    let name = tempfile::Builder::new()
        .prefix(JOURNAL)
        .suffix(".tmp")
        .make_in(projects_dir, |path| std::fs::hard_link(file.path(), path))
        .with_context(failed)?;
    // The staged name goes; the journal's stays until the commit ends.
    drop(file);
    Ok(name.into_temp_path())
}

fn hex(path: &Path) -> String {
    hex_bytes(path.as_os_str().as_bytes())
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<PathBuf> {
    unhex_bytes(text).map(|bytes| PathBuf::from(OsString::from_vec(bytes)))
}

fn unhex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// Puts back every file the unfinished commit of `journal` names, then
/// removes the journal; false when something could not be put back (the
/// journal then stays, and so must the old contents it names). The folders
/// of files the commit would have added go to `created`: the deploy may
/// have made them, and they go too once empty.
fn roll_back(projects_dir: &Path, journal: &Path, created: &mut Vec<PathBuf>) -> bool {
    let text = match std::fs::read_to_string(journal) {
        Ok(text) => text,
        Err(err) => {
            tracing::error!(cause = %err, "failed to read {}; the deploy it journals may be half on disk", journal.display());
            return false;
        }
    };
    let mut folders = Vec::new();
    let mut complete = true;
    // Only paths inside the projects folder, whatever the journal says.
    let inside = |text: &str| {
        let path = unhex(text)?;
        path.components()
            .all(|part| matches!(part, std::path::Component::Normal(_)))
            .then(|| projects_dir.join(path))
    };
    for line in text.lines().rev() {
        let mut fields = line.split(' ');
        let parsed = (|| {
            let target = inside(fields.next()?)?;
            let backup = match fields.next()? {
                "-" => None,
                backup => Some(inside(backup)?),
            };
            let dev: u64 = fields.next()?.parse().ok()?;
            let ino: u64 = fields.next()?.parse().ok()?;
            let digest = match fields.next() {
                Some(digest) => Some(<[u8; 32]>::try_from(unhex_bytes(digest)?).ok()?),
                None => None,
            };
            let new_file = NewFile { dev, ino, digest };
            fields
                .next()
                .is_none()
                .then_some((target, backup, new_file))
        })();
        let Some((target, backup, new_file)) = parsed else {
            tracing::error!("{}: unreadable line {line:?}, skipped", journal.display());
            complete = false;
            continue;
        };
        // Only a target that still is the journal's new file is put back.
        if new_file.is_at(&target) {
            let restored = match &backup {
                Some(backup) => std::fs::rename(backup, &target),
                None => std::fs::remove_file(&target),
            };
            match restored {
                Ok(()) => tracing::warn!(
                    "put back {} as it was before a deploy a crash interrupted",
                    target.display()
                ),
                Err(err) => {
                    complete = false;
                    tracing::error!(cause = %err, "failed to put back {} after a deploy a crash interrupted", target.display());
                }
            }
        }
        if backup.is_none()
            && let Some(folder) = target.parent()
            && folder != projects_dir
        {
            created.push(folder.to_path_buf());
        }
        folders.extend(target.parent().map(Path::to_path_buf));
    }
    folders.push(projects_dir.to_path_buf());
    folders.sort();
    folders.dedup();
    folders.retain(|folder| folder.is_dir());
    if let Err(err) = sync_folders(&folders) {
        tracing::error!("{err:#}");
        return false;
    }
    if !complete {
        return false;
    }
    match std::fs::remove_file(journal) {
        // Durably: a journal back after a crash would only be read again,
        // which undoes nothing now, but keeps its old contents' names.
        Ok(()) => sync_folders(&[projects_dir.to_path_buf()]).is_ok(),
        Err(err) => {
            tracing::error!(cause = %err, "failed to remove {}", journal.display());
            false
        }
    }
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

/// Puts back the files of every commit a crash interrupted (its journal is
/// still there), then removes the temp files a crash mid-deploy left in
/// `projects_dir` and its project folders, and says so. Those never hold
/// anything live: a staged file was not renamed into place, a backup is a
/// second name of a file that was.
pub(crate) fn remove_leftovers(projects_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(projects_dir) else {
        return;
    };
    let journals: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(JOURNAL))
                && path.is_file()
        })
        .collect();
    let mut keep_backups = false;
    let mut created = Vec::new();
    for journal in journals {
        keep_backups |= !roll_back(projects_dir, &journal, &mut created);
    }
    if keep_backups {
        tracing::error!(
            "an interrupted deploy in {} could not be undone in full; its .wasmhost-backup-* files are kept",
            projects_dir.display()
        );
    }
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
                .is_some_and(|name| {
                    name.starts_with(STAGED) || (name.starts_with(BACKUP) && !keep_backups)
                });
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
    for folder in created {
        // Fails, harmlessly, if anything is in it.
        let _ = std::fs::remove_dir(folder);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// The journal an interrupted commit left in `projects`.
    fn journal_in(projects: &Path) -> PathBuf {
        std::fs::read_dir(projects)
            .expect("dir")
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.to_string_lossy().contains(JOURNAL))
            .expect("a journal")
    }

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

    /// Every file under `dir`, with its contents, hidden ones included.
    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for entry in walk(dir) {
            let name = entry.strip_prefix(dir).expect("under dir");
            let contents = std::fs::read_to_string(&entry).expect("read");
            found.push((name.display().to_string(), contents));
        }
        found.sort();
        found
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
        found
    }

    /// A project `app` (component and config) on disk, and a deploy that
    /// replaces both and adds a new project `fresh`.
    fn a_deploy_staged(dir: &Path) -> Vec<Staged> {
        let app = dir.join("app");
        std::fs::create_dir_all(&app).expect("mkdir");
        std::fs::write(app.join("app.wasm"), "old component").expect("write");
        std::fs::write(app.join("wasmhost.toml"), "old config").expect("write");
        vec![
            stage(&app.join("app.wasm"), b"new component").expect("staged"),
            stage(&app.join("wasmhost.toml"), b"new config").expect("staged"),
            stage(&dir.join("fresh/fresh.wasm"), b"fresh component").expect("staged"),
        ]
    }

    fn before() -> Vec<(String, String)> {
        vec![
            ("app/app.wasm".into(), "old component".into()),
            ("app/wasmhost.toml".into(), "old config".into()),
        ]
    }

    #[test]
    fn a_commit_a_crash_interrupts_is_put_back_at_start_up() {
        for renames in 0..=3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let staged = a_deploy_staged(dir.path());
            let mut commit = Commit::begin(staged, dir.path()).expect("begun");
            for _ in 0..renames {
                commit.rename_next().expect("one more").expect("renamed");
            }
            // The crash: nothing is cleaned up, and the disk is half and half.
            std::mem::forget(commit);
            if renames == 1 {
                let app = dir.path().join("app");
                let read = |name| std::fs::read_to_string(app.join(name)).expect("read");
                assert_eq!(
                    (read("app.wasm"), read("wasmhost.toml")),
                    ("new component".into(), "old config".into())
                );
            }
            remove_leftovers(dir.path());
            assert_eq!(files(dir.path()), before(), "after {renames} renames");
            assert!(
                !dir.path().join("fresh").exists(),
                "after {renames} renames"
            );
        }
    }

    /// A journal back after it was acted on (a crash just after its
    /// removal), with later deploys since, undoes none of them: also when
    /// the later files were given the inode numbers of the journal's new
    /// files, which ext4 does once those are deleted (forced here, by
    /// pointing the journal at the later files' inodes).
    #[test]
    fn a_journal_read_again_after_later_deploys_undoes_nothing() {
        for reused_inodes in [false, true] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut interrupted =
                Commit::begin(a_deploy_staged(dir.path()), dir.path()).expect("begun");
            interrupted
                .rename_next()
                .expect("one more")
                .expect("renamed");
            std::mem::forget(interrupted);
            let journal = journal_in(dir.path());
            let text = std::fs::read_to_string(&journal).expect("read the journal");
            remove_leftovers(dir.path());
            assert_eq!(files(dir.path()), before());

            let later = [
                ("app/app.wasm", "later component"),
                ("app/wasmhost.toml", "later config"),
                ("fresh/fresh.wasm", "later fresh"),
            ];
            let staged = later
                .iter()
                .map(|(name, contents)| stage(&dir.path().join(name), contents.as_bytes()))
                .collect::<anyhow::Result<Vec<_>>>()
                .expect("staged");
            commit(staged, dir.path()).expect("committed");
            let text = if reused_inodes {
                let lines: Vec<String> = text
                    .lines()
                    .map(|line| {
                        let mut fields: Vec<String> = line.split(' ').map(String::from).collect();
                        let target = dir.path().join(unhex(&fields[0]).expect("a path"));
                        let later = std::fs::metadata(&target).expect("a later file");
                        fields[3] = later.ino().to_string();
                        fields.join(" ") + "\n"
                    })
                    .collect();
                lines.concat()
            } else {
                text
            };
            std::fs::write(&journal, text).expect("the journal is back");
            remove_leftovers(dir.path());
            let expected: Vec<(String, String)> = later
                .iter()
                .map(|(name, contents)| (name.to_string(), contents.to_string()))
                .collect();
            assert_eq!(
                files(dir.path()),
                expected,
                "inodes reused: {reused_inodes}"
            );
        }
    }

    /// A journal an older wasmhost wrote (no digests) is still acted on.
    #[test]
    fn a_journal_without_digests_is_still_put_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut commit = Commit::begin(a_deploy_staged(dir.path()), dir.path()).expect("begun");
        for _ in 0..3 {
            commit.rename_next().expect("one more").expect("renamed");
        }
        std::mem::forget(commit);
        let journal = journal_in(dir.path());
        let text = std::fs::read_to_string(&journal).expect("read the journal");
        let old: String = text
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                assert_eq!(fields.len(), 5, "{line}");
                fields[..4].join(" ") + "\n"
            })
            .collect();
        std::fs::write(&journal, old).expect("an older journal");
        remove_leftovers(dir.path());
        assert_eq!(files(dir.path()), before());
    }

    #[test]
    fn a_finished_commit_is_kept_at_start_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let staged = a_deploy_staged(dir.path());
        commit(staged, dir.path()).expect("committed");
        remove_leftovers(dir.path());
        assert_eq!(
            files(dir.path()),
            vec![
                ("app/app.wasm".to_string(), "new component".to_string()),
                ("app/wasmhost.toml".into(), "new config".into()),
                ("fresh/fresh.wasm".into(), "fresh component".into()),
            ]
        );
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
