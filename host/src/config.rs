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
    /// Defaults for projects whose wasmhost.toml sets no `[limits]`.
    pub limits: DefaultLimits,
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

/// Host-wide limits, applied to every project that does not set its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultLimits {
    /// Largest linear memory per instance, in bytes.
    pub memory: u64,
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Most requests one project runs at once.
    pub max_concurrency: u32,
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
        if args.memory == 0 {
            bail!("--memory must be more than 0");
        }
        let admin_token = args.admin_token.clone().filter(|token| !token.is_empty());
        if admin_token.is_none() && !args.admin_listen.ip().is_loopback() {
            bail!(
                "--admin-listen {} is not a loopback address: set --admin-token (or WASMHOST_ADMIN_TOKEN) so that only you can deploy",
                args.admin_listen
            );
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
            limits: DefaultLimits {
                memory: args.memory,
                max_body: args.max_body,
                max_concurrency: args.max_concurrency,
            },
            max_deploy_size: args.max_deploy_size,
            admin_token,
            max_compiles: args.max_compiles,
            drain_timeout: args.drain_timeout,
            health_timeout: args.health_timeout,
            keep_versions: args.keep_versions,
            cache_dir: if args.no_cache {
                None
            } else {
                args.cache_dir
                    .clone()
                    .or_else(crate::swap::cache::default_dir)
            },
            watch: (!args.no_watch).then_some(crate::watch::WatchSettings {
                debounce: args.debounce,
                poll: args.poll,
                poll_interval: args.poll_interval,
            }),
        })
    }
}
