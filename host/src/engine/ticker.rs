//! The thread that advances the engine's epoch: the scheduling quantum and
//! the timeout resolution of every guest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::Engine;

/// How often the epoch advances. Each tick, a running guest reaches its
/// epoch callback, which yields to other requests and enforces the deadline,
/// so this is both the scheduling quantum and the timeout resolution.
///
/// 1 ms, not 10: a guest stuck in a loop holds the request thread for up to
/// one tick at a time until it moves to the slow lane (`front/slow_lane.rs`),
/// and it can only move at a tick (`docs/performance.md` has the p99s).
/// Ticking that fast costs CPU, so the ticker only does it while guests run
/// ([`GuestRunning`]).
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long the ticker sleeps while no guest runs. A guest that starts in
/// the middle of it gets its first tick late, which only delays its first
/// yield: its deadline is also a tokio timer.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// Guests running wasm right now, across the host; the ticker only needs to
/// tick fast while this is above zero.
static GUESTS_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Counts a guest as running until dropped. Held around every call into wasm
/// (instantiation and the handler).
pub(crate) struct GuestRunning(());

impl GuestRunning {
    /// Marks a guest as running.
    pub(crate) fn start() -> Self {
        GUESTS_RUNNING.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for GuestRunning {
    fn drop(&mut self) {
        GUESTS_RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts the thread that advances the engine's epoch every [`EPOCH_TICK`]
/// while guests run, and every `IDLE_TICK` otherwise, so an idle host costs
/// about a third of the CPU it would (`docs/performance.md`). It holds only a
/// weak reference and exits once the engine is gone.
pub(crate) fn start_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                let busy = GUESTS_RUNNING.load(Ordering::Relaxed) > 0;
                std::thread::sleep(if busy { EPOCH_TICK } else { IDLE_TICK });
            }
        })
        .context("failed to start the epoch ticker thread")?;
    Ok(())
}
