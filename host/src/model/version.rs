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

use crate::engine::guest_log::LogBudget;
use crate::engine::instances::IdleInstances;
use crate::engine::outbound::{Denials, OutboundPolicy};

use crate::model::build::Build;
use crate::model::compute::TypicalCompute;
use crate::model::events::Events;
use crate::model::metrics::{Rejections, RequestMetrics};

/// The high bit of an [`Admission`] word: set once the version is retired.
/// The rest counts requests, which the instance pool keeps far below it.
const RETIRED: usize = 1 << (usize::BITS - 1);

/// How many requests run on a version, and whether it still admits new ones,
/// in one atomic word.
///
/// Request workers run on every core, so a request may load a version just
/// before a swap retires it. Because the count and the retired flag share a
/// word, a request's increment lands either before [`Admission::retire`]'s
/// `fetch_or`, and the drain waits for it, or after, and the request sees the
/// flag, backs out and goes to the new version. Once a drain has seen zero,
/// no request ever enters again.
#[derive(Debug, Default)]
struct Admission(AtomicUsize);

impl Admission {
    /// Counts one more request; `false` when the version is retired, and
    /// then the caller must [`leave`](Admission::leave) again, and wake the
    /// drain if that was the last: the count it briefly added may be the one
    /// the drain is waiting on.
    fn enter(&self) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst) & RETIRED == 0
    }

    /// Counts one more request even if retired (a candidate's health check,
    /// which nothing can retire while it runs).
    fn force_enter(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts one request off; `true` when it was the last.
    fn leave(&self) -> bool {
        self.0.fetch_sub(1, Ordering::SeqCst) & !RETIRED == 1
    }

    /// Admits no more requests from now on; how many were running.
    fn retire(&self) -> usize {
        self.0.fetch_or(RETIRED, Ordering::SeqCst) & !RETIRED
    }

    fn is_retired(&self) -> bool {
        self.0.load(Ordering::SeqCst) & RETIRED != 0
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst) & !RETIRED
    }
}

