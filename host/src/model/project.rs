//! One project's slot: the version serving it (one atomic pointer, swapped
//! whole), the builds kept for rollback, the versions still draining, and the
//! last failure, for the admin API.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::model::build::Build;
use crate::model::discovery::ProjectSource;
use crate::model::manifest::ProjectName;
use crate::model::version::{InFlight, Refused, Stats, Version};

/// Why the last change to a project was refused.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    /// The pipeline step that refused it: `read`, `route`, `prepare` or `validate`.
    pub(crate) step: &'static str,
    /// What was wrong.
    pub(crate) reason: String,
    /// Digest of the refused component, when it got that far.
    pub(crate) digest: Option<String>,
    /// The number the refused version would have had, when it got one.
    pub(crate) version: Option<u64>,
    /// The project holding the route or host it asked for (step `route`).
    pub(crate) blocked_by: Option<String>,
    /// When it was refused.
    pub(crate) at: SystemTime,
}

/// Why a request could not be admitted to a project.
pub(crate) enum Unavailable {
    /// No version serves the project (it was removed, or never went live).
    NotServing,
    /// The project's first version is still being prepared at start-up;
    /// the project's name, for the answer's headers.
    Starting(ProjectName),
    /// The project already runs `max_concurrency` requests; the version
    /// that refused, for the answer's headers.
    Overloaded(Arc<Version>),
}

/// A project as the host knows it.
pub struct Project {
    /// The project's name.
    pub(crate) name: ProjectName,
    /// The version new requests go to. One atomic store swaps it; requests
    /// `load_full` it once and keep their `Arc`.
    pub current: ArcSwapOption<Version>,
    /// Counters shared with every version of the project.
    pub(crate) stats: Arc<Stats>,
    /// Serializes changes to this project (deploy, reload, rollback, remove) so
    /// overlapping ones cannot interleave their steps; each caller gets its own answer.
    pub(crate) lifecycle: Arc<tokio::sync::Mutex<()>>,
    next_version: AtomicU64,
    /// Mirrors `ProjectState::starting.is_some()` for the request path,
    /// which must not take the state lock.
    starting: AtomicBool,
    state: Mutex<ProjectState>,
}

/// The mutable, non-hot-path part of a project.
#[derive(Default)]
pub(crate) struct ProjectState {
    /// Where and how the project is defined on disk; `None` when it could not be read.
    pub(crate) source: Option<ProjectSource>,
    /// The folder or file that defines the project.
    pub(crate) entry: std::path::PathBuf,
    /// The last good builds, oldest first; the last one is the current version's.
    pub(crate) history: VecDeque<(u64, Arc<Build>)>,
    /// Whether a change is being prepared or validated right now.
    pub(crate) preparing: bool,
    /// Why the project cannot serve at all (unreadable config, route conflict).
    pub(crate) error: Option<String>,
    /// Why the last change was refused.
    pub(crate) last_failure: Option<Failure>,
    /// For a project pulled from a registry: the manifest digest of the
    /// component serving, which the registry poll compares its tag with.
    pub(crate) pulled: Option<String>,
    /// At start-up, the source of the first version while it is prepared.
    /// The project is routed by it meanwhile, so its requests get 503 with
    /// `Retry-After` rather than falling through to another route, and a
    /// route contested at start-up goes to the first name whatever order
    /// the compiles finish in. Set with [`Project::set_starting`].
    pub(crate) starting: Option<ProjectSource>,
}

impl ProjectState {
    /// The source the project is routed by: its live version's when `live`,
    /// else the one being prepared at start-up, if any. `None`: not routed.
    pub(crate) fn routed_by(&self, live: bool) -> Option<&ProjectSource> {
        if live {
            self.source.as_ref()
        } else {
            self.starting.as_ref()
        }
    }
}

impl Project {
    /// A project with no version yet.
    pub fn new(name: ProjectName, entry: std::path::PathBuf) -> Self {
        let stats = Arc::new(Stats::default());
        Self {
            name,
            current: ArcSwapOption::empty(),
            stats,
            lifecycle: Arc::default(),
            next_version: AtomicU64::new(1),
            starting: AtomicBool::new(false),
            state: Mutex::new(ProjectState {
                entry,
                ..ProjectState::default()
            }),
        }
    }

    /// Locks the project's mutable state. Never held across an await.
    pub(crate) fn state(&self) -> MutexGuard<'_, ProjectState> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a request to the version serving the project now.
    ///
    /// A version retired between the load and the admission refuses
    /// ([`Version`]'s admission word), and the then-current version is loaded
    /// again: a swap has already stored it before retiring the old one. Each
    /// retry means another version went live meanwhile, so the loop ends.
    pub(crate) fn admit(&self) -> Result<InFlight, Unavailable> {
        loop {
            let Some(version) = self.current.load_full() else {
                return Err(if self.starting.load(Ordering::Acquire) {
                    Unavailable::Starting(self.name.clone())
                } else {
                    Unavailable::NotServing
                });
            };
            match InFlight::admit(&version) {
                Ok(in_flight) => return Ok(in_flight),
                Err(Refused::Retired) => continue,
                Err(Refused::Overloaded) => return Err(Unavailable::Overloaded(version)),
            }
        }
    }

    /// Marks the project as starting, routed by `source` until its first
    /// version is live or refused, or (`None`) ends that. The registry
    /// must republish after either, for routing to follow.
    pub(crate) fn set_starting(&self, source: Option<ProjectSource>) {
        let mut state = self.state();
        self.starting.store(source.is_some(), Ordering::Release);
        state.starting = source;
    }

    /// Takes the next version number.
    pub(crate) fn next_version(&self) -> u64 {
        self.next_version.fetch_add(1, Ordering::Relaxed)
    }

    /// `preparing`, `failed` (nothing serves), `draining` (old versions still
    /// running) or `active`.
    pub(crate) fn state_name(&self) -> &'static str {
        let state = self.state();
        if state.preparing {
            "preparing"
        } else if self.current.load().is_none() || state.error.is_some() {
            "failed"
        } else if self.stats.draining.len() > 0 {
            "draining"
        } else {
            "active"
        }
    }

    /// Retired versions still alive, newest first.
    pub(crate) fn draining(&self) -> Vec<Arc<Version>> {
        self.stats.draining.alive()
    }

    /// How many retired versions are not released yet: each leaves the
    /// count when its last request ends.
    pub fn draining_count(&self) -> usize {
        self.stats.draining.len()
    }
}
