//! The one place the tokio runtime flavour is chosen.
//!
//! Every runtime wasmhost builds is current_thread: the main one (admin API,
//! swap pipeline, watcher, drains) and one per request worker
//! (`front/workers.rs`). A request never leaves its worker's thread unless
//! its guest keeps computing (`front/slow_lane.rs`). One multi-thread
//! runtime, tried first, cost about 3× the server CPU per request: tasks
//! migrated between cores, and every instance slot freed on one core and
//! reused on another cost a cross-core TLB shootdown (`docs/performance.md`).

use std::io;

use tokio::runtime::{Builder, Runtime};

/// Builds a runtime for the calling thread: the main one, a worker's, or a
/// client command's.
pub(crate) fn build() -> io::Result<Runtime> {
    build_with(|| {})
}

/// The same, calling `on_thread_start` on every thread of the runtime's
/// blocking pool as it starts: a pinned worker puts them back on every CPU
/// (`front/affinity.rs`).
pub(crate) fn build_with(on_thread_start: fn()) -> io::Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .on_thread_start(on_thread_start)
        .build()
}
