//! The `wasmhost` binary: everything lives in the library so the test crate
//! can run the very same entry point.

fn main() -> std::process::ExitCode {
    wasmhost::cli::main()
}
