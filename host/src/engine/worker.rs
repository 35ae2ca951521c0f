//! Which request worker the calling thread is, and how many there are: set
//! once at start-up and by each worker thread, and read wherever state is
//! kept per worker (its slow lane, its shard of every version's idle
//! instances) or trusted only on a worker (its page-fault count,
//! `faults.rs`).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many request workers `wasmhost serve` runs ([`set_count`]).
static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The calling thread's index among the request workers, if it is one
    /// ([`become_worker`]).
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Records that `wasmhost serve` runs `count` request workers. Called at
/// start-up, before any version exists.
pub(crate) fn set_count(count: usize) {
    COUNT.store(count.max(1), Ordering::Relaxed);
}

/// How many request workers run (1 until [`set_count`]).
pub(crate) fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Marks the calling thread as request worker `index`: it drives its own
/// current_thread runtime for its whole life, so a task spawned there runs
/// on this thread alone.
pub(crate) fn become_worker(index: usize) {
    INDEX.with(|worker| worker.set(Some(index)));
}

/// The calling thread's index among the request workers; `None` on any
/// other thread.
pub(crate) fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}
