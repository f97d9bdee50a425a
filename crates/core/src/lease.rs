//! Lease timing and the arithmetic both sides of the lease rely on.
//!
//! The holder keeps the role until `renewal_start + lease_ms` for its last
//! renewal that was confirmed applied, and starts fencing itself
//! `fence_budget_ms` before that. The decider only reassigns
//! `lease_ms + drift_margin_ms` after the last progress it saw applied,
//! which on its own clock is never earlier than the holder's renewal start.
//! As long as the two clocks' rates differ by less than the drift margin
//! over one lease, the holder has let go before anyone else may take over.

use serde::{Deserialize, Serialize};

use crate::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTiming {
    /// How long one confirmed renewal entitles the holder to the role,
    /// measured from the start of that renewal.
    pub lease_ms: u64,
    /// Extra time the decider waits beyond the lease, covering clock-rate
    /// differences between the holder and the decider.
    pub drift_margin_ms: u64,
    /// How often the holder proposes a renewal.
    pub renew_interval_ms: u64,
    /// How long before its lease ends a holder that could not renew starts
    /// letting go (kill the stack, unmount, drop the address).
    pub fence_budget_ms: u64,
}

/// A timing combination that cannot keep the one-holder invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("lease_ms must be at least 50 (got {0})")]
    LeaseTooShort(u64),
    #[error("renew_interval_ms ({renew}) must be at most a third of lease_ms ({lease}) so that one lost renewal does not end the lease")]
    RenewTooSlow { renew: u64, lease: u64 },
    #[error("fence_budget_ms ({fence}) must be below lease_ms - renew_interval_ms ({room}) or the holder would fence itself between two healthy renewals")]
    FenceBudgetTooLarge { fence: u64, room: u64 },
    #[error("drift_margin_ms ({drift}) must be at least 5% of lease_ms ({lease})")]
    DriftTooSmall { drift: u64, lease: u64 },
}

impl LeaseTiming {
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.lease_ms < 50 {
            return Err(TimingError::LeaseTooShort(self.lease_ms));
        }
        if self.renew_interval_ms == 0 || self.renew_interval_ms * 3 > self.lease_ms {
            return Err(TimingError::RenewTooSlow {
                renew: self.renew_interval_ms,
                lease: self.lease_ms,
            });
        }
        let room = self.lease_ms - self.renew_interval_ms;
        if self.fence_budget_ms >= room {
            return Err(TimingError::FenceBudgetTooLarge {
                fence: self.fence_budget_ms,
                room,
            });
        }
        if self.drift_margin_ms * 20 < self.lease_ms {
            return Err(TimingError::DriftTooSmall {
                drift: self.drift_margin_ms,
                lease: self.lease_ms,
            });
        }
        Ok(())
    }

    /// When a lease confirmed by a renewal that started at `renewal_start` ends.
    pub fn lease_end(&self, renewal_start: Millis) -> Millis {
        renewal_start.plus(self.lease_ms)
    }

    /// When the holder must start letting go if nothing renews the lease.
    pub fn fence_at(&self, lease_end: Millis) -> Millis {
        lease_end.minus(self.fence_budget_ms)
    }

    /// The earliest time the decider may give the role to another node,
    /// given the last progress it saw applied.
    pub fn reassign_at(&self, last_progress_seen: Millis) -> Millis {
        last_progress_seen.plus(self.lease_ms + self.drift_margin_ms)
    }
}

/// The `fast` profile's numbers, shared by the core's tests.
#[cfg(test)]
pub(crate) fn test_timing() -> LeaseTiming {
    LeaseTiming {
        lease_ms: 500,
        drift_margin_ms: 100,
        renew_interval_ms: 100,
        fence_budget_ms: 150,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> LeaseTiming {
        test_timing()
    }

    #[test]
    fn default_fast_profile_is_valid() {
        assert_eq!(fast().validate(), Ok(()));
    }

    #[test]
    fn rejects_timings_that_break_the_invariant() {
        let mut t = fast();
        t.renew_interval_ms = 300;
        assert!(matches!(
            t.validate(),
            Err(TimingError::RenewTooSlow { .. })
        ));
        let mut t = fast();
        t.fence_budget_ms = 450;
        assert!(matches!(
            t.validate(),
            Err(TimingError::FenceBudgetTooLarge { .. })
        ));
        let mut t = fast();
        t.drift_margin_ms = 10;
        assert!(matches!(
            t.validate(),
            Err(TimingError::DriftTooSmall { .. })
        ));
    }

    #[test]
    fn decider_waits_longer_than_the_holder_holds() {
        let t = fast();
        let start = Millis(1_000);
        assert!(t.reassign_at(start) > t.lease_end(start));
        assert!(t.fence_at(t.lease_end(start)) < t.lease_end(start));
    }
}
