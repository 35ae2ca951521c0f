//! The admin API, on its own listener so it can be firewalled apart from
//! project traffic and stays reachable when projects are busy.
//!
//! Endpoints:
//! - `GET /healthz`: `200 ok` while the host runs.
//! - `GET /projects`: JSON array with one object per known project, failed ones included.
//! - `GET /projects/NAME`: that project's object, or 404.
//! - `PUT /projects/NAME`: deploy the body (the component bytes, `Content-Type:
//!   application/wasm`), or a `multipart/form-data` body with a `component`
//!   part and an optional `config` part (a wasmhost.toml). Answers once the
//!   version is live (200), unchanged (200), or rejected (422, the old version
//!   still serving). Once live, the component (and config) are written into the
//!   project's folder (temp file + rename).
//! - `POST /projects/NAME/reload`: re-read config and component from disk.
//! - `POST /projects/NAME/rollback`: back to the previous good build (409 when there is none).
//! - `DELETE /projects/NAME`: unroute, drain, and delete from disk.
//! - `GET /events`: Server-Sent Events, one per lifecycle step (`change_detected`,
//!   `compiled`, `live`, `rejected`, `draining`, `released`, `removed`), each a
//!   JSON object with `event`, `project`, `at` and, as they apply, `version`,
//!   `digest`, `previous`, `compile_ms`, `swap_ms`, `cache_hit`, `in_flight`,
//!   `drain_ms`, `step` and `reason`.
//!
//! A project object has: `name`, `route`, `hosts`, `strip_prefix`, `entry`,
//! `component` (path), `digest` (sha256 hex of the component bytes), `version`,
//! `state` (`active`, `preparing`, `draining` or `failed`), `size` (bytes),
//! `compile_ms`, `in_flight`, `last_error`, `last_failure` (`step`, `reason`,
//! `digest`, `at` in Unix seconds), `versions` (current and draining, each with
//! `version`, `digest`, `state`, `in_flight`), `history` (version numbers of the
//! builds kept for rollback) and `stats` (`swaps`, `changes`, `rejected`, `rollbacks`,
//! `forced_drains`, `released`, `last_compile_ms`, `last_swap_ms`,
//! `max_drain_ms`, `cache_hits`, `cache_misses`, `active`, `overloaded`). Change endpoints answer the
//! same object with an `outcome` field (`live` or `unchanged`) and, when live,
//! `compile_ms_this`, `swap_ms` and `cache_hit`; a rejection answers
//! `{"outcome": "rejected", "step", "reason", "message"}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use http_body_util::{BodyExt, Limited};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde::Serialize;
use serde_json::json;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::manifest::ProjectName;
use crate::multipart;
use crate::pipeline::{ChangeError, Outcome, Pipeline};
use crate::project::Project;
use crate::responses::{json_response, text_response};

/// Who may use the admin API, and how much they may upload.
#[derive(Clone, Debug)]
pub struct Access {
    /// When set, every request needs `Authorization: Bearer TOKEN`. When not,
    /// the listener is loopback-only (the config refuses anything else) and
    /// changes are refused from any non-loopback peer.
    pub token: Option<String>,
    /// Largest deploy body accepted, in bytes (413 beyond).
    pub max_deploy_size: u64,
}

impl Access {
    /// Why `request` may not proceed, as the response to send; `None` when it may.
    fn refuse<B>(&self, request: &Request<B>) -> Option<Response<HyperOutgoingBody>> {
        let unauthorized = |text: &str| {
            let mut response = text_response(StatusCode::UNAUTHORIZED, text);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"wasmhost\""),
            );
            Some(response)
        };
        match &self.token {
            Some(token) => {
                let offered = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "));
                match offered {
                    Some(offered) if same_secret(offered.trim(), token) => None,
                    Some(_) => unauthorized("wrong admin token"),
                    None => unauthorized("this admin API needs Authorization: Bearer TOKEN"),
                }
            }
            None => {
                let mutating = request.method() != Method::GET && request.method() != Method::HEAD;
                let remote = request
                    .extensions()
                    .get::<crate::server::Peer>()
                    .is_some_and(|peer| !peer.0.ip().is_loopback());
                if mutating && remote {
                    unauthorized("changes from other hosts need an admin token (--admin-token)")
                } else {
                    None
                }
            }
        }
    }
}

