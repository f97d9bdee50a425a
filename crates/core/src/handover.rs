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
//! - once the master renews steadily: the last [`STEADY_RENEWALS`] renewals
//!   of its epoch arrived here at most [`MAX_STEADY_GAP_FACTOR`] renewal
//!   intervals apart. A cluster whose commits lag (a loaded disk, a busy
//!   CPU) keeps its leader where it is until they stop lagging; it loses
//!   nothing by waiting, the leader just stays where it is.

use std::collections::VecDeque;

use crate::lease::LeaseTiming;
use crate::Millis;

/// How many consecutive renewals must arrive on time before a handover.
pub const STEADY_RENEWALS: usize = 10;
/// A gap between two renewals above this many renewal intervals means
/// commits lag.
pub const MAX_STEADY_GAP_FACTOR: u64 = 2;

/// The arrival cadence of one epoch's renewals, as the leader sees it.
#[derive(Debug, Clone, Default)]
pub struct Cadence {
    epoch: u64,
    last: Option<Millis>,
    /// The latest gaps between arrivals, newest last.
    gaps: VecDeque<u64>,
}

impl Cadence {
    /// A renewal (or the assignment) of `epoch` arrived at `at`.
    pub fn observe(&mut self, epoch: u64, at: Millis) {
        if epoch != self.epoch {
            *self = Cadence {
                epoch,
                last: Some(at),
                gaps: VecDeque::new(),
            };
            return;
        }
        if let Some(last) = self.last {
            if self.gaps.len() == STEADY_RENEWALS {
                self.gaps.pop_front();
            }
            self.gaps.push_back(at.since(last));
        }
        self.last = Some(at);
    }

    /// Whether the last [`STEADY_RENEWALS`] renewals of `epoch` came on time.
    pub fn steady(&self, epoch: u64, timing: &LeaseTiming) -> bool {
        let limit = timing.renew_interval_ms * MAX_STEADY_GAP_FACTOR;
        self.epoch == epoch
            && self.gaps.len() == STEADY_RENEWALS
            && self.gaps.iter().all(|gap| *gap <= limit)
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

    fn renewing(epoch: u64, gaps: &[u64]) -> (Cadence, Millis) {
        let mut cadence = Cadence::default();
        let mut at = Millis(1_000);
        cadence.observe(epoch, at);
        for gap in gaps {
            at = at.plus(*gap);
            cadence.observe(epoch, at);
        }
        (cadence, at)
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
            cadence.observe(2, at);
        }
        assert!(handover_due(at, at, 2, &cadence, &timing()));
    }

    #[test]
    fn a_new_epoch_starts_counting_again() {
        let (mut cadence, last) = renewing(2, &[100; STEADY_RENEWALS]);
        cadence.observe(3, last.plus(100));
        assert!(!cadence.steady(3, &timing()));
        assert!(!cadence.steady(2, &timing()));
    }
}
