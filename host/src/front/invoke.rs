//! One request into one instance of a project's version: take an idle
//! instance (reset in place after its last request, or kept as is for
//! projects that reuse them: `engine/instances.rs`) or build a [`Store`] and
//! instantiate from the `ProxyPre`, call
//! `wasi:http/incoming-handler.handle`, and hand back the response head as soon
//! as the guest sets it while the body keeps streaming.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Body;
use hyper::header::HeaderValue;
use hyper::http::uri::{PathAndQuery, Uri};
use hyper::{Request, Response, header};
use tokio::sync::watch;
use wasmtime::Store;
use wasmtime::component::InstanceSnapshot;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::engine::faults;
use crate::engine::instances::{Reusable, release_idle_everywhere};
use crate::engine::store::{self, DeadlineExceeded, DrainDeadlineExceeded, Guest, RequestState};
use crate::engine::ticker::GuestRunning;
use crate::front::body_limit::{LimitedBody, declared_length};
use crate::front::error::InvokeError;
use crate::front::ready_body::{self, Taken};
use crate::front::slow_lane;
use crate::model::metrics::InstanceUse;
use crate::model::version::{InFlight, Stats, Version};

/// What one request on `version` runs with: its deadline, memory limit,
/// environment and output streams (tagged with `request_id`).
fn guest(version: &Version, request_id: &HeaderValue) -> Guest {
    Guest {
        project: version.project.clone(),
        version: version.number,
        env: version.run.env.clone(),
        memory: version.run.memory,
        timeout: version.run.request_timeout,
        stop: version.stop_signal(),
        outbound: version.run.outbound.clone(),
        forbidden: version.run.forbidden_outbound.clone(),
        denials: version.stats().outbound_denied.clone(),
        request_id: request_id.clone(),
        log: (version.stats().guest_log.clone(), version.run.log_rate),
    }
}

/// A store for one request on `version`.
fn new_store(version: &Version, request_id: &HeaderValue) -> Store<RequestState> {
    store::new_store(version.build.pre.engine(), guest(version, request_id))
}

/// What becomes of an instance once its request ended cleanly.
enum Keep {
    /// Reset in place to this state, and kept for the next request.
    Reset(InstanceSnapshot),
    /// Kept as it is (the project reuses instances, `reuse` > 1), unless it
    /// kept any of the request's resources.
    AsIs,
    /// Dropped: it cannot be reset, or must not be kept.
    Never,
}

/// The instance a request runs on.
enum Instance {
    /// Kept from an earlier request.
    Kept(Proxy, Keep),
    /// Still to be instantiated from this version.
    New(Arc<Version>),
}

/// Whether instantiating failed because the instance pool is full.
fn pool_full(err: &wasmtime::Error) -> bool {
    err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
}

/// Instantiates `version` in `store`. If the instance pool is full, idle
/// instances (of any version) give their slots back and it tries once more,
/// even if none were idle here: another request may just have freed some.
/// An instance made on that second try is never kept: its store still holds
/// whatever the failed try had set up, slots of the pool included, which
/// must go back when this request ends.
async fn instantiate(
    version: &Version,
    store: &mut Store<RequestState>,
) -> wasmtime::Result<(Proxy, Keep)> {
    match instantiate_once(version, store).await {
        Err(err) if pool_full(&err) => {
            release_idle_everywhere();
            let (proxy, _) = instantiate_once(version, store).await?;
            Ok((proxy, Keep::Never))
        }
        done => done,
    }
}

/// Instantiates `version` in `store`. When the version resets its
/// instances in place, also copies the new instance's state for that; the
/// first instance that cannot be reset turns resetting off for the version,
/// which says why once.
async fn instantiate_once(
    version: &Version,
    store: &mut Store<RequestState>,
) -> wasmtime::Result<(Proxy, Keep)> {
    let build = &version.build;
    if !version.instances.resets() {
        let keep = match version.instances.keeps_state() {
            true => Keep::AsIs,
            false => Keep::Never,
        };
        return Ok((build.pre.instantiate_async(&mut *store).await?, keep));
    }
    let instance = build
        .pre
        .instance_pre()
        .instantiate_async(&mut *store)
        .await?;
    let proxy = build.indices.load(&mut *store, &instance)?;
    match instance.snapshot(&mut *store) {
        Ok(snapshot) => Ok((proxy, Keep::Reset(snapshot))),
        Err(why) => {
            if version.instances.cannot_reset() {
                tracing::info!(
                    project = &*version.project,
                    version = version.number,
                    "instances are instantiated per request, not reset in place: {why:#}"
                );
            }
            Ok((proxy, Keep::Never))
        }
    }
}

