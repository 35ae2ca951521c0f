//! The one wasmtime [`Engine`] every project shares, the [`Linker`] every
//! component is linked against, and the thread that advances the epoch.
//!
//! One engine means one code cache, one instance pool and one epoch counter
//! for the whole host; projects differ only in their `ProxyPre`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::invoke::RequestState;

/// How often the epoch advances. Each tick, a running guest reaches its
/// epoch callback, which yields to other requests and enforces the deadline,
/// so this is both the scheduling quantum and the timeout resolution.
///
/// 1 ms, not 10: a guest stuck in a loop holds the request thread for up to
/// one tick at a time until it moves to the slow lane (`slow_lane.rs`), and
/// it can only move at a tick. Before the slow lane, when such guests stayed
/// on the request thread stepping aside at each tick, the hello p99 beside
/// two of them was 11× its steady p99 with 10 ms ticks and 1.2–2.0× with
/// 1 ms. Ticking that fast costs CPU, so the ticker only does it while
/// guests run ([`GuestRunning`]).
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How many instances (and linear memories, tables, stacks) the pool holds:
/// the most requests that can run at once across all projects.
const POOL_INSTANCES: u32 = 1000;

/// How much of each linear memory and table slot stays mapped between
/// instances when the kernel can tell which pages were written
/// (`PAGEMAP_SCAN`, Linux 6.7+). It covers the stack and data of a typical
/// Rust guest (its stack is the first 1 MiB).
const KEEP_RESIDENT: usize = 1 << 20;

/// Builds the engine: pooling allocator (instantiation is a slot reuse, not
/// an mmap), epoch interruption (deadlines without fuel's per-instruction cost),
/// and async support (guests wait on I/O without blocking a thread).
///
/// When a request ends, its instance's memory must go back to its initial
/// contents before the slot is reused. wasmtime's default `madvise`s it away,
/// so the next request page-faults every page it touches again, and each
/// `madvise` flushes TLBs. With `PAGEMAP_SCAN` the kernel reports the pages the
/// guest wrote, and only those are reset in place with `memset`: no syscall
/// per page range, no faults. Measured with the load harness (hello, 32
/// connections, 2 cores), server CPU per request went from 52–61 µs to 28–34
/// µs and requests/s from 16–19k to 29–36k; the keep-resident size made no
/// difference we could tell from noise between 256 KiB and 4 MiB. Without
/// `PAGEMAP_SCAN`, keeping 1 MiB resident means a 1 MiB `memset` per request,
/// measured *worse* than the default (59–90 µs), so then it stays off.
/// `decommit_batch_size` 32 and `max_unused_warm_slots` 0 showed no difference
/// beyond noise and are left at wasmtime's defaults.
pub fn new_engine() -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 4)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 4)
        .total_stacks(POOL_INSTANCES);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
    }
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to create the wasmtime engine")
}

/// Builds the linker: all of wasi:cli (as `wasmtime serve -Scli` does, so
/// components that run there run here) plus wasi:http.
pub fn new_linker(engine: &Engine) -> anyhow::Result<Linker<RequestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("failed to add wasi:cli to the linker")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("failed to add wasi:http to the linker")?;
    Ok(linker)
}

/// How long the ticker sleeps while no guest runs. A guest that starts in
/// the middle of it gets its first tick late, which only delays its first
/// yield: its deadline is also a tokio timer.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// Guests running wasm right now, across the host; the ticker only needs to
/// tick fast while this is above zero.
static GUESTS_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Counts a guest as running until dropped. Held around every call into wasm
/// (instantiation and the handler).
pub struct GuestRunning(());

impl GuestRunning {
    /// Marks a guest as running.
    pub fn start() -> Self {
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
/// while guests run, and every `IDLE_TICK` otherwise: an idle host ticking
/// every millisecond used 2.1 % of a core (420 ms of CPU over 20 s), with the
/// idle tick 0.65 % (130 ms). It holds only a weak reference and exits once
/// the engine is gone.
pub fn start_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
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
