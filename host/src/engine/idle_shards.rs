//! Idle things (a version's instances between requests) kept in one shard
//! per request worker, so that what a worker put back it takes again, and
//! two workers never take one lock.
//!
//! With one list shared by every worker, an instance one worker put back
//! was as likely to be taken next by another, whose core then fetched the
//! instance's store, tables and recently written pages from the first
//! core's cache; and every request took and released one lock, whose line
//! moved between cores twice. Here a worker takes from and puts back to its
//! own shard, and only a worker whose shard is empty takes from another's,
//! which is still far cheaper than instantiating.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many request workers there are, for the shards made from now on
/// ([`shard_per_worker`]).
static WORKERS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The calling thread's shard: 0 unless it is a request worker
    /// ([`serve_from_shard`]).
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Gives each of `workers` request workers a shard of its own in every
/// [`IdleShards`] made from now on. Called at start-up, before any version
/// exists.
pub(crate) fn shard_per_worker(workers: usize) {
    WORKERS.store(workers.max(1), Ordering::Relaxed);
}

/// Makes the calling thread, request worker `index`, take from and put
/// back to its own shard.
pub(crate) fn serve_from_shard(index: usize) {
    SHARD.with(|shard| shard.set(index.saturating_add(1)));
}

/// Idle things of type `T`, each with the time it was put back: shard 0
/// for threads that are no request worker (health checks, trial
/// instantiations), shard `1 + i` for worker `i`.
pub(crate) struct IdleShards<T> {
    shards: Box<[Shard<T>]>,
}

/// One shard, on a cache line of its own (128 bytes covers adjacent-line
/// prefetching), so workers using their own shards never share a line.
#[repr(align(128))]
struct Shard<T>(Mutex<Pool<T>>);

struct Pool<T> {
    /// The most recently put back last (taken first: its pages are the
    /// likeliest to be in cache).
    idle: Vec<(Instant, T)>,
    /// Set by [`IdleShards::close`]: nothing comes back any more.
    closed: bool,
}

impl<T> IdleShards<T> {
    /// One shard per request worker ([`shard_per_worker`]) and one for
    /// every other thread.
    pub(crate) fn new() -> Self {
        Self::with_shards(WORKERS.load(Ordering::Relaxed).saturating_add(1))
    }

    fn with_shards(count: usize) -> Self {
        let shard = || {
            Shard(Mutex::new(Pool {
                idle: Vec::new(),
                closed: false,
            }))
        };
        Self {
            shards: (0..count.max(1)).map(|_| shard()).collect(),
        }
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, Pool<T>> {
        // Plain data: a panic while holding the lock leaves nothing half-done.
        self.shards[index]
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The calling thread's own shard.
    fn own(&self) -> usize {
        SHARD.with(Cell::get) % self.shards.len()
    }

    /// The most recently put back of the calling thread's own shard, else
    /// of the next shard that has one, unless that one idled for
    /// `idle_timeout` (which drops it and its shard's older ones, outside
    /// the lock, and takes nothing).
    pub(crate) fn take(&self, idle_timeout: Duration) -> Option<T> {
        let (own, count) = (self.own(), self.shards.len());
        let now = Instant::now();
        (0..count).find_map(|offset| self.take_from((own + offset) % count, idle_timeout, now))
    }

    fn take_from(&self, index: usize, idle_timeout: Duration, now: Instant) -> Option<T> {
        let mut pool = self.shard(index);
        let (since, item) = pool.idle.pop()?;
        if now.duration_since(since) < idle_timeout {
            return Some(item);
        }
        // Expired, and so is every older one. Dropped outside the lock: a
        // store's drop resets its memory.
        let expired = std::mem::take(&mut pool.idle);
        drop(pool);
        drop((item, expired));
        None
    }

    /// Keeps `item` in the calling thread's own shard; gives it back if
    /// the shards are closed, for the caller to drop outside the lock.
    pub(crate) fn put(&self, item: T) -> Result<(), T> {
        let mut pool = self.shard(self.own());
        if pool.closed {
            return Err(item);
        }
        pool.idle.push((Instant::now(), item));
        Ok(())
    }

    /// Drops everything idle and keeps nothing from now on.
    pub(crate) fn close(&self) {
        for index in 0..self.shards.len() {
            let idle = {
                let mut pool = self.shard(index);
                pool.closed = true;
                std::mem::take(&mut pool.idle)
            };
            drop(idle);
        }
    }

    /// Drops everything idle; later puts are kept again.
    pub(crate) fn release(&self) {
        for index in 0..self.shards.len() {
            let idle = std::mem::take(&mut self.shard(index).idle);
            drop(idle);
        }
    }

    /// How many are idle now, in every shard.
    pub(crate) fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|index| self.shard(index).idle.len())
            .sum()
    }

