//! The host-wide defaults a change is made with, and how a project's own
//! settings override them into the settings a version runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::model::discovery::ProjectSource;
use crate::model::version::RunConfig;
use crate::swap::validate::HealthCheck;

/// Host-wide defaults and limits the pipeline applies.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The projects folder.
    pub projects_dir: PathBuf,
    /// Request timeout for projects that set none.
    pub request_timeout: Duration,
    /// Drain timeout for projects that set none.
    pub drain_timeout: Duration,
    /// Health-check timeout for projects that set none.
    pub health_timeout: Duration,
    /// Good builds kept per project for rollback (the current one included).
    pub keep_versions: usize,
    /// Limits for projects that set none.
    pub limits: DefaultLimits,
    /// Most bytes the compile cache may hold; least recently used entries of
    /// versions no longer running are evicted past it.
    pub cache_max_size: u64,
    /// Listeners no guest may connect to, whatever its outbound policy says
    /// (the admin API's address).
    pub forbidden_outbound: Arc<[SocketAddr]>,
}

/// Host-wide limits, applied to every project that does not set its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultLimits {
    /// Largest linear memory per instance, in bytes.
    pub memory: u64,
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Most requests one project runs at once.
    pub max_concurrency: u32,
    /// Most guest output one project logs per second, in bytes.
    pub log_rate: u64,
}

impl Settings {
    /// The version's runtime settings from its project config and host defaults.
    pub(crate) fn run_config(&self, source: &ProjectSource) -> RunConfig {
        let manifest = &source.manifest;
        let defaults = self.limits;
        RunConfig {
            env: manifest.env.clone().into(),
            request_timeout: manifest
                .limits
                .request_timeout
                .unwrap_or(self.request_timeout),
            drain_timeout: manifest.drain_timeout.unwrap_or(self.drain_timeout),
            memory: manifest.limits.memory.unwrap_or(defaults.memory),
            max_body: manifest.limits.max_body.unwrap_or(defaults.max_body),
            log_rate: manifest.limits.log_rate.unwrap_or(defaults.log_rate),
            max_concurrency: manifest
                .limits
                .max_concurrency
                .unwrap_or(defaults.max_concurrency),
            outbound: Arc::new(manifest.outbound.clone()),
            forbidden_outbound: self.forbidden_outbound.clone(),
            reuse: manifest.instances.reuse,
            idle_timeout: manifest.instances.idle_timeout,
        }
    }

    /// The health check a new version of `source` must pass, if it names one.
    pub(crate) fn health_check(&self, source: &ProjectSource) -> Option<HealthCheck> {
        source.manifest.health.clone().map(|path| HealthCheck {
            path,
            timeout: source
                .manifest
                .health_timeout
                .unwrap_or(self.health_timeout),
        })
    }
}