/// Compares two secrets in time independent of where they differ (and of
/// their lengths: both are hashed first), so timing cannot reveal a prefix.
fn same_secret(offered: &str, expected: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    let (a, b) = (Sha256::digest(offered), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

/// A version as the admin API shows it.
#[derive(Serialize)]
struct VersionView {
    version: u64,
    digest: String,
    state: &'static str,
    in_flight: usize,
}

/// A project as the admin API shows it.
#[derive(Serialize)]
struct ProjectView {
    name: String,
    route: String,
    hosts: Vec<String>,
    strip_prefix: bool,
    entry: String,
    component: Option<String>,
    digest: Option<String>,
    version: Option<u64>,
    state: &'static str,
    size: Option<u64>,
    compile_ms: Option<f64>,
    in_flight: usize,
    last_error: Option<String>,
    last_failure: Option<serde_json::Value>,
    versions: Vec<VersionView>,
    history: Vec<u64>,
    stats: serde_json::Value,
}

fn ms(gauge: &AtomicU64) -> f64 {
    gauge.load(Ordering::Relaxed) as f64 / 1000.0
}

impl ProjectView {
    fn new(project: &Project) -> Self {
        let current = project.current.load_full();
        let state_name = project.state_name();
        let draining = project.draining();
        let state = project.state();
        let source = state.source.as_ref();
        let mut versions: Vec<VersionView> = current
            .iter()
            .map(|v| VersionView {
                version: v.number,
                digest: v.build.digest.clone(),
                state: "current",
                in_flight: v.in_flight(),
            })
            .collect();
        versions.extend(draining.iter().map(|v| VersionView {
            version: v.number,
            digest: v.build.digest.clone(),
            state: "draining",
            in_flight: v.in_flight(),
        }));
        let stats = &project.stats;
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Self {
            name: project.name.to_string(),
            route: source.map_or_else(|| format!("/{}", project.name), |s| s.route.clone()),
            hosts: source.map(|s| s.manifest.hosts.clone()).unwrap_or_default(),
            strip_prefix: source.is_some_and(|s| s.manifest.strip_prefix),
            entry: state.entry.display().to_string(),
            component: source.map(|s| s.component.display().to_string()),
            digest: current.as_ref().map(|v| v.build.digest.clone()),
            version: current.as_ref().map(|v| v.number),
            state: state_name,
            size: current.as_ref().map(|v| v.build.size()),
            compile_ms: current
                .as_ref()
                .map(|v| v.build.compile_time.as_secs_f64() * 1000.0),
            in_flight: current.as_ref().map_or(0, |v| v.in_flight()),
            last_error: state
                .error
                .clone()
                .or_else(|| state.last_failure.as_ref().map(|f| f.reason.clone())),
            last_failure: state.last_failure.as_ref().map(|f| {
                json!({
                    "step": f.step,
                    "reason": f.reason,
                    "digest": f.digest,
                    "at": f.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
                })
            }),
            versions,
            history: state.history.iter().map(|(number, _)| *number).collect(),
            stats: json!({
                "swaps": count(&stats.swaps),
                "changes": count(&stats.changes),
                "rejected": count(&stats.rejected),
                "rollbacks": count(&stats.rollbacks),
                "forced_drains": count(&stats.forced_drains),
                "released": count(&stats.released),
                "last_compile_ms": ms(&stats.last_compile_us),
                "last_swap_ms": ms(&stats.last_swap_us),
                "max_drain_ms": ms(&stats.max_drain_us),
                "cache_hits": count(&stats.cache_hits),
                "cache_misses": count(&stats.cache_misses),
                "active": count(&stats.active),
                "overloaded": count(&stats.overloaded),
            }),
        }
    }
}

/// Answers one admin request.
pub async fn handle(
    pipeline: Pipeline,
    access: Arc<Access>,
    request: Request<Incoming>,
) -> Response<HyperOutgoingBody> {
    if let Some(refused) = access.refuse(&request) {
        return refused;
    }
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    let name = match segments.as_slice() {
        ["projects", name, ..] => match ProjectName::parse(name) {
            Ok(name) => Some(name),
            Err(reason) => return text_response(StatusCode::BAD_REQUEST, &reason),
        },
        _ => None,
    };
    match (&method, segments.as_slice(), name) {
        (&Method::GET, ["healthz"], _) => text_response(StatusCode::OK, "ok"),
        (&Method::GET, ["events"], _) => pipeline.events().stream(),
        (&Method::GET, ["projects"], _) => {
            let views: Vec<ProjectView> = pipeline
                .registry()
                .all()
                .iter()
                .map(|p| ProjectView::new(p))
                .collect();
            json_response(StatusCode::OK, &views)
        }
        (&Method::GET, ["projects", _], Some(name)) => {
            project_response(&pipeline, &name, StatusCode::OK)
        }
        (&Method::PUT, ["projects", _], Some(name)) => {
            let (bytes, config) = match read_deploy(request, access.max_deploy_size).await {
                Ok(upload) => upload,
                Err(response) => return *response,
            };
            change_response(
                &pipeline,
                &name,
                pipeline.deploy(&name, bytes.into(), config).await,
            )
        }
        (&Method::POST, ["projects", _, "reload"], Some(name)) => {
            change_response(&pipeline, &name, pipeline.reload(&name).await)
        }
        (&Method::POST, ["projects", _, "rollback"], Some(name)) => {
            change_response(&pipeline, &name, pipeline.rollback(&name).await)
        }
        (&Method::DELETE, ["projects", _], Some(name)) => match pipeline.remove(&name).await {
            Ok(()) => json_response(
                StatusCode::OK,
                &json!({ "outcome": "removed", "name": name.as_str() }),
            ),
            Err(err) => error_response(err),
        },
        (_, ["healthz"] | ["projects"] | ["events"], _) => method_not_allowed("GET"),
        (_, ["projects", _], _) => method_not_allowed("GET, PUT, DELETE"),
        (_, ["projects", _, "reload" | "rollback"], _) => method_not_allowed("POST"),
        _ => text_response(
            StatusCode::NOT_FOUND,
            "no such admin endpoint; see GET /projects",
        ),
    }
}

/// Reads a deploy body: the component bytes, and the config when the body is
/// multipart. At most `max_size` bytes.
async fn read_deploy(
    request: Request<Incoming>,
    max_size: u64,
) -> Result<(Vec<u8>, Option<String>), Box<Response<HyperOutgoingBody>>> {
    let refuse = |status: StatusCode, text: &str| Box::new(text_response(status, text));
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/wasm")
        .to_string();
    let boundary = multipart::boundary(&content_type);
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if boundary.is_none()
        && media_type != "application/wasm"
        && media_type != "application/octet-stream"
    {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "send the component as application/wasm, or multipart/form-data with a `component` part; not {media_type}"
            ),
        ));
    }
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the upload is larger than {} (--max-deploy-size)",
                crate::units::format_size(max_size)
            ),
        )
    };
    if crate::body_limit::declared_length(request.headers()).is_some_and(|length| length > max_size)
    {
        return Err(too_large());
    }
    let limit = usize::try_from(max_size).unwrap_or(usize::MAX);
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(too_large());
        }
        Err(err) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                &format!("failed to read the request body: {err}"),
            ));
        }
    };
    let Some(boundary) = boundary else {
        return Ok((body, None));
    };
    let mut parts = multipart::parse(&body, &boundary)
        .map_err(|err| refuse(StatusCode::BAD_REQUEST, &err.to_string()))?;
    let component = parts.remove("component").ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "the multipart body has no `component` part",
        )
    })?;
    let config = match parts.remove("config") {
        None => None,
        Some(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "the `config` part is not UTF-8 text",
            )
        })?),
    };
    if let Some(other) = parts.keys().next() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!("unexpected multipart part `{other}`: only `component` and `config`"),
        ));
    }
    Ok((component, config))
}

