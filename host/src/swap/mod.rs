//! The swap pipeline: the one way a project changes, from bytes to a live
//! version: read → prepare (compile, cache) → validate → swap → drain.

pub mod cache;
pub mod compiler;
pub(crate) mod drain;
mod install;
mod persist;
pub mod pipeline;
pub mod settings;
pub(crate) mod validate;
