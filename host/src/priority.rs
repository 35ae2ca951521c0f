//! Per-thread CPU priority for the host's background threads, so work that
//! can wait never takes CPU from requests.

use std::collections::HashMap;
use std::time::Duration;

/// Makes the calling thread, and only it (on Linux, priority is per thread),
/// as nice as `nice`. Threads it starts afterwards inherit the value. Failing
/// is harmless: the thread just competes with requests as an ordinary thread
/// would, so it is logged at debug level only.
pub(crate) fn lower_this_thread(nice: i32, what: &str) {
    let thread = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(thread), nice) {
        tracing::debug!(cause = %err, "failed to lower the {what} thread's priority");
    }
}

/// Puts the calling thread under Linux's `SCHED_IDLE` policy: it runs only on
/// CPU that no ordinary thread wants, and an ordinary thread that wakes on its
/// core takes the core at once. Nice 19 is weaker: the thread still gets its
/// weighted share and delays wake-ups. Needs no privilege. Where the policy
/// cannot be set, falls back to nice 19.
pub(crate) fn idle_this_thread(what: &str) {
    if let Err(err) = set_policy(0, Policy::Idle) {
        tracing::debug!(cause = %err, "failed to put the {what} thread under SCHED_IDLE");
        lower_this_thread(19, what);
    }
}

/// Whether a thread of this process, once under `SCHED_IDLE`, may be made
/// an ordinary thread again at the nice value it inherited. Linux allows it
/// only with `CAP_SYS_NICE` or an `RLIMIT_NICE` that permits that nice value,
/// so a non-root host usually may not. The probe makes the very change
/// [`raise_threads_named`] makes. Found once, by trying on a thread started for the purpose.
pub(crate) fn can_leave_sched_idle() -> bool {
    static CAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN.get_or_init(|| {
        std::thread::Builder::new()
            .name("wasmhost-probe".into())
            .spawn(|| set_policy(0, Policy::Idle).is_ok() && set_policy(0, Policy::Other).is_ok())
            .ok()
            .and_then(|probe| probe.join().ok())
            .unwrap_or(false)
    })
}

/// Puts every thread of this process named `name` (as `/proc` shows it, at
/// most 15 bytes) back under `SCHED_IDLE`. Returns how many it moved.
pub(crate) fn idle_threads_named(name: &str) -> usize {
    for_threads_named(name, |tid| set_policy(tid, Policy::Idle))
}

/// Makes every thread of this process named `name` an ordinary thread again,
/// at the nice value it inherited (the process's own, as the operator set
/// it). Returns how many it moved.
pub(crate) fn raise_threads_named(name: &str) -> usize {
    for_threads_named(name, |tid| set_policy(tid, Policy::Other))
}

/// CPU time (user and system) each live thread of this process named
/// `name` has used so far, by thread id. A thread that ended is missing, so
/// callers compare two readings thread by thread.
pub(crate) fn cpu_of_threads_named(name: &str) -> HashMap<i32, Duration> {
    let tick = Duration::from_secs(1) / rustix::param::clock_ticks_per_second().max(1) as u32;
    threads_named(name)
        .into_iter()
        .filter_map(|(tid, task)| {
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            // `pid (comm) state ppid …`: comm may hold spaces and
            // parentheses, so the fields are counted from the last `)`.
            let (_, rest) = stat.rsplit_once(')')?;
            // After `)`: state is field 3, utime field 14, stime field 15.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |at: usize| fields.get(at)?.parse::<u32>().ok();
            Some((tid, tick * ticks(11)?.saturating_add(ticks(12)?)))
        })
        .collect()
}

/// How much CPU the threads in `now` used since `before`: a thread missing
/// from `before` started meanwhile and counts from zero.
pub(crate) fn cpu_used_since(
    before: &HashMap<i32, Duration>,
    now: &HashMap<i32, Duration>,
) -> Duration {
    now.iter()
        .map(|(tid, used)| used.saturating_sub(before.get(tid).copied().unwrap_or_default()))
        .sum()
}

/// Applies `change` to each thread of this process named `name`; a thread
/// that ended meanwhile, or a change refused, is logged at debug level and
/// skipped.
fn for_threads_named(name: &str, change: impl Fn(i32) -> std::io::Result<()>) -> usize {
    let mut changed = 0;
    for (tid, _) in threads_named(name) {
        match change(tid) {
            Ok(()) => changed += 1,
            Err(err) => {
                tracing::debug!(tid, cause = %err, "failed to change the {name} thread's priority")
            }
        }
    }
    changed
}

/// Every live thread of this process named `name` (as `/proc` shows it, at
/// most 15 bytes): its id and its `/proc/self/task` folder.
fn threads_named(name: &str) -> Vec<(i32, std::path::PathBuf)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            (comm.trim_end() == name).then(|| (tid, task.path()))
        })
        .collect()
}

/// The scheduling policies the host uses.
#[derive(Clone, Copy)]
enum Policy {
    /// `SCHED_OTHER`: ordinary, weighted by nice value.
    Other,
    /// `SCHED_IDLE`: only CPU nobody else wants.
    Idle,
}

/// Sets thread `tid`'s scheduling policy (0: the calling thread).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_policy(tid: i32, policy: Policy) -> std::io::Result<()> {
    let policy = match policy {
        Policy::Other => libc::SCHED_OTHER,
        Policy::Idle => libc::SCHED_IDLE,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` that outlives the call, which
    // only reads it. `tid` is 0 (the calling thread) or was read from
    // /proc/self/task: should that thread have ended and its id been reused,
    // another thread's priority changes, which touches no memory of ours.
    let result = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_policy(_tid: i32, _policy: Policy) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "scheduling policies are Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_a_named_thread_used_is_read_and_compared_thread_by_thread() {
        let name = "wasmhost-cputst";
        assert!(cpu_of_threads_named(name).is_empty());
        let (spun, done) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn_scoped(scope, || {
                    // Spin until this thread has used 300 ms of CPU by its
                    // own account, however long that takes on a busy machine.
                    let me = rustix::thread::gettid().as_raw_nonzero().get();
                    while cpu_of_threads_named(name)
                        .get(&me)
                        .is_none_or(|used| *used < Duration::from_millis(300))
                    {
                        std::hint::black_box((0..10_000u64).sum::<u64>());
                    }
                    spun.wait();
                    done.wait();
                })
                .expect("spawn the spinning thread");
            spun.wait();
            let now = cpu_of_threads_named(name);
            assert_eq!(now.len(), 1, "{now:?}");
            // A thread not seen before counts from zero.
            let used = cpu_used_since(&HashMap::new(), &now);
            assert!(used >= Duration::from_millis(300), "{used:?}");
            assert_eq!(cpu_used_since(&now, &now), Duration::ZERO);
            done.wait();
        });
        // Ended threads are not read. `join` returns when the thread has
        // cleared its id, a moment before the kernel removes its /proc
        // entry, so wait for that, up to a generous deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !cpu_of_threads_named(name).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "an ended thread is still read"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
