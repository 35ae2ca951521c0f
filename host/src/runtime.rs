//! The one place the tokio runtime flavour is chosen.
//!
//! wasmhost runs on a current_thread runtime. Measured on a 2-core machine
//! with a hello component, a multi-thread runtime costs about 160 µs of
//! server CPU per request against about 49 µs here: most of the difference is
//! cross-core TLB-shootdown interrupts, because the pooling allocator's
//! instance slots get touched (and decommitted) from several cores. Compiles
//! run on their own low-priority threads (`compiler.rs`), off this thread; a
//! busy guest yields back every epoch tick, and one that keeps computing
//! moves to the slow lane (`slow_lane.rs`), so one thread does not mean one
//! request at a time.
//!
//! Not tried yet: one current_thread runtime per core behind SO_REUSEPORT
//! listeners. With pages now reset in place (`engine.rs`) the cross-core cost
//! that made the multi-thread runtime slow should be smaller; the load harness
//! on a machine with more cores than its client needs is where to try it. On
//! the 2-core development machine the request thread already uses one core at
//! saturation and the benchmark client the other.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// Builds the runtime `wasmhost serve` runs on.
pub(crate) fn build() -> io::Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .thread_name("wasmhost")
        .build()
}
