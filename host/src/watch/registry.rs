//! Watches OCI registries the way `mod.rs` watches the folder: every
//! `--registry-poll`, each project whose component is `oci://…:TAG`
//! resolves its tag (a `HEAD` of the manifest), and a digest other than the
//! one serving goes through the pipeline like any other change: pull, check
//! the digest, compile or hit the cache, validate, swap, drain. A pinned
//! digest is never polled.
//!
//! A registry that cannot be reached changes nothing that serves: the
//! failure is recorded once per distinct reason (log, admin API, `/events`),
//! not every poll. A digest that was refused for its content is not tried
//! again until the tag moves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::model::discovery;
use crate::oci::Puller;
use crate::swap::pipeline::{ChangeError, Pipeline};

/// Starts the poll loop; it runs until the process ends.
pub(crate) fn start(pipeline: Pipeline, puller: Arc<Puller>, every: Duration) {
    tokio::spawn(async move {
        // Strategy: one loop for every project, one request per tagged
        // project per tick, in turn: the cost is one small HEAD each, and a
        // slow registry delays the next tick instead of piling up requests.
        let mut reported: HashMap<String, String> = HashMap::new();
        let mut refused: HashMap<String, String> = HashMap::new();
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate: start-up just pulled
        loop {
            ticks.tick().await;
            poll_once(&pipeline, &puller, &mut reported, &mut refused).await;
        }
    });
}

/// One round over every tagged project.
async fn poll_once(
    pipeline: &Pipeline,
    puller: &Puller,
    reported: &mut HashMap<String, String>,
    refused: &mut HashMap<String, String>,
) {
    for project in pipeline.registry().all() {
        let name = project.name.clone();
        let (source, serving) = {
            let state = project.state();
            (state.source.clone(), state.pulled.clone())
        };
        // A project that never went live has no source yet: its config on disk says.
        let source = match source {
            Some(source) => Some(source),
            None => discovery::find(pipeline.projects_dir(), &name)
                .ok()
                .flatten(),
        };
        let Some(reference) = source.and_then(|s| s.manifest.oci) else {
            continue;
        };
        // A pinned digest never changes: nothing to resolve. It is pulled
        // again only while nothing serves it (its first pull failed, say in a
        // registry outage), like a tag that moved.
        let resolved = match &reference.digest {
            Some(digest) => Ok(digest.clone()),
            None => puller.resolve(&reference).await,
        };
        let digest = match resolved {
            Ok(digest) => digest,
            Err(err) => {
                let reason = err.to_string();
                if reported.get(name.as_str()) != Some(&reason) {
                    pipeline.refuse_pull(&project, reason.clone());
                    reported.insert(name.to_string(), reason);
                }
                continue;
            }
        };
        reported.remove(name.as_str());
        if serving.as_deref() == Some(digest.as_str())
            || refused.get(name.as_str()) == Some(&digest)
        {
            continue;
        }
        match pipeline.registry_change(&name).await {
            Ok(_) => {
                refused.remove(name.as_str());
            }
            // The registry went away between the HEAD and the pull: next tick.
            Err(ChangeError::Rejected {
                step: "registry", ..
            }) => {}
            Err(ChangeError::Rejected { .. }) => {
                refused.insert(name.to_string(), digest);
            }
            Err(err) => tracing::debug!(project = name.as_str(), "registry change: {err}"),
        }
    }
    // Forget projects that are gone: one added again later starts afresh.
    let registry = pipeline.registry();
    reported.retain(|name, _| registry.get(name).is_some());
    refused.retain(|name, _| registry.get(name).is_some());
}
