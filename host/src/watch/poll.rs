//! Polling the projects folder, for file systems without change events
//! (network mounts) or when the OS watcher hits its limits.
//!
//! Each pass stats every visible file. A file is re-read only when its size
//! or modification time changed, or when it was modified within the last
//! [`RECENT`]: file systems keep modification times in coarse steps (a
//! second, two on some), so a rewrite of the same size within one step
//! leaves size and time as they were, and only its contents tell. Older
//! files are never read again until their size or time moves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use notify::Event;
use notify::event::{EventKind, ModifyKind};
use sha2::{Digest as _, Sha256};

/// How recently a file must have been modified to be re-read although its
/// size and modification time look unchanged.
pub(crate) const RECENT: Duration = Duration::from_secs(2);

/// What a pass last saw of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
    /// The contents' digest, kept only while the file is recent.
    digest: Option<[u8; 32]>,
}

/// The files of a projects folder as the last pass saw them.
#[derive(Debug)]
pub(crate) struct Poller {
    root: PathBuf,
    known: HashMap<PathBuf, Seen>,
    /// Whether a pass ran before: the first one only records.
    primed: bool,
}

/// What one pass found.
#[derive(Debug, Default)]
pub(crate) struct Pass {
    /// Files added, removed or changed since the pass before.
    pub(crate) changed: Vec<PathBuf>,
    /// How many files this pass read (to tell changed contents from unchanged).
    pub(crate) read: usize,
}

impl Poller {
    /// A poller of `root`; its first pass only records what is there.
    pub(crate) fn new(root: &Path) -> Self {
        let mut poller = Self {
            root: root.to_path_buf(),
            known: HashMap::new(),
            primed: false,
        };
        poller.pass(SystemTime::now());
        poller
    }

    /// Compares the folder with the last pass, as of `now`.
    pub(crate) fn pass(&mut self, now: SystemTime) -> Pass {
        let mut pass = Pass::default();
        let mut files = Vec::new();
        visible_files(&self.root, &mut files);
        // A file not seen before is new, unless this is the first pass.
        let mut current = HashMap::with_capacity(files.len());
        for path in files {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let modified = meta.modified().ok();
            let recent =
                modified.is_some_and(|at| now.duration_since(at).unwrap_or_default() < RECENT);
            let previous = self.known.get(&path);
            let same_meta =
                previous.is_some_and(|seen| seen.len == meta.len() && seen.modified == modified);
            let mut seen = Seen {
                len: meta.len(),
                modified,
                digest: None,
            };
            if recent {
                // Read only if the metadata cannot tell, or to remember what
                // it holds while a same-size rewrite could still hide.
                seen.digest = digest_of(&path);
                pass.read += 1;
                if same_meta && previous.and_then(|p| p.digest) != seen.digest {
                    pass.changed.push(path.clone());
                }
            }
            if !same_meta && self.primed {
                pass.changed.push(path.clone());
            }
            current.insert(path, seen);
        }
        pass.changed.extend(
            self.known
                .keys()
                .filter(|path| !current.contains_key(*path))
                .cloned(),
        );
        pass.changed.sort();
        pass.changed.dedup();
        self.known = current;
        self.primed = true;
        pass
    }
}

fn digest_of(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(bytes).into())
}

/// Every non-hidden file under `dir`, recursively.
fn visible_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => visible_files(&path, out),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
}

/// Stops the polling thread when dropped.
pub(crate) struct Polling(Arc<AtomicBool>);

impl Drop for Polling {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Polls `root` every `interval` on a thread of its own, sending each
/// changed path into `events` as a modify event, until the guard drops or
/// the receiver is gone.
pub(crate) fn start(
    root: &Path,
    interval: Duration,
    events: tokio::sync::mpsc::UnboundedSender<notify::Result<Event>>,
) -> anyhow::Result<Polling> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let what = format!("failed to start polling {}", root.display());
    let root = root.to_path_buf();
    std::thread::Builder::new()
        .name("wasmhost-poll".into())
        .spawn(move || {
            let mut poller = Poller::new(&root);
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let pass = poller.pass(SystemTime::now());
                for path in pass.changed {
                    let event = Event::new(EventKind::Modify(ModifyKind::Any)).add_path(path);
                    if events.send(Ok(event)).is_err() {
                        return;
                    }
                }
            }
        })
        .context(what)?;
    Ok(Polling(stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_old(path: &Path, contents: &str) {
        std::fs::write(path, contents).expect("write");
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|file| file.set_modified(old))
            .expect("set mtime");
    }

    #[test]
    fn unchanged_old_files_are_never_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["a.wasm", "b.wasm", "c.wasm"] {
            write_old(&dir.path().join(name), "old");
        }
        let mut poller = Poller::new(dir.path());
        let pass = poller.pass(SystemTime::now());
        assert_eq!((pass.changed.len(), pass.read), (0, 0), "{pass:?}");
    }

    #[test]
    fn a_changed_size_or_time_is_a_change_and_only_recent_files_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = (dir.path().join("a.wasm"), dir.path().join("b.wasm"));
        write_old(&a, "old");
        write_old(&b, "old");
        let mut poller = Poller::new(dir.path());
        std::fs::write(&a, "newer").expect("write");
        let pass = poller.pass(SystemTime::now());
        assert_eq!(pass.changed, vec![a.clone()]);
        assert_eq!(pass.read, 1, "only the recently written file is read");
    }

    #[test]
    fn a_same_size_rewrite_within_the_same_second_is_seen_by_its_contents() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = dir.path().join("a.wasm");
        std::fs::write(&a, "one").expect("write");
        let at = SystemTime::now();
        std::fs::File::options()
            .write(true)
            .open(&a)
            .and_then(|file| file.set_modified(at))
            .expect("mtime");
        let mut poller = Poller::new(dir.path());
        // Same size, same modification time, other contents.
        std::fs::write(&a, "two").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&a)
            .and_then(|file| file.set_modified(at))
            .expect("mtime");
        let pass = poller.pass(at + Duration::from_millis(500));
        assert_eq!(pass.changed, vec![a]);
    }

    #[test]
    fn added_and_removed_files_are_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = (dir.path().join("p/a.wasm"), dir.path().join("p/b.wasm"));
        std::fs::create_dir_all(dir.path().join("p")).expect("mkdir");
        write_old(&a, "a");
        let mut poller = Poller::new(dir.path());
        write_old(&b, "b");
        std::fs::remove_file(&a).expect("rm");
        let pass = poller.pass(SystemTime::now());
        assert_eq!(pass.changed, vec![a, b]);
    }
}
