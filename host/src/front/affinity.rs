//! Pinning each request worker to a core of its own.
//!
//! Why: compiles and the slow lanes run under `SCHED_IDLE` on whatever CPU
//! requests leave idle. A core running a `SCHED_IDLE` thread never goes
//! idle, so Linux never pulls work from a busy neighbour's queue to it:
//! `perf sched` showed one worker waiting 5 ms behind the other on one core
//! while a compile ran on the second. Pinned, each worker has its own core
//! and takes it back from the compile at once. With `wrk -c32` against two
//! workers while the 18 MB Python example compiled, p99 went from
//! 3.8–3.9 ms to 1.0–1.4 ms (2.3–2.8 ms with nothing compiling;
//! `docs/performance.md`).
//!
//! Only workers are pinned, and only when the process may use exactly as
//! many CPUs as there are workers (one worker per CPU of its affinity mask,
//! the default on a machine or a `taskset`/cpuset-limited container). Under
//! a CPU quota smaller than the mask (a Kubernetes CPU limit), the default
//! is fewer workers than CPUs, and they are not pinned: every such
//! container would otherwise crowd onto the node's first CPUs. Threads a
//! worker starts (tokio's blocking pool) are put back on the whole set.

use std::sync::OnceLock;

use rustix::thread::CpuSet;

/// The CPUs this process may run on, read once, before any thread is
/// pinned.
fn allowed() -> &'static [usize] {
    static ALLOWED: OnceLock<Vec<usize>> = OnceLock::new();
    ALLOWED.get_or_init(|| {
        rustix::thread::sched_getaffinity(None)
            .map(|set| {
                (0..CpuSet::MAX_CPU)
                    .filter(|cpu| set.is_set(*cpu))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The CPU for each of `workers` workers, or `None` unless the process may
/// use exactly that many CPUs: with more workers, two pinned to one core
/// could never spread out; with fewer, which CPUs to take is a guess that
/// other processes pinned the same way would share.
pub(crate) fn plan(workers: usize) -> Option<Vec<usize>> {
    let allowed = allowed();
    (workers == allowed.len()).then(|| allowed.to_vec())
}

/// Pins the calling thread to `cpu`. Failing is harmless (the thread runs
/// wherever the scheduler puts it, as unpinned workers do), so it is logged
/// at debug level only.
pub(crate) fn pin_this_thread(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu);
    if let Err(err) = rustix::thread::sched_setaffinity(None, &set) {
        tracing::debug!(cpu, cause = %err, "failed to pin a request worker");
    }
}

/// Lets the calling thread run on every CPU the process may use again: for
/// threads started by a pinned worker, which inherit its pin.
pub(crate) fn unpin_this_thread() {
    let allowed = allowed();
    if allowed.is_empty() {
        return;
    }
    let mut set = CpuSet::new();
    for cpu in allowed {
        set.set(*cpu);
    }
    if let Err(err) = rustix::thread::sched_setaffinity(None, &set) {
        tracing::debug!(cause = %err, "failed to unpin a thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_pinned_one_per_cpu_only_when_they_match_the_cpus() {
        let cpus = allowed().len();
        assert!(cpus >= 1);
        let cpus_of = plan(cpus).expect("as many workers as CPUs");
        let mut distinct = cpus_of.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), cpus, "{cpus_of:?}");
        assert_eq!(plan(cpus + 1), None);
        assert_eq!(plan(cpus - 1), None);
    }
}
