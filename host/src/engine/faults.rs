//! Page faults on a request worker: whether an instance wrote only pages its
//! last reset found written, so that its next reset can put those back
//! without asking the kernel to walk its memory
//! (`InstanceSnapshot::restore_known_pages`).
//!
//! After a reset in place, every page of an instance's memory that the reset
//! did not find written is the image's, the zero page, or not mapped: the
//! guest's first write to one takes a page fault, on the thread the guest
//! runs on. So if that thread's fault count (`getrusage(RUSAGE_THREAD)`) did
//! not move while the guest ran, the guest wrote no new page, and its
//! reset need not scan for them. A `PAGEMAP_SCAN` of hello's 1.1 MiB memory
//! cost about 10 % of the server's CPU per request; one `getrusage` costs a
//! system call (`docs/performance.md`).
//!
//! Faults for any other reason (the host's own allocations, another
//! instance's start, a page the kernel swapped out) only make the next
//! reset scan, as it always did. The reasoning holds only where:
//! - the guest ran on this thread alone: a request worker, whose
//!   current_thread runtime runs every task spawned on it on its own thread,
//!   and never moved to the slow lane (the caller checks that);
//! - the kernel makes no page writable behind the process's back, which
//!   transparent huge pages would: `khugepaged`, when THP is `always` on (for
//!   any page size), or `MADV_COLLAPSE` from a tuning daemon, collapses a
//!   range into a huge page and so fills its unmapped pages in. So
//!   `wasmhost serve` turns THP off for its own process at start-up, before
//!   any instance exists ([`disable_huge_pages`]), whatever the system's
//!   settings; where that fails, every reset scans.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::worker;

/// Whether this process runs without transparent huge pages
/// ([`disable_huge_pages`]).
static HUGE_PAGES_OFF: AtomicBool = AtomicBool::new(false);

/// Turns transparent huge pages off for this process
/// (`prctl(PR_SET_THP_DISABLE)`: neither `khugepaged` nor `MADV_COLLAPSE`
/// touches its memory, nor does a page fault map a huge page), so that a
/// fault-free request can be trusted to have written no new page. Called at
/// start-up, before the first instance: a huge page collapsed before the
/// call could hide pages a scan already recorded. Returns whether it took.
///
/// The host's own heap loses huge pages too, on a machine that had them
/// `always` on; with `madvise` (the usual default) nothing changes, as
/// neither mimalloc nor wasmtime asks for them.
#[allow(unsafe_code)]
pub(crate) fn disable_huge_pages() -> bool {
    // SAFETY: plain integer arguments; these options read and write no
    // memory of ours.
    let set = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } == 0
        && unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) } == 1;
    HUGE_PAGES_OFF.store(set, Ordering::Relaxed);
    set
}

thread_local! {
    /// The thread's fault count when it was last read, by [`none_since`].
    static LAST_READ: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The thread's fault count before a guest ran, if it can vouch for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark(Option<u64>);

/// Taken before a guest runs: the count last read on this thread (read
/// earlier, so covering everything since), when this is a request worker
/// and huge pages are off. No system call.
pub(crate) fn mark() -> Mark {
    let trusted = worker::current().is_some() && HUGE_PAGES_OFF.load(Ordering::Relaxed);
    Mark(trusted.then(|| LAST_READ.with(Cell::get)).flatten())
}

/// Whether this thread took no page fault since `mark` was taken. Reads the
/// count (one system call) only for a mark that can tell, and keeps it for
/// the next [`mark`] on this thread.
pub(crate) fn none_since(mark: Mark) -> bool {
    let Some(before) = mark.0 else {
        return false;
    };
    let now = thread_faults();
    LAST_READ.with(|last| last.set(now));
    now == Some(before)
}

/// Starts the count on this thread, so the first request's mark can tell.
pub(crate) fn start_counting() {
    LAST_READ.with(|last| last.set(thread_faults()));
}

/// The calling thread's page faults so far, minor and major.
#[allow(unsafe_code)]
fn thread_faults() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a writable `rusage` that outlives the call, which
    // only writes it.
    let result = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: `getrusage` succeeded, so it filled `usage` in (and it was
    // zeroed before, which is a valid `rusage` too).
    let usage = unsafe { usage.assume_init() };
    let minor = u64::try_from(usage.ru_minflt).ok()?;
    let major = u64::try_from(usage.ru_majflt).ok()?;
    Some(minor + major)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writing a page never touched takes a fault this thread counts, and
    /// writing it again does not: what [`none_since`] relies on.
    #[test]
    #[allow(unsafe_code)]
    fn a_first_write_to_a_page_is_a_fault_of_this_thread() {
        let (page, pages) = (4096, 64);
        // SAFETY: a new private anonymous mapping, unmapped below; nothing
        // else refers to it.
        let memory = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page * pages,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(memory, libc::MAP_FAILED);
        let write_every_page = |value: u8| {
            for index in 0..pages {
                // SAFETY: inside the mapping, which is readable and writable.
                unsafe { memory.cast::<u8>().add(index * page).write_volatile(value) };
            }
        };
        let before = thread_faults().expect("getrusage");
        write_every_page(1);
        let after_first = thread_faults().expect("getrusage");
        write_every_page(2);
        let after_second = thread_faults().expect("getrusage");
        // SAFETY: the mapping made above, not used after this.
        unsafe { libc::munmap(memory, page * pages) };
        assert!(
            after_first >= before + pages as u64,
            "{before} -> {after_first}"
        );
        assert_eq!(after_second, after_first);
    }

    #[test]
    fn only_a_request_worker_with_a_count_and_no_huge_pages_can_vouch() {
        assert!(disable_huge_pages(), "prctl(PR_SET_THP_DISABLE) failed");
        // A test thread is no request worker.
        start_counting();
        assert!(!none_since(mark()));
        std::thread::spawn(|| {
            worker::become_worker(0);
            // Nothing read yet on this thread: no mark to vouch with.
            assert!(!none_since(mark()));
            // Nothing faults between the two readings, at the latest once
            // the stack they use is mapped.
            let vouched = (0..10).any(|_| {
                start_counting();
                none_since(mark())
            });
            assert!(vouched);
            // Nor without huge pages off.
            HUGE_PAGES_OFF.store(false, Ordering::Relaxed);
            start_counting();
            assert!(!none_since(mark()));
            assert!(disable_huge_pages());
        })
        .join()
        .expect("thread");
    }
}
