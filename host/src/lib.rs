//! wasmhost: one process that serves many WebAssembly HTTP components
//! (`wasi:http/proxy`) and swaps each for a new version without a restart.
//!
//! # Layout
//!
//! Folders by role, in data-flow order. `docs/architecture.md` draws the two
//! paths and names the file that owns each step.
//!
//! - `cli/`: parses the command line; `wasmhost serve`, and the admin API's
//!   client commands (`deploy`, `status`, `reload`, `rollback`, `rm`).
//! - `serve.rs`: wires the stages together for `wasmhost serve`: binds the
//!   listeners, builds the engine, loads every project, serves until shutdown.
//! - [`front`]: the request path. `workers` runs one thread per core, each
//!   with its own socket; there `listener` accepts connections, `handler`
//!   routes a request to its project's current version, `invoke` runs it in
//!   on a fresh instance's state (moving guests that keep computing to the
//!   `slow_lane`).
//! - [`swap`]: the change pipeline: read → prepare ([`swap::compiler`],
//!   [`swap::cache`]) → validate → swap → drain, and persist for deploys.
//! - [`model`]: what a project is: manifest, discovery, project, version,
//!   build, and the registry whose routing snapshot the request path reads.
//! - [`admin`]: the admin API: routes, access, views, uploads, events.
//! - `watch/`: file events in the projects folder (or polling) → per-project
//!   syncs; `watch/registry.rs` polls the tags of `oci://` components.
//! - `oci/`: components pulled from OCI registries (and `wasmhost push`):
//!   the registry client, credentials, and the store of pulled components
//!   that restarts fall back on; the pipeline's read step uses it.
//! - [`engine`]: the wasmtime engine, linker, per-request store and epoch ticker,
//!   below both paths.
//!
//! Around them: `config.rs` (validated host settings), `runtime.rs` (the
//! tokio runtime flavour), `shutdown.rs` (signals), `priority.rs` (CPU
//! priority of background threads), `telemetry.rs` (logging) and `units.rs`
//! (durations and sizes).
//!
//! Dependencies point one way: `cli → serve → {admin, watch} → swap → oci → model`,
//! `front → model`, and everything may use `engine`. The swap pipeline uses
//! `front` in one place, to run a candidate's health check exactly as a request
//! runs; `front` never imports `swap`: the two meet in the registry snapshot.
//! `tests/all/layout.rs` checks this.
//!
//! # Public surface
//!
//! Everything is `pub(crate)` except what the test crate, the benchmarks and
//! the fuzz targets use:
//! - [`cli::main`], the `wasmhost` binary's entry point;
//! - the parsers of untrusted input: [`model::manifest`], [`model::router`],
//!   [`admin::multipart`];
//! - the pieces a benchmark or an in-process test assembles a host from:
//!   [`engine::new_engine`], [`engine::new_linker`], [`swap::compiler`],
//!   [`swap::cache`], [`model::project`], [`model::version`],
//!   [`model::registry`], [`model::events`], [`front::handler::handle`] and
//!   [`front::invoke::trial_instantiate`].

pub mod admin;
pub mod cli;
pub(crate) mod config;
pub mod engine;
pub mod front;
pub mod model;
pub(crate) mod oci;
pub(crate) mod priority;
pub mod readiness;
pub(crate) mod runtime;
pub(crate) mod serve;
pub(crate) mod shutdown;
pub mod swap;
pub(crate) mod telemetry;
pub(crate) mod units;
pub(crate) mod watch;
