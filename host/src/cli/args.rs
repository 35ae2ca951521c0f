//! The command line: clap types for every command, with the help text each
//! argument shows, and the validation of `serve`'s into a [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::front::connection::ConnectionLimits;
use crate::telemetry::LogFormat;
use crate::units::{parse_duration, parse_size};

/// Serve a folder of WebAssembly HTTP components (wasi:http/proxy) from one host.
#[derive(Parser, Debug)]
#[command(name = "wasmhost", version, about)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,

    /// How log lines are written to stderr: `text` for people, `json` for
    /// log collectors (one object per line; `project`, `version` and every
    /// field of the event are top-level keys).
    #[arg(long, global = true, env = "WASMHOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// wasmhost's commands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Serve every project in a folder over HTTP.
    Serve(Box<ServeArgs>),
    /// Upload a component to a running host and wait until it is live or rejected.
    Deploy(DeployArgs),
    /// Show every project of a running host.
    Status(AdminArgs),
    /// Re-read a project's config and component from disk.
    Reload(ProjectArgs),
    /// Go back to a project's previous good version.
    Rollback(ProjectArgs),
    /// Unroute a project, drain it and delete it from disk.
    Rm(ProjectArgs),
    /// Publish a component to an OCI registry, in the Wasm artifact layout.
    Push(PushArgs),
}

/// Arguments of `wasmhost push`.
#[derive(Args, Debug, Clone)]
pub(crate) struct PushArgs {
    /// The component (.wasm) to publish.
    pub(crate) path: PathBuf,
    /// Where: `oci://REGISTRY/REPOSITORY:TAG`.
    pub(crate) reference: String,
    /// A registry host that may be reached over plain HTTP (loopback
    /// registries always may). Repeat for more.
    #[arg(long, env = "WASMHOST_INSECURE_REGISTRY", value_delimiter = ',')]
    pub(crate) insecure_registry: Vec<String>,
}

/// Where the running host's admin API is.
#[derive(Args, Debug, Clone)]
pub(crate) struct AdminArgs {
    /// URL of the admin API.
    #[arg(long, env = "WASMHOST_ADMIN", default_value = "http://127.0.0.1:8081")]
    pub(crate) admin: String,
    /// Token for an admin API started with --admin-token.
    #[arg(long, env = "WASMHOST_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,
    /// File whose first line is the admin token, so the token does not show
    /// in `ps` or the environment.
    #[arg(
        long,
        env = "WASMHOST_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub(crate) admin_token_file: Option<PathBuf>,
}

impl AdminArgs {
    /// The token to send, from --admin-token or --admin-token-file.
    pub(crate) fn token(&self) -> anyhow::Result<Option<String>> {
        admin_token(
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
        )
    }
}

