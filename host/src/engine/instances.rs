//! Instances kept between requests, per version, in one of two ways:
//!
//! - **reset in place** (the default, `reuse = 1`): after each request the
//!   instance is put back to the state instantiation left it in (memories,
//!   globals, tables, handle tables; vendor/wasmtime's `InstanceSnapshot`),
//!   and has its host state renewed (`RequestState::renew`: a new resource
//!   table, HTTP context and random sources), so every request still
//!   starts on a fresh instance's state, without the cost of instantiating
//!   and freeing one (`docs/performance.md`). An instance serves at most
//!   `RESET_LIMIT` requests. Components whose instantiation writes their memory or
//!   leaves handles (a start function) cannot be put back exactly, nor can
//!   anything where the kernel lacks `PAGEMAP_SCAN`: the version finds that
//!   when its first request instantiates, and from then on instantiates per
//!   request;
//! - **reused as is** (`[instances] reuse = N` in a project's
//!   `wasmhost.toml`): one instance serves up to N requests one after
//!   another with its state kept, as `wasmtime serve
//!   --max-instance-reuse-count` does. That skips the guest's own start-up
//!   code too, which is most of a request's cost for 14–18 MB Python and
//!   JavaScript guests.
//!
//! The rules that keep it safe:
//! - an instance is taken out of the pool for its request, so no two
//!   requests ever share it;
//! - only an instance whose request ended cleanly goes back: one that
//!   trapped, timed out, hit a limit or was interrupted is dropped;
//! - the pool belongs to one version, so an instance never serves two
//!   versions, and [`IdleInstances::close`] (at retirement) drops every idle
//!   one at once, so they never hold up the drain;
//! - an instance idle for `idle_timeout` is dropped by a sweeper task,
//!   giving its slot of the instance pool (`--max-instances`) back.
//!
//! Each request worker takes back the instances it put back, before any
//! other worker's (`idle_shards.rs`), so an instance stays on one core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use wasmtime::Store;
use wasmtime::component::InstanceSnapshot;
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::engine::idle_shards::IdleShards;
use crate::engine::store::RequestState;

/// Requests one instance serves when it is reset in place after each: a
/// bound on whatever its store keeps across calls beyond what the reset
/// covers, at the cost of one instantiation per this many requests.
const RESET_LIMIT: u32 = 10_000;

/// An instance between two requests: its store, its proxy bindings, how
/// many requests it has served, and, if it is reset in place, its state
/// as instantiated.
pub(crate) struct Reusable {
    pub(crate) store: Store<RequestState>,
    pub(crate) proxy: Proxy,
    pub(crate) served: u32,
    pub(crate) snapshot: Option<InstanceSnapshot>,
    /// The version's stop signal, kept with the instance so that a request
    /// need not clone the version's (a count every worker writes).
    pub(crate) stop: watch::Receiver<bool>,
}

impl Reusable {
    /// An instance that has just served its `served`-th request (and, if
    /// `snapshot` is set, been reset in place), watching its version's
    /// `stop` signal.
    pub(crate) fn new(
        store: Store<RequestState>,
        proxy: Proxy,
        served: u32,
        snapshot: Option<InstanceSnapshot>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            proxy,
            served,
            snapshot,
            stop,
        }
    }
}

/// One version's idle instances, kept by request worker (`idle_shards.rs`).
pub(crate) struct IdleInstances {
    /// Requests one instance may serve with its state kept; 1 means every
    /// request starts on a fresh instance's state.
    reuse: u32,
    /// Whether this version's instances can be reset in place: true until
    /// the first instance that cannot is found.
    resettable: AtomicBool,
    idle_timeout: Duration,
    /// Whether a sweeper task runs for this pool. Read on every `put`, but
    /// written only by the sweeper's ticks and when one starts, so its
    /// line stays shared by every core instead of moving between them on
    /// every request.
    sweeping: AtomicBool,
    idle: IdleShards<Reusable>,
}

