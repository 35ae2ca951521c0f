//! The slow lane: a low-priority thread per request worker where guests that
//! keep computing finish, so a CPU hog never holds the worker thread every
//! other request on it runs on.
//!
//! Every guest starts on the request thread (`runtime.rs`): almost all
//! answer within tens of microseconds, and moving them would cost a
//! cross-core hand-off each. [`run`] times each poll of a guest; once a
//! guest has spent [`HOG_AFTER`] computing, it is handed to the slow lane
//! between two polls and finishes there. wasmtime's futures may be polled
//! from any thread, so the guest does not notice: its epoch deadline, request
//! timeout and drain signal apply as before. In scheduling terms this is a
//! two-level feedback queue: short requests first, long ones in the
//! background, sharing the slow lane at every epoch tick.
//!
//! Why `SCHED_IDLE` and not a nice value: a nice thread keeps its weighted
//! share and delays the request thread's wake-ups; under `SCHED_IDLE` the
//! hello p99 beside two looping guests stayed within 1.5× of its p99 alone in
//! 13 of 14 runs (`docs/performance.md`). The catch: on a machine whose every
//! core is busy, guests on the slow lane get almost no CPU and may run into
//! their timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::engine::ticker::EPOCH_TICK;
use crate::engine::worker;
use crate::priority;

/// Compute time after which a guest moves to the slow lane, for a version
/// whose requests are light. A hello request computes for about 15 µs and a
/// health check about as long; a guest past this is doing real work, and
/// every tick it computes on the request thread delays every other request
/// by as much.
pub(crate) const HOG_AFTER: Duration = Duration::from_millis(2);

/// How many times its version's typical compute time a request may compute
/// before it counts as a hog.
///
/// 8, not 4: a request that lands on a pool slot no instance of its version
/// used yet faults the version's heap in, and computes several times its
/// typical time. With 4, up to 9 of the 12,000 Python requests of a 5 s
/// `wrk -t2 -c32` run moved for that, and on the saturated machine waited
/// on the slow lane for up to 1.4 s; with 8, none did in twelve runs
/// (`docs/performance.md`).
/// A guest that loops never succeeds, so only its capped seed counts
/// ([`hog_after`]).
const TYPICAL_TIMES: u32 = 8;

/// The most compute time any request gets before it moves, however heavy its
/// version's requests typically are.
pub(crate) const HOG_AFTER_MAX: Duration = Duration::from_millis(20);

/// How long a request of a version whose successful requests typically
/// compute for `typical` may compute on the request thread: [`HOG_AFTER`],
/// or [`TYPICAL_TIMES`] its typical time if that is longer, up to
/// [`HOG_AFTER_MAX`].
///
/// Why not [`HOG_AFTER`] for all: a Python or JavaScript component computes
/// on every request, instantiation included, for about 1 ms (2–4 ms when this
/// was measured, before pages were reset in place). With one threshold for
/// all, a third of their CPU ran on the `SCHED_IDLE` lanes, where a busy
/// machine leaves them nothing: 300–700 ms worst latencies under `wrk`,
/// against under 60 ms when they stayed (`docs/performance.md`).
///
/// A guest that loops never succeeds, so never raises its own threshold past
/// what its trial instantiation seeded (capped at [`HOG_AFTER`], so at most
/// 16 ms). One that computes up to 20 ms and then answers does get the cap: each
/// sample counts at most the threshold in force, so it takes a few requests,
/// and from then on its requests share the worker with every other request,
/// yielding at each epoch tick, instead of running under `SCHED_IDLE`. The
/// cap bounds how long any request computes there.
pub(crate) fn hog_after(typical: Duration) -> Duration {
    typical
        .saturating_mul(TYPICAL_TIMES)
        .clamp(HOG_AFTER, HOG_AFTER_MAX)
}