/// The admin token given inline or in a file; an empty one counts as none
/// inline, and is an error in a file (a file is there to hold a token).
fn admin_token(inline: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(file) = file else {
        return Ok(inline.filter(|token| !token.is_empty()).map(str::to_string));
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("failed to read admin token file {}", file.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        bail!("admin token file {} is empty", file.display());
    }
    Ok(Some(token.to_string()))
}

/// A command on one project.
#[derive(Args, Debug, Clone)]
pub(crate) struct ProjectArgs {
    /// The project's name.
    pub(crate) name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub(crate) admin: AdminArgs,
}

/// Arguments of `wasmhost deploy`.
#[derive(Args, Debug, Clone)]
pub(crate) struct DeployArgs {
    /// The project's name (created if new).
    pub(crate) name: String,
    /// The component (.wasm) to deploy.
    pub(crate) path: PathBuf,
    /// A wasmhost.toml to deploy with it, replacing the project's.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub(crate) admin: AdminArgs,
}

/// Arguments of `wasmhost serve`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    /// Folder of projects: `NAME/` folders holding one .wasm (or a
    /// wasmhost.toml naming it) and `NAME.wasm` files.
    #[arg(default_value = "./projects")]
    pub(crate) dir: PathBuf,

    /// Address (IP:PORT) for project traffic. Port 0 picks a free port.
    #[arg(long, env = "WASMHOST_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// Address (IP:PORT) for the admin API. Port 0 picks a free port.
    #[arg(long, env = "WASMHOST_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub(crate) admin_listen: SocketAddr,

    /// Request worker threads, each serving its own connections [default:
    /// the CPUs this process may use, cgroup quota included].
    #[arg(long, env = "WASMHOST_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) workers: Option<u16>,

    /// Pin each request worker to a CPU of its own, when the process may use
    /// exactly as many CPUs as there are workers: work under SCHED_IDLE
    /// (compiles, the slow lanes) then never keeps a worker waiting behind
    /// another on one core
    #[arg(long, env = "WASMHOST_PIN_WORKERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) pin_workers: bool,

    /// After Ctrl-C or SIGTERM, how long in-flight requests may take to
    /// finish before their connections are cut (e.g. 500ms, 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) grace_period: Duration,

    /// Longest a request head may take to arrive, from its first byte; a
    /// slower client's connection is closed (protects against slowloris).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) header_timeout: Duration,

    /// Longest a keep-alive connection may sit with no request running and
    /// no bytes moving before it is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) idle_timeout: Duration,

    /// Most connections served at once on each listener, all request
    /// workers together; past it, each worker holds at most one accepted
    /// connection until a slot frees, and new ones wait in the kernel's
    /// listen backlog.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,

    /// Request timeout for projects whose wasmhost.toml sets none; a request
    /// running longer is interrupted and answered 504.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) request_timeout: Duration,

    /// Largest linear memory one instance may grow to, for projects whose
    /// wasmhost.toml sets no `limits.memory`; growing past it traps (500).
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub(crate) memory: u64,

    /// Largest request body accepted, for projects whose wasmhost.toml sets
    /// no `limits.max_body`; a bigger one is answered 413.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub(crate) max_body: u64,

    /// Most requests one project runs at once, for projects whose
    /// wasmhost.toml sets no `limits.max_concurrency`; more are answered 503
    /// with Retry-After.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_concurrency: u32,

    /// Most guest output (stdout and stderr) one project may log per
    /// second, for projects whose wasmhost.toml sets no `limits.log_rate`;
    /// lines past it are dropped and counted
    /// (`wasmhost_guest_log_dropped_total`).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub(crate) guest_log_rate: u64,

    /// Instance slots in the pool: the most requests running at once across
    /// all projects (503 with Retry-After beyond). Guest memory is bounded by
    /// this times --memory (or the projects' own `limits.memory`).
    #[arg(long, default_value_t = crate::engine::DEFAULT_INSTANCES, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_instances: u32,

    /// Largest component or deploy upload the admin API accepts (413 beyond).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub(crate) max_deploy_size: u64,

    /// Token the admin API requires as `Authorization: Bearer TOKEN`.
    /// Required when --admin-listen is not a loopback address.
    #[arg(long, env = "WASMHOST_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,

    /// File whose first line is the admin token (instead of --admin-token),
    /// so the token does not show in `ps` or the environment.
    #[arg(
        long,
        env = "WASMHOST_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub(crate) admin_token_file: Option<PathBuf>,

    /// Most components compiled at the same time. Compiles run off the
    /// request path; this bounds how many cores they can take from it.
    #[arg(long, default_value_t = 1)]
    pub(crate) max_compiles: usize,

    /// Compiles run on idle CPU only (`SCHED_IDLE`); every this long, a
    /// compile that got less than a twentieth of a core over that time is
    /// raised to the default priority, taking a fair share of the CPU from
    /// requests until it ends (0s: raised at once). Raising needs
    /// CAP_SYS_NICE; without it compiles run at nice 19 throughout
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) compile_patience: Duration,

    /// How long requests may keep running on a replaced version before they
    /// are interrupted (503), for projects whose wasmhost.toml sets none.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) drain_timeout: Duration,

    /// How long a new version's health check (wasmhost.toml `health`) may
    /// take, for projects that set no `health_timeout`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) health_timeout: Duration,

    /// Good versions kept compiled per project for instant rollback, the
    /// current one included.
    #[arg(long, default_value_t = 3)]
    pub(crate) keep_versions: usize,

    /// Folder for precompiled components [default: $XDG_CACHE_HOME/wasmhost,
    /// else ~/.cache/wasmhost].
    #[arg(long, env = "WASMHOST_CACHE_DIR")]
    pub(crate) cache_dir: Option<PathBuf>,

    /// Most the compile cache may hold on disk; past it, the least recently
    /// used entries of versions no longer running are deleted.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub(crate) cache_max_size: u64,

    /// Compile every component from scratch; store nothing.
    #[arg(long, conflicts_with = "cache_dir")]
    pub(crate) no_cache: bool,

    /// Quiet period after a project's last file event before it reloads, so
    /// a burst of writes becomes one reload; events that keep coming put a
    /// reload off to at most 10 periods (and at least 1 s) after the first.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub(crate) debounce: Duration,

    /// Poll the projects folder instead of using the OS's file events
    /// (for network file systems; used automatically when the OS watcher fails).
    #[arg(long)]
    pub(crate) poll: bool,

    /// How often to poll, when polling.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub(crate) poll_interval: Duration,

    /// Do not watch the projects folder; change projects only through the admin API.
    #[arg(long, conflicts_with = "poll")]
    pub(crate) no_watch: bool,

    /// How often each project whose component is `oci://…:TAG` asks its
    /// registry what the tag points at (a pinned digest is never polled).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) registry_poll: Duration,

    /// A registry host that may be reached over plain HTTP (loopback
    /// registries always may). Repeat for more.
    #[arg(long, env = "WASMHOST_INSECURE_REGISTRY", value_delimiter = ',')]
    pub(crate) insecure_registry: Vec<String>,

    /// Log one line per request (method, path, status, duration, project,
    /// version, request id) at info, target `access`.
    #[arg(long, env = "WASMHOST_ACCESS_LOG")]
    pub(crate) access_log: bool,

    /// Do not count requests by status or time them for `GET /metrics`
    /// (the pipeline's and the process's metrics stay).
    #[arg(long)]
    pub(crate) no_request_metrics: bool,
}

