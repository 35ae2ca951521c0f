//! Builds every guest in `../guests` for wasm32-wasip2 and writes their paths
//! as constants into `$OUT_DIR/guests.rs` (the pattern of wasmtime's
//! test-programs-artifacts), so tests never depend on a manual build step.
//! The Rust guests build with cargo; the Python and JavaScript ones with
//! `scripts/componentize`, which installs their pinned toolchains.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guests_dir = manifest_dir.join("../guests");
    let guests_dir = guests_dir.canonicalize().unwrap_or(guests_dir);
    let guests = guest_names(&guests_dir);
    let componentized = componentized_names(&guests_dir);

    for path in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", guests_dir.join(path).display());
    }
    for name in guests.iter().map(String::as_str).chain(["support"]) {
        println!(
            "cargo:rerun-if-changed={}",
            guests_dir.join(name).join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            guests_dir.join(name).join("Cargo.toml").display()
        );
    }
    for name in &componentized {
        println!("cargo:rerun-if-changed={}", guests_dir.join(name).display());
    }
    for path in ["../wit", "../scripts/componentize"] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join(path).display()
        );
    }

    // The guests share guests/target with `just build-guests`, so a test run
    // after a `just serve` (or the other way round) reuses the build.
    let target_dir = guests_dir.join("target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&guests_dir)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the wasm build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("failed to run cargo to build the guests");
    if !status.success() {
        panic!(
            "failed to build the guests in {} for {TARGET}; if the target is missing, run `rustup target add {TARGET}`",
            guests_dir.display()
        );
    }

    for name in &componentized {
        let script = guests_dir.join("../scripts/componentize");
        let status = Command::new(&script)
            .arg(name)
            .status()
            .unwrap_or_else(|err| panic!("failed to run {}: {err}", script.display()));
        if !status.success() {
            panic!(
                "failed to build the {name} guest with scripts/componentize (its output above says what is missing)"
            );
        }
    }

    let out_dir = target_dir.join(TARGET).join("release");
    let mut code = String::new();
    let mut all = String::new();
    for name in guests.iter().chain(&componentized) {
        // Libraries get `-` turned into `_` in their file names; binaries do not.
        let wasm = [name.clone(), name.replace('-', "_")]
            .iter()
            .map(|file| out_dir.join(format!("{file}.wasm")))
            .find(|path| path.is_file())
            .unwrap_or_else(|| out_dir.join(format!("{name}.wasm")));
        assert!(
            wasm.is_file(),
            "guest {name} did not produce {}",
            wasm.display()
        );
        let constant = name.to_uppercase().replace('-', "_");
        writeln!(code, "/// The `{name}` guest component.").expect("write to string");
        writeln!(
            code,
            "pub const {constant}: &str = {:?};",
            wasm.display().to_string()
        )
        .expect("write to string");
        if guests.contains(name) {
            write!(all, "({name:?}, {constant}), ").expect("write to string");
        }
    }
    writeln!(
        code,
        "/// Every Rust guest, as (name, path). The Python and JavaScript ones are left out:\n\
         /// at 14-18 MB each they take seconds to compile, so tests name them where needed."
    )
    .expect("write to string");
    writeln!(code, "pub const RUST: &[(&str, &str)] = &[{all}];").expect("write to string");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(&out, code).expect("failed to write guests.rs");
}

/// Every workspace member but the shared support crate is a guest.
fn guest_names(guests_dir: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(guests_dir.join("Cargo.toml"))
        .expect("failed to read guests/Cargo.toml");
    let members = manifest
        .lines()
        .find(|line| line.trim_start().starts_with("members"))
        .expect("guests/Cargo.toml lists its members on one line");
    members
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|name| *name != "support")
        .map(str::to_string)
        .collect()
}

/// The Python and JavaScript guests: the folders holding an `app.py` or an
/// `app.js`, as `scripts/build-guests` finds them.
fn componentized_names(guests_dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(guests_dir)
        .unwrap_or_else(|err| panic!("failed to list {}: {err}", guests_dir.display()));
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            ["app.py", "app.js"]
                .iter()
                .any(|app| entry.path().join(app).is_file())
        })
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}
