//! wasmhost: one process that serves many WebAssembly HTTP components
//! (`wasi:http/proxy`) and will swap each for a new version without a restart.
//!
//! # Layout
//!
//! Modules follow a request's and a project's way through the host, in data-flow order:
//!
//! - [`cli`]: command-line parsing; `wasmhost serve` and `--version`.
//! - [`config`]: turns CLI arguments into a validated [`config::Config`]; binds nothing.
//! - [`manifest`]: strict parsing of a project's `wasmhost.toml`, with file and line in every error.
//! - [`discovery`]: scans the projects folder into project sources and skipped entries.
//! - [`engine`]: the one wasmtime `Engine` (pooling allocator, epochs), its linker and epoch ticker.
//! - [`watcher`]: file events in the projects folder → debounced per-project syncs through the pipeline.
//! - [`pipeline`]: the one way a project changes: read → prepare → validate → swap → drain.
//! - [`compiler`] (prepare): component bytes → digest → compiled component (through [`cache`]) → `ProxyPre`, on a bounded blocking pool.
//! - [`validate`]: trial instantiation and the project's health check, before a version may serve.
//! - [`project`] and [`version`]: one project's atomically swapped current version, history and
//!   stats; one version's in-flight count and drain deadline.
//! - [`drain`]: retired versions finish their requests, or are interrupted at the drain deadline.
//! - [`registry`]: every project, and the routing snapshot built from them.
//! - [`router`]: pure host/path → project matching; no I/O.
//! - [`invoke`]: one request into one fresh instance of a project's current version;
//!   guests that keep computing finish on the [`slow_lane`].
//! - [`server`]: the HTTP accept loop, one task per connection, graceful drain.
//! - [`admin`]: the admin API on its own listener ([`multipart`] parses its uploads;
//!   [`events`] streams lifecycle events).
//! - [`client`] and [`commands`]: the admin API's client side: `wasmhost deploy`, `status`, `reload`, `rollback`, `rm`.
//! - [`serve`]: wires the stages together for `wasmhost serve`.
//!
//! Around them: [`runtime`] (the one place the tokio runtime flavour is chosen),
//! [`shutdown`] (signals → one future), [`priority`] (CPU priority of
//! background threads), [`telemetry`] (tracing set-up),
//! [`guest_log`] (guest stdout/stderr → host log) [`error`] (errors callers branch on)
//! and [`responses`] (the host's own small responses).

pub mod admin;
pub mod body_limit;
pub mod cache;
pub mod cli;
pub mod client;
pub mod commands;
pub mod compiler;
pub mod config;
pub mod discovery;
pub mod drain;
pub mod engine;
pub mod error;
pub mod events;
pub mod guest_log;
pub mod invoke;
pub mod manifest;
pub mod multipart;
pub mod pipeline;
pub mod priority;
pub mod project;
pub mod registry;
pub mod responses;
pub mod router;
pub mod runtime;
pub mod serve;
pub mod server;
pub mod shutdown;
pub mod slow_lane;
pub mod telemetry;
pub mod units;
pub mod validate;
pub mod version;
pub mod watcher;
