//! `wasmhost serve`, wired together: bind the listeners, build the engine,
//! serve project traffic and the admin API at once while every project loads
//! through the pipeline (each routable as soon as its first version is live),
//! until a shutdown signal; then drain.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::front::workers::{self, Workers};
use crate::front::{handler, listener, slow_lane};
use crate::model::discovery::Skipped;
use crate::model::events::Events;
use crate::model::registry::Registry;
use crate::readiness::{Phase, Readiness};
use crate::swap::cache::CompileCache;
use crate::swap::compiler::Compiler;
use crate::swap::pipeline::Pipeline;
use crate::swap::settings::Settings;
use crate::units::format_size;
use crate::{admin, engine};

/// The sockets, bound before anything slow happens so that a port in use
/// fails at once with the address in the message.
pub(crate) struct Listeners {
    /// Project traffic: one socket per request worker, all on one port.
    pub(crate) http: Vec<std::net::TcpListener>,
    /// The admin API.
    pub(crate) admin: TcpListener,
}

impl Listeners {
    /// Binds both addresses of `config`.
    pub(crate) async fn bind(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            http: workers::bind(config.listen, config.workers)?,
            admin: bind(config.admin_listen).await?,
        })
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind {addr}"))
}

/// Loads every project under `config.projects_dir` and serves until
/// `shutdown` resolves; then drains for up to the grace period and returns.
pub(crate) async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = &'static str>,
) -> anyhow::Result<()> {
    std::fs::read_dir(&config.projects_dir).with_context(|| {
        format!(
            "failed to read projects directory {}",
            config.projects_dir.display()
        )
    })?;
    let http_addr = listeners
        .http
        .first()
        .context("no socket was bound for project traffic")?
        .local_addr()
        .context("failed to read the bound address")?;
    let admin_addr = listeners
        .admin
        .local_addr()
        .context("failed to read the bound address")?;
    // Before any instance exists: a reset trusts a fault-free request only
    // while no huge page can fill pages in (`engine/faults.rs`).
    if !engine::faults::disable_huge_pages() {
        tracing::warn!(
            "failed to turn transparent huge pages off for this process; every instance reset scans its memory"
        );
    }
    let engine = engine::new_engine(config.max_instances)?;
    engine::ticker::start_epoch_ticker(&engine)?;
    slow_lane::start(config.workers)?;
    // Before any version exists: each pool of idle instances gets a shard
    // per worker when it is made.
    engine::worker::set_count(config.workers);
    let cache = match &config.cache_dir {
        Some(dir) => CompileCache::new(Some(dir), &engine),
        None => CompileCache::disabled(),
    };
    match cache.dir() {
        Some(dir) => tracing::info!("compile cache in {}", dir.display()),
        None => tracing::info!("compile cache off"),
    }
    let compiler = Compiler::new(
        engine.clone(),
        engine::new_linker(&engine)?,
        cache,
        config.max_compiles,
    )
    .with_patience(config.compile_patience);
    let registry = Arc::new(Registry::default());
    let events = Events::default();
    let pipeline = Pipeline::new(
        compiler,
        registry.clone(),
        Settings {
            projects_dir: config.projects_dir.clone(),
            request_timeout: config.request_timeout,
            drain_timeout: config.drain_timeout,
            health_timeout: config.health_timeout,
            keep_versions: config.keep_versions,
            limits: config.limits,
            cache_max_size: config.cache_max_size,
            forbidden_outbound: Arc::from([admin_addr]),
        },
        events.clone(),
    );
    // Pulled components are kept beside the compile cache, by digest, for
    // restarts with the registry down; with no cache, in a temporary folder.
    let store_root = match &config.cache_dir {
        Some(dir) => dir.join("oci"),
        None => std::env::temp_dir().join(format!("wasmhost-oci-{}", std::process::id())),
    };
    let puller = Arc::new(crate::oci::Puller::new(
        crate::oci::store::Store::new(store_root),
        config.insecure_registries.clone(),
        config.max_deploy_size,
    ));
    let pipeline = pipeline.with_puller(puller.clone());
    pipeline
        .metrics()
        .instances_capacity
        .set(i64::from(config.max_instances));
    // Watch before loading: a change made while projects load is not missed.
    // One that goes live before a project's first load keeps it: the load
    // then stands down (`Pipeline::load`).
    if let Some(watch) = &config.watch {
        crate::watch::start(&config.projects_dir, pipeline.clone(), watch.clone())?;
    }

    crate::watch::registry::start(pipeline.clone(), puller, config.registry_poll);
    // Every project is routed (503 until live) before the first request.
    let plan = pipeline.plan_load()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let requests_registry = registry.clone();
    let recording = config.recording;
    let mut workers = Workers::start(
        listeners.http,
        move |request| handler::handle(&requests_registry, recording, request),
        &stopped,
        config.grace_period,
        config.connections,
        config.pin_workers,
    )?;
    let count = workers.count();
    tracing::info!(
        "{count} request worker{}{}",
        if count == 1 { "" } else { "s" },
        if workers.pinned() {
            ", each pinned to a CPU of its own"
        } else {
            ""
        }
    );
    // Printed as soon as both listeners serve, before any project is loaded:
    // scripts and tests then wait for `GET /readyz` on the admin listener.
    // Never filtered by RUST_LOG; JSON objects with `--log-format json`.
    crate::telemetry::announce(
        config.log_format,
        "INFO",
        &format!("listening on http://{http_addr}"),
    );
    crate::telemetry::announce(
        config.log_format,
        "INFO",
        &format!("admin on http://{admin_addr}"),
    );
    let readiness = Arc::new(Readiness::default());
    let access = Arc::new(admin::Access {
        token: config.admin_token.clone(),
        max_deploy_size: config.max_deploy_size,
    });
    // The admin listener outlives the workers' drain, so probes see `/readyz`
    // turn 503 and operators can watch the drain.
    let (admin_stop, mut admin_stopped) = tokio::sync::watch::channel(false);
    let admin_pipeline = pipeline.clone();
    let admin_readiness = readiness.clone();
    let admin_task = tokio::spawn(listener::serve(
        listeners.admin,
        move |request| {
            admin::handle(
                admin_pipeline.clone(),
                access.clone(),
                admin_readiness.clone(),
                request,
            )
        },
        async move {
            let _ = admin_stopped.wait_for(|stop| *stop).await;
        },
        config.grace_period,
        config.connections,
        listener::slots(config.connections),
    ));
    let loading = async {
        let skipped = pipeline.load(plan).await?;
        log_startup(&registry, &skipped);
        readiness.advance(Phase::Ready);
        anyhow::Ok(())
    };
    tokio::pin!(loading);
    tokio::pin!(shutdown);
    let mut loaded = false;
    // A worker ends before shutdown only by panicking, and the connections
    // its socket receives would go unanswered: shut the host down, so a
    // supervisor restarts it, rather than serve on with a hole.
    let failure = loop {
        tokio::select! {
            result = &mut loading, if !loaded => {
                loaded = true;
                if let Err(err) = result {
                    let err = err.context("failed to load the projects");
                    tracing::error!("{err:#}; shutting down");
                    break Some(err);
                }
            }
            name = &mut shutdown => {
                tracing::info!(
                    grace_ms = config.grace_period.as_millis() as u64,
                    "{name} received: no new connections; letting in-flight requests finish"
                );
                break None;
            }
            index = workers.ended() => {
                tracing::error!("request worker {index} stopped; shutting down");
                break Some(anyhow::anyhow!("request worker {index} stopped while serving"));
            }
        }
    };
    readiness.advance(Phase::Stopping);
    let _ = stop.send(true);
    let joined = workers.join().await;
    // Open event streams never end by themselves; end them so they do
    // not hold the admin listener's drain for the whole grace period.
    events.close();
    let _ = admin_stop.send(true);
    admin_task.await.context("the admin server task failed")?;
    joined?;
    if let Some(err) = failure {
        return Err(err);
    }
    tracing::info!("shut down");
    Ok(())
}