/// Instantiates `version` once without calling it, so a component that traps
/// while instantiating is caught before it serves anything. The compute time
/// it took becomes the version's first typical compute time.
pub async fn trial_instantiate(version: &Version) -> Result<(), String> {
    // A full pool gets its idle instances' slots back, and one more try on
    // a store of its own (the failed try's store may hold some slots); the
    // compute time counts both tries.
    let run = async {
        let first = trial_try(version).await;
        match &first.output {
            Err(err) if pool_full(err) => {
                release_idle_everywhere();
                let mut second = trial_try(version).await;
                second.compute += first.compute;
                second
            }
            _ => first,
        }
    };
    match tokio::time::timeout(version.run.request_timeout, run).await {
        Ok(finished) => {
            finished.output.map_err(describe_trap)?;
            // A request on a new instance instantiates first, so this
            // is where its typical compute time starts, rather than at zero:
            // from zero, the first requests to a Python or JavaScript
            // version moved to the slow lane after 2 ms, and on a busy
            // machine waited there for seconds (`docs/performance.md`).
            // Capped like a request's sample at the threshold in force, so
            // a guest cannot buy a higher one with a heavy instantiation.
            version.compute.seed(finished.compute, slow_lane::HOG_AFTER);
            Ok(())
        }
        Err(_) => Err(format!(
            "instantiation did not finish within {:?}",
            version.run.request_timeout
        )),
    }
}

/// One try of [`trial_instantiate`], on a store of its own. Timed in CPU
/// time: one instantiation per version, and its time seeds the version's
/// typical compute time, which waiting for a core must not.
fn trial_try(version: &Version) -> impl Future<Output = slow_lane::Finished<()>> + use<> {
    let pre = version.build.pre.clone();
    let mut store = new_store(version, &HeaderValue::from_static("trial-instantiation"));
    slow_lane::run(
        async move {
            let _running = GuestRunning::start();
            pre.instantiate_async(&mut store).await.map(drop)
        },
        slow_lane::HOG_AFTER,
        slow_lane::Clock::Cpu,
        || {},
    )
}

/// Runs a candidate version's health check like any request, except that it
/// does not count against the project's `max_concurrency` (`swap/validate.rs`).
pub(crate) async fn health_check<B>(
    version: Arc<Version>,
    request: Request<B>,
    guest_path: &str,
) -> Result<Response<HyperOutgoingBody>, InvokeError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let mut request = request;
    let id = crate::front::request_id::take_or_make(request.headers_mut());
    let in_flight = InFlight::health_check(version.clone());
    invoke(in_flight, &version, request, Some(guest_path), &id).await
}

