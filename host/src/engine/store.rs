//! The per-request store: what one guest instance can reach (its WASI and
//! HTTP contexts), its memory limit, and the epoch callback that enforces its
//! deadlines and makes it yield.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::random::WasiRandomCtx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::engine::guest_log::{GuestLog, LogBudget, LogSource, RequestTag, Stream};
use crate::engine::outbound::{Denials, OutboundHooks, OutboundPolicy};

/// Everything a guest instance can reach: its WASI context, HTTP context and
/// resource table, plus what its epoch callback checks.
pub struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// Decides and sends the guest's outgoing HTTP requests: deny by default.
    outbound: OutboundHooks,
    table: ResourceTable,
    /// When this request must be done; checked on every epoch tick.
    deadline: Instant,
    /// Turns true when the version outlived its drain deadline; checked on every epoch tick.
    stop: watch::Receiver<bool>,
    /// Caps linear memory growth at the project's `limits.memory`.
    limits: MemoryLimit,
    /// The request the guest's log lines belong to.
    request: RequestTag,
}

/// The most one header field list may hold on the host, in bytes (the same
/// as wasmtime-wasi-http's default, set here so [`resource_capacity`] can
/// count on it).
const FIELD_SIZE_LIMIT: usize = 128 * 1024;

/// The fewest resources a request may hold at once, however small its
/// memory limit: a guest answering one request holds about ten.
const MIN_RESOURCES: usize = 256;

/// How many resources (header fields, bodies, streams, outgoing requests) a
/// guest instance may hold on the host at once. They live in host memory,
/// outside the linear memory `limits.memory` caps, and wasmtime allows a
/// million: a guest calling `fields.from-list` in a loop with a 128 KiB value
/// could make the host allocate 128 GiB and take every project down with it.
/// Capped at one per 128 KiB of the project's memory limit (1,024 at the
/// default 128 MiB), field lists alone hold of the order of the memory limit
/// again (the header maps' own overhead comes on top). A body being written
/// can buffer more: two writes of up to 1 MiB (wasmtime-wasi-http's default,
/// kept so that components that run under `wasmtime serve` run here), so
/// with bodies the bound is looser, about 1 GiB at the default (a body takes
/// two resources). Past the cap, the call traps the guest.
fn resource_capacity(memory: u64) -> usize {
    let per_memory = usize::try_from(memory / FIELD_SIZE_LIMIT as u64).unwrap_or(usize::MAX);
    per_memory.clamp(MIN_RESOURCES, 1_000_000)
}

/// The project's `limits.memory` for every linear memory of one instance.
struct MemoryLimit {
    bytes: u64,
}