/// Below this, a request's compute time cannot change its version's
/// threshold ([`HOG_AFTER`] over [`TYPICAL_TIMES`]), so it is not recorded
/// ([`TypicalCompute::record`]).
///
/// [`TypicalCompute::record`]: crate::model::compute::TypicalCompute::record
pub(crate) const RECORD_FROM: Duration = match HOG_AFTER.checked_div(TYPICAL_TIMES) {
    Some(floor) => floor,
    None => HOG_AFTER,
};

/// The slow lanes' runtimes, one per request worker, started once per
/// process; or why they could not be.
static LANES: OnceLock<Result<Vec<Handle>, String>> = OnceLock::new();

/// Starts `count` slow lanes (at least one) if none run yet. `wasmhost
/// serve` calls this at start-up, one lane per request worker, so a host that
/// cannot start the threads fails at once instead of serving without
/// protection from hogs.
///
/// One lane per worker, not one for the host: a lane runs on one core, and
/// hogs from every worker sharing it would get one core's leftovers on a
/// machine with many idle ones. At `SCHED_IDLE` a lane with nothing to do
/// costs nothing, and one that computes takes only CPU nobody else wants.
pub(crate) fn start(count: usize) -> anyhow::Result<()> {
    LANES
        .get_or_init(|| (0..count.max(1)).map(|_| start_thread()).collect())
        .as_ref()
        .map(drop)
        .map_err(|reason| anyhow::Error::msg(reason.clone()))
        .context("failed to start the slow lane")
}

fn lane() -> Result<&'static Handle, &'static str> {
    let lanes = LANES
        .get_or_init(|| start_thread().map(|lane| vec![lane]))
        .as_ref()
        .map_err(String::as_str)?;
    // Request worker `i` hands its hogs to lane `i`; any other thread to
    // the first.
    let index = worker::current().unwrap_or(0) % lanes.len().max(1);
    lanes.get(index).ok_or("no slow lane was started")
}

/// A current_thread runtime driven forever by its own thread under
/// `SCHED_IDLE` ([`priority::idle_this_thread`]): the guests there have had
/// their turn, and get only the CPU that requests and the rest of the
/// machine leave.
fn start_thread() -> Result<Handle, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("failed to build its runtime: {err}"))?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("wasmhost-slow".into())
        .spawn(move || {
            priority::idle_this_thread("slow lane");
            runtime.block_on(std::future::pending::<()>());
        })
        .map_err(|err| format!("failed to start its thread: {err}"))?;
    Ok(handle)
}

/// How a guest's run ended, and what it cost.
pub(crate) struct Finished<T> {
    /// The guest's own result.
    pub(crate) output: wasmtime::Result<T>,
    /// Time spent computing inside its polls, on either thread ([`Clock`]).
    pub(crate) compute: Duration,
    /// Whether it moved to the slow lane: it then ran on two threads.
    pub(crate) moved: bool,
}

