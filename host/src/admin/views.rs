//! The JSON the admin API shows for a project and its versions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use serde::Serialize;
use serde_json::json;

use crate::model::metrics::InstanceUse;
use crate::model::project::Project;
use crate::model::version::Version;

/// A version as the admin API shows it.
#[derive(Serialize)]
struct VersionView {
    version: u64,
    digest: String,
    state: &'static str,
    in_flight: usize,
    idle_instances: usize,
    /// How long its successful requests typically compute (a running mean,
    /// first set by its trial instantiation): a request moves to the slow
    /// lane after 8× this, within 2–20 ms (`front/slow_lane.rs`).
    typical_compute_ms: f64,
}

impl VersionView {
    fn new(version: &Version, state: &'static str) -> Self {
        Self {
            version: version.number,
            digest: version.build.digest.clone(),
            state,
            in_flight: version.in_flight(),
            idle_instances: version.instances.idle(),
            typical_compute_ms: version.compute.get().as_secs_f64() * 1000.0,
        }
    }
}

/// A project as the admin API shows it.
#[derive(Serialize)]
pub(crate) struct ProjectView {
    name: String,
    route: String,
    hosts: Vec<String>,
    strip_prefix: bool,
    allowed_outbound_hosts: Vec<String>,
    entry: String,
    component: Option<String>,
    digest: Option<String>,
    version: Option<u64>,
    state: &'static str,
    size: Option<u64>,
    compile_ms: Option<f64>,
    in_flight: usize,
    last_error: Option<String>,
    last_failure: Option<serde_json::Value>,
    versions: Vec<VersionView>,
    history: Vec<u64>,
    stats: serde_json::Value,
    /// For a component pulled from a registry: `reference` and the manifest
    /// `digest` serving (null until one is).
    #[serde(skip_serializing_if = "Option::is_none")]
    oci: Option<serde_json::Value>,
}

fn ms(gauge: &AtomicU64) -> f64 {
    gauge.load(Ordering::Relaxed) as f64 / 1000.0
}

impl ProjectView {
    pub(crate) fn new(project: &Project) -> Self {
        let current = project.current.load_full();
        // `state_name` takes the project's state lock, which is not
        // re-entrant: ask it before holding that lock below.
        let state_name = project.state_name();
        let draining = project.draining();
        let state = project.state();
        let source = state.source.as_ref();
        let mut versions: Vec<VersionView> = current
            .iter()
            .map(|v| VersionView::new(v, "current"))
            .collect();
        versions.extend(draining.iter().map(|v| VersionView::new(v, "draining")));
        let stats = &project.stats;
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Self {
            name: project.name.to_string(),
            route: source.map_or_else(|| format!("/{}", project.name), |s| s.route.clone()),
            hosts: source.map(|s| s.manifest.hosts.clone()).unwrap_or_default(),
            strip_prefix: source.is_some_and(|s| s.manifest.strip_prefix),
            allowed_outbound_hosts: source
                .map(|s| {
                    s.manifest
                        .outbound
                        .entries()
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            entry: state.entry.display().to_string(),
            component: source.map(|s| s.component.display().to_string()),
            digest: current.as_ref().map(|v| v.build.digest.clone()),
            version: current.as_ref().map(|v| v.number),
            state: state_name,
            size: current.as_ref().map(|v| v.build.size()),
            compile_ms: current
                .as_ref()
                .map(|v| v.build.compile_time.as_secs_f64() * 1000.0),
            in_flight: current.as_ref().map_or(0, |v| v.in_flight()),
            last_error: state
                .error
                .clone()
                .or_else(|| state.last_failure.as_ref().map(|f| f.reason.clone())),
            last_failure: state.last_failure.as_ref().map(|f| {
                json!({
                    "step": f.step,
                    "reason": f.reason,
                    "digest": f.digest,
                    "at": f.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
                })
            }),
            versions,
            history: state.history.iter().map(|(number, _)| *number).collect(),
            oci: source.and_then(|s| s.manifest.oci.as_ref()).map(
                |reference| json!({ "reference": reference.to_string(), "digest": state.pulled }),
            ),
            stats: json!({
                "swaps": count(&stats.swaps),
                "changes": count(&stats.changes),
                "rejected": count(&stats.rejected),
                "rollbacks": count(&stats.rollbacks),
                "forced_drains": count(&stats.forced_drains),
                "released": count(&stats.released),
                "last_compile_ms": ms(&stats.last_compile_us),
                "last_swap_ms": ms(&stats.last_swap_us),
                "max_drain_ms": ms(&stats.max_drain_us),
                "cache_hits": count(&stats.cache_hits),
                "cache_misses": count(&stats.cache_misses),
                "active": count(&stats.active),
                "overloaded": count(&stats.overloaded),
                "pool_exhausted": count(&stats.pool_exhausted),
                "outbound_denied": stats.outbound_denied.count(),
                "guest_log_dropped": stats.guest_log.dropped(),
                "reused": stats.requests.instances(InstanceUse::Reused),
                "reset": stats.requests.instances(InstanceUse::Reset),
                "reset_unscanned": stats.requests.instances(InstanceUse::ResetUnscanned),
                "slowed": count(&stats.slowed),
                "requests": stats.requests.total(),
                // Cumulative counts by upper bound in seconds (null: +Inf),
                // what the dashboard turns into a live p99.
                "latency_buckets": stats
                    .requests
                    .buckets()
                    .into_iter()
                    .map(|(le, count)| json!([le.is_finite().then_some(le), count]))
                    .collect::<Vec<_>>(),
            }),
        }
    }
}
