//! Host-wide settings, validated from the command line. Binds nothing and
//! reads no project: that happens in [`crate::serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::cli::ServeArgs;

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
    pub watch: Option<crate::watcher::WatchSettings>,
}

impl Config {
    /// Validates the arguments of `wasmhost serve`.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        if args.request_timeout.is_zero() {
            bail!("--request-timeout must be more than 0");
        }
        if args.poll_interval.is_zero() {
            bail!("--poll-interval must be more than 0");
        }
        if args.keep_versions == 0 {
            bail!("--keep-versions must be at least 1 (the current version)");
        }
        if args.max_compiles == 0 {
            bail!("--max-compiles must be at least 1");
        }
        if args.listen == args.admin_listen && args.listen.port() != 0 {
            bail!(
                "--listen and --admin-listen are both {}: the admin API needs its own address",
                args.listen
            );
        }
        Ok(Self {
            projects_dir: args.dir.clone(),
            listen: args.listen,
            admin_listen: args.admin_listen,
            grace_period: args.grace_period,
            request_timeout: args.request_timeout,
            max_compiles: args.max_compiles,
            drain_timeout: args.drain_timeout,
            health_timeout: args.health_timeout,
            keep_versions: args.keep_versions,
            cache_dir: if args.no_cache {
                None
            } else {
                args.cache_dir.clone().or_else(crate::cache::default_dir)
            },
            watch: (!args.no_watch).then_some(crate::watcher::WatchSettings {
                debounce: args.debounce,
                poll: args.poll,
                poll_interval: args.poll_interval,
            }),
        })
    }
}
