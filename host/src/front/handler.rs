//! The project handler: route one request to its project's current version
//! and run it there, tagging the answer with the project and version.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Body;
use hyper::header::{HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tracing::{Instrument, field};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::front::error::InvokeError;
use crate::front::invoke::invoke;
use crate::front::request_id;
use crate::front::responses::text_response;
use crate::model::project::Unavailable;
use crate::model::registry::Registry;
use crate::model::version::Version;

/// What the request path records besides serving: metrics (on by default,
/// `--no-request-metrics` turns them off) and an access log line per request
/// (`--access-log`).
#[derive(Clone, Copy, Debug)]
pub struct Recording {
    /// Count each answer by status and observe its latency (`GET /metrics`).
    pub metrics: bool,
    /// Log one line per request at info, target `access`.
    pub access_log: bool,
}

impl Default for Recording {
    fn default() -> Self {
        Self {
            metrics: true,
            access_log: false,
        }
    }
}

/// Routes one request to its project and runs it there.
///
/// Routing and admission happen here, before the returned future first
/// runs: the routing snapshot is read through a guard (no reference count
/// shared by every worker is touched) and the request is admitted to the
/// project's current version. Only that version's `Arc` is kept, so a swap
/// during the request cannot mix versions, and the future borrows nothing.
///
/// Every answer carries the request's `x-request-id` (`request_id.rs`).
///
/// Generic over the request body, so tests can call it with an in-memory one.
pub fn handle<B>(
    registry: &Registry,
    recording: Recording,
    mut request: Request<B>,
) -> impl Future<Output = Response<HyperOutgoingBody>> + Send + use<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let started = Instant::now();
    let request_id = request_id::take_or_make(request.headers_mut());
    // None for authority-form (`CONNECT host:443`, or any method with a
    // bare `host:port` target): no path to route on or hand a guest.
    let path_and_query = request.uri().path_and_query().map(|pq| pq.as_str());
    let no_path = path_and_query.is_none();
    // Kept for the access log line only: no copy per request without one.
    let path = match (recording.access_log, path_and_query) {
        (false, _) => String::new(),
        (true, Some(path)) => path.to_owned(),
        (true, None) => request.uri().to_string(),
    };
    let method = request.method().clone();
    let span = tracing::debug_span!(
        "request",
        method = %method,
        path = path_and_query.unwrap_or_default(),
        project = field::Empty,
        version = field::Empty,
    );
    let target = path_and_query.and_then(|path_and_query| {
        let snapshot = registry.routing();
        let host = request.headers().get(HOST).and_then(|h| h.to_str().ok());
        snapshot.router.route(host, path_and_query).map(|found| {
            // The path the guest sees, when it is not the request's own.
            let guest_path = match found.guest_path {
                Cow::Borrowed(_) => None,
                Cow::Owned(path) => Some(path),
            };
            (snapshot.routed[found.project].admit(), guest_path)
        })
    });
    async move {
        // Records the request however it ends, also when hyper drops this
        // future (the client went away, a timeout, the end of the grace
        // period): then as 499, the way proxies log a client that closed.
        let mut record = Record {
            started,
            recording,
            method,
            path,
            request_id,
            version: None,
            status: None,
        };
        let mut response = match target {
            None if no_path => text_response(
                StatusCode::BAD_REQUEST,
                "the request target must be a path or an absolute URL",
            ),
            None | Some((Err(Unavailable::NotServing), _)) => {
                text_response(StatusCode::NOT_FOUND, "no project is routed here")
            }
            Some((Err(Unavailable::Starting(project)), _)) => {
                let mut response = InvokeError::Starting.to_response();
                if let Ok(name) = HeaderValue::from_str(project.as_str()) {
                    response.headers_mut().insert("wasmhost-project", name);
                }
                response
            }
            Some((Err(Unavailable::Overloaded(version)), _)) => {
                tracing::debug!(
                    project = &*version.project,
                    version = version.number,
                    "refused: {} requests already running",
                    version.run.max_concurrency
                );
                let refused = InvokeError::Overloaded(version.run.max_concurrency);
                let response = tagged(refused.to_response(), &version);
                record.version = Some(version);
                response
            }
            Some((Ok(in_flight), guest_path)) => {
                // The request's one reference to its version besides its
                // in-flight mark's: every clone writes the count that every
                // worker's requests to the project share.
                let version = record.version.insert(in_flight.version().clone());
                let span = tracing::Span::current();
                span.record("project", &*version.project);
                span.record("version", version.number);
                let answer = invoke(
                    in_flight,
                    version,
                    request,
                    guest_path.as_deref(),
                    &record.request_id,
                )
                .await;
                let response = match answer {
                    Ok(response) => response,
                    Err(err) => err.to_response(),
                };
                tagged(response, version)
            }
        };
        record.status = Some(response.status().as_u16());
        response
            .headers_mut()
            .insert(request_id::HEADER.clone(), record.request_id.clone());
        response
    }
    .instrument(span)
}

/// One request's metrics and log lines, written when it is dropped: after
/// the response head is ready, or early when the request is abandoned.
struct Record {
    started: Instant,
    recording: Recording,
    method: Method,
    path: String,
    request_id: HeaderValue,
    /// The version that answered or refused it; none when no project was
    /// routed or the project had no version yet (nothing to count on).
    version: Option<Arc<Version>>,
    /// The status sent; `None` while the request has not been answered.
    status: Option<u16>,
}

/// What an abandoned request is counted and logged as (nginx's "client
/// closed request"): it never got an answer.
const ABANDONED: u16 = 499;

impl Drop for Record {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let status = self.status.unwrap_or(ABANDONED);
        if self.recording.metrics
            && let Some(version) = &self.version
        {
            version.stats().requests.record(status, took);
        }
        let duration_ms = took.as_secs_f64() * 1000.0;
        let project = self.version.as_ref().map(|v| &*v.project);
        let version = self.version.as_ref().map(|v| v.number);
        let request_id = self.request_id.to_str().unwrap_or_default();
        let (method, path) = (&self.method, &self.path);
        if self.recording.access_log {
            tracing::info!(
                target: "wasmhost::access",
                method = %method,
                path = %path,
                status,
                duration_ms,
                project,
                version,
                request_id,
                "{method} {path} {status}"
            );
        }
    }
}

/// Names the project and version that answered, on every answer a version
/// gave or refused.
fn tagged(
    mut response: Response<HyperOutgoingBody>,
    version: &Version,
) -> Response<HyperOutgoingBody> {
    let headers = response.headers_mut();
    if let Ok(name) = HeaderValue::from_str(&version.project) {
        headers.insert("wasmhost-project", name);
    }
    headers.insert("wasmhost-version", HeaderValue::from(version.number));
    response
}
