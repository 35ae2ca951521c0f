//! What the host records for Prometheus (`GET /metrics`, `admin/metrics.rs`):
//! per project, requests by status and how long they took, and refusals by
//! step; host-wide, compiles, the compile cache and swap latency.
//!
//! Recording is cheap enough for the request path, and stays cheap on many
//! cores: each request worker counts its project's requests in a tally of
//! its own, on cache lines no other worker writes, and a scrape sums the
//! tallies. What is a label is fixed here, and never a version number or a
//! path, which would grow without bound; the per-project series are built
//! from the registry at scrape time, so a removed project's series disappear
//! with it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::proto::{Bucket, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};

use crate::engine::worker;

/// Upper bounds, in seconds, of the request latency buckets: from 100 µs
/// (a small Rust guest) to 30 s (the default request timeout).
pub const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// [`REQUEST_BUCKETS`] in nanoseconds, so that placing a request compares
/// integers. Rounded to the nearest: no double holds 0.0001 exactly.
const REQUEST_BOUNDS_NS: [u64; REQUEST_BUCKETS.len()] = {
    let mut bounds = [0; REQUEST_BUCKETS.len()];
    let mut index = 0;
    while index < bounds.len() {
        bounds[index] = (REQUEST_BUCKETS[index] * 1e9 + 0.5) as u64;
        index += 1;
    }
    bounds
};

/// The name of the per-project latency histogram.
const LATENCY_NAME: &str = "wasmhost_request_duration_seconds";

/// Upper bounds, in seconds, of the compile and swap latency buckets: from a
/// cache hit (milliseconds) to an 18 MB Python component compiling on a busy
/// machine (a minute and more).
const CHANGE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The HTTP status codes a guest can answer with: every code `http` accepts.
const STATUSES: std::ops::RangeInclusive<u16> = 100..=999;

/// Distinct statuses one worker counts in its own tally. A project answers
/// with a handful; any beyond these go to a shared map.
const STATUS_SLOTS: usize = 16;

/// What a request ran on, when not a fresh instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InstanceUse {
    /// An instance kept, state and all, from an earlier request
    /// (`[instances] reuse`).
    Reused = 0,
    /// An instance reset in place after an earlier request (the default;
    /// `engine/instances.rs`).
    Reset = 1,
    /// A reset in place that put back only the pages the reset before
    /// found written, without scanning memory for more: the request's
    /// worker took no page fault (`engine/faults.rs`).
    ResetUnscanned = 2,
}

/// One project's requests: how many ended with each status, how long each
/// took until its response head was ready, and what instance it ran on.
///
/// Kept in one [`Tally`] per request worker, and one for every other thread
/// (a health check, a request that finished in the slow lane): with one
/// shared set of counters, every request on every core would write the same
/// cache lines, and on a machine of many cores those lines, moving between
/// cores, would cap a project's requests per second (README, "Scaling").
#[derive(Debug)]
pub struct RequestMetrics {
    /// Index 0: threads that are not request workers; `1 + i`: worker `i`.
    tallies: Box<[Tally]>,
    /// Counts of statuses that found no free slot in their tally.
    overflow: Mutex<BTreeMap<u16, u64>>,
}

/// One worker's counts, on cache lines of its own (128 bytes covers
/// adjacent-line prefetching).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Tally {
    /// Statuses with their counts, claimed in order: a slot's status is 0
    /// until a request claims it, and then never changes.
    statuses: [(AtomicU16, AtomicU64); STATUS_SLOTS],
    /// Requests by latency bucket (not cumulative); the last, over every
    /// bound (+Inf).
    latency: [AtomicU64; REQUEST_BUCKETS.len() + 1],
    /// Sum of the latencies, in nanoseconds (wraps after 584 years).
    latency_ns: AtomicU64,
    /// Indexed by [`InstanceUse`].
    instances: [AtomicU64; 3],
}

impl Tally {
    /// Adds one to `status`'s slot; `false` when every slot holds another
    /// status. Two threads adding a new status at once meet at the same
    /// slot: each stops at the first slot that is free or already its own.
    fn count_status(&self, status: u16) -> bool {
        for (slot, count) in &self.statuses {
            let seen = match slot.load(Ordering::Acquire) {
                0 => match slot.compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => status,
                    Err(claimed) => claimed,
                },
                seen => seen,
            };
            if seen == status {
                count.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }
}

impl RequestMetrics {
    /// Zeroed counts, one tally for each request worker there is
    /// ([`worker::count`], set at start-up) and one for other threads.
    pub fn new() -> Self {
        Self::with_tallies(worker::count().saturating_add(1))
    }

    fn with_tallies(count: usize) -> Self {
        Self {
            tallies: (0..count.max(1)).map(|_| Tally::default()).collect(),
            overflow: Mutex::default(),
        }
    }

