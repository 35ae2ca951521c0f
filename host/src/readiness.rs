//! Whether the host should get traffic: what `GET /readyz` answers, for load
//! balancers and Kubernetes. Loading until the projects found at start-up
//! are each live or refused, ready after, stopping from the moment shutdown
//! begins. The project listener stops accepting at that same moment, so a
//! balancer should stop sending first: give it a pre-stop pause.

use std::sync::atomic::{AtomicU8, Ordering};

/// The host's phase; moves forward only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Listening, with projects still loading.
    Loading = 0,
    /// Every project found at start-up is live or refused.
    Ready = 1,
    /// Shutdown has begun: in-flight requests drain, new connections are refused.
    Stopping = 2,
}

/// The shared phase, read by the admin API and moved on by `serve`.
#[derive(Debug, Default)]
pub struct Readiness(AtomicU8);

impl Readiness {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Loading,
            1 => Phase::Ready,
            _ => Phase::Stopping,
        }
    }

    /// Moves to `phase` unless the host is already past it: a load that ends
    /// after shutdown began must not make a stopping host ready again.
    pub fn advance(&self, phase: Phase) {
        self.0.fetch_max(phase as u8, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_only_moves_forward() {
        let readiness = Readiness::default();
        assert_eq!(readiness.phase(), Phase::Loading);
        readiness.advance(Phase::Ready);
        assert_eq!(readiness.phase(), Phase::Ready);
        readiness.advance(Phase::Stopping);
        readiness.advance(Phase::Ready);
        assert_eq!(readiness.phase(), Phase::Stopping);
    }
}
