//! The one way a project changes: every new version, whether from start-up,
//! a reload, a deploy or a rollback, goes through the same steps, and a
//! removal through the same drain.
//!
//! read (config + bytes) → prepare ([`crate::swap::compiler`], through the cache) →
//! validate (`validate.rs`) → swap (one atomic store on the project,
//! plus a routing snapshot when routes change) → drain (`drain.rs`) →
//! cleanup (the old version drops with its last request; builds past the
//! history length drop with it). This file is the API; `install.rs` runs the
//! steps for one candidate and `persist.rs` writes deploys to disk.
//!
//! A change that fails any step before the swap changes nothing that serves:
//! the current version keeps serving and the failure is recorded on the
//! project (admin API) and logged as `NAME: vN rejected: REASON; vM still serving`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::model::discovery::{self, ProjectSource, Skipped};
use crate::model::events::Events;
use crate::model::manifest::{MANIFEST_FILE, Manifest, ProjectName};
use crate::model::metrics::HostMetrics;
use crate::model::project::{Failure, Project};
use crate::model::registry::Registry;
use crate::model::version::Stats;
use crate::oci::Puller;
use crate::swap::compiler::Compiler;
use crate::swap::drain;
use crate::swap::settings::Settings;

/// Where a change came from; decides what is logged and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Start-up.
    Load,
    /// The folder watcher saw files change.
    Watch,
    /// An explicit reload (admin API or CLI).
    Reload,
    /// An upload through the admin API.
    Deploy,
    /// A rollback.
    Rollback,
    /// A registry poll saw a project's tag point at a new digest.
    Registry,
}

impl Origin {
    /// How events name it: `load`, `watch`, `reload`, `deploy`, `rollback`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Watch => "watch",
            Self::Reload => "reload",
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
            Self::Registry => "registry",
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A new version is live.
    Live {
        /// Its number.
        version: u64,
        /// The version it replaced, now draining.
        previous: Option<u64>,
        /// Prepare time (compile or cache load, and link).
        compile: Duration,
        /// Time of the swap itself.
        swap: Duration,
        /// Whether the compiled code came from the cache (or history).
        cache_hit: bool,
    },
    /// Bytes and effective config equal the current version's: nothing changed.
    Unchanged {
        /// The current version's number.
        version: u64,
    },
}

/// Why a change was not made. Callers (the admin API) map each to a status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChangeError {
    /// The new version failed a step; what was serving still serves.
    #[error("{project}: {version_label} rejected: {reason}")]
    Rejected {
        /// The project.
        project: String,
        /// `vN`, or `change` when no number was assigned yet.
        version_label: String,
        /// The step that failed: `read`, `route` (another project serves
        /// its route or a host), `prepare` or `validate`.
        step: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// No such project.
    #[error("no project `{0}`")]
    NotFound(String),
    /// Rollback asked for with no earlier good build kept.
    #[error("project `{0}` has no earlier good version to roll back to")]
    NoRollback(String),
    /// The host failed (disk write, …); nothing was swapped.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// Runs project changes. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    /// Turns bytes into builds, off the request path.
    pub(super) compiler: Compiler,
    /// Where live versions are published for the request path.
    pub(super) registry: Arc<Registry>,
    /// Host-wide defaults and the projects folder.
    pub(super) settings: Arc<Settings>,
    /// Where lifecycle events are announced.
    pub(super) events: Events,
    /// Compile and swap measurements for `GET /metrics`.
    pub(super) metrics: HostMetrics,
    /// Pulls components of projects whose `component` is `oci://…`.
    pub(super) oci: Option<Arc<Puller>>,
}

impl Pipeline {
    /// A pipeline publishing into `registry`.
    pub fn new(
        compiler: Compiler,
        registry: Arc<Registry>,
        settings: Settings,
        events: Events,
    ) -> Self {
        Self {
            compiler,
            registry,
            settings: Arc::new(settings),
            events,
            metrics: HostMetrics::new(),
            oci: None,
        }
    }

