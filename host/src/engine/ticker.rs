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
/// 1 ms, not 10: a guest stuck in a loop holds its request worker for up to
/// one tick at a time until it moves to the slow lane (`front/slow_lane.rs`),
/// and it can only move at a tick (`docs/performance.md` has the p99s).
/// Ticking that fast costs CPU, so the ticker only does it while guests run
/// ([`GuestRunning`]).
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long the ticker sleeps while no guest runs. A guest that starts in
/// the middle of it gets its first tick late, which only delays its first
/// yield: its deadline is also a tokio timer.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// Guests running wasm right now, across the host, counted in shards so
/// that request workers on different cores do not write one shared cache
/// line per request; the ticker sums them. It only needs to tick fast while
/// the sum is above zero.
static GUESTS_RUNNING: [Shard; SHARDS] = [const { Shard(AtomicUsize::new(0)) }; SHARDS];

/// Shards of [`GUESTS_RUNNING`]: threads beyond this many share them.
const SHARDS: usize = 64;

/// One counter on a cache line of its own (128 bytes covers adjacent-line
/// prefetching).
#[repr(align(128))]
struct Shard(AtomicUsize);

/// The shard the calling thread counts in, handed out in turn.
fn home_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static HOME: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    HOME.with(|home| *home)
}

fn guests_running() -> usize {
    GUESTS_RUNNING
        .iter()
        .map(|shard| shard.0.load(Ordering::Relaxed))
        .sum()
}

/// Counts a guest as running until dropped. Held around every call into wasm
/// (instantiation and the handler).
pub(crate) struct GuestRunning {
    /// The shard counted in, so the guard may be dropped on another thread
    /// (a guest that moved to the slow lane).
    shard: usize,
}

impl GuestRunning {
    /// Marks a guest as running.
    pub(crate) fn start() -> Self {
        let shard = home_shard();
        GUESTS_RUNNING[shard].0.fetch_add(1, Ordering::Relaxed);
        Self { shard }
    }
}

impl Drop for GuestRunning {
    fn drop(&mut self) {
        GUESTS_RUNNING[self.shard].0.fetch_sub(1, Ordering::Relaxed);
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
                let busy = guests_running() > 0;
                std::thread::sleep(if busy { EPOCH_TICK } else { IDLE_TICK });
            }
        })
        .context("failed to start the epoch ticker thread")?;
    Ok(())
}
