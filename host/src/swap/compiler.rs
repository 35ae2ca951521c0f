//! Prepare: component bytes → sha256 digest → compiled [`Component`] (from
//! the cache, or compiled and then cached) → linked [`ProxyPre`].
//!
//! Compilation takes tens of milliseconds to seconds of CPU, so it runs on
//! its own thread at the lowest CPU priority, never on the async executor,
//! behind a semaphore that bounds how many compiles run at once. Requests
//! come first: a compile only takes the CPU time they leave.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::{ProxyIndices, ProxyPre};

use crate::engine::store::RequestState;
use crate::model::build::Build;
use crate::priority;
use crate::swap::cache::{CompileCache, Lookup, hex};

/// Why component bytes could not be turned into a build. Callers branch on
/// the kind: a read failure is about the file, the rest about its contents.
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

/// Compiles components on a bounded blocking pool, through the cache.
#[derive(Clone)]
pub struct Compiler {
    engine: Engine,
    linker: Arc<Linker<RequestState>>,
    cache: CompileCache,
    /// Bounds concurrent compiles so they cannot starve request handling of cores.
    permits: Arc<Semaphore>,
    /// How long a compile runs under `SCHED_IDLE` before it is raised.
    patience: Duration,
}

impl Compiler {
    /// A compiler allowing `max_concurrent` compiles at once (at least one).
    pub fn new(
        engine: Engine,
        linker: Linker<RequestState>,
        cache: CompileCache,
        max_concurrent: usize,
    ) -> Self {
        Self {
            engine,
            linker: Arc::new(linker),
            cache,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            patience: DEFAULT_PATIENCE,
        }
    }

    /// The same compiler, raising a compile that has run `patience` on idle
    /// CPU only to an ordinary thread (`--compile-patience`).
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The engine components are compiled for.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compile cache this compiler stores into.
    pub(crate) fn cache(&self) -> &CompileCache {
        &self.cache
    }