    /// The same pipeline, pulling `oci://` components with `puller`.
    pub(crate) fn with_puller(mut self, puller: Arc<Puller>) -> Self {
        self.oci = Some(puller);
        self
    }

    /// The projects folder.
    pub(crate) fn projects_dir(&self) -> &std::path::Path {
        &self.settings.projects_dir
    }

    /// The component bytes of `source`: read from its file, or, for an
    /// `oci://` component, pulled (at start-up, the copy last pulled when the
    /// registry cannot be reached). A failure is recorded on `project` at step
    /// `read`, `registry` (unreachable) or `pull` (the artifact is wrong).
    /// Also returns the manifest digest of a pulled component.
    pub(super) async fn read_component(
        &self,
        project: &Project,
        source: &ProjectSource,
        origin: Origin,
    ) -> Result<(Vec<u8>, Option<String>), ChangeError> {
        let Some(reference) = &source.manifest.oci else {
            return Compiler::read(&source.component)
                .await
                .map(|bytes| (bytes, None))
                .map_err(|err| self.reject(project, None, "read", err.to_string(), None));
        };
        let Some(puller) = &self.oci else {
            let reason = format!("{reference}: this host pulls from no registry");
            return Err(self.reject(project, None, "registry", reason, None));
        };
        let pulled = if origin == Origin::Load {
            puller.fetch_or_last(reference).await
        } else {
            puller.fetch(reference).await
        };
        match pulled {
            Ok(pulled) => Ok((pulled.bytes, Some(pulled.manifest_digest))),
            Err(err) => {
                let step = if err.is_unreachable() {
                    "registry"
                } else {
                    "pull"
                };
                Err(self.reject(project, None, step, err.to_string(), None))
            }
        }
    }

    /// After a pulled component went live (or was unchanged): the digest
    /// serving, for the poll and the admin API, and for restarts offline.
    fn note_pulled(
        &self,
        project: &Project,
        reference: &Option<crate::model::oci_ref::OciReference>,
        pulled: Option<String>,
        bytes: &[u8],
    ) {
        if let (Some(reference), Some(digest), Some(puller)) = (reference, &pulled, &self.oci) {
            puller.serving(reference, digest, bytes);
            project.state().pulled = pulled;
        }
    }

    /// Records that `project`'s registry could not be reached for a poll.
    pub(crate) fn refuse_pull(&self, project: &Project, reason: String) {
        let _ = self.reject(project, None, "registry", reason, None);
    }

    /// Pulls project `name`'s tag again and makes it live: a registry poll
    /// saw the tag move.
    pub(crate) async fn registry_change(&self, name: &ProjectName) -> Result<Outcome, ChangeError> {
        self.reload_with(name, Origin::Registry).await
    }

    /// Compile and swap measurements, host-wide.
    pub(crate) fn metrics(&self) -> &HostMetrics {
        &self.metrics
    }

