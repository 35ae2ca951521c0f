//! One request into one fresh instance of a project's version: build the
//! per-request [`Store`], instantiate from the `ProxyPre`, call
//! `wasi:http/incoming-handler.handle`, and hand back the response head as soon
//! as the guest sets it while the body keeps streaming.

use std::time::Instant;

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Body;
use hyper::http::uri::{PathAndQuery, Uri};
use hyper::{Request, Response, header};
use tokio::sync::watch;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::error::InvokeError;
use crate::guest_log::{GuestLog, Stream};
use crate::version::{InFlight, Version};

/// Everything a guest instance can reach: its WASI context, HTTP context and
/// resource table, plus what its epoch callback checks.
pub struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    /// When this request must be done; checked on every epoch tick.
    deadline: Instant,
    /// Turns true when the version outlived its drain deadline; checked on every epoch tick.
    stop: watch::Receiver<bool>,
}

impl RequestState {
    fn new(version: &Version, deadline: Instant) -> Self {
        let project = version.project.clone();
        let wasi = WasiCtx::builder()
            .envs(&version.run.env)
            .stdout(GuestLog::new(
                project.clone(),
                version.number,
                Stream::Stdout,
            ))
            .stderr(GuestLog::new(project, version.number, Stream::Stderr))
            .build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            deadline,
            stop: version.stop_signal(),
        }
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// Raised from the epoch callback once a request is past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request deadline exceeded")]
struct DeadlineExceeded;

/// Raised from the epoch callback once the request's version must stop draining.
#[derive(Debug, thiserror::Error)]
#[error("version drain deadline exceeded")]
struct DrainDeadlineExceeded;

/// A store for one request on `version`, with its deadline and epoch callback set.
fn new_store(version: &Version) -> Store<RequestState> {
    let deadline = Instant::now() + version.run.request_timeout;
    let mut store = Store::new(
        version.build.pre.engine(),
        RequestState::new(version, deadline),
    );
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|context| {
        let state = context.data();
        if *state.stop.borrow() {
            Err(DrainDeadlineExceeded.into())
        } else if Instant::now() >= state.deadline {
            Err(DeadlineExceeded.into())
        } else {
            // Yield so a busy guest shares the thread with other requests.
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}

/// Instantiates `version` once without calling it, so a component that traps
/// while instantiating is caught before it serves anything.
pub async fn trial_instantiate(version: &Version) -> Result<(), String> {
    let mut store = new_store(version);
    let run = version.build.pre.instantiate_async(&mut store);
    match tokio::time::timeout(version.run.request_timeout, run).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(describe_trap(err)),
        Err(_) => Err(format!(
            "instantiation did not finish within {:?}",
            version.run.request_timeout
        )),
    }
}

/// Runs `request` on `version`; the guest sees `guest_path` as its path and query.
///
/// The guest runs in its own task so it can keep streaming the body after the
/// head is returned. That task owns the [`InFlight`] mark, so the version stays
/// counted (and alive) until the guest is really done, not when the head is sent.
pub async fn invoke<B>(
    version: Arc<Version>,
    mut request: Request<B>,
    guest_path: &str,
) -> Result<Response<HyperOutgoingBody>, InvokeError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let path: PathAndQuery = guest_path
        .parse()
        .map_err(|err| InvokeError::BadRequest(format!("path `{guest_path}`: {err}")))?;
    let mut uri_parts = request.uri().clone().into_parts();
    uri_parts.path_and_query = Some(path);
    *request.uri_mut() =
        Uri::from_parts(uri_parts).map_err(|err| InvokeError::BadRequest(err.to_string()))?;
    if request.uri().authority().is_none() && !request.headers().contains_key(header::HOST) {
        // HTTP/1.0 clients may omit Host; wasi:http requires an authority.
        request
            .headers_mut()
            .insert(header::HOST, header::HeaderValue::from_static("localhost"));
    }

    let timeout = version.run.request_timeout;
    let mut store = new_store(&version);
    let mut stop = version.stop_signal();

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

    let in_flight = InFlight::new(version.clone());
    let task = tokio::spawn(async move {
        let version = in_flight.version();
        let run = async {
            let proxy = version.build.pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, guest_request, out)
                .await
        };
        // The epoch callback stops guests that compute; this timeout and the
        // stop signal stop guests that wait (on a timer, on a body that never comes).
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, run) => outcome,
            _ = stop.wait_for(|stop| *stop) => Ok(Err(DrainDeadlineExceeded.into())),
        };
        let result = match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) if err.downcast_ref::<DeadlineExceeded>().is_some() => {
                Err(InvokeError::Timeout(timeout))
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
        if let Err(err) = &result {
            tracing::warn!(
                project = &*version.project,
                version = version.number,
                "{err}"
            );
        }
        result
    });

    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => {
            let err = InvokeError::Guest(code);
            tracing::warn!(
                project = &*version.project,
                version = version.number,
                "{err}"
            );
            Err(err)
        }
        // The guest dropped the response outparam: it trapped, timed out, or
        // returned without answering. The task's result says which.
        Err(_) => match task.await {
            Ok(Ok(())) => {
                let err = InvokeError::NoResponse;
                tracing::warn!(
                    project = &*version.project,
                    version = version.number,
                    "{err}"
                );
                Err(err)
            }
            Ok(Err(err)) => Err(err),
            Err(join) => Err(InvokeError::Host(format!("guest task failed: {join}"))),
        },
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
