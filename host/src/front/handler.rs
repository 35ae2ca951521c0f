//! The project handler: route one request to its project's current version
//! and run it there, tagging the answer with the project and version.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Body;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tracing::{Instrument, field};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::front::error::InvokeError;
use crate::front::invoke::invoke;
use crate::front::responses::text_response;
use crate::model::project::Unavailable;
use crate::model::registry::Registry;
use crate::model::version::Version;

/// Routes one request to its project and runs it there.
///
/// Routing and admission happen here, before the returned future first
/// runs: the routing snapshot is read through a guard (no reference count
/// shared by every worker is touched) and the request is admitted to the
/// project's current version. Only that version's `Arc` is kept, so a swap
/// during the request cannot mix versions, and the future borrows nothing.
///
/// Generic over the request body, so tests can call it with an in-memory one.
pub fn handle<B>(
    registry: &Registry,
    request: Request<B>,
) -> impl Future<Output = Response<HyperOutgoingBody>> + Send + use<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let started = Instant::now();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %path_and_query,
        project = field::Empty,
        version = field::Empty,
        status = field::Empty,
        duration_ms = field::Empty,
    );
    let target = {
        let snapshot = registry.routing();
        let host = request.headers().get(HOST).and_then(|h| h.to_str().ok());
        snapshot
            .router
            .route(host, &path_and_query)
            .map(|found| (snapshot.routed[found.project].admit(), found.guest_path))
    };
    async move {
        let response = match target {
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
                tagged(refused.to_response(), &version)
            }
            Some((Ok(in_flight), guest_path)) => {
                let version = in_flight.version().clone();
                let span = tracing::Span::current();
                span.record("project", &*version.project);
                span.record("version", version.number);
                let response = match invoke(in_flight, request, &guest_path).await {
                    Ok(response) => response,
                    Err(err) => err.to_response(),
                };
                tagged(response, &version)
            }
        };
        let span = tracing::Span::current();
        span.record("status", response.status().as_u16());
        span.record("duration_ms", started.elapsed().as_secs_f64() * 1000.0);
        tracing::debug!("request served");
        response
    }
    .instrument(span)
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