/// Runs `request` on the version it was admitted to; the guest sees
/// `guest_path` as its path and query (none: the request's own). `version`
/// is the one `in_flight` holds, borrowed from the caller so the request
/// path takes no further reference to it. `request_id` tags its log lines.
///
/// A guest that is not done once it set the response head runs on in its
/// own task, so it can keep streaming the body after the head is returned
/// ([`run_here_first`]). Its run owns the [`InFlight`] mark, so the version
/// stays counted (and alive) until the guest is really done, not when the
/// head is sent.
pub(crate) async fn invoke<B>(
    in_flight: InFlight,
    version: &Arc<Version>,
    request: Request<B>,
    guest_path: Option<&str>,
    request_id: &HeaderValue,
) -> Result<Response<HyperOutgoingBody>, InvokeError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    debug_assert!(Arc::ptr_eq(in_flight.version(), version));
    let max_body = version.run.max_body;
    if declared_length(request.headers()).is_some_and(|length| length > max_body) {
        return Err(InvokeError::BodyTooLarge(max_body));
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let mut request = request.map(|body| LimitedBody::new(body, max_body, exceeded.clone()));
    if let Some(guest_path) = guest_path {
        let path: PathAndQuery = guest_path
            .parse()
            .map_err(|err| InvokeError::BadRequest(format!("path `{guest_path}`: {err}")))?;
        let mut uri_parts = request.uri().clone().into_parts();
        uri_parts.path_and_query = Some(path);
        *request.uri_mut() =
            Uri::from_parts(uri_parts).map_err(|err| InvokeError::BadRequest(err.to_string()))?;
    }
    if request.uri().authority().is_none() && !request.headers().contains_key(header::HOST) {
        // HTTP/1.0 clients may omit Host; wasi:http requires an authority.
        request
            .headers_mut()
            .insert(header::HOST, header::HeaderValue::from_static("localhost"));
    }

    let timeout = version.run.request_timeout;
    // A kept instance brings the stop signal it watched before: cloning
    // the version's for each request would write a count every worker's
    // requests share.
    let (mut store, instance, served, mut stop) = match version.instances.take() {
        Some(Reusable {
            mut store,
            proxy,
            served,
            snapshot,
            stop,
            ..
        }) => {
            version.stats().requests.count_instance(match snapshot {
                Some(_) => InstanceUse::Reset,
                None => InstanceUse::Reused,
            });
            store.data_mut().restart(timeout, request_id.clone());
            store.set_epoch_deadline(1);
            let keep = match snapshot {
                Some(snapshot) => Keep::Reset(snapshot),
                None => Keep::AsIs,
            };
            (store, Instance::Kept(proxy, keep), served, stop)
        }
        None => (
            new_store(version, request_id),
            Instance::New(version.clone()),
            0,
            version.stop_signal(),
        ),
    };

    let host_error = |err: wasmtime::Error| InvokeError::Host(format!("{err:#}"));
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let guest_request = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)
        .map_err(host_error)?;
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(host_error)?;

    let cut_off = exceeded.clone();
    let id = request_id.clone();
    // Boxed: the guest's future is large (its store's future, the timeout,
    // the slow lane's), and tokio copies a task's future in and out of its
    // cell on spawning, finishing and dropping it; a box makes that a
    // pointer (memcpy was 2 % of the server's CPU per request).
    let guest = Box::pin(async move {
        // Before the guest runs: whether its worker took a page fault while
        // it ran decides how its reset finds the pages it wrote.
        let fault_mark = faults::mark();
        let version = in_flight.version();
        let hog_after = slow_lane::hog_after(version.compute.get());
        let clock = slow_lane::Clock::for_threshold(hog_after);
        let slowed = &version.stats().slowed;
        let run = slow_lane::run(
            async move {
                let _running = GuestRunning::start();
                let (proxy, keep) = match instance {
                    Instance::Kept(proxy, keep) => (proxy, keep),
                    Instance::New(version) => instantiate(&version, &mut store).await?,
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, guest_request, out)
                    .await?;
                Ok((store, proxy, keep))
            },
            hog_after,
            clock,
            || Stats::bump(slowed),
        );
        // The epoch callback stops guests that compute; this timeout and the
        // stop signal stop guests that wait (on a timer, on a body that never comes).
        let mut moved = false;
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, run) => outcome.map(|finished| {
                if finished.output.is_ok() && !cut_off.load(Ordering::Acquire) {
                    // Never more than the threshold this request had: time
                    // on the slow lane or descheduled cannot raise it faster.
                    version
                        .compute
                        .record(finished.compute.min(hog_after), slow_lane::RECORD_FROM);
                }
                moved = finished.moved;
                finished.output
            }),
            _ = stop.wait_for(|stop| *stop) => Ok(Err(DrainDeadlineExceeded.into())),
        };
        let result = match outcome {
            Ok(Ok(instance)) => Ok(instance),
            Ok(Err(err)) if err.downcast_ref::<DeadlineExceeded>().is_some() => {
                Err(InvokeError::Timeout(timeout))
            }
            Ok(Err(err)) if pool_full(&err) => {
                Stats::bump(&version.stats().pool_exhausted);
                Err(InvokeError::PoolExhausted(err.root_cause().to_string()))
            }
            Ok(Err(err)) if err.downcast_ref::<DrainDeadlineExceeded>().is_some() => {
                if version.is_retired() {
                    version.count_forced_drain();
                }
                Err(InvokeError::Drained)
            }
            Ok(Err(err)) => {
                tracing::debug!(
                    project = &*version.project,
                    version = version.number,
                    "guest failed: {err:?}"
                );
                Err(InvokeError::Trap(describe_trap(err)))
            }
            Err(_) => Err(InvokeError::Timeout(timeout)),
        };
        match &result {
            // Counted in the project's stats; a warning each would let
            // clients flood the log by filling the pool.
            Err(err @ InvokeError::PoolExhausted(_)) => tracing::debug!(
                project = &*version.project,
                version = version.number,
                "{err}"
            ),
            Err(err) => tracing::warn!(
                project = &*version.project,
                version = version.number,
                request_id = id.to_str().unwrap_or_default(),
                "{err}"
            ),
            Ok(_) => {}
        }
        let (mut store, proxy, keep) = result?;
        // Only an instance whose request ended cleanly serves again: one
        // that trapped, timed out, was interrupted or had its body cut off
        // at the limit is dropped, above or here.
        if cut_off.load(Ordering::Acquire) {
            return Ok(());
        }
        match keep {
            Keep::Reset(snapshot) => {
                // The guest ran on this thread alone unless it moved.
                let unwritten_pages_unfaulted = !moved && faults::none_since(fault_mark);
                let kept = (store, proxy, served + 1, stop);
                keep_reset(version, kept, snapshot, unwritten_pages_unfaulted);
                return Ok(());
            }
            Keep::Never => return Ok(()),
            Keep::AsIs => {}
        }
        // A response the guest dropped ends its connection on the
        // connection task's next turn: let those tasks run before the
        // instance is judged (only when the guest made outgoing requests).
        for _ in 0..3 {
            if !store.data().outgoing_under_way() {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Kept as is, an instance that kept any of the request's resources
        // is dropped too (dropping it ends whatever it kept).
        if version.instances.keeps_state() && !store.data_mut().request_left_over() {
            version
                .instances
                .put(Reusable::new(store, proxy, served + 1, None, stop));
        }
        Ok(())
    });

    let run = run_here_first(guest).await;
    // A guest that is done wrote all it will: its body may be whole.
    let over = matches!(run, GuestRun::Over(Ok(Ok(()))));
    let answer = answer(version, request_id, receiver.await, run).await;
    match answer {
        // The guest failed because its body was cut off at the limit: that
        // is the client's doing, and the client should hear why.
        Err(_) if exceeded.load(Ordering::Acquire) => Err(InvokeError::BodyTooLarge(max_body)),
        Ok(response) => {
            let framed = response.headers().contains_key(header::CONTENT_LENGTH)
                || response.headers().contains_key(header::TRANSFER_ENCODING);
            Ok(response.map(|body| {
                let body = match over && !framed {
                    true => ready_body::take_ready(body),
                    false => Taken::Partial(body),
                };
                match body {
                    // Ended with no error: nothing left to cut off.
                    Taken::Whole(body) => body,
                    Taken::Partial(body) => report_cut_off(
                        body,
                        version.project.clone(),
                        version.number,
                        request_id.clone(),
                    ),
                }
            }))
        }
        failed => failed,
    }
}

