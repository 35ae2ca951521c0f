//! The HTTP front door: an accept loop with one task per connection and a
//! graceful drain on shutdown. Serves both the project and the admin listener.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::front::connection::{self, Activity, ConnectionLimits, Counted, Streaming};

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The remote address of the connection a request came on, in the request's
/// extensions, for handlers that decide by it (the admin API).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// The connection slots of one listener: `limits.max_connections` permits.
pub(crate) fn slots(limits: ConnectionLimits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limits.max_connections.max(1)))
}

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` resolves,
/// then stops accepting, lets in-flight requests finish for up to `grace`,
/// and returns. Used for both the project listener and the admin listener.
///
/// At most `limits.max_connections` are served at once: past it the loop
/// holds the one connection it accepted until a slot frees and accepts no
/// more, so new connections wait in the kernel's backlog. `slots` holds that
/// many permits and is shared by the loops of every request worker, so the
/// cap is per listener, not per worker (plus at most one connection waiting
/// in each worker). Each
/// connection is closed when a request head takes longer than the header
/// timeout or it sits idle past the idle timeout (`connection.rs`).
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
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
        // Accept first, then wait for a slot: a slot taken before `accept`
        // would sit idle in this loop while a connection waits in another
        // worker's queue (each worker has its own socket).
        let slot = tokio::select! {
            // The semaphore is never closed, so acquiring only ever waits.
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        // Responses are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let handler = handler.clone();
        let requests = activity.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            let busy = requests.request();
            let response = handler(request);
            async move {
                let response = response.await;
                Ok::<_, Infallible>(response.map(|body| Streaming::new(body, busy).boxed_unsync()))
            }
        });
        let connection = http1::Builder::new().keep_alive(true).serve_connection(
            TokioIo::new(Counted::new(stream, activity.clone())),
            service,
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => {
                    if let Err(err) = ended {
                        tracing::debug!(client.addr = %peer, cause = %err, "connection ended with an error");
                    }
                }
                expired = connection::expiry(activity, limits) => {
                    tracing::debug!(client.addr = %peer, ?expired, "connection closed: past its timeout");
                }
            }
            drop(slot);
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
