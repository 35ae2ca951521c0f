//! The wasmhost binary, built in the test package so tests can spawn it.

fn main() -> std::process::ExitCode {
    wasmhost::cli::main()
}