/// Takes one of `limit` slots counted by `active`; `false` when all are
/// taken. A single `fetch_add` decides, so however many workers race, no more
/// than `limit` ever hold a slot at once. (Two racing at the limit may both
/// be refused while the one that lost backs out: refusing a request too many
/// is safe, running one too many is not.)
fn take_slot(active: &AtomicU64, limit: u32) -> bool {
    if active.fetch_add(1, Ordering::AcqRel) >= u64::from(limit) {
        active.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

/// Per-project counters, shared by the project and all its versions.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered, by status, their latency (`GET /metrics`), and
    /// the instances they ran on: counted per worker.
    pub(crate) requests: RequestMetrics,
    /// Versions refused, by the step that refused them.
    pub(crate) rejections: Rejections,
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
    /// Requests that computed past their threshold and moved to the slow
    /// lane (`front/slow_lane.rs`), whether or not they then finished.
    pub(crate) slowed: AtomicU64,
    /// Outgoing requests refused by the outbound policy.
    pub(crate) outbound_denied: Arc<Denials>,
    /// What the guest may still log, and the lines it dropped (`log_rate`).
    pub(crate) guest_log: Arc<LogBudget>,
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
    /// The guest's wasi:cli environment, shared by every store made for
    /// the version rather than copied into each.
    pub env: Arc<[(String, String)]>,
    /// How long one request may run.
    pub request_timeout: Duration,
    /// How long requests may keep running on this version once it is retired.
    pub drain_timeout: Duration,
    /// Largest linear memory one instance may grow to, in bytes.
    pub memory: u64,
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Most guest output logged per second, in bytes, across the project.
    pub log_rate: u64,
    /// Most requests the project runs at once, across its versions.
    pub max_concurrency: u32,
    /// Where the guest may send HTTP requests (`allowed_outbound_hosts`).
    pub outbound: Arc<OutboundPolicy>,
    /// Listeners no guest may reach whatever its policy says: the admin API.
    pub forbidden_outbound: Arc<[SocketAddr]>,
    /// How many requests one instance serves with its state kept, one after
    /// another (1: a fresh instance's state for every request).
    pub reuse: u32,
    /// How long an instance kept between requests may sit idle.
    pub idle_timeout: Duration,
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
    /// Requests running on this version, and whether it is retired.
    admission: Admission,
    /// Woken whenever the in-flight count drops to zero.
    idle: Notify,
    /// Set to `true` when the version's drain deadline passes: running
    /// requests are interrupted (epoch callback, or their wait is cancelled).
    stop: watch::Sender<bool>,
    /// When the version stopped taking new requests.
    retired_at: std::sync::OnceLock<Instant>,
    /// Instances kept between requests (`[instances] reuse`); empty, and
    /// closed, once the version is retired.
    pub(crate) instances: Arc<IdleInstances>,
    /// How long this version's requests typically compute: how long one may
    /// compute before the slow lane takes it (`front/slow_lane.rs`).
    pub(crate) compute: TypicalCompute,
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
        let instances = IdleInstances::new(run.reuse, run.idle_timeout);
        Self {
            project,
            number,
            build,
            run,
            instances,
            compute: TypicalCompute::default(),
            stats,
            events,
            admission: Admission::default(),
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
        self.admission.count()
    }

    /// Counts one more request on this version unless it is retired.
    fn enter(&self) -> bool {
        if self.admission.enter() {
            return true;
        }
        self.leave();
        false
    }

    /// Counts one request off, waking the drain when it was the last.
    fn leave(&self) {
        if self.admission.leave() {
            self.idle.notify_waiters();
        }
    }

    /// A receiver that turns `true` when running requests must stop.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Interrupts every request still running on this version.
    pub(crate) fn force_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Marks the version as retired now (only the first call counts): from
    /// here on it admits no new request. Returns how many were running.
    pub(crate) fn retire(&self) -> usize {
        let _ = self.retired_at.set(Instant::now());
        let running = self.admission.retire();
        // Idle instances serve nothing more; dropping them now gives their
        // pool slots back without waiting for the drain.
        self.instances.close();
        running
    }

    /// Whether the version was retired.
    pub(crate) fn is_retired(&self) -> bool {
        self.admission.is_retired()
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

/// Why a request was not admitted to a version.
pub(crate) enum Refused {
    /// The version was retired after the request loaded it: load the
    /// project's current version again.
    Retired,
    /// `max_concurrency` requests of the project are already running.
    Overloaded,
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
    /// Admits a request to `version` unless it is retired, and if fewer than
    /// its project's `max_concurrency` are running: old versions' requests
    /// count too, so a swap cannot double the limit. One atomic add decides
    /// each, so the limit is exact however many workers admit at once.
    pub(crate) fn admit(version: &Arc<Version>) -> Result<Self, Refused> {
        if !version.enter() {
            return Err(Refused::Retired);
        }
        // From here, dropping `admitted` counts the request off again.
        let mut admitted = Self {
            version: version.clone(),
            counted: false,
        };
        let stats = &admitted.version.stats;
        if !take_slot(&stats.active, admitted.version.run.max_concurrency) {
            Stats::bump(&stats.overloaded);
            return Err(Refused::Overloaded);
        }
        admitted.counted = true;
        Ok(admitted)
    }

    /// Marks a candidate version's health check as running on it, outside
    /// `max_concurrency`: a project serving at its limit must still be able
    /// to check, and so deploy, a new version. A candidate is never retired
    /// while it is being checked, so this always counts.
    pub(crate) fn health_check(version: Arc<Version>) -> Self {
        version.admission.force_enter();
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
        self.version.leave();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    use super::{Admission, take_slot};

    /// Threads that keep entering and leaving while the version is retired:
    /// after the drain saw zero, none may get in. Many short rounds, so the
    /// retirement lands at every point of an admission; a check-then-add
    /// protocol let requests in after the drain here.
    #[test]
    fn no_request_enters_once_a_drain_has_seen_zero() {
        for _ in 0..300 {
            let admission = Arc::new(Admission::default());
            let drained = Arc::new(AtomicBool::new(false));
            let late = Arc::new(AtomicUsize::new(0));
            let start = Arc::new(std::sync::Barrier::new(5));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (admission, drained, late, start) = (
                        admission.clone(),
                        drained.clone(),
                        late.clone(),
                        start.clone(),
                    );
                    std::thread::spawn(move || {
                        start.wait();
                        for _ in 0..2_000 {
                            if admission.enter() && drained.load(Ordering::SeqCst) {
                                late.fetch_add(1, Ordering::SeqCst);
                            }
                            admission.leave();
                        }
                    })
                })
                .collect();
            start.wait();
            admission.retire();
            while admission.count() != 0 {
                std::hint::spin_loop();
            }
            drained.store(true, Ordering::SeqCst);
            for thread in threads {
                thread.join().expect("admitting thread");
            }
            assert_eq!(
                late.load(Ordering::SeqCst),
                0,
                "requests entered after the drain"
            );
            assert_eq!(admission.count(), 0);
        }
    }

    /// A request refused because its version retired still counted itself
    /// for a moment. When its back-out is what brings the count to zero, it
    /// must say so, or the drain waiting for zero sleeps to its deadline.
    #[test]
    fn a_refused_request_that_backs_out_last_wakes_the_drain() {
        let admission = Admission::default();
        assert!(admission.enter());
        assert_eq!(admission.retire(), 1);
        // Loaded before the swap, entering after it.
        assert!(!admission.enter());
        assert_eq!(admission.count(), 2);
        assert!(!admission.leave(), "the real request was not the last");
        assert!(
            admission.leave(),
            "the back-out was the last and must say so"
        );
        assert_eq!(admission.count(), 0);
        assert!(admission.is_retired());
    }

    /// However many threads race for a project's slots, no more than the
    /// limit hold one at once, and every slot comes back.
    #[test]
    fn max_concurrency_is_exact_across_threads() {
        const LIMIT: u32 = 3;
        let active = Arc::new(AtomicU64::new(0));
        let holding = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let taken = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (active, holding, most, taken) =
                    (active.clone(), holding.clone(), most.clone(), taken.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if take_slot(&active, LIMIT) {
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            taken.fetch_add(1, Ordering::Relaxed);
                            // Hold it a little, so the count sits at the
                            // limit's edge while others race for it.
                            for _ in 0..50 {
                                std::hint::spin_loop();
                            }
                            holding.fetch_sub(1, Ordering::SeqCst);
                            active.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("racing thread");
        }
        assert!(
            most.load(Ordering::SeqCst) <= u64::from(LIMIT),
            "{most:?} held at once"
        );
        assert!(taken.load(Ordering::Relaxed) > 0);
        assert_eq!(active.load(Ordering::SeqCst), 0);
    }
}