    /// The calling thread's tally.
    fn tally(&self) -> &Tally {
        let index = worker::current().map_or(0, |worker| worker.saturating_add(1));
        &self.tallies[index % self.tallies.len()]
    }

    /// Counts one request answered `status` after `took`.
    pub(crate) fn record(&self, status: u16, took: Duration) {
        let tally = self.tally();
        if STATUSES.contains(&status) && !tally.count_status(status) {
            let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
            *overflow.entry(status).or_default() += 1;
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = REQUEST_BOUNDS_NS.partition_point(|&bound| bound < nanos);
        tally.latency[bucket].fetch_add(1, Ordering::Relaxed);
        tally.latency_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts one request that ran on an instance of kind `used`.
    pub(crate) fn count_instance(&self, used: InstanceUse) {
        self.tally().instances[used as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests that ran on an instance of kind `used`, so far.
    pub(crate) fn instances(&self, used: InstanceUse) -> u64 {
        self.tallies
            .iter()
            .map(|tally| tally.instances[used as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// Every status seen so far with its count, in status order.
    pub(crate) fn statuses(&self) -> Vec<(u16, u64)> {
        let mut all = self
            .overflow
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (slot, count) in self.tallies.iter().flat_map(|tally| &tally.statuses) {
            match slot.load(Ordering::Acquire) {
                0 => {}
                status => *all.entry(status).or_default() += count.load(Ordering::Relaxed),
            }
        }
        all.into_iter().filter(|(_, count)| *count > 0).collect()
    }

    /// All requests counted so far.
    pub(crate) fn total(&self) -> u64 {
        self.statuses().iter().map(|(_, count)| count).sum()
    }

    /// Cumulative counts per bucket upper bound (seconds), the last one
    /// `+Inf`: what the dashboard turns into a live p99.
    pub(crate) fn buckets(&self) -> Vec<(f64, u64)> {
        let mut cumulative = 0;
        REQUEST_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(index, bound)| {
                cumulative += self
                    .tallies
                    .iter()
                    .map(|tally| tally.latency[index].load(Ordering::Relaxed))
                    .sum::<u64>();
                (bound, cumulative)
            })
            .collect()
    }

    /// The latency histogram of project `project`, as one series of the
    /// family [`latency_family`] makes. Read while workers count, its sum
    /// may miss a request its buckets have (each is one add of its own);
    /// its count is the buckets' total, so those two always agree.
    fn latency_metric(&self, project: &str) -> Metric {
        let buckets = self.buckets();
        let mut histogram = prometheus::proto::Histogram::default();
        histogram.set_sample_count(buckets.last().map_or(0, |(_, count)| *count));
        let nanos = self
            .tallies
            .iter()
            .map(|tally| tally.latency_ns.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add);
        histogram.set_sample_sum(Duration::from_nanos(nanos).as_secs_f64());
        histogram.set_bucket(
            buckets
                .iter()
                .filter(|(bound, _)| bound.is_finite())
                .map(|&(bound, count)| {
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(bound);
                    bucket.set_cumulative_count(count);
                    bucket
                })
                .collect(),
        );
        let mut label = LabelPair::default();
        label.set_name("project".into());
        label.set_value(project.into());
        let mut metric = Metric::from_label(vec![label]);
        metric.set_histogram(histogram);
        metric
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-project latency histograms, one series per project, for the
/// scrape: the workers' tallies summed. `None` without projects: the text
/// encoder refuses a family with no series (`Registry::gather` leaves such
/// families out for the same reason).
pub(crate) fn latency_family<'a>(
    projects: impl IntoIterator<Item = (&'a str, &'a RequestMetrics)>,
) -> Option<MetricFamily> {
    let metrics: Vec<Metric> = projects
        .into_iter()
        .map(|(project, metrics)| metrics.latency_metric(project))
        .collect();
    if metrics.is_empty() {
        return None;
    }
    let mut family = MetricFamily::default();
    family.set_name(LATENCY_NAME.into());
    family.set_help(
        "Time from a request's arrival until its response head is ready, by project.".into(),
    );
    family.set_field_type(MetricType::HISTOGRAM);
    family.set_metric(metrics);
    Some(family)
}

/// Refused candidates of one project, by the step that refused them.
#[derive(Debug, Default)]
pub struct Rejections(Mutex<Vec<(&'static str, u64)>>);

impl Rejections {
    /// The steps a change can be refused at, shown at 0 until one is, so a
    /// rate over them works from the first scrape.
    pub const STEPS: [&'static str; 6] =
        ["read", "registry", "pull", "route", "prepare", "validate"];

    /// Counts one refusal at `step`.
    pub(crate) fn count(&self, step: &'static str) {
        let mut steps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match steps.iter_mut().find(|(seen, _)| *seen == step) {
            Some((_, count)) => *count += 1,
            None => steps.push((step, 1)),
        }
    }

    /// Every known step and every step seen, with its count.
    pub(crate) fn by_step(&self) -> Vec<(&'static str, u64)> {
        let steps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(&'static str, u64)> = Self::STEPS
            .iter()
            .map(|step| {
                let count = steps.iter().find(|(seen, _)| seen == step);
                (*step, count.map_or(0, |(_, count)| *count))
            })
            .collect();
        all.extend(steps.iter().filter(|(seen, _)| !Self::STEPS.contains(seen)));
        all
    }
}

/// Host-wide measurements of the swap pipeline. Kept apart from the
/// projects' stats so totals never fall when a project is removed.
#[derive(Clone)]
pub struct HostMetrics {
    /// Time to compile a component (cache misses only).
    pub(crate) compile_duration: Histogram,
    /// Builds loaded from the compile cache.
    pub(crate) cache_hits: IntCounter,
    /// Builds compiled because the cache had none.
    pub(crate) cache_misses: IntCounter,
    /// From the pipeline taking a change to the new version serving.
    pub(crate) swap_latency: Histogram,
    /// Instance slots in the pool (`--max-instances`), set by `serve`.
    pub(crate) instances_capacity: IntGauge,
}

impl Default for HostMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HostMetrics {
    /// Empty histograms and zeroed counters.
    pub fn new() -> Self {
        // Constant names and buckets, checked by the test below: these
        // cannot fail at run time.
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(CHANGE_BUCKETS.to_vec()))
                .expect("constant histogram options are valid")
        };
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).expect("constant counter options are valid")
        };
        Self {
            compile_duration: histogram(
                "wasmhost_compile_duration_seconds",
                "Time to compile a component, cache misses only.",
            ),
            cache_hits: counter(
                "wasmhost_compile_cache_hits_total",
                "Builds loaded from the compile cache (builds kept in memory for rollback count as neither hit nor miss).",
            ),
            cache_misses: counter(
                "wasmhost_compile_cache_misses_total",
                "Builds compiled because the compile cache had none.",
            ),
            swap_latency: histogram(
                "wasmhost_swap_latency_seconds",
                "Time from the pipeline taking a change (start-up load, file change after debounce, deploy, reload, rollback; after reading it) until the new version serves.",
            ),
            instances_capacity: IntGauge::new(
                "wasmhost_instances_capacity",
                "Instance slots in the pool (--max-instances): the most guest instances alive at once.",
            )
            .expect("constant gauge options are valid"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn statuses_are_counted_one_by_one_with_their_latency() {
        let metrics = RequestMetrics::new();
        metrics.record(200, Duration::from_micros(50));
        metrics.record(200, Duration::from_millis(3));
        metrics.record(503, Duration::from_micros(10));
        metrics.record(999, Duration::from_micros(10));
        // Exactly on a bound counts in that bucket, as in `prometheus`.
        metrics.record(200, Duration::from_micros(100));
        assert_eq!(metrics.statuses(), [(200, 3), (503, 1), (999, 1)]);
        assert_eq!(metrics.total(), 5);
        let buckets = metrics.buckets();
        assert_eq!(buckets.len(), REQUEST_BUCKETS.len() + 1);
        // 50, 100 and both 10 µs are at most the first bound (100 µs); 3 ms under 5 ms.
        assert_eq!(buckets[0], (0.0001, 4));
        assert_eq!(buckets.last().map(|b| b.1), Some(5));
        let under_5ms = buckets.iter().find(|b| b.0 == 0.005).map(|b| b.1);
        assert_eq!(under_5ms, Some(5));
        let under_2500us = buckets.iter().find(|b| b.0 == 0.0025).map(|b| b.1);
        assert_eq!(under_2500us, Some(4));
    }

    #[test]
    fn the_bounds_in_nanoseconds_are_the_bounds_in_seconds() {
        for (ns, seconds) in REQUEST_BOUNDS_NS.iter().zip(REQUEST_BUCKETS) {
            assert_eq!(*ns as f64 / 1e9, *seconds, "{ns} ns");
        }
    }

    #[test]
    fn each_worker_counts_in_its_own_tally_and_reads_sum_them() {
        let metrics = Arc::new(RequestMetrics::with_tallies(4));
        let threads: Vec<_> = (0..3)
            .map(|index| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    crate::engine::worker::become_worker(index);
                    for _ in 0..1000 {
                        metrics.record(200, Duration::from_millis(1));
                        metrics.count_instance(InstanceUse::Reset);
                    }
                    metrics.record(404, Duration::from_secs(60));
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        metrics.record(500, Duration::from_micros(1));
        metrics.count_instance(InstanceUse::Reused);
        // Each worker wrote only its own tally; the main thread, the shared one.
        for (index, tally) in metrics.tallies.iter().enumerate() {
            let own = tally.instances[InstanceUse::Reset as usize].load(Ordering::Relaxed);
            assert_eq!(own, if index == 0 { 0 } else { 1000 }, "tally {index}");
        }
        assert_eq!(metrics.statuses(), [(200, 3000), (404, 3), (500, 1)]);
        assert_eq!(metrics.instances(InstanceUse::Reset), 3000);
        assert_eq!(metrics.instances(InstanceUse::Reused), 1);
        assert_eq!(metrics.instances(InstanceUse::ResetUnscanned), 0);
        let buckets = metrics.buckets();
        // 60 s is over every bound: only +Inf counts it.
        assert_eq!(buckets[buckets.len() - 2].1, 3001);
        assert_eq!(buckets.last().map(|b| b.1), Some(3004));
    }

    #[test]
    fn statuses_beyond_a_tallys_slots_are_all_counted() {
        let metrics = RequestMetrics::new();
        let statuses: Vec<u16> = (200..200 + 3 * STATUS_SLOTS as u16).collect();
        for status in &statuses {
            metrics.record(*status, Duration::ZERO);
            metrics.record(*status, Duration::ZERO);
        }
        let expected: Vec<(u16, u64)> = statuses.iter().map(|status| (*status, 2)).collect();
        assert_eq!(metrics.statuses(), expected);
        assert_eq!(metrics.total(), 2 * statuses.len() as u64);
    }

    #[test]
    fn threads_adding_new_statuses_at_once_never_split_one() {
        // Many tries of four threads claiming the same new status at the
        // same instant, on the shared tally: a claim that read the slot and
        // then wrote it would, now and then, give one status two slots.
        for _ in 0..2000 {
            let metrics = Arc::new(RequestMetrics::with_tallies(1));
            let start = Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4u16)
                .map(|thread| {
                    let (metrics, start) = (metrics.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        metrics.record(201, Duration::ZERO);
                        metrics.record(300 + thread, Duration::ZERO);
                        metrics.record(201, Duration::ZERO);
                    })
                })
                .collect();
            for thread in threads {
                thread.join().expect("no panic");
            }
            let slots: Vec<u16> = metrics.tallies[0]
                .statuses
                .iter()
                .map(|(slot, _)| slot.load(Ordering::Relaxed))
                .filter(|status| *status != 0)
                .collect();
            assert_eq!(slots.iter().filter(|&&s| s == 201).count(), 1, "{slots:?}");
            assert_eq!(slots.len(), 5, "{slots:?}");
            assert_eq!(
                metrics.statuses(),
                [(201, 8), (300, 1), (301, 1), (302, 1), (303, 1)]
            );
        }
    }

    #[test]
    fn the_latency_family_is_one_histogram_per_project_in_the_text_format() {
        let app = RequestMetrics::new();
        app.record(200, Duration::from_micros(300));
        app.record(200, Duration::from_millis(20));
        let idle = RequestMetrics::new();
        let family = latency_family([("app", &app), ("idle", &idle)]).expect("two projects");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&[family])
            .expect("a histogram encodes");
        assert!(latency_family([]).is_none(), "no projects: no family");
        for line in [
            "# TYPE wasmhost_request_duration_seconds histogram",
            "wasmhost_request_duration_seconds_bucket{project=\"app\",le=\"0.00025\"} 0",
            "wasmhost_request_duration_seconds_bucket{project=\"app\",le=\"0.0005\"} 1",
            "wasmhost_request_duration_seconds_bucket{project=\"app\",le=\"0.025\"} 2",
            "wasmhost_request_duration_seconds_bucket{project=\"app\",le=\"+Inf\"} 2",
            "wasmhost_request_duration_seconds_sum{project=\"app\"} 0.0203",
            "wasmhost_request_duration_seconds_count{project=\"app\"} 2",
            "wasmhost_request_duration_seconds_count{project=\"idle\"} 0",
        ] {
            assert!(
                text.lines().any(|seen| seen == line),
                "no {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn every_known_step_shows_and_unknown_ones_are_kept() {
        let rejections = Rejections::default();
        rejections.count("validate");
        rejections.count("validate");
        rejections.count("mystery");
        assert_eq!(
            rejections.by_step(),
            [
                ("read", 0),
                ("registry", 0),
                ("pull", 0),
                ("route", 0),
                ("prepare", 0),
                ("validate", 2),
                ("mystery", 1)
            ]
        );
    }

    #[test]
    fn host_metrics_build() {
        let metrics = HostMetrics::new();
        metrics.cache_hits.inc();
        assert_eq!(metrics.cache_hits.get(), 1);
    }
}
