//! Host-wide settings, validated from the command line (`cli/args.rs`).
//! Binds nothing and reads no project: that happens in [`crate::serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `wasmhost serve` needs to know before it starts.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// The folder whose entries are projects.
    pub(crate) projects_dir: PathBuf,
    /// Where project traffic is served.
    pub(crate) listen: SocketAddr,
    /// Where the admin API is served.
    pub(crate) admin_listen: SocketAddr,
    /// Request worker threads serving project traffic.
    pub(crate) workers: usize,
    /// Whether each worker is pinned to a CPU of its own, when the process
    /// may use exactly as many CPUs as there are workers.
    pub(crate) pin_workers: bool,
    /// How long in-flight requests may run on after a shutdown signal.
    pub(crate) grace_period: Duration,
    /// Request timeout for projects that do not set `limits.request_timeout`.
    pub(crate) request_timeout: Duration,
    /// Defaults for projects whose wasmhost.toml sets no `[limits]`.
    pub(crate) limits: crate::swap::settings::DefaultLimits,
    /// Header and idle timeouts and the connection cap, for both listeners.
    pub(crate) connections: crate::front::connection::ConnectionLimits,
    /// Instance slots in the pool: the most requests running at once.
    pub(crate) max_instances: u32,
    /// Largest upload the admin API accepts, in bytes.
    pub(crate) max_deploy_size: u64,
    /// The bearer token the admin API requires; `None` only on loopback.
    pub(crate) admin_token: Option<String>,
    /// Most components compiled at once.
    pub(crate) max_compiles: usize,
    /// How long a compile uses idle CPU only before it is raised to the default priority.
    pub(crate) compile_patience: Duration,
    /// Drain timeout for projects that do not set `drain_timeout`.
    pub(crate) drain_timeout: Duration,
    /// Health-check timeout for projects that do not set `health_timeout`.
    pub(crate) health_timeout: Duration,
    /// Good builds kept per project for rollback, the current one included.
    pub(crate) keep_versions: usize,
    /// Most bytes the compile cache may hold.
    pub(crate) cache_max_size: u64,
    /// Root of the compile cache; `None` when caching is off.
    pub(crate) cache_dir: Option<PathBuf>,
    /// How log lines are written (`--log-format`), for the lines written
    /// past the log filter (`telemetry::announce`).
    pub(crate) log_format: crate::telemetry::LogFormat,
    /// How often tagged `oci://` components are checked for a new digest.
    pub(crate) registry_poll: Duration,
    /// Registry hosts that may be reached over plain HTTP besides loopback.
    pub(crate) insecure_registries: Vec<String>,
    /// What the request path records: metrics, access log lines.
    pub(crate) recording: crate::front::handler::Recording,
    /// How to watch the projects folder; `None` when not watching.
    pub(crate) watch: Option<crate::watch::WatchSettings>,
}