/// Resets an instance whose request ended cleanly (and has now served
/// `served` requests) to its state as instantiated, gives it new host
/// state (which drops every resource the request left, as when a fresh
/// instance is freed), and keeps it for the next request. A response body
/// the guest left open, neither finished nor dropped, then ends as if
/// finished: wasmtime-wasi-http 48 takes a finish that never comes for the
/// end, where wasi:http asks for a corrupted body (a guest that drops its
/// body does get its response cut off). An instance the reset
/// refuses is dropped.
///
/// With `unfaulted`, the guest wrote no page of its memory that its last
/// reset did not find written (it ran on this worker alone, which took no
/// page fault meanwhile: `engine/faults.rs`), so only those are put back,
/// without a scan.
fn keep_reset(
    version: &Arc<Version>,
    (mut store, proxy, served, stop): (Store<RequestState>, Proxy, u32, watch::Receiver<bool>),
    mut snapshot: InstanceSnapshot,
    unfaulted: bool,
) {
    let restored = match unfaulted {
        true => snapshot.restore_known_pages(&mut store),
        false => snapshot.restore(&mut store).map(|()| false),
    };
    match restored {
        Ok(true) => version
            .stats()
            .requests
            .count_instance(InstanceUse::ResetUnscanned),
        Ok(false) => {}
        Err(err) => {
            tracing::debug!(
                project = &*version.project,
                version = version.number,
                "instance not reset: {err:#}"
            );
            return;
        }
    }
    store.data_mut().renew();
    version
        .instances
        .put(Reusable::new(store, proxy, served, Some(snapshot), stop));
}

/// Logs, naming project and version, when a response body ends in an error
/// instead of its end: the guest stopped writing (trapped, timed out, or
/// returned without finishing it). The client sees the connection cut, which
/// is the only honest signal once the status line is sent.
fn report_cut_off(
    body: HyperOutgoingBody,
    project: Arc<str>,
    number: u64,
    request_id: HeaderValue,
) -> HyperOutgoingBody {
    body.map_err(move |err| {
        tracing::warn!(
            project = &*project,
            version = number,
            request_id = request_id.to_str().unwrap_or_default(),
            "response body cut off: {err}"
        );
        err
    })
    .boxed_unsync()
}