/// Runs `guest` on the calling thread until it has computed for
/// `hog_after`, as `clock` counts it, then on the slow lane, calling
/// `on_move` as it moves (a guest that never finishes there, because it runs
/// into its timeout, is counted too).
/// Dropping the returned future drops the guest wherever it runs.
///
/// Only the time spent computing inside `poll` counts ([`Clock`]), so a guest
/// that mostly waits (on a body, a timer, an outgoing request) stays where it
/// is.
pub(crate) async fn run<T, F>(
    guest: F,
    hog_after: Duration,
    clock: Clock,
    on_move: impl FnOnce(),
) -> Finished<T>
where
    F: Future<Output = wasmtime::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut guest = Timed {
        guest: Box::pin(guest),
        compute: Duration::ZERO,
        clock,
    };
    let finished_here = std::future::poll_fn(|cx| match Pin::new(&mut guest).poll(cx) {
        Poll::Ready(finished) => Poll::Ready(Some(finished)),
        Poll::Pending if guest.compute >= hog_after => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await;
    if let Some((output, compute)) = finished_here {
        return Finished {
            output,
            compute,
            moved: false,
        };
    }
    let lane = match lane() {
        Ok(lane) => lane,
        Err(reason) => {
            // The thread could not be started. `wasmhost serve` refuses to
            // run then, so only a library user gets here; the guest keeps
            // sharing the request thread, yielding at every epoch tick.
            tracing::debug!("no slow lane ({reason}); the guest stays on the request thread");
            let (output, compute) = guest.await;
            return Finished {
                output,
                compute,
                moved: false,
            };
        }
    };
    on_move();
    let compute_here = guest.compute;
    // The first poll there re-registers whatever the guest waits on with the
    // slow lane's waker; until then the guest is between two polls.
    let mut task = AbortOnDrop(lane.spawn(guest));
    let (output, compute) = match (&mut task.0).await {
        Ok(finished) => finished,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => (
            Err(wasmtime::Error::msg(format!(
                "the guest was lost on the slow lane: {err}"
            ))),
            compute_here,
        ),
    };
    Finished {
        output,
        compute,
        moved: true,
    }
}

/// How a guest's polls are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Clock {
    /// The thread's CPU time: exact, but each reading is a system call
    /// (about 350 ns here, two per poll), so only for requests that compute
    /// for milliseconds anyway. A poll that blocked its thread without
    /// computing would count nothing; guests have no way to here (no wasm
    /// threads, and every wasi call is a future).
    Cpu,
    /// Wall time (a vDSO read, about 20 ns), each poll counting at most
    /// [`MAX_POLL_COMPUTE`]: for light requests, whose polls are
    /// microseconds long.
    Wall,
}

impl Clock {
    /// CPU time for a version whose requests typically compute long enough
    /// to have raised their threshold above [`HOG_AFTER`] (Python and
    /// JavaScript components do on every request), wall time for the rest.
    ///
    /// Why not wall time for all: under a saturated machine the kernel runs
    /// other threads in the middle of a poll, and a wall clock counts that
    /// wait as compute. Fresh Python instances under `wrk -t2 -c32` then
    /// crossed their threshold, moved to the slow lane and waited there for
    /// seconds: p99 over 1 s in 6 of 8 runs, and over 0.6 s in 3 of 6 with
    /// each poll capped at two ticks (`docs/performance.md`).
    pub(crate) fn for_threshold(hog_after: Duration) -> Self {
        if hog_after > HOG_AFTER {
            Self::Cpu
        } else {
            Self::Wall
        }
    }

    fn now(self) -> Duration {
        match self {
            Self::Cpu => {
                let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
                // Fails only on negative seconds, which a thread's CPU time never has.
                Duration::try_from(now).unwrap_or(Duration::ZERO)
            }
            Self::Wall => MONOTONIC_START.elapsed(),
        }
    }

    /// What a poll from `started` to `ended` counts as.
    fn count(self, started: Duration, ended: Duration) -> Duration {
        let took = ended.saturating_sub(started);
        match self {
            Self::Cpu => took,
            Self::Wall => took.min(MAX_POLL_COMPUTE),
        }
    }
}

/// The instant wall-clock readings count from, so both clocks read as a
/// [`Duration`].
static MONOTONIC_START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// The most one poll counts as compute time on the wall clock.
///
/// A guest that computes yields at every epoch tick, so one poll computes for
/// about a tick ([`EPOCH_TICK`]), unless one instruction (a large
/// `memory.fill`) or host call runs past it; a poll that took longer mostly
/// waited for a core. Two ticks, not one, because the ticker may itself wake
/// late. A light request still moves after one such poll: this is
/// [`HOG_AFTER`].
const MAX_POLL_COMPUTE: Duration = EPOCH_TICK.saturating_mul(2);

/// A guest future that adds up the compute time of its polls, wherever they
/// run, and hands the total over with its output.
struct Timed<F> {
    guest: Pin<Box<F>>,
    compute: Duration,
    clock: Clock,
}

impl<F: Future> Future for Timed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let clock = self.clock;
        let started = clock.now();
        let poll = self.guest.as_mut().poll(cx);
        self.compute += clock.count(started, clock.now());
        let compute = self.compute;
        poll.map(|output| (output, compute))
    }
}

