//! Idle things (a version's instances between requests) kept in one shard
//! per request worker, so that what a worker put back it takes again, and
//! a request that finds one takes no lock another worker uses.
//!
//! With one list shared by every worker, an instance one worker put back
//! was as likely to be taken next by another, whose core then fetched the
//! instance's store, tables and recently written pages from the first
//! core's cache; and every request took and released one lock, whose line
//! moved between cores twice. Here a worker takes from and puts back to its
//! own shard. Only a worker whose shard is empty looks at the others (their
//! counts first, without locking, so empty ones cost a read) and takes
//! another's oldest, which is the least likely to be in its owner's cache
//! and still far cheaper than instantiating. The sweeper, `close`,
//! `release` and the admin API's count lock every shard in turn, none of
//! them on the request path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::engine::worker;

/// Idle things of type `T`, each with the time it was put back: shard 0
/// for threads that are no request worker (health checks, trial
/// instantiations), shard `1 + i` for worker `i` ([`worker::current`]).
pub(crate) struct IdleShards<T> {
    shards: Box<[Shard<T>]>,
}

/// One shard, on a cache line of its own (128 bytes covers adjacent-line
/// prefetching), so workers using their own shards never share a line.
#[repr(align(128))]
struct Shard<T> {
    pool: Mutex<Pool<T>>,
    /// How many the pool holds, written under its lock, read without it
    /// by a worker looking for one to take ([`IdleShards::take`]).
    len: AtomicUsize,
}

struct Pool<T> {
    /// The most recently put back last (taken first: its pages are the
    /// likeliest to be in cache).
    idle: Vec<(Instant, T)>,
    /// Set by [`IdleShards::close`]: nothing comes back any more.
    closed: bool,
}

impl<T> IdleShards<T> {
    /// One shard per request worker ([`worker::count`]) and one for every
    /// other thread.
    pub(crate) fn new() -> Self {
        Self::with_shards(worker::count().saturating_add(1))
    }

    fn with_shards(count: usize) -> Self {
        let shard = || Shard {
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                closed: false,
            }),
            len: AtomicUsize::new(0),
        };
        Self {
            shards: (0..count.max(1)).map(|_| shard()).collect(),
        }
    }

    fn shard(&self, index: usize) -> Locked<'_, T> {
        let shard = &self.shards[index];
        Locked {
            // Plain data: a panic while holding the lock leaves nothing
            // half-done.
            pool: shard
                .pool
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            len: &shard.len,
        }
    }

    /// The calling thread's own shard.
    fn own(&self) -> usize {
        worker::current().map_or(0, |index| index.saturating_add(1)) % self.shards.len()
    }

    /// The most recently put back of the calling thread's own shard, else
    /// the oldest of the next shard that has one; never one idle for
    /// `idle_timeout` or more (those found are dropped, outside the lock).
    pub(crate) fn take(&self, idle_timeout: Duration) -> Option<T> {
        let (own, count) = (self.own(), self.shards.len());
        let now = Instant::now();
        if let Some(item) = self.take_newest(own, idle_timeout, now) {
            return Some(item);
        }
        (1..count)
            .map(|offset| (own + offset) % count)
            .filter(|&index| self.shards[index].len.load(Ordering::Relaxed) > 0)
            .find_map(|index| self.take_oldest(index, idle_timeout, now))
    }

    fn take_newest(&self, index: usize, idle_timeout: Duration, now: Instant) -> Option<T> {
        let mut pool = self.shard(index);
        let (since, item) = pool.pop()?;
        if now.duration_since(since) < idle_timeout {
            return Some(item);
        }
        // Expired, and so is every older one. Dropped outside the lock: a
        // store's drop resets its memory.
        let expired = pool.take_all();
        drop(pool);
        drop((item, expired));
        None
    }

    fn take_oldest(&self, index: usize, idle_timeout: Duration, now: Instant) -> Option<T> {
        let mut pool = self.shard(index);
        let expired = pool.drain_expired(idle_timeout, now);
        let item = pool.remove_oldest();
        // Dropped outside the lock: a store's drop resets its memory.
        drop(pool);
        drop(expired);
        item
    }

    /// Keeps `item` in the calling thread's own shard; gives it back if
    /// the shards are closed, for the caller to drop outside the lock.
    pub(crate) fn put(&self, item: T) -> Result<(), T> {
        let mut pool = self.shard(self.own());
        if pool.pool.closed {
            return Err(item);
        }
        pool.push((Instant::now(), item));
        Ok(())
    }

    /// Drops everything idle and keeps nothing from now on.
    pub(crate) fn close(&self) {
        for index in 0..self.shards.len() {
            let idle = {
                let mut pool = self.shard(index);
                pool.pool.closed = true;
                pool.take_all()
            };
            drop(idle);
        }
    }

    /// Drops everything idle; later puts are kept again.
    pub(crate) fn release(&self) {
        for index in 0..self.shards.len() {
            let idle = self.shard(index).take_all();
            drop(idle);
        }
    }

    /// How many are idle now, in every shard.
    pub(crate) fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|index| self.shard(index).pool.idle.len())
            .sum()
    }

    /// Drops those idle for `idle_timeout` or more, in every shard; returns
    /// whether any are left.
    pub(crate) fn drop_expired(&self, idle_timeout: Duration) -> bool {
        let now = Instant::now();
        let mut left = false;
        for index in 0..self.shards.len() {
            let expired = {
                let mut pool = self.shard(index);
                let expired = pool.drain_expired(idle_timeout, now);
                left |= !pool.pool.idle.is_empty();
                expired
            };
            drop(expired);
        }
        left
    }
}