/// Raised when a guest tries to grow a memory past its project's limit; it
/// traps the guest, and its message is what the log line says.
#[derive(Debug, thiserror::Error)]
#[error("grew past its memory limit of {} (asked for {wanted} bytes)", crate::units::format_size(*.limit))]
struct MemoryLimitExceeded {
    limit: u64,
    wanted: usize,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.bytes {
            // An error, not `Ok(false)`: the guest traps with a message that
            // names the limit, instead of seeing `memory.grow` fail and
            // aborting with a generic trap.
            return Err(MemoryLimitExceeded {
                limit: self.bytes,
                wanted: desired,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// What one request's store is made from: who the guest is and the limits
/// it runs under, taken from its version.
pub(crate) struct Guest {
    /// The project's name, for guest log lines.
    pub(crate) project: Arc<str>,
    /// The version number, for guest log lines.
    pub(crate) version: u64,
    /// The guest's wasi:cli environment.
    pub(crate) env: Arc<[(String, String)]>,
    /// Largest linear memory, in bytes.
    pub(crate) memory: u64,
    /// How long the request may run.
    pub(crate) timeout: Duration,
    /// Turns true when the version outlived its drain deadline.
    pub(crate) stop: watch::Receiver<bool>,
    /// Where the guest may send HTTP requests.
    pub(crate) outbound: Arc<OutboundPolicy>,
    /// Listeners no guest may connect to (the admin API).
    pub(crate) forbidden: Arc<[SocketAddr]>,
    /// The project's count of refused outgoing requests.
    pub(crate) denials: Arc<Denials>,
    /// The request's `x-request-id`, for the guest's log lines.
    pub(crate) request_id: hyper::header::HeaderValue,
    /// The project's log allowance, and its `log_rate` in bytes per second.
    pub(crate) log: (Arc<LogBudget>, u64),
}

impl RequestState {
    /// The state a new store's first request starts with (an instance
    /// reset in place gets its next one's from [`RequestState::renew`]).
    pub(crate) fn new(guest: Guest) -> Self {
        let Guest {
            project,
            version,
            env,
            memory,
            timeout,
            stop,
            outbound,
            forbidden,
            denials,
            request_id,
            log: budget,
        } = guest;
        let deadline = Instant::now() + timeout;
        let request = RequestTag::new(request_id);
        let log = Arc::new(LogSource::new(project.clone(), version, budget));
        Self {
            wasi: wasi_ctx(&env, log, &request),
            http: http_ctx(),
            outbound: OutboundHooks::new(project, version, outbound, forbidden, denials),
            table: resource_table(memory),
            deadline,
            stop,
            limits: MemoryLimit { bytes: memory },
            request,
        }
    }

    /// Gives an instance just reset in place the state a new request
    /// starts with: a new HTTP context and resource table, which drops every
    /// resource the last request left, as when a fresh instance is freed
    /// (an output stream logs its partial line, as the last request's; a
    /// response body left open ends as if finished: `keep_reset` in
    /// `front/invoke.rs`), no outgoing
    /// request under way, and new random sources. Its log is retagged when
    /// the next request takes it ([`RequestState::restart`]): no stream of
    /// the guest's outlives the table, so nothing is logged in between.
    ///
    /// The rest of the WASI context stays: the guest's environment, its
    /// output streams' source (each stream the guest opens is a resource of
    /// its own, written through: `engine/guest_log.rs`) and its clocks hold
    /// nothing of a request. Rebuilding the context cost about 2 % of the
    /// server's CPU per request (`docs/performance.md`). Its random sources
    /// do hold something: `insecure-seed` is fixed per context, and a guest
    /// whose memory is reset to before its first draw (its hash maps' keys)
    /// would draw the same value on every request, from whichever client,
    /// and the insecure generator's next values follow from the last
    /// request's. So they are made anew, as a new context's would be.
    pub(crate) fn renew(&mut self) {
        // A stream dropped with the table logs its partial line as the last
        // request's, whose tag stands until the next `restart`.
        self.table = resource_table(self.limits.bytes);
        self.http = http_ctx();
        self.outbound.renew();
        *self.wasi.random() = WasiRandomCtx::default();
    }
}

/// An instance's WASI context: the guest's environment, and its output
/// logged as `log`'s, tagged with `request`'s id.
fn wasi_ctx(env: &[(String, String)], log: Arc<LogSource>, request: &RequestTag) -> WasiCtx {
    let stream = |stream| GuestLog::new(log.clone(), stream, request.clone());
    WasiCtx::builder()
        .envs(env)
        .stdout(stream(Stream::Stdout))
        .stderr(stream(Stream::Stderr))
        .build()
}

/// A request's HTTP context.
fn http_ctx() -> WasiHttpCtx {
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(FIELD_SIZE_LIMIT);
    http
}

/// A request's resource table, holding at most what `memory` allows
/// ([`resource_capacity`]).
fn resource_table(memory: u64) -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(resource_capacity(memory));
    table
}

impl RequestState {
    /// Readies a reused instance's state for its next request: a new
    /// deadline, `timeout` from now, and its log lines tagged `request_id`.
    pub(crate) fn restart(&mut self, timeout: Duration, request_id: hyper::header::HeaderValue) {
        self.deadline = Instant::now() + timeout;
        self.request.set(request_id);
    }

    /// Whether an outgoing request's connection is still open.
    pub(crate) fn outgoing_under_way(&self) -> bool {
        self.outbound.any_under_way()
    }

    /// Whether the guest's last request left HTTP resources behind after
    /// its handler returned that someone waits on: the response slot, an
    /// unfinished response body, or an outgoing request. Each would live on
    /// (a client waiting for a body that never ends, an outgoing request
    /// past its deadline) for as long as the instance is kept, so only an
    /// instance with none of them may serve again.
    ///
    /// The incoming request itself may stay: componentize-js guests never
    /// drop it (their garbage collector does not run between requests), and
    /// it only holds the request's head until the instance goes. But an
    /// instance holding more than half its [`resource_capacity`] is not kept
    /// either, so resources left over request after request end with the
    /// instance instead of trapping a later request at the cap (as long as
    /// one request needs less than half of it). Nor is one with an outgoing
    /// request's connection still open (a response body kept unread): it
    /// would hold a socket while idle, and one of the next request's slots.
    /// (The caller first lets a connection the guest just dropped end:
    /// [`RequestState::outgoing_under_way`].)
    pub(crate) fn request_left_over(&mut self) -> bool {
        use wasmtime_wasi_http::p2::body::HostOutgoingBody;
        use wasmtime_wasi_http::p2::types::{
            HostFutureIncomingResponse, HostIncomingResponse, HostOutgoingRequest,
            HostOutgoingResponse, HostResponseOutparam,
        };
        if self.outbound.any_under_way() {
            return true;
        }
        let half_full = self.table.max_capacity() / 2;
        let mut held = 0usize;
        self.table.iter_mut().any(|entry| {
            held += 1;
            held > half_full
                || entry.is::<HostResponseOutparam>()
                || entry.is::<HostOutgoingResponse>()
                || entry.is::<HostOutgoingBody>()
                || entry.is::<HostOutgoingRequest>()
                || entry.is::<HostFutureIncomingResponse>()
                || entry.is::<HostIncomingResponse>()
        })
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
            hooks: &mut self.outbound,
        }
    }
}

/// Raised from the epoch callback once a request is past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request deadline exceeded")]
pub(crate) struct DeadlineExceeded;

/// Raised from the epoch callback once the request's version must stop draining.
#[derive(Debug, thiserror::Error)]
#[error("version drain deadline exceeded")]
pub(crate) struct DrainDeadlineExceeded;

/// A store for one request of `guest`, with its deadline, memory limit and
/// epoch callback set.
pub(crate) fn new_store(engine: &Engine, guest: Guest) -> Store<RequestState> {
    let mut store = Store::new(engine, RequestState::new(guest));
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|context| {
        let state = context.data();
        if *state.stop.borrow() {
            Err(DrainDeadlineExceeded.into())
        } else if Instant::now() >= state.deadline {
            Err(DeadlineExceeded.into())
        } else {
            // Let every other ready task on this thread run, and the runtime
            // poll for I/O, before the guest goes on. wasmtime's own
            // `UpdateDeadline::Yield` re-polls at once and starved the I/O
            // driver (`docs/performance.md`). A guest that keeps computing
            // moves to the slow lane (`front/slow_lane.rs`) and yields there.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        }
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state renewed for the next request on a reset instance holds none
    /// of the last request's resources nor its outgoing requests, has a new
    /// insecure seed, and the same resource cap.
    #[tokio::test]
    async fn a_renewed_state_keeps_nothing_of_the_last_request() {
        use http_body_util::BodyExt as _;
        use wasmtime_wasi::p2::bindings::random::insecure_seed::Host as _;
        use wasmtime_wasi_http::WasiHttpHooks as _;

        use crate::engine::outbound::AllowedHost;

        let (_stop, stop) = watch::channel(false);
        let memory = 64 << 20;
        let mut state = RequestState::new(Guest {
            project: "p".into(),
            version: 1,
            env: Arc::from([("K".to_string(), "V".to_string())]),
            memory,
            timeout: Duration::from_secs(30),
            stop,
            outbound: Arc::new(OutboundPolicy::new(vec![
                AllowedHost::parse("http://127.0.0.1:9").expect("valid entry"),
            ])),
            forbidden: Arc::from([]),
            denials: Arc::default(),
            request_id: hyper::header::HeaderValue::from_static("first"),
            log: (Arc::default(), 1 << 20),
        });
        state.table.push(7_u32).expect("room in the table");
        let body = http_body_util::Empty::new()
            .map_err(|never: std::convert::Infallible| match never {})
            .boxed_unsync();
        let request = hyper::http::Request::get("http://127.0.0.1:9/")
            .body(body)
            .expect("request");
        // Allowed, so it takes its slot when made, and holds it until
        // dropped (it is never polled).
        let outgoing = state
            .outbound
            .send_request(request, None, Box::new(async { Ok(()) }));
        assert!(state.outgoing_under_way());

        // What a guest that reset its memory to before its first draw
        // (its hash maps' keys) would draw again.
        let seed = state.wasi.random().insecure_seed().expect("a seed");

        state.renew();
        assert_eq!(state.table.iter_mut().count(), 0);
        assert_ne!(state.wasi.random().insecure_seed().expect("a seed"), seed);
        assert!(!state.outgoing_under_way());
        assert_eq!(state.table.max_capacity(), resource_capacity(memory));
        drop(outgoing);
    }

    #[test]
    fn a_request_holds_one_field_lists_worth_of_resources_per_128_kib_of_memory() {
        assert_eq!(resource_capacity(128 << 20), 1024);
        assert_eq!(resource_capacity(1 << 30), 8192);
        // Never fewer than a plain request needs, nor more than wasmtime's own cap.
        assert_eq!(resource_capacity(1 << 20), MIN_RESOURCES);
        assert_eq!(resource_capacity(0), MIN_RESOURCES);
        assert_eq!(resource_capacity(u64::MAX), 1_000_000);
    }
}
