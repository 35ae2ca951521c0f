//! Validate: a prepared version must prove it can serve before it is swapped
//! in. It is instantiated once (catching components that trap while
//! instantiating) and, when the project names a `health` path, must answer a
//! GET of it with a 2xx within `health_timeout`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper::header::HOST;

use crate::front::invoke::{health_check, trial_instantiate};
use crate::model::version::Version;

/// The health check a project configured.
#[derive(Clone, Debug)]
pub(crate) struct HealthCheck {
    /// Path and query to GET.
    pub(crate) path: String,
    /// How long the answer may take.
    pub(crate) timeout: Duration,
}

/// Checks `candidate`; the error says what failed, in words for the admin API.
pub(crate) async fn validate(
    candidate: &Arc<Version>,
    health: Option<&HealthCheck>,
) -> Result<(), String> {
    trial_instantiate(candidate)
        .await
        .map_err(|reason| format!("instantiation failed: {reason}"))?;
    let Some(health) = health else { return Ok(()) };
    let path = &health.path;
    let request = Request::get(path.as_str())
        .header(HOST, format!("{}.localhost", candidate.project))
        .body(Empty::<Bytes>::new())
        .map_err(|err| format!("health check path `{path}` is not a valid request: {err}"))?;
    let answer = tokio::time::timeout(
        health.timeout,
        health_check(candidate.clone(), request, path),
    )
    .await;
    match answer {
        Err(_) => Err(format!(
            "health check GET {path} did not answer within {} ms",
            health.timeout.as_millis()
        )),
        Ok(Err(err)) => Err(format!("health check GET {path} failed: {err}")),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!(
            "health check GET {path} answered {}",
            response.status()
        )),
    }
}