/// Aborts the slow-lane task when the future waiting for it is dropped (the
/// request's timeout fired or its version was stopped), so a hog never
/// outlives the request it belongs to.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::Context;

    use super::*;

    /// Stands in for a guest: computes for `per_poll` inside every poll,
    /// yields `polls` times, then says which thread finished it.
    struct Compute {
        per_poll: Duration,
        polls: u32,
        /// The thread the future was dropped on, once it is.
        dropped_on: Arc<Mutex<Option<String>>>,
        /// Panic instead of finishing.
        panic: bool,
    }

    impl Compute {
        fn new(per_poll: Duration, polls: u32) -> Self {
            Self {
                per_poll,
                polls,
                dropped_on: Arc::default(),
                panic: false,
            }
        }
    }

    impl Future for Compute {
        type Output = wasmtime::Result<Option<String>>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let started = Instant::now();
            while started.elapsed() < self.per_poll {
                std::hint::spin_loop();
            }
            if self.polls == 0 {
                assert!(!self.panic, "the guest stand-in panicked");
                return Poll::Ready(Ok(std::thread::current().name().map(str::to_string)));
            }
            self.polls -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    impl Drop for Compute {
        fn drop(&mut self) {
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string();
            if let Ok(mut dropped_on) = self.dropped_on.lock() {
                *dropped_on = Some(thread);
            }
        }
    }

    #[tokio::test]
    async fn short_guests_stay_on_the_calling_thread() {
        let here = std::thread::current().name().map(str::to_string);
        let moved = AtomicBool::new(false);
        let finished = run(
            Compute::new(Duration::ZERO, 20),
            HOG_AFTER,
            Clock::Wall,
            || moved.store(true, Ordering::Relaxed),
        )
        .await;
        assert!(!moved.load(Ordering::Relaxed));
        assert_eq!(finished.output.expect("ran"), here);
    }

    #[tokio::test]
    async fn guests_that_keep_computing_finish_on_the_slow_lane() {
        let moved = AtomicBool::new(false);
        let finished = run(
            Compute::new(Duration::from_millis(1), 20),
            HOG_AFTER,
            Clock::Wall,
            || moved.store(true, Ordering::Relaxed),
        )
        .await;
        assert!(moved.load(Ordering::Relaxed));
        // Every poll counted, on both threads: 21 of at least 1 ms.
        assert!(
            finished.compute >= Duration::from_millis(21),
            "{:?}",
            finished.compute
        );
        let finished_on = finished.output.expect("ran");
        assert_eq!(finished_on.as_deref(), Some("wasmhost-slow"));
    }

    #[tokio::test]
    async fn a_higher_threshold_keeps_a_heavy_guest_on_the_calling_thread() {
        let here = std::thread::current().name().map(str::to_string);
        let moved = AtomicBool::new(false);
        // A guest like the one above, with the threshold of a version whose
        // requests typically compute 5 ms: 20 ms, more than its 6 ms.
        let finished = run(
            Compute::new(Duration::from_millis(1), 5),
            hog_after(Duration::from_millis(5)),
            Clock::Cpu,
            || moved.store(true, Ordering::Relaxed),
        )
        .await;
        assert!(!moved.load(Ordering::Relaxed));
        assert_eq!(finished.output.expect("ran"), here);
    }

    /// Blocks its thread for `blocked` in its first poll without computing,
    /// as when the kernel runs another thread in the middle of a poll, then
    /// finishes at its second.
    struct Blocked(Option<Duration>);

    impl Future for Blocked {
        type Output = wasmtime::Result<()>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.0.take() {
                Some(blocked) => {
                    std::thread::sleep(blocked);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(Ok(())),
            }
        }
    }

    #[tokio::test]
    async fn a_light_request_that_waited_for_a_core_counts_at_most_two_ticks_a_poll() {
        let moved = AtomicBool::new(false);
        let finished = run(
            Blocked(Some(Duration::from_millis(50))),
            HOG_AFTER,
            Clock::Wall,
            || moved.store(true, Ordering::Relaxed),
        )
        .await;
        // The 50 ms poll counts 2 ms, the second at most as much.
        assert!(
            finished.compute >= MAX_POLL_COMPUTE && finished.compute <= MAX_POLL_COMPUTE * 2,
            "{:?}",
            finished.compute
        );
        // At the threshold after its first poll, so it moved: a light
        // request that really computed 2 ms would too.
        assert!(moved.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_heavy_request_that_waited_for_a_core_counts_only_its_cpu_time() {
        let moved = AtomicBool::new(false);
        let finished = run(
            Blocked(Some(Duration::from_millis(50))),
            hog_after(Duration::from_millis(1)),
            Clock::Cpu,
            || moved.store(true, Ordering::Relaxed),
        )
        .await;
        // Asleep, the thread used next to no CPU: far under the two ticks
        // the wall clock would have counted, and under the 8 ms threshold.
        assert!(
            finished.compute < MAX_POLL_COMPUTE,
            "{:?}",
            finished.compute
        );
        assert!(!moved.load(Ordering::Relaxed));
        assert!(finished.output.is_ok());
    }

    #[tokio::test]
    async fn a_heavy_request_that_keeps_computing_still_moves_on_cpu_time() {
        let moved = AtomicBool::new(false);
        // 1 ms of spinning per poll, 31 polls, against an 8 ms threshold.
        let finished = run(
            Compute::new(Duration::from_millis(1), 30),
            hog_after(Duration::from_millis(1)),
            Clock::Cpu,
            || moved.store(true, Ordering::Relaxed),
        )
        .await;
        assert!(moved.load(Ordering::Relaxed));
        assert!(
            finished.compute >= Duration::from_millis(8),
            "{:?}",
            finished.compute
        );
        assert_eq!(
            finished.output.expect("ran").as_deref(),
            Some("wasmhost-slow")
        );
    }

    #[test]
    fn heavy_versions_are_timed_by_cpu_time_and_light_ones_by_the_wall_clock() {
        assert_eq!(Clock::for_threshold(hog_after(Duration::ZERO)), Clock::Wall);
        assert_eq!(
            Clock::for_threshold(hog_after(Duration::from_micros(600))),
            Clock::Cpu
        );
    }

    #[test]
    fn thresholds_grow_with_the_typical_compute_time_within_bounds() {
        assert_eq!(hog_after(Duration::ZERO), HOG_AFTER);
        assert_eq!(hog_after(Duration::from_micros(15)), HOG_AFTER);
        assert_eq!(
            hog_after(Duration::from_millis(2)),
            Duration::from_millis(16)
        );
        assert_eq!(hog_after(Duration::from_secs(1)), HOG_AFTER_MAX);
    }

    #[tokio::test]
    async fn dropping_the_request_stops_its_guest_on_the_slow_lane() {
        let guest = Compute::new(Duration::from_millis(1), u32::MAX);
        let dropped_on = guest.dropped_on.clone();
        let outcome = tokio::time::timeout(
            Duration::from_millis(50),
            run(guest, HOG_AFTER, Clock::Wall, || {}),
        )
        .await;
        assert!(outcome.is_err(), "the endless guest finished");
        // Aborted there, it is dropped there, at its next yield.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let dropped_on = dropped_on.lock().expect("lock").clone();
            if let Some(thread) = dropped_on {
                assert_eq!(thread, "wasmhost-slow");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the guest still runs on the slow lane"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_panic_on_the_slow_lane_reaches_the_caller() {
        let mut guest = Compute::new(Duration::from_millis(1), 10);
        guest.panic = true;
        let joined = tokio::spawn(run(guest, HOG_AFTER, Clock::Wall, || {})).await;
        assert!(joined.is_err_and(|err| err.is_panic()));
    }
}
