//! The wasmtime side every guest runs under: the one [`Engine`] every
//! project shares, the [`Linker`] every component is linked against, the
//! per-request store ([`store`]), the epoch ticker (`ticker.rs`) and guest
//! output (`guest_log.rs`).
//!
//! These sit below both the request path and the swap pipeline: a compiled
//! `Build` (in `model`) is a `ProxyPre<RequestState>`, so the store type
//! cannot live in `front` without `model` depending on it.
//!
//! One engine means one code cache, one instance pool and one epoch counter
//! for the whole host; projects differ only in their `ProxyPre`.

pub(crate) mod faults;
pub(crate) mod guest_log;
pub(crate) mod idle_shards;
pub(crate) mod instances;
pub mod outbound;
#[cfg(test)]
mod reset_tests;
pub mod store;
pub(crate) mod ticker;
pub(crate) mod worker;

use anyhow::Context as _;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use store::RequestState;

/// How many instances (and linear memories, tables, stacks) the pool holds
/// by default (`--max-instances`): the most requests that can run at once
/// across all projects. Past it, requests are answered 503.
pub const DEFAULT_INSTANCES: u32 = 1000;

/// How much of the memory a guest wrote, per linear memory and table slot,
/// is reset in place and stays mapped between instances when the kernel can
/// tell which pages were written (`PAGEMAP_SCAN`, Linux 6.7+); the rest is
/// decommitted and faulted in again by the next instance. Only pages a guest
/// wrote count, so a Rust guest keeps well under 1 MiB; the Python example
/// writes about 1.2 MiB per request, and at 1 MiB still took 42 faults per
/// request, none at 8 MiB (`docs/performance.md`). The price is up to this
/// much resident memory per pool slot that a heavy guest has used.
const KEEP_RESIDENT: usize = 8 << 20;

/// Builds the engine: pooling allocator (instantiation is a slot reuse, not
/// an mmap), epoch interruption (deadlines without fuel's per-instruction cost),
/// and async support (guests wait on I/O without blocking a thread).
///
/// When a request ends, its instance's memory must go back to its initial
/// contents before the slot is reused. wasmtime's default `madvise`s it away,
/// so the next request page-faults every page it touches again. With
/// `PAGEMAP_SCAN` the kernel reports the pages the guest wrote, and only
/// those are reset in place: server CPU per request fell by 40 %. Without
/// `PAGEMAP_SCAN`, keeping pages resident measured worse than the default,
/// so then it stays off (`docs/performance.md`).
///
/// `instances` sizes the pool: the most guest instances alive at once.
pub fn new_engine(instances: u32) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances);
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
