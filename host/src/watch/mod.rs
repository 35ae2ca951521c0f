//! Watches the projects folder and turns file events into project changes,
//! all through the [`Pipeline`].
//!
//! One recursive watch on the root (not one per file). Each event is mapped to
//! the project it touches (`NAME/…` or `NAME.wasm`), and each project is
//! debounced on its own: a change fires once its files have been quiet for the
//! debounce period, so an editor's atomic save, a `cp` of a large file, a file
//! written in chunks, or a burst of hundreds of writes each becomes one
//! reload. Projects untouched by an event are never reloaded. A project
//! whose files never go quiet (a log or a build writing into its folder)
//! is still reloaded at most [`MAX_POSTPONE`] debounce periods (and at
//! least a second) after its first unreloaded event, so its changes are not
//! put off for as long as the writes go on.
//!
//! If the OS watcher cannot be created, or hits its limit (inotify's
//! `fs.inotify.max_user_watches` / `max_user_instances`), one warning names
//! the limit and the watcher falls back to polling (`poll.rs`) instead of
//! running blind. If the OS drops events (inotify's queue overflowed), every
//! project is synced, so no change is lost.

mod poll;
pub(crate) mod registry;

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::model::manifest::ProjectName;
use crate::swap::pipeline::Pipeline;

/// How many debounce periods a project's reload may be put off by events
/// that keep coming (at least [`MIN_POSTPONE`]).
const MAX_POSTPONE: u32 = 10;

/// The least a reload may be put off, whatever the debounce: a change
/// written in pieces over most of a second still lands as one reload.
const MIN_POSTPONE: Duration = Duration::from_secs(1);

/// When a project should be reloaded, given its first event since its last
/// reload (`first`) and its latest (`now`): once quiet for `debounce`, but
/// never later than `MAX_POSTPONE` debounces (at least `MIN_POSTPONE`)
/// after the first.
fn fire_at(first: Instant, now: Instant, debounce: Duration) -> Instant {
    let limit = debounce.saturating_mul(MAX_POSTPONE).max(MIN_POSTPONE);
    (now + debounce).min(first + limit)
}

/// How the folder is watched.
#[derive(Clone, Debug)]
pub(crate) struct WatchSettings {
    /// Quiet period after a project's last event before it is reloaded.
    pub(crate) debounce: Duration,
    /// Poll instead of using the OS's file events.
    pub(crate) poll: bool,
    /// How often to poll, when polling.
    pub(crate) poll_interval: Duration,
}

type Events = mpsc::UnboundedSender<notify::Result<Event>>;

/// What produces the events; dropping it stops them.
type Source = Box<dyn std::any::Any + Send>;

/// Starts watching `root`; changes go to `pipeline` until the process ends.
pub(crate) fn start(
    root: &Path,
    pipeline: Pipeline,
    settings: WatchSettings,
) -> anyhow::Result<()> {
    let root = root
        .canonicalize()
        .map_err(|err| anyhow::anyhow!("failed to watch {}: {err}", root.display()))?;
    let (events, received) = mpsc::unbounded_channel();
    let watcher = if settings.poll {
        tracing::info!(
            "watching {} by polling every {} ms",
            root.display(),
            settings.poll_interval.as_millis()
        );
        poll_watcher(&root, events.clone(), settings.poll_interval)?
    } else {
        match native_watcher(&root, events.clone()) {
            Ok(watcher) => {
                tracing::info!("watching {} for changes", root.display());
                watcher
            }
            Err(err) => {
                warn_fallback(&err, settings.poll_interval);
                poll_watcher(&root, events.clone(), settings.poll_interval)?
            }
        }
    };
    tokio::spawn(run(root, pipeline, settings, watcher, events, received));
    Ok(())
}

fn native_watcher(root: &Path, events: Events) -> notify::Result<Source> {
    let mut watcher = RecommendedWatcher::new(
        move |event| drop(events.send(event)),
        notify::Config::default(),
    )?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(Box::new(watcher))
}

fn poll_watcher(root: &Path, events: Events, interval: Duration) -> anyhow::Result<Source> {
    Ok(Box::new(poll::start(root, interval, events)?))
}

/// Whether `err` means the OS ran out of watches or watch instances.
fn limit_name(err: &notify::Error) -> Option<&'static str> {
    match &err.kind {
        notify::ErrorKind::MaxFilesWatch => Some("fs.inotify.max_user_watches"),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28) => {
            Some("fs.inotify.max_user_watches")
        }
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(24) => {
            Some("fs.inotify.max_user_instances (or the open-file limit)")
        }
        _ => None,
    }
}