    /// Drops those idle for `idle_timeout` or more, in every shard; returns
    /// whether any are left.
    pub(crate) fn drop_expired(&self, idle_timeout: Duration) -> bool {
        let now = Instant::now();
        let mut left = false;
        for index in 0..self.shards.len() {
            let expired: Vec<(Instant, T)> = {
                let mut pool = self.shard(index);
                let fresh_from = pool
                    .idle
                    .iter()
                    .position(|(since, _)| now.duration_since(*since) < idle_timeout)
                    .unwrap_or(pool.idle.len());
                left |= fresh_from < pool.idle.len();
                pool.idle.drain(..fresh_from).collect()
            };
            drop(expired);
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    /// Runs `work` on a new thread serving as request worker `index`.
    fn on_worker<R: Send>(index: usize, work: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    serve_from_shard(index);
                    work()
                })
                .join()
                .expect("worker thread")
        })
    }

    #[test]
    fn each_worker_takes_back_what_it_put_before_anything_newer_from_another() {
        let idle = IdleShards::with_shards(3);
        on_worker(0, || idle.put("zero's")).expect("open");
        // Put back last: one shared list would hand it to worker 0 next.
        on_worker(1, || idle.put("one's")).expect("open");
        assert_eq!(on_worker(0, || idle.take(LONG)), Some("zero's"));
        assert_eq!(on_worker(1, || idle.take(LONG)), Some("one's"));
        assert_eq!(idle.len(), 0);
    }

    #[test]
    fn a_worker_with_none_of_its_own_takes_another_shards() {
        let idle = IdleShards::with_shards(3);
        on_worker(1, || idle.put("one's")).expect("open");
        // Worker 0 and a thread that is no worker both find it.
        assert_eq!(on_worker(0, || idle.take(LONG)), Some("one's"));
        on_worker(1, || idle.put("one's again")).expect("open");
        assert_eq!(idle.take(LONG), Some("one's again"));
        assert_eq!(idle.take(LONG), None);
    }

    #[test]
    fn more_workers_than_shards_share_them() {
        let idle = IdleShards::with_shards(2);
        on_worker(5, || idle.put(5)).expect("open");
        assert_eq!(on_worker(7, || idle.take(LONG)), Some(5));
    }

    #[test]
    fn closing_empties_every_shard_and_refuses_what_comes_back() {
        let idle = IdleShards::with_shards(3);
        on_worker(0, || idle.put(0)).expect("open");
        on_worker(1, || idle.put(1)).expect("open");
        idle.put(2).expect("open");
        assert_eq!(idle.len(), 3);
        idle.close();
        assert_eq!(idle.len(), 0);
        assert_eq!(on_worker(1, || idle.put(1)), Err(1));
        assert_eq!(idle.put(2), Err(2));
    }

    #[test]
    fn releasing_empties_every_shard_and_keeps_what_comes_back() {
        let idle = IdleShards::with_shards(3);
        on_worker(0, || idle.put(0)).expect("open");
        on_worker(1, || idle.put(1)).expect("open");
        idle.release();
        assert_eq!(idle.len(), 0);
        on_worker(1, || idle.put(1)).expect("still open");
        assert_eq!(idle.len(), 1);
    }

    #[test]
    fn what_idled_too_long_is_dropped_in_every_shard() {
        let idle = IdleShards::with_shards(3);
        on_worker(0, || idle.put(0)).expect("open");
        on_worker(1, || idle.put(1)).expect("open");
        // Nothing has idled for an hour: both stay.
        assert!(idle.drop_expired(LONG));
        assert_eq!(idle.len(), 2);
        // Everything has idled for no time at all.
        assert!(!idle.drop_expired(Duration::ZERO));
        assert_eq!(idle.len(), 0);
        // Nor is an expired one taken.
        on_worker(1, || idle.put(1)).expect("open");
        assert_eq!(on_worker(1, || idle.take(Duration::ZERO)), None);
        assert_eq!(idle.len(), 0);
    }
}