/// What the client gets: the response the guest set, or why there is none.
async fn answer(
    version: &Version,
    request_id: &HeaderValue,
    received: Result<
        Result<
            Response<HyperOutgoingBody>,
            wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
        >,
        tokio::sync::oneshot::error::RecvError,
    >,
    run: GuestRun,
) -> Result<Response<HyperOutgoingBody>, InvokeError> {
    match received {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => {
            let err = InvokeError::Guest(code);
            tracing::warn!(
                project = &*version.project,
                version = version.number,
                request_id = request_id.to_str().unwrap_or_default(),
                "{err}"
            );
            Err(err)
        }
        // The guest dropped the response outparam: it trapped, timed out, or
        // returned without answering. The run's result says which.
        Err(_) => match run.result().await {
            Ok(Ok(())) => {
                let err = InvokeError::NoResponse;
                tracing::warn!(
                    project = &*version.project,
                    version = version.number,
                    request_id = request_id.to_str().unwrap_or_default(),
                    "{err}"
                );
                Err(err)
            }
            Ok(Err(err)) => Err(err),
            Err(failed) => Err(InvokeError::Host(format!("guest task failed: {failed}"))),
        },
    }
}

/// A guest's run, polled first on the request's own task.
enum GuestRun {
    /// It was over within that first poll: what it returned, or how it
    /// panicked.
    Over(Result<Result<(), InvokeError>, String>),
    /// It was not, so it runs on in a task of its own.
    Going(tokio::task::JoinHandle<Result<(), InvokeError>>),
}

impl GuestRun {
    /// What the guest's run returned, once it is over.
    async fn result(self) -> Result<Result<(), InvokeError>, String> {
        match self {
            GuestRun::Over(over) => over,
            GuestRun::Going(task) => task.await.map_err(|join| join.to_string()),
        }
    }
}

/// Polls a guest's run once on the request's task, and spawns a task for it
/// only if that poll left it unfinished.
///
/// Most guests answer and finish in one go (hello sets its response,
/// writes its body into the body's channel and returns without ever
/// waiting): run here, such a guest needs no task of its own, and its
/// response is ready when this returns, so the connection writes it in the
/// same turn instead of being woken for it by the guest's task. In `perf`,
/// tokio's share of the server's CPU on hello fell from 6.9 % to 3.6 % once
/// the task went (`docs/performance.md`). A guest that waits (on its
/// request body, a timer, an outgoing request, its epoch yield) moves to
/// its own task at once, within this same poll, so dropping the request's
/// future (the client went away) never cuts a guest short, as before. Its
/// first poll registered this task's waker; the new task polls it again
/// first thing, which registers its own.
///
/// A panic in that first poll is caught, as a spawned task's would be, so
/// the client gets an error response rather than a dropped connection.
async fn run_here_first<F>(mut guest: std::pin::Pin<Box<F>>) -> GuestRun
where
    F: Future<Output = Result<(), InvokeError>> + Send + 'static,
{
    let first = std::future::poll_fn(|cx| {
        let poll =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guest.as_mut().poll(cx)));
        std::task::Poll::Ready(poll)
    })
    .await;
    match first {
        Ok(std::task::Poll::Ready(result)) => GuestRun::Over(Ok(result)),
        Ok(std::task::Poll::Pending) => GuestRun::Going(tokio::spawn(guest)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|message| message.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            GuestRun::Over(Err(format!("panicked: {message}")))
        }
    }
}

/// One line for a guest failure: the trap kind or the root cause, without the
/// multi-line wasm backtrace (logged at debug level instead).
fn describe_trap(err: wasmtime::Error) -> String {
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => err.root_cause().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run done in its first poll is over without a task; one that waits
    /// goes on in a task of its own and finishes there, even once the future
    /// that polled it first is gone; a panic in the first poll is an error,
    /// as a spawned task's would be.
    #[tokio::test]
    async fn a_guest_is_run_here_until_it_waits_then_in_its_own_task() {
        let over = run_here_first(Box::pin(async { Ok(()) })).await;
        assert!(matches!(over, GuestRun::Over(Ok(Ok(())))));

        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel();
        let waiting = run_here_first(Box::pin(async move {
            let _ = wait.await;
            let _ = done.send(());
            Err(InvokeError::NoResponse)
        }))
        .await;
        let GuestRun::Going(task) = waiting else {
            panic!("a run that waits must move to its own task");
        };
        drop(task);
        go.send(()).expect("the run still waits");
        tokio::time::timeout(std::time::Duration::from_secs(60), finished)
            .await
            .expect("the run finishes in its own task")
            .expect("the run reports");

        let panicked = run_here_first(Box::pin(async {
            panic!("a host bug");
            #[allow(unreachable_code)]
            Ok(())
        }))
        .await;
        assert!(matches!(panicked.result().await, Err(why) if why == "panicked: a host bug"));
    }
}