fn project_response(
    pipeline: &Pipeline,
    name: &ProjectName,
    status: StatusCode,
) -> Response<HyperOutgoingBody> {
    match pipeline.registry().get(name.as_str()) {
        Some(project) => json_response(status, &ProjectView::new(&project)),
        None => text_response(StatusCode::NOT_FOUND, &format!("no project `{name}`")),
    }
}

fn change_response(
    pipeline: &Pipeline,
    name: &ProjectName,
    result: Result<Outcome, ChangeError>,
) -> Response<HyperOutgoingBody> {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => return error_response(err),
    };
    let Some(project) = pipeline.registry().get(name.as_str()) else {
        return text_response(StatusCode::NOT_FOUND, &format!("no project `{name}`"));
    };
    let mut body = serde_json::to_value(ProjectView::new(&project)).unwrap_or_default();
    if let Some(object) = body.as_object_mut() {
        match outcome {
            Outcome::Unchanged { .. } => {
                object.insert("outcome".into(), json!("unchanged"));
            }
            Outcome::Live {
                version,
                previous,
                compile,
                swap,
                cache_hit,
            } => {
                object.insert("outcome".into(), json!("live"));
                object.insert("live_version".into(), json!(version));
                object.insert("previous_version".into(), json!(previous));
                object.insert(
                    "compile_ms_this".into(),
                    json!(compile.as_secs_f64() * 1000.0),
                );
                object.insert("swap_ms".into(), json!(swap.as_secs_f64() * 1000.0));
                object.insert("cache_hit".into(), json!(cache_hit));
            }
        }
    }
    json_response(StatusCode::OK, &body)
}

