//! The routing snapshot and the versions it points at.
//!
//! A [`Snapshot`] holds the router and every project together, and the
//! [`Registry`] swaps whole snapshots atomically. A request loads the snapshot
//! once, before its first `.await`, and keeps an `Arc` to the one [`Version`]
//! it runs on, so it always sees one consistent version however many swaps
//! happen while it runs.
//!
//! ```no_run
//! # fn example(registry: &wasmhost::registry::Registry) {
//! // Correct: one load per request, an owned Arc, no guard held across awaits.
//! let snapshot = registry.snapshot();
//! let version = snapshot
//!     .router
//!     .route(Some("hello.localhost"), "/")
//!     .and_then(|m| snapshot.projects[m.project].current.clone());
//! drop(snapshot);
//! // ... `version` stays valid across any number of awaits and swaps.
//! # }
//! ```
//!
//! Broken: loading twice per request (once to route, once to fetch the version)
//! can pair the route of one snapshot with the projects of the next.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::discovery::ProjectSource;
use crate::invoke::RequestState;
use crate::manifest::ProjectName;
use crate::router::{Router, RouterBuilder};

/// One compiled, servable version of a project.
pub struct Version {
    /// The project's name, shared with every request's log lines.
    pub project: Arc<str>,
    /// Per-project version number, from 1.
    pub number: u64,
    /// sha256 of the component bytes.
    pub digest: String,
    /// Where the component was read from.
    pub component: PathBuf,
    /// Component size in bytes.
    pub size: u64,
    /// How long compiling and linking took.
    pub compile_time: Duration,
    /// What each request instantiates.
    pub pre: ProxyPre<RequestState>,
    /// The guest's wasi:cli environment.
    pub env: Vec<(String, String)>,
    /// How long one request may run.
    pub request_timeout: Duration,
    /// Requests running on this version right now.
    in_flight: AtomicUsize,
}

impl Version {
    /// Assembles a version; it starts with no request in flight.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        project: Arc<str>,
        number: u64,
        digest: String,
        component: PathBuf,
        size: u64,
        compile_time: Duration,
        pre: ProxyPre<RequestState>,
        env: Vec<(String, String)>,
        request_timeout: Duration,
    ) -> Self {
        Self {
            project,
            number,
            digest,
            component,
            size,
            compile_time,
            pre,
            env,
            request_timeout,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Requests running on this version right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Marks one request as running on a version until dropped, and keeps the
/// version alive for as long as the request needs it.
pub struct InFlight(Arc<Version>);

impl InFlight {
    /// Counts a request on `version`.
    pub fn new(version: Arc<Version>) -> Self {
        version.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(version)
    }

    /// The version this request runs on.
    pub fn version(&self) -> &Arc<Version> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A project as the host knows it: how it is routed, and what serves it.
pub struct Project {
    /// The project's name.
    pub name: ProjectName,
    /// Route prefix.
    pub route: String,
    /// Extra host names.
    pub hosts: Vec<String>,
    /// Whether the route prefix is removed from the guest's path.
    pub strip_prefix: bool,
    /// The folder or file that defines the project.
    pub entry: PathBuf,
    /// The component file, when one was found.
    pub component: Option<PathBuf>,
    /// The version serving requests; `None` when the project failed to load.
    pub current: Option<Arc<Version>>,
    /// Why the project is not serving, or why its last change was refused.
    pub last_error: Option<String>,
}

impl Project {
    /// A project whose source was read; `current` is set once compiled.
    pub fn from_source(source: &ProjectSource) -> Self {
        Self {
            name: source.name.clone(),
            route: source.route.clone(),
            hosts: source.manifest.hosts.clone(),
            strip_prefix: source.manifest.strip_prefix,
            entry: source.entry.clone(),
            component: Some(source.component.clone()),
            current: None,
            last_error: None,
        }
    }

    /// A project that could not be read at all.
    pub fn failed(name: ProjectName, entry: PathBuf, error: String) -> Self {
        Self {
            route: format!("/{name}"),
            name,
            hosts: Vec::new(),
            strip_prefix: false,
            entry,
            component: None,
            current: None,
            last_error: Some(error),
        }
    }

    /// `active` when a version serves it, `failed` otherwise.
    pub fn state(&self) -> &'static str {
        if self.current.is_some() {
            "active"
        } else {
            "failed"
        }
    }
}

/// Routes and projects, published together.
pub struct Snapshot {
    /// Maps requests to indices into `projects`.
    pub router: Router,
    /// Every known project, sorted by name, failed ones included.
    pub projects: Vec<Arc<Project>>,
}

impl Snapshot {
    /// Routes every project that has a version. A project whose route or host
    /// another (earlier by name) already claims is not routed: it loses its
    /// version and records the conflict as its error.
    pub fn build(mut projects: Vec<Project>) -> Self {
        projects.sort_by(|a, b| a.name.cmp(&b.name));
        let mut builder = RouterBuilder::default();
        for index in 0..projects.len() {
            if projects[index].current.is_none() {
                continue;
            }
            let project = &projects[index];
            let added = builder.add(
                index,
                project.name.as_str(),
                &project.route,
                &project.hosts,
                project.strip_prefix,
            );
            if let Err(conflict) = added {
                let holder = projects[conflict.holder].name.clone();
                let project = &mut projects[index];
                project.current = None;
                project.last_error = Some(format!(
                    "{} is already claimed by project `{holder}`",
                    conflict.claim
                ));
            }
        }
        Self {
            router: builder.build(),
            projects: projects.into_iter().map(Arc::new).collect(),
        }
    }

    /// The project called `name`.
    pub fn project(&self, name: &str) -> Option<&Arc<Project>> {
        self.projects.iter().find(|p| p.name.as_str() == name)
    }
}

/// Holds the current snapshot; readers never block writers or each other.
pub struct Registry {
    snapshot: ArcSwap<Snapshot>,
}

impl Registry {
    /// A registry serving `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot. Call once per unit of work and keep the `Arc`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Makes `snapshot` current for every request that starts from now on.
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }
}