impl IdleInstances {
    /// A pool for a version whose instances serve up to `reuse` requests
    /// with their state kept (`RESET_LIMIT` reset in place, when `reuse` is
    /// 1), registered with [`release_idle_everywhere`].
    pub(crate) fn new(reuse: u32, idle_timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(Self {
            reuse,
            resettable: AtomicBool::new(true),
            idle_timeout,
            sweeping: AtomicBool::new(false),
            idle: IdleShards::new(),
        });
        let mut pools = EVERY_POOL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pools.retain(|pool| pool.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    /// Whether instances are kept between requests at all.
    pub(crate) fn enabled(&self) -> bool {
        self.reuse > 1 || self.resets()
    }

    /// Whether instances are kept with their state as is (`reuse` > 1).
    pub(crate) fn keeps_state(&self) -> bool {
        self.reuse > 1
    }

    /// Whether instances are reset in place after each request: the
    /// default, unless an instance of this version turned out not to allow
    /// it.
    pub(crate) fn resets(&self) -> bool {
        self.reuse == 1 && self.resettable.load(Ordering::Relaxed)
    }

    /// Records that this version's instances cannot be reset in place (so
    /// each request instantiates); true the first time, so the caller says
    /// why once.
    pub(crate) fn cannot_reset(&self) -> bool {
        self.resettable.swap(false, Ordering::Relaxed)
    }

    /// An idle instance for the next request, if one is kept: the calling
    /// worker's most recently used, else another worker's.
    pub(crate) fn take(&self) -> Option<Reusable> {
        if !self.enabled() {
            return None;
        }
        self.idle.take(self.idle_timeout)
    }

    /// Keeps `instance`, which just ended a request cleanly (and, if this
    /// version resets, was reset), with the calling worker for the next
    /// request, unless it has served its `reuse` requests (`RESET_LIMIT`
    /// when reset) or the version is retired. Must be called on a tokio
    /// runtime (it may start the sweeper).
    pub(crate) fn put(self: &Arc<Self>, instance: Reusable) {
        let limit = if self.keeps_state() {
            self.reuse
        } else {
            RESET_LIMIT
        };
        if instance.served >= limit || !self.enabled() {
            return;
        }
        // A closed pool gives the instance back, dropped here.
        if self.idle.put(instance).is_err() {
            return;
        }
        // After the put: a sweeper that stops clears the flag before it
        // looks at any shard, so either it sees this instance or this sees
        // the flag cleared and starts another.
        if !self.sweeping.load(Ordering::SeqCst) && !self.sweeping.swap(true, Ordering::SeqCst) {
            tokio::spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Drops every idle instance and keeps none from now on: the version is
    /// retired.
    pub(crate) fn close(&self) {
        self.idle.close();
    }

    /// How many instances sit idle now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.len()
    }
}

/// Every version's pool, so that a full instance pool can take back the
/// slots idle instances hold (`release_idle_everywhere`).
static EVERY_POOL: Mutex<Vec<Weak<IdleInstances>>> = Mutex::new(Vec::new());

/// Drops every idle instance of every version. Called
/// when instantiating failed because the instance pool (`--max-instances`)
/// is full: instances kept idle for up to their `idle_timeout` must not
/// turn away another project's request, so they give their slots back
/// first. Pools stay open: they fill again as requests end.
pub(crate) fn release_idle_everywhere() {
    let pools: Vec<Arc<IdleInstances>> = EVERY_POOL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for pool in pools {
        pool.idle.release();
    }
}

/// Wakes every quarter of `idle_timeout` and drops expired instances, until
/// the pool is empty or gone. Holds only a weak reference: a pool whose
/// version was dropped needs no sweeping.
///
/// It clears the pool's `sweeping` flag before it looks at the shards, so a
/// `put` it does not see starts a sweeper of its own; if it finds
/// instances left and another sweeper has started meanwhile, it leaves the
/// pool to that one.
async fn sweep(pool: Weak<IdleInstances>, idle_timeout: Duration) {
    let tick = (idle_timeout / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(tick).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweeping.store(false, Ordering::SeqCst);
        if !pool.idle.drop_expired(idle_timeout) || pool.sweeping.swap(true, Ordering::SeqCst) {
            return;
        }
    }
}
