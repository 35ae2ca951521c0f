//! Component bytes → sha256 digest → compiled [`Component`] → [`ProxyPre`].
//!
//! Compilation takes tens of milliseconds to seconds of CPU, so it runs on
//! tokio's blocking pool, never on the async executor, behind a semaphore
//! that bounds how many compiles run at once and so how many cores they take
//! from request handling.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::invoke::RequestState;

/// A component compiled and linked, ready to instantiate per request.
pub struct Compiled {
    /// Pre-instantiated proxy: per-request instantiation skips all import resolution.
    pub pre: ProxyPre<RequestState>,
    /// Lowercase hex sha256 of the component bytes: the version's identity.
    pub digest: String,
    /// Size of the component file in bytes.
    pub size: u64,
    /// Wall time spent compiling and linking.
    pub compile_time: Duration,
}

/// Why a component could not be turned into a servable version. Callers
/// branch on the step: a read failure is about the file, the rest about its contents.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The file could not be read.
    #[error("failed to read component {path}: {source}")]
    Read {
        /// The component file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid component (empty, truncated, a core module, …).
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The component file.
        path: PathBuf,
        /// wasmtime's explanation, chain included.
        reason: String,
    },
    /// The component is valid but does not fit: an import the host lacks, or
    /// no `wasi:http/incoming-handler` export.
    #[error("{path} cannot be served as wasi:http/proxy: {reason}")]
    Link {
        /// The component file.
        path: PathBuf,
        /// wasmtime's explanation, chain included.
        reason: String,
    },
    /// The blocking compile task died (a wasmtime panic); reported, never propagated.
    #[error("compiling {path} crashed: {reason}")]
    Crashed {
        /// The component file.
        path: PathBuf,
        /// The panic or cancellation.
        reason: String,
    },
}

/// Compiles components on a bounded blocking pool.
#[derive(Clone)]
pub struct Compiler {
    engine: Engine,
    linker: Arc<Linker<RequestState>>,
    /// Bounds concurrent compiles so they cannot starve request handling of cores.
    permits: Arc<Semaphore>,
}

impl Compiler {
    /// A compiler allowing `max_concurrent` compiles at once (at least one).
    pub fn new(engine: Engine, linker: Linker<RequestState>, max_concurrent: usize) -> Self {
        Self {
            engine,
            linker: Arc::new(linker),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads and compiles the component at `path`.
    pub async fn compile_file(&self, path: &Path) -> Result<Compiled, CompileError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| CompileError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        self.compile_bytes(path, bytes).await
    }

    /// Compiles `bytes`; `path` names them in errors.
    pub async fn compile_bytes(
        &self,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<Compiled, CompileError> {
        let crashed = |reason: String| CompileError::Crashed {
            path: path.to_path_buf(),
            reason,
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|err| crashed(err.to_string()))?;
        let this = self.clone();
        let owned_path = path.to_path_buf();
        tokio::task::spawn_blocking(move || this.compile_blocking(&owned_path, &bytes))
            .await
            .map_err(|err| crashed(err.to_string()))?
    }

    fn compile_blocking(&self, path: &Path, bytes: &[u8]) -> Result<Compiled, CompileError> {
        let started = Instant::now();
        let digest = hex(&Sha256::digest(bytes));
        let component =
            Component::new(&self.engine, bytes).map_err(|err| CompileError::Invalid {
                path: path.to_path_buf(),
                reason: format!("{err:#}"),
            })?;
        let link = |err: wasmtime::Error| CompileError::Link {
            path: path.to_path_buf(),
            reason: format!("{err:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link)?;
        let pre = ProxyPre::new(instance_pre).map_err(link)?;
        Ok(Compiled {
            pre,
            digest,
            size: bytes.len() as u64,
            compile_time: started.elapsed(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
