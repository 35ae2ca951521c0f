//! How long a version's requests typically compute, so the slow lane can tell
//! a guest that is heavy on every request from one stuck in a loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A running mean of the compute time of a version's requests that
/// succeeded, weighting each new one 1/8. Requests that timed out, trapped
/// or were cut off never count, so a guest that loops cannot raise it past
/// its [`seed`](Self::seed).
#[derive(Debug, Default)]
pub(crate) struct TypicalCompute {
    /// Nanoseconds; 0 until the seed or the first sample.
    nanos: AtomicU64,
    /// The mean is only the seed: the first sample replaces it.
    seeded: AtomicBool,
}

impl TypicalCompute {
    /// Sets a first estimate before any request ran (the version's trial
    /// instantiation, which every request on a new instance repeats),
    /// capped at `at_most`. The first request that succeeds replaces it, so
    /// a cheap instantiation does not slow the mean's rise for requests that
    /// compute for long, and a guest whose instantiation is heavy but whose
    /// requests loop (never succeeding) gets no more than the cap.
    pub(crate) fn seed(&self, estimate: Duration, at_most: Duration) {
        let nanos = u64::try_from(estimate.min(at_most).as_nanos()).unwrap_or(u64::MAX);
        self.nanos.store(nanos.max(1), Ordering::Relaxed);
        self.seeded.store(true, Ordering::Relaxed);
    }

    /// The mean so far: zero until the version is seeded or a request
    /// succeeds.
    pub(crate) fn get(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    /// Adds one successful request's compute time. While both the sample
    /// and the mean are under `ignore_below`, nothing is written: a light
    /// guest's requests then never touch the line every worker would share.
    ///
    /// A plain load and store, not a compare-and-swap loop: two workers
    /// recording at once may lose one sample, which only slows the mean a
    /// little, where a CAS loop would make every heavy request contend.
    pub(crate) fn record(&self, sample: Duration, ignore_below: Duration) {
        let old = self.nanos.load(Ordering::Relaxed);
        let sample = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
        let floor = u64::try_from(ignore_below.as_nanos()).unwrap_or(u64::MAX);
        if sample < floor && old < floor {
            return;
        }
        // Loaded before swapped, so only the first sample after a seed
        // writes the flag.
        let replace_seed =
            self.seeded.load(Ordering::Relaxed) && self.seeded.swap(false, Ordering::Relaxed);
        let new = if old == 0 || replace_seed {
            sample
        } else {
            (old - old / 8).saturating_add(sample / 8)
        };
        if new != old {
            self.nanos.store(new.max(1), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_micros(500);

    #[test]
    fn the_first_sample_sets_the_mean_and_later_ones_move_it_by_an_eighth() {
        let typical = TypicalCompute::default();
        typical.record(Duration::from_millis(4), FLOOR);
        assert_eq!(typical.get(), Duration::from_millis(4));
        typical.record(Duration::from_millis(12), FLOOR);
        assert_eq!(typical.get(), Duration::from_millis(5));
    }

    #[test]
    fn the_seed_is_capped_and_the_first_sample_replaces_it() {
        let typical = TypicalCompute::default();
        typical.seed(Duration::from_secs(3), Duration::from_millis(2));
        assert_eq!(typical.get(), Duration::from_millis(2));
        typical.record(Duration::from_millis(8), FLOOR);
        assert_eq!(typical.get(), Duration::from_millis(8));
        // From then on, samples move it by an eighth.
        typical.record(Duration::ZERO, FLOOR);
        assert_eq!(typical.get(), Duration::from_millis(7));
    }

    #[test]
    fn a_light_seed_stays_while_light_requests_are_not_recorded() {
        let typical = TypicalCompute::default();
        typical.seed(Duration::from_micros(15), Duration::from_millis(2));
        typical.record(Duration::from_micros(20), FLOOR);
        assert_eq!(typical.get(), Duration::from_micros(15));
        // The first heavy sample replaces the seed rather than moving it.
        typical.record(Duration::from_millis(2), FLOOR);
        assert_eq!(typical.get(), Duration::from_millis(2));
    }

    #[test]
    fn light_requests_are_not_recorded_until_the_mean_is_heavy() {
        let typical = TypicalCompute::default();
        typical.record(Duration::from_micros(20), FLOOR);
        assert_eq!(typical.get(), Duration::ZERO);
        typical.record(Duration::from_millis(8), FLOOR);
        // Now the mean is heavy, so light requests bring it down again.
        for _ in 0..40 {
            typical.record(Duration::from_micros(20), FLOOR);
        }
        assert!(typical.get() < FLOOR, "{:?}", typical.get());
    }
}
