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
//!   `khugepaged` does when transparent huge pages are `always` on
//!   (collapsing a range into a huge page fills its unmapped pages in).
//!   With THP `always`, or where that cannot be read, every reset scans.

use std::cell::Cell;
use std::sync::LazyLock;

thread_local! {
    /// Set on request workers ([`mark_request_worker`]).
    static REQUEST_WORKER: Cell<bool> = const { Cell::new(false) };
    /// The thread's fault count when it was last read, by [`none_since`].
    static LAST_READ: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Marks the calling thread as a request worker: it drives its own
/// current_thread runtime for its whole life, so a task spawned there runs
/// on this thread alone.
pub(crate) fn mark_request_worker() {
    REQUEST_WORKER.with(|worker| worker.set(true));
}

/// The thread's fault count before a guest ran, if it can vouch for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark(Option<u64>);

/// Taken before a guest runs: the count last read on this thread (read
/// earlier, so covering everything since), when this is a request worker
/// and the kernel cannot fill pages in behind its back. No system call.
pub(crate) fn mark() -> Mark {
    let trusted = REQUEST_WORKER.with(Cell::get) && *NO_HUGE_PAGE_COLLAPSE;
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

/// Whether `khugepaged` leaves anonymous memory alone: transparent huge
/// pages are not `always` on, for any page size. Read once.
static NO_HUGE_PAGE_COLLAPSE: LazyLock<bool> =
    LazyLock::new(|| no_huge_page_collapse(std::path::Path::new(THP)));

const THP: &str = "/sys/kernel/mm/transparent_hugepage";

/// Whether the THP settings under `thp` keep `khugepaged` off memory that
/// never asked for huge pages (`madvise`, which wasmtime's does not, or
/// `never`). A kernel without THP has no such folder; a setting that cannot
/// be read counts as `always`.
fn no_huge_page_collapse(thp: &std::path::Path) -> bool {
    if !thp.exists() {
        return true;
    }
    let selected = |path: &std::path::Path| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let start = text.find('[')? + 1;
        let end = start + text.get(start..)?.find(']')?;
        text.get(start..end).map(str::to_string)
    };
    let Some(top) = selected(&thp.join("enabled")) else {
        return false;
    };
    if top == "always" {
        return false;
    }
    // Multi-size THP (Linux 6.8+): each size has its own setting, where
    // `inherit` means the top one's. A size with none (8 KiB, here) is for
    // shared memory only.
    let Ok(sizes) = std::fs::read_dir(thp) else {
        return false;
    };
    sizes
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("hugepages-")
        })
        .map(|size| size.path().join("enabled"))
        .filter(|setting| setting.exists())
        .all(|setting| selected(&setting).is_some_and(|mode| mode != "always"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thp(top: &str, sizes: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("enabled"), top).expect("write");
        for (index, mode) in sizes.iter().enumerate() {
            let size = dir.path().join(format!("hugepages-{}kB", 64 << index));
            std::fs::create_dir(&size).expect("mkdir");
            std::fs::write(size.join("enabled"), mode).expect("write");
        }
        dir
    }

    #[test]
    fn huge_pages_always_on_for_any_size_rule_out_trusting_fault_counts() {
        let ok = |top, sizes: &[&str]| no_huge_page_collapse(thp(top, sizes).path());
        assert!(ok("always [madvise] never\n", &[]));
        assert!(ok(
            "always madvise [never]\n",
            &["always inherit madvise [never]\n"]
        ));
        assert!(ok(
            "always [madvise] never\n",
            &["always [inherit] madvise never\n"]
        ));
        assert!(!ok("[always] madvise never\n", &[]));
        assert!(!ok(
            "always [madvise] never\n",
            &["[always] inherit madvise never\n"]
        ));
        assert!(!ok("garbled\n", &[]));
        // A size for shared memory only has no `enabled` of its own.
        let shmem_only = thp("always [madvise] never\n", &[]);
        std::fs::create_dir(shmem_only.path().join("hugepages-8kB")).expect("mkdir");
        assert!(no_huge_page_collapse(shmem_only.path()));
        assert!(no_huge_page_collapse(std::path::Path::new(
            "/nonexistent/thp"
        )));
    }

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
    fn only_a_request_worker_with_a_count_can_vouch() {
        LazyLock::force(&NO_HUGE_PAGE_COLLAPSE);
        // A test thread is no request worker.
        start_counting();
        assert!(!none_since(mark()));
        std::thread::spawn(|| {
            mark_request_worker();
            // Nothing read yet on this thread: no mark to vouch with.
            assert!(!none_since(mark()));
            if !*NO_HUGE_PAGE_COLLAPSE {
                return;
            }
            // Nothing faults between the two readings, at the latest once
            // the stack they use is mapped.
            let vouched = (0..10).any(|_| {
                start_counting();
                none_since(mark())
            });
            assert!(vouched);
        })
        .join()
        .expect("thread");
    }
}