    /// The sha256 digest of `bytes`, as builds are identified.
    pub(crate) fn digest(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// Reads the component at `path`.
    pub(crate) async fn read(path: &Path) -> Result<Vec<u8>, CompileError> {
        tokio::fs::read(path)
            .await
            .map_err(|source| CompileError::Read {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Compiles `bytes` (or loads them from the cache) and links them; `path`
    /// names them in errors.
    pub async fn prepare(&self, path: &Path, bytes: Arc<[u8]>) -> Result<Build, CompileError> {
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
        in_background(self.patience, move || {
            this.prepare_blocking(&owned_path, bytes)
        })
        .await
        .map_err(crashed)?
    }

    fn prepare_blocking(&self, path: &Path, bytes: Arc<[u8]>) -> Result<Build, CompileError> {
        let started = Instant::now();
        let digest = Self::digest(&bytes);
        let (component, cache_hit) = match self.cache.load(&self.engine, &digest) {
            Lookup::Hit(component) => (component, true),
            lookup => {
                if let Lookup::Corrupt(reason) = lookup {
                    tracing::warn!(path = %path.display(), %digest, "discarded a bad compile cache entry ({reason}); recompiling");
                }
                let component =
                    Component::new(&self.engine, &bytes).map_err(|err| CompileError::Invalid {
                        path: path.to_path_buf(),
                        reason: format!("{err:#}"),
                    })?;
                if let Err(err) = self.cache.store(&digest, &component) {
                    tracing::warn!(cause = %format!("{err:#}"), "failed to store a compile cache entry");
                }
                (component, false)
            }
        };
        let link = |err: wasmtime::Error| CompileError::Link {
            path: path.to_path_buf(),
            reason: format!("{err:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link)?;
        let indices = ProxyIndices::new(&instance_pre).map_err(link)?;
        let pre = ProxyPre::new(instance_pre).map_err(link)?;
        Ok(Build {
            pre,
            indices,
            digest,
            bytes,
            compile_time: started.elapsed(),
            cache_hit,
        })
    }
}

/// How long a compile runs under `SCHED_IDLE` before it is raised to the
/// default priority, unless `--compile-patience` says otherwise.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(30);

/// The priority of compiles where they cannot be raised later (no
/// `CAP_SYS_NICE`): an ordinary thread, but the nicest one.
const FALLBACK_NICE: i32 = 19;

/// The share of one core below which compiles count as starved. At a
/// twentieth of a core, the 18 MB Python example (6.9 s of CPU, 3.7 s on
/// an idle 2-core machine) would take two minutes; the load harness, which
/// keeps both cores busy, left it about a twelfth (83 s).
const STARVED_SHARE: f64 = 0.05;

/// Whether compiles that used `got` of CPU over `window` are starved, so
/// waiting longer under `SCHED_IDLE` may never end. No window at all
/// (`--compile-patience 0s`) means no waiting.
fn starved(got: Duration, window: Duration) -> bool {
    window.is_zero() || got < window.mul_f64(STARVED_SHARE)
}

/// What the compile threads are called, as `/proc` shows them (15 bytes).
/// Cranelift's workers inherit the name of the thread that started them.
const COMPILE_THREADS: &str = "wasmhost-compil";

/// How often the threads of a raised compile are raised again, for those
/// started (or put back under `SCHED_IDLE` by another compile) meanwhile.
const RECHECK: Duration = Duration::from_millis(100);

/// Compiles that have run out of patience and are still running: while
/// there is one, the compile threads stay raised.
static RAISED: AtomicUsize = AtomicUsize::new(0);

/// Runs `work` on a new thread under `SCHED_IDLE` and waits for it without
/// blocking the executor. Cranelift's worker threads are started by the
/// first compile thread and inherit its policy; they outlive it, so later
/// compiles raise and idle them by name. A thread per compile costs
/// microseconds against a compile's milliseconds, and keeps the policy away
/// from tokio's blocking pool, which also does the deploy writes and fsyncs.
///
/// Why `SCHED_IDLE` and not nice 19: with the load harness saturating both
/// cores, an 18 MB Python compile at nice 19 took other projects' p99 to
/// 3.3× steady and requests/s down by a fifth; under `SCHED_IDLE`, 1.0× and
/// unchanged (`docs/performance.md`). The price is paid only while the
/// machine is saturated: the compile gets what is left, 83 s instead of 29 s
/// in that run, against 5 s on an idle machine.
///
/// `SCHED_IDLE`'s weight is tiny, so on a machine kept saturated a deploy
/// could wait for minutes: a test saturating both cores with Python requests
/// had an 18 MB deploy take over 90 s, and nice 19 was no better. So every
/// `patience`, the compile threads' CPU over that window is read: while they
/// get at least [`STARVED_SHARE`] of a core, the compile is progressing on
/// idle CPU and stays there. A slow compile alone is no reason to take CPU
/// from requests: raising after a fixed 30 s put the end of every 18 MB
/// compile in the harness at the default priority, and that part alone took
/// other projects' p99 to 2.3–3.8× steady. Once starved, the compile threads
/// (the compile's own and Cranelift's) become ordinary threads at the
/// default priority, taking their fair share of the CPU from requests until
/// the compile ends; they are checked again every
/// [`RECHECK`] so workers started meanwhile follow, and put back under
/// `SCHED_IDLE` once no raised compile runs. Raising to nice 10 instead, or
/// in turns of 1 ms raised and 9 ms idle, moved other projects' p99 no more
/// than the harness's run-to-run spread, so the simplest raise stays
/// (`docs/performance.md`). Linux lets a thread leave
/// `SCHED_IDLE` only with `CAP_SYS_NICE` (or an `RLIMIT_NICE` of 20); a host
/// without it compiles at nice 19 from the start, as before `SCHED_IDLE`.
async fn in_background<T: Send + 'static>(
    patience: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (sender, mut receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("wasmhost-compile".into())
        .spawn(move || {
            if !priority::can_leave_sched_idle() {
                // Never to be raised, so never under SCHED_IDLE: a busy
                // machine could hold the compile back for good.
                priority::lower_this_thread(FALLBACK_NICE, "compile");
            } else if RAISED.load(Ordering::Acquire) == 0 {
                priority::idle_this_thread("compile");
            }
            let _ = sender.send(work());
        })
        .map_err(|err| format!("failed to start a compile thread: {err}"))?;
    let panicked = |_| "the compile thread panicked".to_string();
    if !priority::can_leave_sched_idle() {
        return receiver.await.map_err(panicked);
    }
    let mut before = priority::cpu_of_threads_named(COMPILE_THREADS);
    loop {
        if let Ok(done) = tokio::time::timeout(patience, &mut receiver).await {
            return done.map_err(panicked);
        }
        let now = priority::cpu_of_threads_named(COMPILE_THREADS);
        let got = priority::cpu_used_since(&before, &now);
        if starved(got, patience) {
            tracing::info!(
                "compiles got {} ms of idle CPU in the last {patience:?}; raising compile threads to the default priority",
                got.as_millis()
            );
            break;
        }
        tracing::debug!(
            "compiles got {} ms of idle CPU in the last {patience:?}; they stay under SCHED_IDLE",
            got.as_millis()
        );
        before = now;
    }
    let _raised = Raised::new();
    loop {
        priority::raise_threads_named(COMPILE_THREADS);
        if let Ok(done) = tokio::time::timeout(RECHECK, &mut receiver).await {
            return done.map_err(panicked);
        }
    }
}

/// One compile counted in [`RAISED`] until it ends or its caller stops
/// waiting; the last one out puts the compile threads back under
/// `SCHED_IDLE`.
struct Raised;

impl Raised {
    fn new() -> Self {
        RAISED.fetch_add(1, Ordering::AcqRel);
        Self
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        if RAISED.fetch_sub(1, Ordering::AcqRel) == 1 {
            priority::idle_threads_named(COMPILE_THREADS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compile_is_starved_below_a_twentieth_of_a_core_over_the_window() {
        let window = Duration::from_secs(30);
        assert!(starved(Duration::ZERO, window));
        assert!(starved(Duration::from_millis(1_499), window));
        assert!(!starved(Duration::from_millis(1_500), window));
        assert!(!starved(Duration::from_secs(20), window));
        // No patience: raised at once, whatever it got.
        assert!(starved(Duration::from_secs(1), Duration::ZERO));
    }
}
