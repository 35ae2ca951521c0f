//! Per-thread CPU priority for the host's background threads, so work that
//! can wait never takes CPU from requests.

/// Makes the calling thread, and only it (on Linux, priority is per thread),
/// as nice as `nice`. Threads it starts afterwards inherit the value. Failing
/// is harmless: the thread just competes with requests as an ordinary thread
/// would, so it is logged at debug level only.
fn lower_this_thread(nice: i32, what: &str) {
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
    if let Err(err) = set_sched_idle() {
        tracing::debug!(cause = %err, "failed to put the {what} thread under SCHED_IDLE");
        lower_this_thread(19, what);
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_sched_idle() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` that outlives the call, which
    // only reads it; pid 0 names the calling thread. No memory is shared.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_sched_idle() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "SCHED_IDLE is Linux only",
    ))
}
