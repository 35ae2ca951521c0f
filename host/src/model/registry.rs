//! Every known project, and the routing snapshot built from them.
//!
//! Two levels of atomic swap: the [`Snapshot`] (router + routed projects) is
//! replaced only when routing changes (a project added, removed or
//! re-routed), and each [`Project`] swaps its own current version. A request
//! loads the snapshot once, before its first `.await`, routes, loads the
//! project's current version once and keeps only that `Arc<Version>`.
//!
//! ```no_run
//! # fn example(registry: &wasmhost::model::registry::Registry) {
//! // Correct: one load of each, owned Arcs, no guard held across awaits.
//! let snapshot = registry.snapshot();
//! let version = snapshot
//!     .router
//!     .route(Some("hello.localhost"), "/")
//!     .and_then(|m| snapshot.routed[m.project].current.load_full());
//! drop(snapshot);
//! // ... `version` stays valid across any number of awaits and swaps.
//! # }
//! ```
//!
//! Broken: holding `current.load()` (a `Guard`) across an await pins a slot of
//! arc-swap's debt list for the whole request and can stall writers; and
//! loading the version twice in one request can mix two versions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::model::project::Project;
use crate::model::router::{Router, RouterBuilder};

/// What requests route with: the router and the projects its indices refer to.
#[derive(Default)]
pub struct Snapshot {
    /// Maps requests to indices into `routed`.
    pub router: Router,
    /// The projects the router can return.
    pub routed: Vec<Arc<Project>>,
}

/// All projects, and the current snapshot.
#[derive(Default)]
pub struct Registry {
    snapshot: ArcSwap<Snapshot>,
    /// Every known project by name, failed ones included. Its lock also
    /// serializes snapshot rebuilds, so the last publish reflects every change.
    projects: Mutex<BTreeMap<String, Arc<Project>>>,
    /// Held from a change's route check to its publish, so two changes
    /// cannot both find a route free and then both take it.
    routes: tokio::sync::Mutex<()>,
}

/// A route or host that a change asked for and another project serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    /// What was asked for, e.g. "route `/api`".
    pub(crate) claim: String,
    /// The project serving it.
    pub(crate) holder: String,
}

impl Registry {
    /// The current snapshot. Call once per unit of work and keep the `Arc`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The current snapshot, for one request's routing: a guard, which on
    /// the usual path reads without writing memory another worker reads.
    /// Drop it before any await.
    pub(crate) fn routing(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    fn projects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Project>>> {
        self.projects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The project called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Project>> {
        self.projects().get(name).cloned()
    }

    /// Every project, sorted by name.
    pub(crate) fn all(&self) -> Vec<Arc<Project>> {
        self.projects().values().cloned().collect()
    }

    /// The project called `name`, created by `make` if it is new.
    pub fn get_or_insert(&self, name: &str, make: impl FnOnce() -> Project) -> Arc<Project> {
        self.projects()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    /// Forgets `name` and unroutes it; returns it if it existed.
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<Project>> {
        let removed = self.projects().remove(name);
        self.republish();
        removed
    }

    /// Whether `project` is the one registered under its name: a change that
    /// waited for a project's lock checks this, as the project may have been
    /// removed meanwhile.
    pub(crate) fn holds(&self, project: &Arc<Project>) -> bool {
        held(&self.projects(), project)
    }

    /// Forgets `project` if it is still the one registered under its name.
    pub(crate) fn forget_if_same(&self, project: &Arc<Project>) {
        let mut projects = self.projects();
        if held(&projects, project) {
            projects.remove(project.name.as_str());
        }
    }

    /// Locks route changes until the guard drops: check with [`Self::claimed`],
    /// then swap and publish, under one guard.
    pub(crate) async fn lock_routes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.routes.lock().await
    }

    /// The routed project other than `name` that already serves `route`, one
    /// of `hosts`, or `name.localhost`, by the router's own rules.
    pub(crate) fn claimed(&self, name: &str, route: &str, hosts: &[String]) -> Option<Claimed> {
        let snapshot = self.snapshot();
        let others: Vec<&Arc<Project>> = snapshot
            .routed
            .iter()
            .filter(|project| project.name.as_str() != name)
            .collect();
        let mut builder = RouterBuilder::default();
        for (index, other) in others.iter().enumerate() {
            let state = other.state();
            if let Some(source) = state.routed_by(other.current.load().is_some()) {
                // Routed projects never conflict with each other.
                let _ = builder.add(
                    index,
                    other.name.as_str(),
                    &source.route,
                    &source.manifest.hosts,
                    source.manifest.strip_prefix,
                );
            }
        }
        let conflict = builder.add(others.len(), name, route, hosts, false).err()?;
        Some(Claimed {
            claim: conflict.claim,
            holder: others.get(conflict.holder)?.name.to_string(),
        })
    }

    /// Rebuilds and publishes the snapshot from every project's source and
    /// current version. A project whose route or host is already claimed (by
    /// a project routed before, else by one earlier by name) is not routed;
    /// the conflict becomes its error.
    pub fn republish(&self) {
        let projects = self.projects();
        // Projects routed now claim first, so a route or host never moves
        // off a project that serves it because another one, waiting behind
        // a conflict, sorts before it; the rest follow by name.
        let incumbents: std::collections::HashSet<String> = self
            .snapshot()
            .routed
            .iter()
            .map(|project| project.name.to_string())
            .collect();
        let (first, rest): (Vec<&Arc<Project>>, Vec<&Arc<Project>>) = projects
            .values()
            .partition(|project| incumbents.contains(project.name.as_str()));
        let mut builder = RouterBuilder::default();
        let mut routed: Vec<Arc<Project>> = Vec::new();
        for project in first.into_iter().chain(rest) {
            let mut state = project.state();
            let Some(source) = state.routed_by(project.current.load().is_some()) else {
                continue;
            };
            let added = builder.add(
                routed.len(),
                project.name.as_str(),
                &source.route,
                &source.manifest.hosts,
                source.manifest.strip_prefix,
            );
            match added {
                Ok(()) => {
                    state.error = None;
                    routed.push(project.clone());
                }
                Err(conflict) => {
                    let message = format!(
                        "{} is already claimed by project `{}`",
                        conflict.claim, routed[conflict.holder].name
                    );
                    if state.error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(
                            project = project.name.as_str(),
                            "{}: not routed: {message}",
                            project.name
                        );
                    }
                    state.error = Some(message);
                }
            }
        }
        self.snapshot.store(Arc::new(Snapshot {
            router: builder.build(),
            routed,
        }));
    }
}

/// Whether `project` is the one `projects` holds under its name.
fn held(projects: &BTreeMap<String, Arc<Project>>, project: &Arc<Project>) -> bool {
    projects
        .get(project.name.as_str())
        .is_some_and(|held| Arc::ptr_eq(held, project))
}
