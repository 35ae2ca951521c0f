//! `wasmhost serve`, wired together: bind the listeners, build the engine,
//! load every project, publish the first snapshot, then serve project traffic
//! and the admin API until a shutdown signal, and drain.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::compiler::Compiler;
use crate::config::Config;
use crate::discovery::{self, ProjectSource, Skipped};
use crate::registry::{Project, Registry, Snapshot, Version};
use crate::units::format_size;
use crate::{admin, engine, server};

/// The two sockets, bound before anything slow happens so that a port in use
/// fails at once with the address in the message.
pub struct Listeners {
    /// Project traffic.
    pub http: TcpListener,
    /// The admin API.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both addresses of `config`.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            http: bind(config.listen).await?,
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
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = &'static str>,
) -> anyhow::Result<()> {
    let engine = engine::new_engine()?;
    engine::start_epoch_ticker(&engine)?;
    let compiler = Compiler::new(
        engine.clone(),
        engine::new_linker(&engine)?,
        config.max_compiles,
    );

    let scan = discovery::scan(&config.projects_dir)?;
    let mut projects = Vec::with_capacity(scan.projects.len() + scan.failed.len());
    for source in &scan.projects {
        projects.push(load(&compiler, &config, source).await);
    }
    for failed in scan.failed {
        projects.push(Project::failed(
            failed.name,
            failed.entry,
            format!("{:#}", failed.error),
        ));
    }
    let snapshot = Snapshot::build(projects);
    log_startup(&snapshot, &scan.skipped);
    let registry = Arc::new(Registry::new(snapshot));

    let http_addr = listeners
        .http
        .local_addr()
        .context("failed to read the bound address")?;
    let admin_addr = listeners
        .admin
        .local_addr()
        .context("failed to read the bound address")?;
    // These two lines are the readiness signal scripts and tests wait for.
    eprintln!("listening on http://{http_addr}");
    eprintln!("admin on http://{admin_addr}");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_stop = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let admin_registry = registry.clone();
    let admin_task = tokio::spawn(server::serve(
        listeners.admin,
        move |request| admin::handle(admin_registry.clone(), request),
        wait_stop(),
        config.grace_period,
    ));
    let http = server::serve(
        listeners.http,
        move |request| server::handle(registry.clone(), request),
        wait_stop(),
        config.grace_period,
    );
    let signal = async {
        let name = shutdown.await;
        tracing::info!(
            grace_ms = config.grace_period.as_millis() as u64,
            "{name} received: no new connections; letting in-flight requests finish"
        );
        let _ = stop.send(true);
    };
    tokio::join!(http, signal);
    admin_task.await.context("the admin server task failed")?;
    tracing::info!("shut down");
    Ok(())
}

/// Compiles one project into its first version. A failure becomes the
/// project's error; it never stops the host or the other projects.
async fn load(compiler: &Compiler, config: &Config, source: &ProjectSource) -> Project {
    let mut project = Project::from_source(source);
    match compiler.compile_file(&source.component).await {
        Ok(compiled) => {
            let request_timeout = source
                .manifest
                .limits
                .request_timeout
                .unwrap_or(config.request_timeout);
            project.current = Some(Arc::new(Version::new(
                source.name.as_str().into(),
                1,
                compiled.digest,
                source.component.clone(),
                compiled.size,
                compiled.compile_time,
                compiled.pre,
                source.manifest.env.clone(),
                request_timeout,
            )));
        }
        Err(err) => project.last_error = Some(err.to_string()),
    }
    project
}

/// One table of what serves, then one warning per project or entry that does not.
fn log_startup(snapshot: &Snapshot, skipped: &[Skipped]) {
    let active: Vec<_> = snapshot
        .projects
        .iter()
        .filter_map(|p| Some((p, p.current.as_ref()?)))
        .collect();
    let mut table = format!(
        "loaded {} of {} projects\n  {:<24} {:<24} {:>10} {:>9}",
        active.len(),
        snapshot.projects.len(),
        "NAME",
        "ROUTE",
        "SIZE",
        "COMPILE"
    );
    for (project, version) in &active {
        let _ = write!(
            table,
            "\n  {:<24} {:<24} {:>10} {:>6} ms",
            project.name.as_str(),
            project.route,
            format_size(version.size),
            version.compile_time.as_millis()
        );
    }
    tracing::info!("{table}");
    for project in snapshot.projects.iter().filter(|p| p.current.is_none()) {
        let reason = project.last_error.as_deref().unwrap_or("unknown error");
        tracing::warn!(project = project.name.as_str(), "project skipped: {reason}");
    }
    for entry in skipped {
        tracing::warn!("skipped {}: {}", entry.entry.display(), entry.reason);
    }
}