/// One shard's pool, locked, with its count kept in step.
struct Locked<'a, T> {
    pool: MutexGuard<'a, Pool<T>>,
    len: &'a AtomicUsize,
}

impl<T> Locked<'_, T> {
    fn counted<R>(&mut self, change: impl FnOnce(&mut Vec<(Instant, T)>) -> R) -> R {
        let result = change(&mut self.pool.idle);
        self.len.store(self.pool.idle.len(), Ordering::Relaxed);
        result
    }

    fn push(&mut self, entry: (Instant, T)) {
        self.counted(|idle| idle.push(entry));
    }

    fn pop(&mut self) -> Option<(Instant, T)> {
        self.counted(Vec::pop)
    }

    fn remove_oldest(&mut self) -> Option<T> {
        self.counted(|idle| (!idle.is_empty()).then(|| idle.remove(0).1))
    }

    fn take_all(&mut self) -> Vec<(Instant, T)> {
        self.counted(std::mem::take)
    }

    /// Takes out those idle for `idle_timeout` or more at `now` (the
    /// oldest ones), for the caller to drop outside the lock.
    fn drain_expired(&mut self, idle_timeout: Duration, now: Instant) -> Vec<(Instant, T)> {
        self.counted(|idle| {
            let fresh_from = idle
                .iter()
                .position(|(since, _)| now.duration_since(*since) < idle_timeout)
                .unwrap_or(idle.len());
            idle.drain(..fresh_from).collect()
        })
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
                    worker::become_worker(index);
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
        // Workers 5 and 7 both use shard (1 + i) % 2 = 0.
        on_worker(5, || idle.put(5)).expect("open");
        assert_eq!(idle.shards[0].len.load(Ordering::Relaxed), 1);
        on_worker(7, || idle.put(7)).expect("open");
        assert_eq!(idle.shards[0].len.load(Ordering::Relaxed), 2);
        assert_eq!(on_worker(5, || idle.take(LONG)), Some(7));
    }

    #[test]
    fn a_worker_takes_anothers_oldest_and_never_an_expired_one() {
        let idle = IdleShards::with_shards(2);
        for item in ["oldest", "newer", "newest"] {
            idle.put(item).expect("open");
        }
        // Worker 0 has none of its own: it takes shard 0's oldest.
        assert_eq!(on_worker(0, || idle.take(LONG)), Some("oldest"));
        assert_eq!(idle.shards[0].len.load(Ordering::Relaxed), 2);
        // Expired ones are dropped on the way, not handed out.
        assert_eq!(on_worker(0, || idle.take(Duration::ZERO)), None);
        assert_eq!(idle.len(), 0);
        assert_eq!(idle.shards[0].len.load(Ordering::Relaxed), 0);
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
