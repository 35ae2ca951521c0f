//! Drain: a retired version keeps serving the requests that started on it,
//! and no others. When the last one ends, the version is dropped (see
//! `Version`'s `Drop`). Requests still running at the drain deadline are
//! interrupted: the version's stop signal is raised, which the epoch callback
//! of a computing guest and the wait of a waiting guest both observe; those
//! requests are answered 503 and counted as forced drains.

use std::sync::Arc;

use crate::model::version::Version;

/// Retires `old` and supervises its drain in the background.
pub(crate) fn retire(old: Arc<Version>) {
    let in_flight = old.retire();
    if in_flight > 0 {
        old.announce("draining", serde_json::json!({ "in_flight": in_flight }));
        tracing::info!(
            project = &*old.project,
            version = old.number,
            "{}: v{} draining {in_flight} requests",
            old.project,
            old.number
        );
    }
    let deadline = tokio::time::Instant::now() + old.run.drain_timeout;
    tokio::spawn(async move {
        if !old.wait_idle(deadline).await {
            tracing::warn!(
                project = &*old.project,
                version = old.number,
                "{}: v{} still had {} requests after the {} ms drain timeout; interrupting them",
                old.project,
                old.number,
                old.in_flight(),
                old.run.drain_timeout.as_millis()
            );
            old.force_stop();
        }
        // Dropping this task's reference leaves the version to its last request.
    });
}
