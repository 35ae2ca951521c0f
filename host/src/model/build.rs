//! A build: a component compiled and linked, identified by the digest of
//! its bytes. Made by the compiler (`swap/compiler.rs`), shared by every
//! version made from the same bytes.

use std::sync::Arc;
use std::time::Duration;

use wasmtime_wasi_http::p2::bindings::{ProxyIndices, ProxyPre};

use crate::engine::store::RequestState;

/// A component compiled and linked, ready to instantiate per request. Shared
/// by every version made from the same bytes, and kept by the project's
/// history for rollback.
pub struct Build {
    /// Pre-instantiated proxy: per-request instantiation skips all import resolution.
    pub(crate) pre: ProxyPre<RequestState>,
    /// Where the proxy's exports are, for binding an instance made from
    /// `pre`'s component directly (instances reset in place need the
    /// component instance itself, which `ProxyPre::instantiate_async`
    /// does not return).
    pub(crate) indices: ProxyIndices,
    /// Lowercase hex sha256 of the component bytes: the build's identity.
    pub digest: String,
    /// The component bytes, so a rollback can write them back to disk.
    pub(crate) bytes: Arc<[u8]>,
    /// Wall time spent compiling (or loading from cache) and linking.
    pub(crate) compile_time: Duration,
    /// Whether the compiled code came from the cache.
    pub(crate) cache_hit: bool,
}

impl Build {
    /// Size of the component in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}
