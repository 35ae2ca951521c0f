//! Install: one candidate through prepare → validate → swap → drain, under
//! the project's lifecycle lock. A failure at any step before the swap
//! changes nothing that serves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::model::discovery::ProjectSource;
use crate::model::project::Project;
use crate::model::version::{Stats, Version};
use crate::swap::compiler::Compiler;
use crate::swap::drain;
use crate::swap::persist;
use crate::swap::pipeline::{self, ChangeError, Origin, Outcome, Pipeline};
use crate::swap::validate::validate;

impl Pipeline {
    /// prepare → validate → swap → drain for one new candidate. The caller
    /// holds the project's lifecycle lock.
    pub(super) async fn install(
        &self,
        project: &Arc<Project>,
        source: ProjectSource,
        bytes: Arc<[u8]>,
        writes: &[(PathBuf, Arc<[u8]>)],
        origin: Origin,
    ) -> Result<Outcome, ChangeError> {
        let taken = Instant::now();
        let digest = Compiler::digest(&bytes);
        let current = project.current.load_full();
        let reusable = {
            let mut state = project.state();
            if let Some(current) = &current {
                let same_config = state.source.as_ref() == Some(&source);
                if current.build.digest == digest && same_config {
                    return Ok(Outcome::Unchanged {
                        version: current.number,
                    });
                }
            }
            state.preparing = true;
            state
                .history
                .iter()
                .rev()
                .find(|(_, build)| build.digest == digest)
                .map(|(_, build)| build.clone())
        };
        let _preparing = Preparing(project);
        if matches!(origin, Origin::Watch | Origin::Registry) {
            Stats::bump(&project.stats.changes);
            tracing::info!(
                project = project.name.as_str(),
                "{}: change detected",
                project.name
            );
            self.events.emit(
                "change_detected",
                project.name.as_str(),
                serde_json::json!({ "digest": digest }),
            );
        }
        let reused = reusable.is_some();
        let number = project.next_version();
        let name = project.name.as_str();
        // Checked before compiling, so a colliding change fails fast, and
        // again right before the swap, under the routes lock.
        self.check_routes(project, &source, number, &digest, origin)?;

        let build = match reusable {
            Some(build) => build,
            None => {
                let build = self
                    .compiler
                    .prepare(&source.component, bytes.clone())
                    .await
                    .map_err(|err| {
                        self.reject(
                            project,
                            Some(number),
                            "prepare",
                            err.to_string(),
                            Some(&digest),
                        )
                    })?;
                let stats = &project.stats;
                Stats::bump(if build.cache_hit {
                    &stats.cache_hits
                } else {
                    &stats.cache_misses
                });
                if build.cache_hit {
                    self.metrics.cache_hits.inc();
                } else {
                    self.metrics.cache_misses.inc();
                    self.metrics
                        .compile_duration
                        .observe(build.compile_time.as_secs_f64());
                }
                Stats::set_duration(&stats.last_compile_us, build.compile_time);
                if build.cache_hit {
                    tracing::info!(
                        project = name,
                        version = number,
                        "{name}: v{number} loaded from cache in {} ms",
                        build.compile_time.as_millis()
                    );
                } else {
                    tracing::info!(
                        project = name,
                        version = number,
                        "{name}: v{number} compiled in {} ms",
                        build.compile_time.as_millis()
                    );
                }
                self.events.emit(
                    "compiled",
                    name,
                    serde_json::json!({
                        "version": number,
                        "digest": build.digest,
                        "compile_ms": build.compile_time.as_secs_f64() * 1000.0,
                        "cache_hit": build.cache_hit,
                    }),
                );
                Arc::new(build)
            }
        };
        let candidate = Arc::new(Version::new(
            name.into(),
            number,
            build.clone(),
            self.settings.run_config(&source),
            project.stats.clone(),
            self.events.clone(),
        ));
        let health = self.settings.health_check(&source);
        if let Err(reason) = validate(&candidate, health.as_ref()).await {
            candidate.force_stop();
            return Err(self.reject(project, Some(number), "validate", reason, Some(&digest)));
        }
        // Refused from here on (its files, its route), the candidate is
        // stopped too: its health check's guest may still run after
        // answering, and would hold its instance until its timeout.
        let mut refused = StopUnlessLive(Some(candidate.clone()));
        // Staged (written and fsynced) beside their targets, then renamed into
        // place right before the swap (`persist.rs`). An fsync can take tens
        // of milliseconds: on the blocking pool, so it never stalls the thread
        // serving requests.
        let mut new_folder = persist::NewFolder::watch(&source.entry);
        let to_stage = writes.to_vec();
        let staged = tokio::task::spawn_blocking(move || {
            to_stage
                .iter()
                .map(|(path, contents)| persist::stage(path, contents))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await
        .map_err(|err| ChangeError::Failed(anyhow::anyhow!("the file write task failed: {err}")))?
        .map_err(ChangeError::Failed)?;

        let routes = self.registry.lock_routes().await;
        self.check_routes(project, &source, number, &digest, origin)?;
        if !staged.is_empty() {
            let projects_dir = self.settings.projects_dir.clone();
            tokio::task::spawn_blocking(move || persist::commit(staged, &projects_dir))
                .await
                .map_err(|err| ChangeError::Failed(anyhow::anyhow!("the file write task failed: {err}")))?
                .map_err(|err| {
                    tracing::error!(
                        project = name,
                        version = number,
                        "{name}: v{number} not made live: {err:#}; the previous version keeps serving"
                    );
                    ChangeError::Failed(err.context(format!(
                        "{name}: v{number} was not made live because its files could not be written"
                    )))
                })?;
        }
        new_folder.keep();
        let swap_started = Instant::now();
        let routing_changed = {
            let mut state = project.state();
            let changed = state.source.as_ref().is_none_or(|old| {
                (&old.route, &old.manifest.hosts, old.manifest.strip_prefix)
                    != (
                        &source.route,
                        &source.manifest.hosts,
                        source.manifest.strip_prefix,
                    )
            });
            state.entry = source.entry.clone();
            state.source = Some(source);
            changed
        };
        refused.0 = None;
        let old = project.current.swap(Some(candidate));
        if routing_changed || old.is_none() {
            self.registry.republish();
        }
        let swap = swap_started.elapsed();
        drop(routes);
        self.metrics
            .swap_latency
            .observe(taken.elapsed().as_secs_f64());
        let stats = &project.stats;
        Stats::bump(&stats.swaps);
        Stats::set_duration(&stats.last_swap_us, swap);
        {
            let mut state = project.state();
            state
                .history
                .retain(|(_, kept)| kept.digest != build.digest);
            state.history.push_back((number, build.clone()));
            while state.history.len() > self.settings.keep_versions.max(1) {
                state.history.pop_front();
            }
            if let Some(old) = &old {
                project.stats.draining.push(old);
            }
        }
        let swap_ms = swap.as_secs_f64() * 1000.0;
        match &old {
            Some(old) if old.in_flight() > 0 => tracing::info!(
                project = name,
                version = number,
                "{name}: v{number} live (swap {swap_ms:.3} ms); v{} draining {} requests",
                old.number,
                old.in_flight()
            ),
            Some(old) => tracing::info!(
                project = name,
                version = number,
                "{name}: v{number} live (swap {swap_ms:.3} ms); v{} idle",
                old.number
            ),
            None => tracing::info!(
                project = name,
                version = number,
                "{name}: v{number} live (swap {swap_ms:.3} ms)"
            ),
        }
        let previous = old.as_ref().map(|old| old.number);
        self.events.emit(
            "live",
            name,
            serde_json::json!({
                "version": number,
                "digest": build.digest,
                "previous": previous,
                "origin": origin.name(),
                "compile_ms": build.compile_time.as_secs_f64() * 1000.0,
                "swap_ms": swap_ms,
            }),
        );
        if let Some(old) = old {
            drain::retire(old);
        }
        if !build.cache_hit && !reused {
            self.evict_cache();
        }
        Ok(Outcome::Live {
            version: number,
            previous,
            compile: build.compile_time,
            swap,
            cache_hit: build.cache_hit || reused,
        })
    }

    /// Refuses a change whose route or hosts another routed project serves.
    /// At start-up every project loads at once and the registry settles
    /// conflicts by name instead (the first name keeps the route).
    fn check_routes(
        &self,
        project: &Project,
        source: &ProjectSource,
        number: u64,
        digest: &str,
        origin: Origin,
    ) -> Result<(), ChangeError> {
        if origin == Origin::Load {
            return Ok(());
        }
        let name = project.name.as_str();
        match self
            .registry
            .claimed(name, &source.route, &source.manifest.hosts)
        {
            None => Ok(()),
            Some(claimed) => {
                let refused = self.reject(
                    project,
                    Some(number),
                    "route",
                    format!(
                        "{} is already served by project `{}`",
                        claimed.claim, claimed.holder
                    ),
                    Some(digest),
                );
                if let Some(failure) = project.state().last_failure.as_mut() {
                    failure.blocked_by = Some(claimed.holder);
                }
                Err(refused)
            }
        }
    }

    /// Records and logs a refused change, and builds its error.
    pub(super) fn reject(
        &self,
        project: &Project,
        number: Option<u64>,
        step: &'static str,
        reason: String,
        digest: Option<&str>,
    ) -> ChangeError {
        pipeline::record_failure(project, step, reason.clone(), digest, number);
        if project.current.load().is_none() {
            project.state().error = Some(reason.clone());
        }
        let name = project.name.as_str();
        let label = number.map_or_else(|| "change".to_string(), |n| format!("v{n}"));
        self.events.emit(
            "rejected",
            name,
            serde_json::json!({ "version": number, "digest": digest, "step": step, "reason": reason }),
        );
        match project.current.load().as_ref() {
            Some(current) => tracing::warn!(
                project = name,
                version = number,
                "{name}: {label} rejected: {reason}; v{} still serving",
                current.number
            ),
            None => tracing::warn!(
                project = name,
                version = number,
                "{name}: {label} rejected: {reason}; no version serving"
            ),
        }
        ChangeError::Rejected {
            project: name.to_string(),
            version_label: label,
            step,
            reason,
        }
    }
}

/// Clears the project's `preparing` flag however `install` exits.
struct Preparing<'a>(&'a Project);

impl Drop for Preparing<'_> {
    fn drop(&mut self) {
        self.0.state().preparing = false;
    }
}

/// Stops a candidate that passed validation but is refused before it goes
/// live, however `install` exits; set to `None` once it is swapped in.
struct StopUnlessLive(Option<Arc<Version>>);

impl Drop for StopUnlessLive {
    fn drop(&mut self) {
        if let Some(candidate) = self.0.take() {
            candidate.force_stop();
        }
    }
}
