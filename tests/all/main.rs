//! wasmhost's integration tests, in one binary so guests and the host binary
//! are built once. Every test starts the real `wasmhost serve` on
//! 127.0.0.1:0 with its own temporary projects folder.

mod admin;
mod cli;
mod connections;
mod dashboard;
mod events;
mod fleet;
mod harness;
mod in_process;
mod languages;
mod layout;
mod lifecycle;
mod limits;
mod observe;
mod oci;
mod outbound;
mod reuse;
mod routing;
mod security;
mod serving;
mod swap;
mod watch;
mod workers;