impl ServeArgs {
    /// Validates the arguments of `wasmhost serve` into the host's [`Config`].
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let args = self;
        if args.request_timeout.is_zero() {
            bail!("--request-timeout must be more than 0");
        }
        if args.header_timeout.is_zero() || args.idle_timeout.is_zero() {
            bail!("--header-timeout and --idle-timeout must be more than 0");
        }
        if args.poll_interval.is_zero() {
            bail!("--poll-interval must be more than 0");
        }
        if args.registry_poll.is_zero() {
            bail!("--registry-poll must be more than 0");
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
        if args.guest_log_rate == 0 {
            bail!("--guest-log-rate must be more than 0");
        }
        let admin_token = admin_token(
            args.admin_token.as_deref(),
            args.admin_token_file.as_deref(),
        )?;
        if admin_token.is_none() && !args.admin_listen.ip().is_loopback() {
            bail!(
                "--admin-listen {} is not a loopback address: set --admin-token-file (or --admin-token) so that only you can deploy",
                args.admin_listen
            );
        }
        if args.listen == args.admin_listen && args.listen.port() != 0 {
            bail!(
                "--listen and --admin-listen are both {}: the admin API needs its own address",
                args.listen
            );
        }
        Ok(Config {
            projects_dir: args.dir.clone(),
            listen: args.listen,
            admin_listen: args.admin_listen,
            workers: args
                .workers
                .map_or_else(crate::front::workers::default_count, usize::from),
            pin_workers: args.pin_workers,
            grace_period: args.grace_period,
            request_timeout: args.request_timeout,
            limits: crate::swap::settings::DefaultLimits {
                memory: args.memory,
                max_body: args.max_body,
                max_concurrency: args.max_concurrency,
                log_rate: args.guest_log_rate,
            },
            max_deploy_size: args.max_deploy_size,
            max_instances: args.max_instances,
            cache_max_size: args.cache_max_size,
            connections: ConnectionLimits {
                header_timeout: args.header_timeout,
                idle_timeout: args.idle_timeout,
                max_connections: args.max_connections as usize,
            },
            admin_token,
            max_compiles: args.max_compiles,
            compile_patience: args.compile_patience,
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
            log_format: crate::telemetry::LogFormat::Text,
            registry_poll: args.registry_poll,
            insecure_registries: args.insecure_registry.clone(),
            recording: crate::front::handler::Recording {
                metrics: !args.no_request_metrics,
                access_log: args.access_log,
            },
            watch: (!args.no_watch).then_some(crate::watch::WatchSettings {
                debounce: args.debounce,
                poll: args.poll,
                poll_interval: args.poll_interval,
            }),
        })
    }
}
