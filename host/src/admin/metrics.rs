//! `GET /metrics`: Prometheus text exposition (format 0.0.4, which
//! `promtool check metrics` lints), encoded by the `prometheus` crate.
//!
//! The per-project series are built at each scrape from the registry's
//! projects, so a removed project's series are gone from the next scrape,
//! and no label is ever a version number or a path. Host-wide histograms and
//! counters (`model/metrics.rs`) and the standard `process_*` metrics are
//! added as they are.

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::model::metrics::latency_family;
use crate::model::version::Stats;
use crate::swap::pipeline::Pipeline;

/// The content type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A per-project counter or gauge family, and how to read its value.
type Reading = fn(&Stats) -> u64;

/// Counters with only the `project` label, read from the project's stats.
const PROJECT_COUNTERS: [(&str, &str, Reading); 5] = [
    (
        "wasmhost_swaps_total",
        "Versions that went live, by project.",
        |s| load(&s.swaps),
    ),
    (
        "wasmhost_rollbacks_total",
        "Rollbacks to an earlier build, by project.",
        |s| load(&s.rollbacks),
    ),
    (
        "wasmhost_forced_drains_total",
        "Requests interrupted because their version outlived its drain deadline, by project.",
        |s| load(&s.forced_drains),
    ),
    (
        "wasmhost_overloaded_total",
        "Requests answered 503 because the project's max_concurrency were already running, by project.",
        |s| load(&s.overloaded),
    ),
    (
        "wasmhost_guest_log_dropped_total",
        "Lines of guest output dropped because the project was over its log_rate, by project.",
        |s| s.guest_log.dropped(),
    ),
];

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

/// Everything `GET /metrics` shows, in the text format.
pub(crate) fn scrape(pipeline: &Pipeline) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "wasmhost_requests_total",
            "Requests answered by a project's versions (or refused for one), by project and status code.",
        ),
        &["project", "code"],
    )?;
    let in_flight = gauge_vec(
        "wasmhost_requests_in_flight",
        "Requests running right now, by project, across its versions.",
    )?;
    let version = gauge_vec(
        "wasmhost_project_version",
        "Number of the version serving the project (absent while none serves).",
    )?;
    let up = gauge_vec(
        "wasmhost_project_up",
        "1 when a version of the project serves, 0 when none does.",
    )?;
    let rejected = IntCounterVec::new(
        Opts::new(
            "wasmhost_rejected_total",
            "Versions refused before going live, by project and the step that refused them.",
        ),
        &["project", "step"],
    )?;
    let counters = PROJECT_COUNTERS
        .iter()
        .map(|(name, help, read)| {
            Ok((
                IntCounterVec::new(Opts::new(*name, *help), &["project"])?,
                read,
            ))
        })
        .collect::<Result<Vec<_>, prometheus::Error>>()?;

    let projects = pipeline.registry().all();
    for project in &projects {
        let name = project.name.as_str();
        let stats = &project.stats;
        for (code, count) in stats.requests.statuses() {
            requests
                .with_label_values(&[name, &code.to_string()])
                .inc_by(count);
        }
        in_flight
            .with_label_values(&[name])
            .set(load(&stats.active) as i64);
        let current = project.current.load_full();
        up.with_label_values(&[name])
            .set(i64::from(current.is_some()));
        if let Some(current) = current {
            version
                .with_label_values(&[name])
                .set(current.number as i64);
        }
        for (step, count) in stats.rejections.by_step() {
            rejected.with_label_values(&[name, step]).inc_by(count);
        }
        for (family, read) in &counters {
            family.with_label_values(&[name]).inc_by(read(stats));
        }
    }

    let host = pipeline.metrics();
    let instances = IntGauge::new(
        "wasmhost_instances_in_use",
        "Guest instances alive in the instance pool (running a request, or kept between requests).",
    )?;
    if let Some(pool) = pipeline.engine().pooling_allocator_metrics() {
        instances.set(pool.component_instances() as i64);
    }
    let collectors: Vec<Box<dyn Collector>> = vec![
        Box::new(requests),
        Box::new(in_flight),
        Box::new(version),
        Box::new(up),
        Box::new(rejected),
        Box::new(instances),
        Box::new(host.instances_capacity.clone()),
        Box::new(host.compile_duration.clone()),
        Box::new(host.cache_hits.clone()),
        Box::new(host.cache_misses.clone()),
        Box::new(host.swap_latency.clone()),
        Box::new(prometheus::process_collector::ProcessCollector::for_self()),
    ];
    for collector in collectors.into_iter().chain(
        counters
            .into_iter()
            .map(|(family, _)| Box::new(family) as Box<dyn Collector>),
    ) {
        registry.register(collector)?;
    }
    // The latency histograms are summed from the workers' tallies here,
    // not kept as `prometheus` histograms every worker would write.
    let mut families = registry.gather();
    let latency = latency_family(
        projects
            .iter()
            .map(|project| (project.name.as_str(), &project.stats.requests)),
    );
    if let Some(latency) = latency {
        let at = families.partition_point(|family| family.name() < latency.name());
        families.insert(at, latency);
    }
    TextEncoder::new().encode_to_string(&families)
}

fn gauge_vec(name: &str, help: &str) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), &["project"])
}
