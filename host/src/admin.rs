//! The admin API, on its own listener so it can be firewalled apart from
//! project traffic and stays reachable when projects are busy.
//!
//! Endpoints:
//! - `GET /healthz`: `200 ok` while the host runs.
//! - `GET /projects`: JSON array with one object per known project, failed ones included.
//! - `GET /projects/NAME`: that project's object, or 404.
//!
//! A project object has: `name`, `route`, `hosts`, `strip_prefix`, `entry`
//! (its folder or file), `component` (path), `digest` (sha256 hex of the
//! component bytes), `version`, `state` (`active` or `failed`), `size` (bytes),
//! `compile_ms`, `in_flight` and `last_error`. Fields that do not apply are `null`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde::Serialize;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::manifest::ProjectName;
use crate::registry::{Project, Registry};
use crate::responses::{json_response, text_response};

/// A project as the admin API shows it.
#[derive(Serialize)]
struct ProjectView<'a> {
    name: &'a str,
    route: &'a str,
    hosts: &'a [String],
    strip_prefix: bool,
    entry: String,
    component: Option<String>,
    digest: Option<&'a str>,
    version: Option<u64>,
    state: &'static str,
    size: Option<u64>,
    compile_ms: Option<f64>,
    in_flight: usize,
    last_error: Option<&'a str>,
}

impl<'a> ProjectView<'a> {
    fn new(project: &'a Project) -> Self {
        let current = project.current.as_deref();
        Self {
            name: project.name.as_str(),
            route: &project.route,
            hosts: &project.hosts,
            strip_prefix: project.strip_prefix,
            entry: project.entry.display().to_string(),
            component: project.component.as_ref().map(|p| p.display().to_string()),
            digest: current.map(|v| v.digest.as_str()),
            version: current.map(|v| v.number),
            state: project.state(),
            size: current.map(|v| v.size),
            compile_ms: current.map(|v| v.compile_time.as_secs_f64() * 1000.0),
            in_flight: current.map_or(0, |v| v.in_flight()),
            last_error: project.last_error.as_deref(),
        }
    }
}

/// Answers one admin request.
pub async fn handle(
    registry: Arc<Registry>,
    request: Request<Incoming>,
) -> Response<HyperOutgoingBody> {
    let path = request.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text_response(StatusCode::OK, "ok"),
        (&Method::GET, ["projects"]) => {
            let snapshot = registry.snapshot();
            let views: Vec<ProjectView<'_>> = snapshot
                .projects
                .iter()
                .map(|p| ProjectView::new(p))
                .collect();
            json_response(StatusCode::OK, &views)
        }
        (&Method::GET, ["projects", name]) => {
            if let Err(reason) = ProjectName::parse(name) {
                return text_response(StatusCode::BAD_REQUEST, &reason);
            }
            let snapshot = registry.snapshot();
            match snapshot.project(name) {
                Some(project) => json_response(StatusCode::OK, &ProjectView::new(project)),
                None => text_response(StatusCode::NOT_FOUND, &format!("no project `{name}`")),
            }
        }
        (_, ["healthz"] | ["projects"] | ["projects", _]) => {
            let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
            response
        }
        _ => text_response(
            StatusCode::NOT_FOUND,
            "no such admin endpoint; see GET /projects",
        ),
    }
}
