//! One servable version of a project and the bookkeeping around it: how many
//! requests run on it, when it must stop (drain deadline), and the project
//! statistics it updates when it is finally released.
//!
//! A [`Version`] is the unit requests hold: every in-flight request keeps an
//! `Arc<Version>` (through `InFlight`), so a retired version lives exactly as
//! long as its last request. Its compiled code is a separate, shared [`Build`],
//! which the project's history may keep for rollback after the version is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use tokio::sync::{Notify, watch};

use crate::engine::outbound::{Denials, OutboundPolicy};

use crate::model::build::Build;
use crate::model::events::Events;

/// Per-project counters, shared by the project and all its versions.
#[derive(Debug, Default)]
pub struct Stats {
    /// Versions that went live.
    pub(crate) swaps: AtomicU64,
    /// File changes the watcher acted on (after debouncing) that changed
    /// bytes or config; self-writes and comment-only edits are not counted.
    pub(crate) changes: AtomicU64,
    /// Versions refused by prepare or validate.
    pub(crate) rejected: AtomicU64,
    /// Rollbacks to an earlier build.
    pub(crate) rollbacks: AtomicU64,
    /// Requests interrupted because their version outlived its drain deadline.
    pub(crate) forced_drains: AtomicU64,
    /// Retired versions whose last request ended and whose memory was freed.
    pub(crate) released: AtomicU64,
    /// Compile time of the last prepared build, in microseconds.
    pub(crate) last_compile_us: AtomicU64,
    /// Time of the last swap itself, in microseconds.
    pub(crate) last_swap_us: AtomicU64,
    /// Longest time from retire to release, in microseconds.
    pub(crate) max_drain_us: AtomicU64,
    /// Builds loaded from the compile cache.
    pub(crate) cache_hits: AtomicU64,
    /// Builds compiled because the cache had no usable entry.
    pub(crate) cache_misses: AtomicU64,
    /// Requests running right now, across all versions: what
    /// `max_concurrency` bounds.
    pub(crate) active: AtomicU64,
    /// Requests answered 503 because `max_concurrency` were already running.
    pub(crate) overloaded: AtomicU64,
    /// Requests answered 503 because the host's instance pool was full.
    pub(crate) pool_exhausted: AtomicU64,
    /// Outgoing requests refused by the outbound policy.
    pub(crate) outbound_denied: Arc<Denials>,
    /// Retired versions not yet released. Kept here, where every version
    /// can reach it, so a version takes itself off when it is released.
    pub(crate) draining: Draining,
}

/// Retired versions that may still have requests running. A version adds
/// itself when retired and removes itself when dropped, so the list never
/// outgrows the versions actually alive, whether or not anyone reads it.
#[derive(Debug, Default)]
pub(crate) struct Draining(std::sync::Mutex<Vec<(u64, std::sync::Weak<Version>)>>);

impl Draining {
    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<(u64, std::sync::Weak<Version>)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a version just retired.
    pub(crate) fn push(&self, version: &Arc<Version>) {
        self.entries()
            .push((version.number, Arc::downgrade(version)));
    }

    /// How many retired versions are not released yet.
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }

    /// The retired versions still alive, newest first.
    pub(crate) fn alive(&self) -> Vec<Arc<Version>> {
        // Upgraded under the lock, dropped by the caller after it: a
        // version's drop takes this lock too.
        let mut alive: Vec<Arc<Version>> = self
            .entries()
            .iter()
            .filter_map(|(_, version)| version.upgrade())
            .collect();
        alive.sort_by_key(|v| std::cmp::Reverse(v.number));
        alive
    }

    fn remove(&self, number: u64) {
        self.entries().retain(|(kept, _)| *kept != number);
    }
}