fn warn_fallback(err: &notify::Error, interval: Duration) {
    match limit_name(err) {
        Some(limit) => tracing::warn!(
            "the OS file watcher hit its limit ({limit}: {err}); polling every {} ms instead. Raise {limit} to get instant change detection",
            interval.as_millis()
        ),
        None => tracing::warn!(
            "the OS file watcher is unavailable ({err}); polling every {} ms instead",
            interval.as_millis()
        ),
    }
}

// Strategy: one task owns the watcher and a map of project → (first event,
// fire time). Every event pushes its projects' fire times to now + debounce,
// up to a limit counted from the first event (`fire_at`); when the earliest
// fire time passes, each due project gets its own task that syncs it from
// disk through the pipeline (which serializes changes per project, so a
// change arriving mid-reload is picked up by the next fire, never lost).
async fn run(
    root: PathBuf,
    pipeline: Pipeline,
    settings: WatchSettings,
    mut watcher: Source,
    events: Events,
    mut received: mpsc::UnboundedReceiver<notify::Result<Event>>,
) {
    let mut due: HashMap<ProjectName, (Instant, Instant)> = HashMap::new();
    // A project fires again while its sync still runs (a long compile under
    // writes that never stop): one more sync after it, never a queue.
    let mut syncing: HashSet<ProjectName> = HashSet::new();
    let mut again: HashSet<ProjectName> = HashSet::new();
    let (synced, mut finished) = mpsc::unbounded_channel::<ProjectName>();
    let sync = |name: ProjectName| {
        let (pipeline, synced) = (pipeline.clone(), synced.clone());
        tokio::spawn(async move {
            // Said when the task ends, even by a panic, so the project is
            // never left marked as syncing (and never reloaded again).
            let _done = Synced(Some(name.clone()), synced);
            pipeline.sync(&name).await;
        });
    };
    let mut polling = settings.poll;
    loop {
        let next = due.values().map(|(_, at)| *at).min();
        tokio::select! {
            event = received.recv() => match event {
                None => break,
                Some(Ok(event)) => {
                    tracing::trace!(?event, "file event");
                    if event.need_rescan() {
                        tracing::warn!("the OS dropped file events (its queue overflowed); syncing every project");
                    }
                    let known: Vec<ProjectName> = if event.need_rescan() {
                        pipeline.registry().all().iter().map(|p| p.name.clone()).collect()
                    } else {
                        Vec::new()
                    };
                    let now = Instant::now();
                    for name in projects_to_sync(&root, &event, &known) {
                        let first = due.get(&name).map_or(now, |(first, _)| *first);
                        due.insert(name, (first, fire_at(first, now, settings.debounce)));
                    }
                }
                Some(Err(err)) => {
                    if limit_name(&err).is_some() && !polling {
                        warn_fallback(&err, settings.poll_interval);
                        match poll_watcher(&root, events.clone(), settings.poll_interval) {
                            Ok(poller) => {
                                watcher = poller;
                                polling = true;
                            }
                            Err(err) => tracing::error!("{err:#}; changes to {} are no longer seen", root.display()),
                        }
                    } else {
                        tracing::warn!(cause = %err, "file watcher error");
                    }
                }
            },
            () = sleep_until(next), if next.is_some() => {
                let now = Instant::now();
                let fired: Vec<ProjectName> = due.iter().filter(|(_, (_, at))| *at <= now).map(|(name, _)| name.clone()).collect();
                for name in fired {
                    due.remove(&name);
                    if syncing.contains(&name) {
                        again.insert(name);
                    } else {
                        syncing.insert(name.clone());
                        sync(name);
                    }
                }
            }
            Some(name) = finished.recv() => {
                if again.remove(&name) {
                    sync(name);
                } else {
                    syncing.remove(&name);
                }
            }
        }
    }
    // The watcher must live as long as this loop: dropping it stops the events.
    drop(watcher);
}

/// Tells the watcher loop, when dropped, that a project's sync ended.
struct Synced(Option<ProjectName>, mpsc::UnboundedSender<ProjectName>);

