//! Host-wide settings, validated from the command line (`cli/args.rs`).
//! Binds nothing and reads no project: that happens in [`crate::serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `wasmhost serve` needs to know before it starts.
#[derive(Clone, Debug)]
pub struct Config {
    /// The folder whose entries are projects.
    pub projects_dir: PathBuf,
    /// Where project traffic is served.
    pub listen: SocketAddr,
    /// Where the admin API is served.
    pub admin_listen: SocketAddr,
    /// How long in-flight requests may run on after a shutdown signal.
    pub grace_period: Duration,
    /// Request timeout for projects that do not set `limits.request_timeout`.
    pub request_timeout: Duration,
    /// Defaults for projects whose wasmhost.toml sets no `[limits]`.
    pub limits: crate::swap::settings::DefaultLimits,
    /// Largest upload the admin API accepts, in bytes.
    pub max_deploy_size: u64,
    /// The bearer token the admin API requires; `None` only on loopback.
    pub admin_token: Option<String>,
    /// Most components compiled at once.
    pub max_compiles: usize,
    /// Drain timeout for projects that do not set `drain_timeout`.
    pub drain_timeout: Duration,
    /// Health-check timeout for projects that do not set `health_timeout`.
    pub health_timeout: Duration,
    /// Good builds kept per project for rollback, the current one included.
    pub keep_versions: usize,
    /// Root of the compile cache; `None` when caching is off.
    pub cache_dir: Option<PathBuf>,
    /// How to watch the projects folder; `None` when not watching.
    pub watch: Option<crate::watch::WatchSettings>,
}
