//! Instances kept for reuse, per version (`[instances] reuse = N` in a
//! project's `wasmhost.toml`): one instance serves up to N requests one after
//! another, never two at once, as `wasmtime serve --max-instance-reuse-count`
//! does. Reuse skips instantiation and the guest's start-up code, which is
//! most of a request's cost for 14–18 MB Python and JavaScript guests.
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

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::engine::store::RequestState;

/// An instance between two requests: its store, its proxy bindings, and how
/// many requests it has served.
pub(crate) struct Reusable {
    pub(crate) store: Store<RequestState>,
    pub(crate) proxy: Proxy,
    pub(crate) served: u32,
    idle_since: Instant,
}

impl Reusable {
    /// An instance that has just served its `served`-th request.
    pub(crate) fn new(store: Store<RequestState>, proxy: Proxy, served: u32) -> Self {
        Self {
            store,
            proxy,
            served,
            idle_since: Instant::now(),
        }
    }
}

/// One version's idle instances.
pub(crate) struct IdleInstances {
    /// Requests one instance may serve; 1 turns reuse off.
    reuse: u32,
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
    /// A pool for a version whose instances serve up to `reuse` requests.
    pub(crate) fn new(reuse: u32, idle_timeout: Duration) -> Self {
        Self {
            reuse,
            idle_timeout,
            state: Mutex::default(),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // Plain data: a panic while holding the lock leaves nothing half-done.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether instances are reused at all.
    pub(crate) fn enabled(&self) -> bool {
        self.reuse > 1
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

    /// Keeps `instance`, which just ended a request cleanly, for the next
    /// one, unless it has served its `reuse` requests or the version is
    /// retired. Must be called on a tokio runtime (it may start the sweeper).
    pub(crate) fn put(self: &Arc<Self>, instance: Reusable) {
        if instance.served >= self.reuse {
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