impl Stats {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores `duration` in microseconds into `gauge`.
    pub(crate) fn set_duration(gauge: &AtomicU64, duration: Duration) {
        gauge.store(duration.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Settings a version runs with, taken from the project's config when it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// The guest's wasi:cli environment.
    pub env: Vec<(String, String)>,
    /// How long one request may run.
    pub request_timeout: Duration,
    /// How long requests may keep running on this version once it is retired.
    pub drain_timeout: Duration,
    /// Largest linear memory one instance may grow to, in bytes.
    pub memory: u64,
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Most requests the project runs at once, across its versions.
    pub max_concurrency: u32,
    /// Where the guest may send HTTP requests (`allowed_outbound_hosts`).
    pub outbound: Arc<OutboundPolicy>,
    /// Listeners no guest may reach whatever its policy says: the admin API.
    pub forbidden_outbound: Arc<[SocketAddr]>,
}

/// A compiled build, with the settings it runs with, that can serve requests.
pub struct Version {
    /// The project's name, shared with every request's log lines.
    pub(crate) project: Arc<str>,
    /// Per-project version number, from 1, never reused.
    pub(crate) number: u64,
    /// The compiled component.
    pub(crate) build: Arc<Build>,
    /// Environment and timeouts.
    pub(crate) run: RunConfig,
    /// Counters of the project this version belongs to.
    stats: Arc<Stats>,
    /// Where `draining` and `released` are announced.
    events: Events,
    in_flight: AtomicUsize,
    /// Woken whenever the in-flight count drops to zero.
    idle: Notify,
    /// Set to `true` when the version's drain deadline passes: running
    /// requests are interrupted (epoch callback, or their wait is cancelled).
    stop: watch::Sender<bool>,
    /// When the version stopped taking new requests.
    retired_at: std::sync::OnceLock<Instant>,
}

impl Version {
    /// A version of `project` numbered `number`, not yet retired.
    pub fn new(
        project: Arc<str>,
        number: u64,
        build: Arc<Build>,
        run: RunConfig,
        stats: Arc<Stats>,
        events: Events,
    ) -> Self {
        Self {
            project,
            number,
            build,
            run,
            stats,
            events,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            stop: watch::Sender::new(false),
            retired_at: std::sync::OnceLock::new(),
        }
    }

    /// The counters of the project this version belongs to.
    pub(crate) fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Requests running on this version right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A receiver that turns `true` when running requests must stop.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Interrupts every request still running on this version.
    pub(crate) fn force_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Marks the version as retired now (only the first call counts).
    pub(crate) fn retire(&self) {
        let _ = self.retired_at.set(Instant::now());
    }

    /// Whether the version was retired.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired_at.get().is_some()
    }

    /// Waits until no request runs on this version, or `deadline` passes.
    /// Returns whether it became idle.
    pub(crate) async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => return self.in_flight() == 0,
            }
        }
    }

    /// Announces lifecycle event `kind` for this version.
    pub(crate) fn announce(&self, kind: &str, fields: serde_json::Value) {
        let mut event = serde_json::json!({ "version": self.number, "digest": self.build.digest });
        if let (Some(event), serde_json::Value::Object(fields)) = (event.as_object_mut(), fields) {
            event.extend(fields);
        }
        self.events.emit(kind, &self.project, event);
    }

    /// Counts one request interrupted by a forced drain.
    pub(crate) fn count_forced_drain(&self) {
        Stats::bump(&self.stats.forced_drains);
    }
}

impl Drop for Version {
    /// The version's last reference is gone: its instance state is freed, and
    /// its compiled code too unless the project's history still holds the build.
    fn drop(&mut self) {
        self.stats.draining.remove(self.number);
        if let Some(retired_at) = self.retired_at.get() {
            let drained = retired_at.elapsed();
            Stats::bump(&self.stats.released);
            self.stats
                .max_drain_us
                .fetch_max(drained.as_micros() as u64, Ordering::Relaxed);
            self.announce(
                "released",
                serde_json::json!({ "drain_ms": drained.as_secs_f64() * 1000.0 }),
            );
            tracing::info!(
                project = &*self.project,
                version = self.number,
                "{}: v{} released after {} ms",
                self.project,
                self.number,
                drained.as_millis()
            );
        }
    }
}

/// Marks one request as running on a version until dropped, and keeps the
/// version alive for as long as the request needs it.
pub(crate) struct InFlight {
    version: Arc<Version>,
    /// Whether this request counts against `max_concurrency` (every
    /// request but a new version's health check).
    counted: bool,
}

impl InFlight {
    /// Counts a request on `version` if fewer than its project's
    /// `max_concurrency` are running (old versions' requests included, so a
    /// swap cannot double the limit); `None` when the project is full.
    pub(crate) fn admit(version: Arc<Version>) -> Option<Self> {
        let limit = u64::from(version.run.max_concurrency);
        let before = version.stats.active.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            version.stats.active.fetch_sub(1, Ordering::AcqRel);
            Stats::bump(&version.stats.overloaded);
            return None;
        }
        version.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Self {
            version,
            counted: true,
        })
    }

    /// Marks a candidate version's health check as running on it, outside
    /// `max_concurrency`: a project serving at its limit must still be able
    /// to check, and so deploy, a new version.
    pub(crate) fn health_check(version: Arc<Version>) -> Self {
        version.in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            version,
            counted: false,
        }
    }

    /// The version this request runs on.
    pub(crate) fn version(&self) -> &Arc<Version> {
        &self.version
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.counted {
            self.version.stats.active.fetch_sub(1, Ordering::AcqRel);
        }
        if self.version.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.version.idle.notify_waiters();
        }
    }
}