/// One table of what serves, then one warning per project or entry that does not.
fn log_startup(registry: &Registry, skipped: &[Skipped]) {
    let projects = registry.all();
    let active: Vec<_> = projects
        .iter()
        .filter_map(|p| Some((p, p.current.load_full()?)))
        .filter(|(p, _)| p.state().error.is_none())
        .collect();
    let mut table = format!(
        "loaded {} of {} projects\n  {:<24} {:<24} {:>10} {:>9} {:>6}",
        active.len(),
        projects.len(),
        "NAME",
        "ROUTE",
        "SIZE",
        "COMPILE",
        "CACHED"
    );
    for (project, version) in &active {
        let route = project
            .state()
            .source
            .as_ref()
            .map(|s| s.route.clone())
            .unwrap_or_default();
        let _ = write!(
            table,
            "\n  {:<24} {:<24} {:>10} {:>6} ms {:>6}",
            project.name.as_str(),
            route,
            format_size(version.build.size()),
            version.build.compile_time.as_millis(),
            if version.build.cache_hit { "yes" } else { "no" }
        );
    }
    tracing::info!("{table}");
    for project in &projects {
        if let Some(reason) = project.state().error.clone() {
            tracing::warn!(project = project.name.as_str(), "project skipped: {reason}");
        }
    }
    for entry in skipped {
        tracing::warn!("skipped {}: {}", entry.entry.display(), entry.reason);
    }
}
