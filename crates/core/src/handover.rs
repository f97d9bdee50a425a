//! When the Raft leader hands its leadership to the master.
//!
//! The master renews its lease through the Raft leader. With the leader on
//! another node, losing that node (or an election it causes) costs a
//! healthy master its lease, so the leader hands leadership to the master
//! once the master's promotion is recorded. But the handover itself is a
//! gap in commits: the old leader stops accepting writes, the master wins
//! the election, and its first entry must commit before a renewal can. A
//! renewal that does not commit within `lease - fence_budget` makes the
//! master fence itself, so a handover at the wrong moment turns a healthy
//! new master into a second failover — or, if the fence cannot finish on
//! a loaded machine, into a watchdog reset that leaves a two-node cluster
//! without a quorum.
//!
//! So the leader hands over only:
//! - right after a renewal arrived (`now - last renewal <= renew_interval / 2`):
//!   the master then has nearly its whole lease for the handover;
//! - once the master renews steadily and commits are quick: the last
//!   [`STEADY_RENEWALS`] renewals of its epoch arrived here at most
//!   [`MAX_STEADY_GAP_FACTOR`] renewal intervals apart, and each was
//!   applied here within [`max_commit_latency_ms`] of arriving. The
//!   handover costs about three commit latencies (the transfer's election,
//!   the new leader's first entry, the next renewal), which must fit in
//!   what is left of the lease before the master fences. Steady arrivals
//!   alone do not show it: renewals are paced by their start times, so on a
//!   loaded machine they keep arriving every interval while each takes
//!   250 ms to commit (seen in the lab at load average 17).
//!
//! A cluster whose commits lag keeps its leader where it is until they stop
//! lagging; it loses nothing by waiting.

use std::collections::VecDeque;

use crate::lease::LeaseTiming;
use crate::Millis;

/// How many consecutive renewals must arrive on time before a handover.
pub const STEADY_RENEWALS: usize = 10;
/// A gap between two renewals above this many renewal intervals means
/// commits lag.
pub const MAX_STEADY_GAP_FACTOR: u64 = 2;

/// The longest commit latency (arrival to apply on the leader) at which a
/// handover still fits in the lease: a quarter of what is left of a lease
/// renewed half an interval ago when the master would fence.
pub fn max_commit_latency_ms(timing: &LeaseTiming) -> u64 {
    timing
        .lease_ms
        .saturating_sub(timing.fence_budget_ms)
        .saturating_sub(timing.renew_interval_ms / 2)
        / 4
}

/// The cadence and commit latency of one epoch's renewals, as the leader
/// sees them.
#[derive(Debug, Clone, Default)]
pub struct Cadence {
    epoch: u64,
    last: Option<Millis>,
    /// The latest (gap since the previous arrival, commit latency), newest
    /// last.
    samples: VecDeque<(u64, u64)>,
}

impl Cadence {
    /// A renewal (or the assignment) of `epoch` arrived at `arrived` and
    /// was applied at `applied`.
    pub fn observe(&mut self, epoch: u64, arrived: Millis, applied: Millis) {
        if epoch != self.epoch {
            *self = Cadence {
                epoch,
                last: Some(arrived),
                samples: VecDeque::new(),
            };
            return;
        }
        if let Some(last) = self.last {
            if self.samples.len() == STEADY_RENEWALS {
                self.samples.pop_front();
            }
            self.samples
                .push_back((arrived.since(last), applied.since(arrived)));
        }
        self.last = Some(arrived);
    }

    /// Whether the last [`STEADY_RENEWALS`] renewals of `epoch` came on
    /// time and committed quickly.
    pub fn steady(&self, epoch: u64, timing: &LeaseTiming) -> bool {
        let max_gap = timing.renew_interval_ms * MAX_STEADY_GAP_FACTOR;
        let max_latency = max_commit_latency_ms(timing);
        self.epoch == epoch
            && self.samples.len() == STEADY_RENEWALS
            && self
                .samples
                .iter()
                .all(|(gap, latency)| *gap <= max_gap && *latency <= max_latency)
    }
}

/// Whether now is a good moment to hand leadership to the master of
/// `epoch`, given when its last renewal arrived and its cadence. (Whether
/// the master is promoted and reachable is the caller's part.)
pub fn handover_due(
    now: Millis,
    last_renewal: Millis,
    epoch: u64,
    cadence: &Cadence,
    timing: &LeaseTiming,
) -> bool {
    now.since(last_renewal) <= timing.renew_interval_ms / 2 && cadence.steady(epoch, timing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> LeaseTiming {
        LeaseTiming {
            lease_ms: 500,
            drift_margin_ms: 50,
            renew_interval_ms: 100,
            fence_budget_ms: 150,
        }
    }

    /// Renewals `gaps` apart, each applied `latency` after it arrived.
    fn renewing_with(epoch: u64, gaps: &[u64], latency: u64) -> (Cadence, Millis) {
        let mut cadence = Cadence::default();
        let mut at = Millis(1_000);
        cadence.observe(epoch, at, at.plus(latency));
        for gap in gaps {
            at = at.plus(*gap);
            cadence.observe(epoch, at, at.plus(latency));
        }
        (cadence, at)
    }

    fn renewing(epoch: u64, gaps: &[u64]) -> (Cadence, Millis) {
        renewing_with(epoch, gaps, 10)
    }

    #[test]
    fn a_master_renewing_on_time_gets_leadership_right_after_a_renewal() {
        let (cadence, last) = renewing(2, &[100; STEADY_RENEWALS]);
        assert!(handover_due(last, last, 2, &cadence, &timing()));
        assert!(handover_due(last.plus(50), last, 2, &cadence, &timing()));
        // Late in the renewal interval: less of the lease is left for the
        // handover's gap in commits.
        assert!(!handover_due(last.plus(51), last, 2, &cadence, &timing()));
    }

    #[test]
    fn a_fresh_master_waits_for_enough_renewals() {
        let (cadence, last) = renewing(2, &[100; STEADY_RENEWALS - 1]);
        assert!(!handover_due(last, last, 2, &cadence, &timing()));
    }

    #[test]
    fn one_late_renewal_among_the_last_ones_defers_the_handover() {
        let mut gaps = vec![100; STEADY_RENEWALS];
        gaps[3] = 201;
        let (cadence, last) = renewing(2, &gaps);
        assert!(!handover_due(last, last, 2, &cadence, &timing()));
        // Once enough renewals came on time again, it goes ahead.
        let mut cadence = cadence;
        let mut at = last;
        for _ in 0..4 {
            at = at.plus(100);
            cadence.observe(2, at, at.plus(10));
        }
        assert!(handover_due(at, at, 2, &cadence, &timing()));
    }

    #[test]
    fn a_new_epoch_starts_counting_again() {
        let (mut cadence, last) = renewing(2, &[100; STEADY_RENEWALS]);
        cadence.observe(3, last.plus(100), last.plus(110));
        assert!(!cadence.steady(3, &timing()));
        assert!(!cadence.steady(2, &timing()));
    }

    #[test]
    fn slow_commits_defer_the_handover_even_when_renewals_arrive_on_time() {
        // 500 ms lease, 150 ms fence budget, 100 ms interval: 75 ms.
        assert_eq!(max_commit_latency_ms(&timing()), 75);
        let (cadence, last) = renewing_with(2, &[100; STEADY_RENEWALS], 75);
        assert!(handover_due(last, last, 2, &cadence, &timing()));
        let (cadence, last) = renewing_with(2, &[100; STEADY_RENEWALS], 250);
        assert!(!handover_due(last, last, 2, &cadence, &timing()));
    }
}
