//! Paths of the guest components that `build.rs` built for wasm32-wasip2,
//! for the integration tests and benchmarks.

/// One constant per guest (`HELLO`, `ECHO`, …) holding the absolute path of
/// its `.wasm`, and `ALL`, every guest as `(name, path)`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
