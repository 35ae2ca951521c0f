//! The `wasmhost` binary: everything lives in the library so the test crate
//! can run the very same entry point.

/// mimalloc (v3), not glibc's malloc: a request makes about 130 allocations
/// (hyper, wasi-http, the store and its instance), and glibc's share of the
/// request path's CPU was 13–15 %. Server CPU per request on the hello guest
/// went from 21.6–22.4 µs to 20.2–20.5 µs. RSS: 30 MB at start against
/// 29 MB, and 3–5 MiB more after a swap's compile (`docs/performance.md`,
/// "Per-request CPU").
///
/// The test package builds its `wasmhost-under-test` from this very file
/// (`tests/Cargo.toml`): a crate used here must be a dependency there too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wasmhost::cli::main()
}