    /// The engine every project runs on (its instance pool's use is a metric).
    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        self.compiler.engine()
    }

    /// Where lifecycle events are announced.
    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    /// The registry this pipeline publishes into.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Loads every project in the projects folder: [`Pipeline::plan_load`],
    /// then [`Pipeline::load`].
    pub async fn load_all(&self) -> anyhow::Result<Vec<Skipped>> {
        let plan = self.plan_load()?;
        self.load(plan).await
    }

    /// Start-up's first step, quick and before any request is served: finds
    /// every project in the projects folder and routes each from the start,
    /// so a request for one whose first version is not live yet gets 503
    /// with `Retry-After`, never a 404. Contested routes go to the first
    /// name, as routing is published by name here, before any compile.
    pub fn plan_load(&self) -> anyhow::Result<LoadPlan> {
        crate::swap::persist::remove_leftovers(&self.settings.projects_dir);
        let scan = discovery::scan(&self.settings.projects_dir)?;
        for failed in scan.failed {
            let project = self.registry.get_or_insert(failed.name.as_str(), || {
                Project::new(failed.name.clone(), failed.entry.clone())
            });
            let reason = format!("{:#}", failed.error);
            record_failure(&project, "read", reason.clone(), None, None);
            project.state().error = Some(reason);
        }
        // Smallest component first: compiles queue on `--max-compiles`, in
        // the order they are asked for, and a small project should be live in
        // milliseconds, not after a big one's seconds.
        let mut sources = scan.projects;
        sources.sort_by_cached_key(|source| {
            std::fs::metadata(&source.component).map_or(u64::MAX, |meta| meta.len())
        });
        let mut starting = Vec::new();
        for source in sources {
            let name = source.name.clone();
            let project = self.registry.get_or_insert(name.as_str(), || {
                Project::new(name.clone(), source.entry.clone())
            });
            project.set_starting(Some(source.clone()));
            starting.push((Starting(project, self.registry.clone()), source));
        }
        self.registry.republish();
        Ok(LoadPlan {
            starting,
            skipped: scan.skipped,
        })
    }

    /// Start-up's second step: makes each planned project's first version
    /// live, concurrently (compiles are still bounded by the compiler), each
    /// as soon as it is ready. Returns the entries that are not projects.
    pub async fn load(&self, plan: LoadPlan) -> anyhow::Result<Vec<Skipped>> {
        // Read here, in order, so the tasks below queue for the compiler in
        // this order: each runs up to its wait for a compile slot when first
        // polled, and they are first polled in the order they are spawned.
        let mut loads = tokio::task::JoinSet::new();
        for (starting, source) in plan.starting {
            let project = starting.0.clone();
            // A file is read here; a pull waits for the task (the network
            // must not hold up the order of the others).
            let read = match source.manifest.oci {
                None => Some(Compiler::read(&source.component).await),
                Some(_) => None,
            };
            let this = self.clone();
            loads.spawn(async move {
                let _change = project.lifecycle.lock().await;
                // A deploy, watched change or removal that took the lock
                // first is newer than these bytes, read before it: keep it.
                if !this.registry.holds(&project) || project.current.load().is_some() {
                    return;
                }
                // A failure is recorded on the project (and logged) by `reject`.
                let read = match read {
                    Some(Ok(bytes)) => Ok((bytes, None)),
                    Some(Err(err)) => {
                        Err(this.reject(&project, None, "read", err.to_string(), None))
                    }
                    None => this.read_component(&project, &source, Origin::Load).await,
                };
                let reference = source.manifest.oci.clone();
                let installed = match read {
                    Ok((bytes, pulled)) => {
                        let bytes: Arc<[u8]> = bytes.into();
                        let installed = this
                            .install(&project, source.clone(), bytes.clone(), &[], Origin::Load)
                            .await;
                        if installed.is_ok() {
                            this.note_pulled(&project, &reference, pulled, &bytes);
                        }
                        installed.is_ok()
                    }
                    Err(_) => false,
                };
                // A pulled project whose tag now names something refused (or
                // cannot be pulled) starts on what it served before the
                // restart, if that is kept: a bad push never takes a project
                // down, on a running host or a restarted one.
                if !installed
                    && let (Some(reference), Some(puller)) = (&reference, &this.oci)
                    && let Some(last) = puller.last_served(reference)
                {
                    tracing::warn!(
                        project = project.name.as_str(),
                        "{}: serving {reference} as last served ({}) until its tag names something that goes live",
                        project.name,
                        last.manifest_digest
                    );
                    let bytes: Arc<[u8]> = last.bytes.into();
                    if this
                        .install(&project, source, bytes.clone(), &[], Origin::Load)
                        .await
                        .is_ok()
                    {
                        this.note_pulled(&project, &Some(reference.clone()), Some(last.manifest_digest), &bytes);
                    }
                }
                drop(starting);
            });
        }
        while let Some(joined) = loads.join_next().await {
            joined.context("a project load task failed")?;
        }
        self.evict_cache();
        Ok(plan.skipped)
    }

    /// Bounds the compile cache in the background, keeping the entries of
    /// every project's current version: those a restart loads. (Draining
    /// versions and rollback builds are compiled in memory already; their
    /// entries only speed up a later deploy of the same bytes.)
    pub(super) fn evict_cache(&self) {
        let live: std::collections::HashSet<String> = self
            .registry
            .all()
            .iter()
            .filter_map(|project| project.current.load_full())
            .map(|version| version.build.digest.clone())
            .collect();
        let cache = self.compiler.cache().clone();
        let max_size = self.settings.cache_max_size;
        tokio::task::spawn_blocking(move || cache.evict(max_size, &live));
    }

    /// Re-reads project `name`'s config and component from disk and makes them live.
    pub(crate) async fn reload(&self, name: &ProjectName) -> Result<Outcome, ChangeError> {
        self.reload_with(name, Origin::Reload).await
    }

    /// Brings project `name` in line with the disk after the watcher saw its
    /// files change: reloads it, or unloads it when it is gone from disk.
    /// Outcomes are logged by the steps themselves; nothing is returned.
    pub(crate) async fn sync(&self, name: &ProjectName) {
        let on_disk = discovery::find(&self.settings.projects_dir, name);
        if matches!(on_disk, Ok(None)) {
            if self.registry.get(name.as_str()).is_some() {
                tracing::info!(
                    project = name.as_str(),
                    "{name}: change detected: deleted from disk"
                );
                self.events.emit(
                    "change_detected",
                    name.as_str(),
                    serde_json::json!({ "deleted": true }),
                );
                if let Err(err) = self.unload(name, false).await {
                    tracing::debug!(project = name.as_str(), "{err}");
                }
            }
            return;
        }
        match self.reload_with(name, Origin::Watch).await {
            Ok(_) | Err(ChangeError::Rejected { .. }) => {}
            Err(err) => tracing::debug!(project = name.as_str(), "sync: {err}"),
        }
    }

    async fn reload_with(
        &self,
        name: &ProjectName,
        origin: Origin,
    ) -> Result<Outcome, ChangeError> {
        if self.registry.get(name.as_str()).is_none()
            && matches!(discovery::find(&self.settings.projects_dir, name), Ok(None))
        {
            return Err(ChangeError::NotFound(name.to_string()));
        }
        self.with_project(name, false, |project| async move {
            // Read under the project's lock, so the disk state is the latest.
            let source = match discovery::find(&self.settings.projects_dir, name) {
                Ok(Some(source)) => source,
                Ok(None) => {
                    return Err(ChangeError::NotFound(format!(
                        "{name} (it is no longer on disk)"
                    )));
                }
                Err(err) => {
                    return Err(self.reject(&project, None, "read", format!("{err:#}"), None));
                }
            };
            let (bytes, pulled) = self.read_component(&project, &source, origin).await?;
            let reference = source.manifest.oci.clone();
            let bytes: Arc<[u8]> = bytes.into();
            let outcome = self
                .install(&project, source, bytes.clone(), &[], origin)
                .await?;
            self.note_pulled(&project, &reference, pulled, &bytes);
            Ok(outcome)
        })
        .await
    }

    /// Makes `bytes` the component of project `name` (created if new), with
    /// `config` as its `wasmhost.toml` when given. They are written into the
    /// project's folder before the new version goes live (`persist.rs`), so
    /// a restart serves exactly this.
    pub(crate) async fn deploy(
        &self,
        name: &ProjectName,
        bytes: Arc<[u8]>,
        config: Option<String>,
    ) -> Result<Outcome, ChangeError> {
        self.with_project(name, true, |project| async move {
            let root = &self.settings.projects_dir;
            let manifest_path = root.join(name.as_str()).join(MANIFEST_FILE);
            let uploaded = match &config {
                None => None,
                Some(text) => match Manifest::parse(&manifest_path, text) {
                    Ok(manifest) => Some(manifest),
                    Err(err) => {
                        return Err(self.reject(&project, None, "read", err.to_string(), None));
                    }
                },
            };
            let source = discovery::deploy_target(root, name, uploaded)
                .map_err(|err| self.reject(&project, None, "read", format!("{err:#}"), None))?;
            if let Some(reference) = &source.manifest.oci {
                let reason = format!(
                    "project `{name}` pulls its component from {reference}: push to that tag, or deploy with a wasmhost.toml whose component is a file"
                );
                return Err(self.reject(&project, None, "read", reason, None));
            }
            let mut writes = vec![(source.component.clone(), bytes.clone())];
            if let Some(text) = config {
                writes.push((manifest_path, Arc::from(text.into_bytes())));
            }
            self.install(&project, source, bytes, &writes, Origin::Deploy)
                .await
        })
        .await
    }

    /// Runs `change` on project `name` (created if new) under its lifecycle
    /// lock. With `forget_if_never_live`, a project this call created that
    /// never went live is not kept: a bad upload under a new name leaves
    /// nothing behind. (A broken project on disk stays, shown as failed.)
    async fn with_project<F, Fut>(
        &self,
        name: &ProjectName,
        forget_if_never_live: bool,
        change: F,
    ) -> Result<Outcome, ChangeError>
    where
        F: FnOnce(Arc<Project>) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome, ChangeError>>,
    {
        loop {
            let created = self.registry.get(name.as_str()).is_none();
            let entry = self.settings.projects_dir.join(name.as_str());
            let project = self
                .registry
                .get_or_insert(name.as_str(), || Project::new(name.clone(), entry));
            let _change = project.lifecycle.lock().await;
            if !self.registry.holds(&project) {
                // Removed (or forgotten by a failed first deploy) while this
                // change waited for the lock: start again from the registry.
                continue;
            }
            let outcome = change(project.clone()).await;
            let never_live = project.current.load().is_none() && project.state().history.is_empty();
            if forget_if_never_live && created && never_live {
                self.registry.forget_if_same(&project);
            }
            return outcome;
        }
    }

    /// Existing project `name` under its lifecycle lock: not found if there
    /// is none, or if it was removed while this waited for the lock.
    async fn locked(
        &self,
        name: &ProjectName,
    ) -> Result<(Arc<Project>, tokio::sync::OwnedMutexGuard<()>), ChangeError> {
        let not_found = || ChangeError::NotFound(name.to_string());
        let project = self.registry.get(name.as_str()).ok_or_else(not_found)?;
        let guard = project.lifecycle.clone().lock_owned().await;
        if !self.registry.holds(&project) {
            return Err(not_found());
        }
        Ok((project, guard))
    }

    /// Goes back to the build before the current one, as a new version, and
    /// writes it back to disk.
    pub(crate) async fn rollback(&self, name: &ProjectName) -> Result<Outcome, ChangeError> {
        let (project, _change) = self.locked(name).await?;
        let (source, previous, current_number) = {
            let state = project.state();
            let current = project.current.load_full();
            match (state.source.clone(), current, state.history.len()) {
                (Some(source), Some(current), len) if len >= 2 => {
                    (source, state.history[len - 2].1.clone(), current.number)
                }
                _ => return Err(ChangeError::NoRollback(name.to_string())),
            }
        };
        // A pulled project has no file to write back: the rollback lasts
        // until its tag moves (or for good, once the old digest is pushed
        // to the tag or pinned).
        let writes = match source.manifest.oci {
            None => vec![(source.component.clone(), previous.bytes.clone())],
            Some(_) => Vec::new(),
        };
        let outcome = self
            .install(
                &project,
                source,
                previous.bytes.clone(),
                &writes,
                Origin::Rollback,
            )
            .await?;
        // The version rolled back from is no longer a rollback target.
        project
            .state()
            .history
            .retain(|(number, _)| *number != current_number);
        Stats::bump(&project.stats.rollbacks);
        Ok(outcome)
    }

    /// Unroutes project `name`, drains it and deletes it from disk.
    pub(crate) async fn remove(&self, name: &ProjectName) -> Result<(), ChangeError> {
        self.unload(name, true).await
    }

    /// Unroutes project `name` and drains it; deletes its files when `delete`.
    async fn unload(&self, name: &ProjectName, delete: bool) -> Result<(), ChangeError> {
        let (project, _change) = self.locked(name).await?;
        self.registry.remove(name.as_str());
        self.retry_route_refusals(name);
        if let Some(old) = project.current.swap(None) {
            project.stats.draining.push(&old);
            drain::retire(old);
        }
        let entry = project.state().entry.clone();
        let removed = if !delete {
            Ok(())
        } else if entry.is_dir() {
            std::fs::remove_dir_all(&entry)
        } else {
            std::fs::remove_file(&entry)
        };
        match removed {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(ChangeError::Failed(
                    anyhow::Error::from(err)
                        .context(format!("failed to delete {}", entry.display())),
                ));
            }
        }
        tracing::info!(project = name.as_str(), "{name}: removed");
        self.events
            .emit("removed", name.as_str(), serde_json::json!({}));
        Ok(())
    }

    /// Loads again, from disk, every project whose last change was refused
    /// because `removed` held its route (and that no version has gone live
    /// since), now that `removed` is unrouted. A folder renamed from `a` to
    /// `b`, with its own `route`, is seen as `b` added and `a` deleted, in
    /// either order; `b` refused while `a` still held the route would
    /// otherwise stay refused until its files changed again. A project whose
    /// files are what it serves comes back `unchanged`; one not on disk (a
    /// refused deploy of a new project) is left as it is.
    fn retry_route_refusals(&self, removed: &ProjectName) {
        let refused: Vec<ProjectName> = self
            .registry
            .all()
            .into_iter()
            .filter(|project| {
                let live = project.current.load().as_ref().map(|v| v.number);
                project
                    .state()
                    .last_failure
                    .as_ref()
                    .is_some_and(|failure| {
                        failure.step == "route"
                            && failure.blocked_by.as_deref() == Some(removed.as_str())
                            && failure.version.is_some_and(|refused| live < Some(refused))
                    })
            })
            .map(|project| project.name.clone())
            .collect();
        for name in refused {
            let pipeline = self.clone();
            tokio::spawn(async move {
                if matches!(
                    discovery::find(&pipeline.settings.projects_dir, &name),
                    Ok(Some(_))
                ) {
                    tracing::info!(
                        project = name.as_str(),
                        "{name}: a route was freed; loading it again"
                    );
                    pipeline.sync(&name).await;
                }
            });
        }
    }
}

/// What start-up found in the projects folder, routed and waiting to load.
pub struct LoadPlan {
    starting: Vec<(Starting, ProjectSource)>,
    skipped: Vec<Skipped>,
}

/// A project whose first version is being prepared at start-up. Dropped
/// when that version is live or refused (or its task ended any other way),
/// it stops routing the project by the candidate's source.
struct Starting(Arc<Project>, Arc<Registry>);

impl Drop for Starting {
    fn drop(&mut self) {
        self.0.set_starting(None);
        self.1.republish();
    }
}

/// Records a refused change on the project, for the admin API.
pub(super) fn record_failure(
    project: &Project,
    step: &'static str,
    reason: String,
    digest: Option<&str>,
    version: Option<u64>,
) {
    Stats::bump(&project.stats.rejected);
    project.stats.rejections.count(step);
    project.state().last_failure = Some(Failure {
        step,
        reason,
        digest: digest.map(str::to_string),
        version,
        blocked_by: None,
        at: SystemTime::now(),
    });
}
