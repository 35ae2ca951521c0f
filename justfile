# wasmhost developer tasks. Get `just` with `pip install rust-just` or `cargo install just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Build every guest (or the named ones) for wasm32-wasip2.
build-guests *GUESTS:
    scripts/build-guests {{GUESTS}}

# Build the guests, place them under ./projects and serve them.
serve *ARGS:
    scripts/serve {{ARGS}}

# Build GUEST and make it live in the running host (wasmhost deploy).
deploy GUEST *ARGS:
    scripts/deploy-guest {{GUEST}} {{ARGS}}

# Run the whole test suite.
test *ARGS:
    scripts/test {{ARGS}}

# Run the benchmarks: criterion micro-benchmarks, then the load harness
# (10 s phases, wasmtime serve side by side) against the release host.
bench:
    cargo bench -p wasmhost-benches
    cargo build --release -p wasmhost -p wasmhost-benches
    WASMTIME="$(scripts/wasmtime-baseline)" target/release/load 10 32

# The short load run CI does (correctness checks only).
bench-ci:
    scripts/bench-ci

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    cd guests && cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
