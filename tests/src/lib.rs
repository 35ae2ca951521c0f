//! What the integration tests and the benchmarks share: the paths of the
//! guest components `build.rs` built for wasm32-wasip2, and how to start a
//! server process and wait until it is ready ([`process`]).

pub mod process;

/// One constant per guest (`HELLO`, `ECHO`, …) holding the absolute path of
/// its `.wasm` (`HELLO_PY` and `HELLO_JS` for the Python and JavaScript ones),
/// and `RUST`, every Rust guest as `(name, path)`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// A component whose one core module has `functions` arithmetic-heavy
/// functions: valid, slow to compile (about 1 KiB of code per function), and
/// not a proxy, so a deploy of it is refused at link time, after the compile.
/// Tests and the benchmark harness use it to load the compiler.
pub fn large_component(functions: usize) -> Vec<u8> {
    let mut text = String::from("(component (core module\n");
    for f in 0..functions {
        text.push_str(&format!(
            "(func (export \"f{f}\") (param i32) (result i32) local.get 0\n"
        ));
        for k in 0..60 {
            text.push_str(&format!(
                "local.get 0 i32.const {k} i32.add i32.mul i32.const {f} i32.xor\n"
            ));
        }
        text.push_str(")\n");
    }
    text.push_str("))");
    // The text is generated above and always well-formed.
    wat::parse_str(&text).unwrap_or_else(|err| panic!("generated component text: {err}"))
}
