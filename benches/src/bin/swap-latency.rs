//! Swap latency on its own: from a file write, and from a deploy call, to the
//! first response from the new version, p50/p99, cache miss and hit. The load
//! harness runs the same measurement as one of its phases.
//!
//! Runs the release `wasmhost serve` (path in `WASMHOST`, default
//! `target/release/wasmhost`) on a temp projects folder on 127.0.0.1.
//!
//! Usage: `cargo run --release -p wasmhost-benches --bin swap-latency [SWAPS]`

use wasmhost_benches::{Error, swap_latency};

fn main() -> Result<(), Error> {
    let swaps: usize = std::env::args().nth(1).map_or(Ok(20), |n| n.parse())?;
    let hello = std::fs::read(wasmhost_tests::guests::HELLO)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(swap_latency::measure(&hello, swaps))?;
    print!("{}", swap_latency::table(&rows));
    Ok(())
}
