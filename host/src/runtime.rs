//! The one place the tokio runtime flavour is chosen.
//!
//! wasmhost runs on a current_thread runtime: a multi-thread one cost about
//! 3× the server CPU per request, mostly in cross-core TLB shootdowns of the
//! pooling allocator's slots (`docs/performance.md`). Compiles run on their
//! own threads (`swap/compiler.rs`) and guests that keep computing move to
//! the slow lane (`front/slow_lane.rs`), so one thread does not mean one
//! request at a time.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// Builds the runtime `wasmhost serve` runs on.
pub(crate) fn build() -> io::Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .thread_name("wasmhost")
        .build()
}
