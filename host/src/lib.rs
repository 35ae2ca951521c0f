//! wasmhost: one process that serves many WebAssembly HTTP components
//! (`wasi:http/proxy`) and swaps each for a new version without a restart.
//!
//! # Layout
//!
//! Folders by role, in data-flow order:
//!
//! - [`cli`]: command-line parsing, the client commands and the admin client.
//! - [`serve`]: wires the stages together for `wasmhost serve`.
//! - [`front`]: the request path: listener, routing a request, invoking a guest.
//! - [`swap`]: the change pipeline: read → prepare (compile, cache) → validate → swap → drain.
//! - [`model`]: what a project is: manifest, discovery, registry and router, project, version.
//! - [`admin`]: the admin API.
//! - [`watch`]: file events in the projects folder → per-project syncs.
//!
//! Around them: [`engine`] (the wasmtime engine, linker and epoch ticker),
//! [`config`], [`runtime`], [`shutdown`], [`priority`], [`telemetry`] and [`units`].

pub mod admin;
pub mod cli;
pub mod config;
pub mod engine;
pub mod front;
pub mod model;
pub mod priority;
pub mod runtime;
pub mod serve;
pub mod shutdown;
pub mod swap;
pub mod telemetry;
pub mod units;
pub mod watch;