impl Drop for Synced {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            let _ = self.1.send(name);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The projects `event` may have changed: those its paths belong to, or,
/// when the OS says events were lost (`need_rescan`), every project on disk
/// and every project the host knows (`known`, needed only then), so
/// deletions are seen too.
fn projects_to_sync(root: &Path, event: &Event, known: &[ProjectName]) -> Vec<ProjectName> {
    if event.need_rescan() {
        return every_project(root, known);
    }
    if !is_change(&event.kind) {
        return Vec::new();
    }
    // A Kubernetes ConfigMap volume changes all at once: the kubelet writes a
    // new `..TIMESTAMP/` folder, points `..data_tmp` at it and renames that
    // over `..data`, through which every `NAME` symlink resolves. No event
    // names a project, so the swap of `..data` stands for all of them; the
    // debounce makes it one change per project, and a project whose files
    // are the same is left as it is (`unchanged`).
    if event
        .paths
        .iter()
        .any(|path| is_atomic_writer_swap(root, path))
    {
        return every_project(root, known);
    }
    event
        .paths
        .iter()
        .filter_map(|path| project_of(root, path))
        .collect()
}

/// Every project on disk under `root`, and those in `known`.
fn every_project(root: &Path, known: &[ProjectName]) -> Vec<ProjectName> {
    let mut all: Vec<ProjectName> = known.to_vec();
    if let Ok(entries) = std::fs::read_dir(root) {
        all.extend(
            entries
                .flatten()
                .filter_map(|entry| project_of(root, &entry.path())),
        );
    }
    all.sort();
    all.dedup();
    all
}

/// Whether `path` is the `..data` link (or its `..data_tmp` stand-in) of a
/// kubelet atomic writer at the top of `root`.
fn is_atomic_writer_swap(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    let mut parts = relative.components();
    matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(first)), None) if first == "..data" || first == "..data_tmp"
    )
}

/// Events that can change what a project serves. Reads (including the
/// host's own reads of components) and access-time updates are not.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

/// The project a path under `root` belongs to: the first path component,
/// as a folder name or as `NAME.wasm`. Hidden entries and invalid names are none.
fn project_of(root: &Path, path: &Path) -> Option<ProjectName> {
    let relative = path.strip_prefix(root).ok()?;
    let mut parts = relative.components();
    let Some(Component::Normal(first)) = parts.next() else {
        return None;
    };
    let first = first.to_str()?;
    if first.starts_with('.') {
        return None;
    }
    let name = match (first.strip_suffix(".wasm"), parts.next()) {
        (Some(stem), None) => stem,
        _ => first,
    };
    ProjectName::parse(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_waits_for_quiet_but_is_put_off_only_so_long() {
        let first = Instant::now();
        let ms = Duration::from_millis;
        // Quiet: the debounce after the latest event.
        assert_eq!(fire_at(first, first, ms(100)), first + ms(100));
        assert_eq!(fire_at(first, first + ms(500), ms(100)), first + ms(600));
        // Events still coming a second on: no later than the first + 1 s.
        assert_eq!(fire_at(first, first + ms(950), ms(100)), first + ms(1000));
        assert_eq!(fire_at(first, first + ms(5000), ms(100)), first + ms(1000));
        // A longer debounce is put off ten of its periods.
        assert_eq!(fire_at(first, first + ms(9000), ms(500)), first + ms(5000));
    }

    #[test]
    fn paths_map_to_projects() {
        let root = Path::new("/p");
        let name = |path: &str| project_of(root, Path::new(path)).map(|n| n.to_string());
        assert_eq!(name("/p/hello/hello.wasm").as_deref(), Some("hello"));
        assert_eq!(name("/p/hello/.hello.wasm.tmp").as_deref(), Some("hello"));
        assert_eq!(name("/p/hello/wasmhost.toml").as_deref(), Some("hello"));
        assert_eq!(name("/p/hello").as_deref(), Some("hello"));
        assert_eq!(name("/p/one.wasm").as_deref(), Some("one"));
        assert_eq!(name("/p/.hidden.wasm"), None);
        assert_eq!(name("/p/Bad"), None);
        assert_eq!(name("/p"), None);
        assert_eq!(name("/elsewhere/x.wasm"), None);
    }

    #[test]
    fn lost_events_sync_every_project_on_disk_and_known() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("a")).expect("mkdir");
        std::fs::write(dir.path().join("b.wasm"), "").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "").expect("write");
        let known = [ProjectName::parse("gone").expect("name")];
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        let names: Vec<String> = projects_to_sync(dir.path(), &overflow, &known)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["a", "b", "gone"]);
        // An ordinary event syncs only the projects of its paths.
        let one =
            Event::new(EventKind::Modify(ModifyKind::Any)).add_path(dir.path().join("a/x.wasm"));
        let names: Vec<String> = projects_to_sync(dir.path(), &one, &known)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn reads_are_not_changes() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Remove(
            notify::event::RemoveKind::Any
        )));
    }
}
