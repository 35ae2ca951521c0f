//! Instances kept between requests, per version, in one of two ways:
//!
//! - **reset in place** (the default, `reuse = 1`): after each request the
//!   instance is put back to the state instantiation left it in (memories,
//!   globals, tables, handle tables; vendor/wasmtime's `InstanceSnapshot`),
//!   and gets new host state, so every request still starts on a fresh
//!   instance's state, without the cost of instantiating and freeing one
//!   (`docs/performance.md`). An instance serves at most `RESET_LIMIT`
//!   requests. Components whose instantiation writes their memory or
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::InstanceSnapshot;
use wasmtime_wasi_http::p2::bindings::Proxy;

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
    idle_since: Instant,
}

impl Reusable {
    /// An instance that has just served its `served`-th request (and, if
    /// `snapshot` is set, been reset in place).
    pub(crate) fn new(
        store: Store<RequestState>,
        proxy: Proxy,
        served: u32,
        snapshot: Option<InstanceSnapshot>,
    ) -> Self {
        Self {
            store,
            proxy,
            served,
            snapshot,
            idle_since: Instant::now(),
        }
    }
}

/// One version's idle instances.
pub(crate) struct IdleInstances {
    /// Requests one instance may serve with its state kept; 1 means every
    /// request starts on a fresh instance's state.
    reuse: u32,
    /// Whether this version's instances can be reset in place: true until
    /// the first instance that cannot is found.
    resettable: AtomicBool,
    idle_timeout: Duration,
    state: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    /// Idle instances, the most recently used last (taken first: its pages
    /// are the likeliest to be in cache).
    idle: Vec<Reusable>,
    /// Set when the version is retired: nothing comes back any more.
    closed: bool,
    /// Whether a sweeper task is running for this pool.
    sweeping: bool,
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
            state: Mutex::default(),
        });
        let mut pools = EVERY_POOL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pools.retain(|pool| pool.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // Plain data: a panic while holding the lock leaves nothing half-done.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// An idle instance for the next request, if one is kept.
    pub(crate) fn take(&self) -> Option<Reusable> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let mut pool = self.pool();
        let instance = pool.idle.pop()?;
        if now.duration_since(instance.idle_since) < self.idle_timeout {
            return Some(instance);
        }
        // Expired, and so is every older one. Dropped outside the lock: a
        // store's drop resets its memory.
        let expired = std::mem::take(&mut pool.idle);
        drop(pool);
        drop((instance, expired));
        None
    }

    /// Keeps `instance`, which just ended a request cleanly (and, if this
    /// version resets, was reset), for the next one, unless it has served
    /// its `reuse` requests (`RESET_LIMIT` when reset) or the version is
    /// retired. Must be called on a tokio runtime (it may start the sweeper).
    pub(crate) fn put(self: &Arc<Self>, instance: Reusable) {
        let limit = if self.keeps_state() {
            self.reuse
        } else {
            RESET_LIMIT
        };
        if instance.served >= limit || !self.enabled() {
            return;
        }
        let mut pool = self.pool();
        if pool.closed {
            drop(pool);
            drop(instance);
            return;
        }
        pool.idle.push(instance);
        if !pool.sweeping {
            pool.sweeping = true;
            drop(pool);
            tokio::spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Drops every idle instance and keeps none from now on: the version is
    /// retired.
    pub(crate) fn close(&self) {
        let idle = {
            let mut pool = self.pool();
            pool.closed = true;
            std::mem::take(&mut pool.idle)
        };
        drop(idle);
    }

    /// How many instances sit idle now.
    pub(crate) fn idle(&self) -> usize {
        self.pool().idle.len()
    }

    /// Drops the instances idle for `idle_timeout` or more; returns whether
    /// any are left.
    fn drop_expired(&self) -> bool {
        let now = Instant::now();
        let (expired, left): (Vec<Reusable>, bool) = {
            let mut pool = self.pool();
            let fresh_from = pool
                .idle
                .iter()
                .position(|instance| now.duration_since(instance.idle_since) < self.idle_timeout)
                .unwrap_or(pool.idle.len());
            let expired = pool.idle.drain(..fresh_from).collect();
            let left = !pool.idle.is_empty();
            // Cleared under the lock: a `put` after this starts a new sweeper.
            pool.sweeping = left;
            (expired, left)
        };
        drop(expired);
        left
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
        let idle = std::mem::take(&mut pool.pool().idle);
        // Dropped outside the lock: a store's drop resets its memory.
        drop(idle);
    }
}

/// Wakes every quarter of `idle_timeout` and drops expired instances, until
/// the pool is empty or gone. Holds only a weak reference: a pool whose
/// version was dropped needs no sweeping.
async fn sweep(pool: Weak<IdleInstances>, idle_timeout: Duration) {
    let tick = (idle_timeout / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(tick).await;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.drop_expired() {
            return;
        }
    }
}
