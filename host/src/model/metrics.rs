//! What the host records for Prometheus (`GET /metrics`, `admin/metrics.rs`):
//! per project, requests by status and how long they took, and refusals by
//! step; host-wide, compiles, the compile cache and swap latency.
//!
//! Recording is cheap enough for the request path: a status count is one
//! relaxed atomic add, a latency one lock-free histogram observation. What is
//! a label is fixed here, and never a version number or a path, which would
//! grow without bound; the per-project series are built from the registry
//! at scrape time, so a removed project's series disappear with it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};

/// Upper bounds, in seconds, of the request latency buckets: from 100 µs
/// (a small Rust guest) to 30 s (the default request timeout).
pub const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Upper bounds, in seconds, of the compile and swap latency buckets: from a
/// cache hit (milliseconds) to an 18 MB Python component compiling on a busy
/// machine (a minute and more).
const CHANGE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The HTTP status codes counted one by one: every code `http` accepts,
/// which is every code a guest can answer with.
const STATUSES: std::ops::Range<u16> = 100..1000;

/// One project's requests: how many ended with each status, and how long
/// each took until its response head was ready.
#[derive(Debug)]
pub struct RequestMetrics {
    /// Index `status - 100`.
    by_status: Box<[AtomicU64]>,
    /// Carries the `project` label itself (a constant label), so the
    /// scrape only has to collect it.
    latency: Option<Histogram>,
}

impl RequestMetrics {
    /// Counters for project `project`.
    pub fn new(project: &str) -> Self {
        let opts = HistogramOpts::new(
            "wasmhost_request_duration_seconds",
            "Time from a request's arrival until its response head is ready, by project.",
        )
        .const_label("project", project)
        .buckets(REQUEST_BUCKETS.to_vec());
        let latency = match Histogram::with_opts(opts) {
            Ok(histogram) => Some(histogram),
            Err(err) => {
                // Only a name Prometheus cannot carry gets here; project
                // names are checked long before (manifest.rs).
                tracing::warn!(project, "no latency histogram for this project: {err}");
                None
            }
        };
        Self {
            by_status: STATUSES.map(|_| AtomicU64::new(0)).collect(),
            latency,
        }
    }

    /// Counts one request answered `status` after `took`.
    pub(crate) fn record(&self, status: u16, took: Duration) {
        if let Some(count) = self
            .by_status
            .get(usize::from(status.wrapping_sub(STATUSES.start)))
        {
            count.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(latency) = &self.latency {
            latency.observe(took.as_secs_f64());
        }
    }

    /// Every status seen so far with its count, in status order.
    pub(crate) fn statuses(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        STATUSES
            .zip(self.by_status.iter())
            .map(|(status, count)| (status, count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
    }

    /// All requests counted so far.
    pub(crate) fn total(&self) -> u64 {
        self.statuses().map(|(_, count)| count).sum()
    }

    /// The latency histogram, for the scrape.
    pub(crate) fn latency(&self) -> Option<&Histogram> {
        self.latency.as_ref()
    }

    /// Cumulative counts per bucket upper bound (seconds), the last one
    /// `+Inf`: what the dashboard turns into a live p99.
    pub(crate) fn buckets(&self) -> Vec<(f64, u64)> {
        use prometheus::core::Collector as _;
        let Some(latency) = &self.latency else {
            return Vec::new();
        };
        let families = latency.collect();
        let Some(metric) = families
            .first()
            .and_then(|family| family.get_metric().first())
        else {
            return Vec::new();
        };
        let histogram = metric.get_histogram();
        let mut buckets: Vec<(f64, u64)> = histogram
            .get_bucket()
            .iter()
            .map(|bucket| (bucket.upper_bound(), bucket.cumulative_count()))
            .collect();
        buckets.push((f64::INFINITY, histogram.get_sample_count()));
        buckets
    }
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
    use super::*;

    #[test]
    fn statuses_are_counted_one_by_one_with_their_latency() {
        let metrics = RequestMetrics::new("app");
        metrics.record(200, Duration::from_micros(50));
        metrics.record(200, Duration::from_millis(3));
        metrics.record(503, Duration::from_micros(10));
        metrics.record(999, Duration::from_micros(10));
        assert_eq!(
            metrics.statuses().collect::<Vec<_>>(),
            [(200, 2), (503, 1), (999, 1)]
        );
        assert_eq!(metrics.total(), 4);
        let buckets = metrics.buckets();
        assert_eq!(buckets.len(), REQUEST_BUCKETS.len() + 1);
        // 50 µs and both 10 µs are under the first bound (100 µs); 3 ms under 5 ms.
        assert_eq!(buckets[0], (0.0001, 3));
        assert_eq!(buckets.last().map(|b| b.1), Some(4));
        let five_ms = buckets.iter().find(|b| b.0 == 0.005).map(|b| b.1);
        assert_eq!(five_ms, Some(4));
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