/// The one place change errors become statuses.
fn error_response(err: ChangeError) -> Response<HyperOutgoingBody> {
    let message = err.to_string();
    match err {
        ChangeError::Rejected { step, reason, .. } => json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({ "outcome": "rejected", "step": step, "reason": reason, "message": message }),
        ),
        ChangeError::NotFound(_) => text_response(StatusCode::NOT_FOUND, &message),
        ChangeError::NoRollback(_) => text_response(StatusCode::CONFLICT, &message),
        ChangeError::Failed(_) => text_response(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<HyperOutgoingBody> {
    let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Peer;

    fn from(peer: &str, method: Method, authorization: Option<&str>) -> Request<()> {
        let mut request = Request::builder().method(method).uri("/projects/app");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let mut request = request.body(()).expect("request");
        let peer = peer.parse().expect("socket address");
        request.extensions_mut().insert(Peer(peer));
        request
    }

    fn status(access: &Access, request: &Request<()>) -> Option<StatusCode> {
        access.refuse(request).map(|response| response.status())
    }

    /// Without a token the listener is loopback-only, so no real socket can
    /// bring a remote peer here; this guards the check behind that rule.
    #[test]
    fn without_a_token_only_reads_are_allowed_from_other_hosts() {
        let access = Access {
            token: None,
            max_deploy_size: 1,
        };
        let remote = "192.0.2.7:40000";
        assert_eq!(
            status(&access, &from(remote, Method::PUT, None)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&access, &from(remote, Method::DELETE, None)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(status(&access, &from(remote, Method::GET, None)), None);
        assert_eq!(
            status(&access, &from("127.0.0.1:40000", Method::PUT, None)),
            None
        );
        assert_eq!(
            status(&access, &from("[::1]:40000", Method::POST, None)),
            None
        );
    }

    #[test]
    fn with_a_token_every_request_needs_it() {
        let access = Access {
            token: Some("s3cret".into()),
            max_deploy_size: 1,
        };
        let local = "127.0.0.1:40000";
        assert_eq!(
            status(&access, &from(local, Method::GET, None)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&access, &from(local, Method::GET, Some("Bearer wrong"))),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(
                &access,
                &from("192.0.2.7:1", Method::PUT, Some("Bearer s3cret"))
            ),
            None
        );
        assert!(same_secret("s3cret", "s3cret") && !same_secret("s3cre", "s3cret"));
    }
}
