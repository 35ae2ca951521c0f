//! The one place the tokio runtime flavour is chosen.
//!
//! wasmhost runs on a current_thread runtime. Measured on a 2-core machine
//! with a hello component, a multi-thread runtime costs about 160 µs of
//! server CPU per request against about 49 µs here: most of the difference is
//! cross-core TLB-shootdown interrupts, because the pooling allocator's
//! instance slots get touched (and decommitted) from several cores. Compiles
//! still run in parallel on tokio's blocking pool, off this thread, and a busy
//! guest yields back every epoch tick, so one thread does not mean one request.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// Builds the runtime `wasmhost serve` runs on.
pub fn build() -> io::Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .thread_name("wasmhost")
        .build()
}
