//! The HTTP front door: an accept loop with one task per connection, the
//! request handler that routes into projects, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{Instrument, field};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::invoke::invoke;
use crate::registry::Registry;
use crate::responses::text_response;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The remote address of the connection a request came on, in the request's
/// extensions, for handlers that decide by it (the admin API).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` resolves,
/// then stops accepting, lets in-flight requests finish for up to `grace`,
/// and returns. Used for both the project listener and the admin listener.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<HyperOutgoingBody>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(cause = %err, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(client.addr = %peer, cause = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("all connections closed"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; cutting the remaining connections");
        }
    }
}

/// Routes one request to its project and runs it there.
///
/// The snapshot and then the project's current version are each loaded once,
/// before any await, and only the version's `Arc` is kept, so a swap during
/// the request cannot mix versions.
pub async fn handle(
    registry: Arc<Registry>,
    request: Request<Incoming>,
) -> Response<HyperOutgoingBody> {
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
    async move {
        let target = {
            let snapshot = registry.snapshot();
            let host = request.headers().get(HOST).and_then(|h| h.to_str().ok());
            snapshot
                .router
                .route(host, &path_and_query)
                .and_then(|found| {
                    let version = snapshot.routed[found.project].current.load_full()?;
                    Some((version, found.guest_path))
                })
        };
        let response = match target {
            None => text_response(StatusCode::NOT_FOUND, "no project is routed here"),
            Some((version, guest_path)) => {
                let span = tracing::Span::current();
                span.record("project", &*version.project);
                span.record("version", version.number);
                let mut response = match invoke(version.clone(), request, &guest_path).await {
                    Ok(response) => response,
                    Err(err) => err.to_response(),
                };
                let headers = response.headers_mut();
                if let Ok(name) = HeaderValue::from_str(&version.project) {
                    headers.insert("wasmhost-project", name);
                }
                headers.insert("wasmhost-version", HeaderValue::from(version.number));
                response
            }
        };
        let span = tracing::Span::current();
        span.record("status", response.status().as_u16());
        span.record("duration_ms", started.elapsed().as_secs_f64() * 1000.0);
        tracing::debug!("request served");
        response
    }
    .instrument(span)
    .await
}
