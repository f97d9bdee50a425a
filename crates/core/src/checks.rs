//! Rise/fall counters for health checks and the stack verdict.
//!
//! A check changes state only after `rise` consecutive successes or `fall`
//! consecutive failures, so one lost probe does not move the master role and
//! one lucky probe does not declare a broken stack healthy. A fresh counter is
//! `Unknown`: a stack that has just been started is neither up nor down.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Unknown,
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckCounter {
    pub rise: u32,
    pub fall: u32,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
    pub state: CheckState,
}

impl CheckCounter {
    pub fn new(rise: u32, fall: u32) -> CheckCounter {
        CheckCounter {
            rise: rise.max(1),
            fall: fall.max(1),
            consecutive_ok: 0,
            consecutive_failed: 0,
            state: CheckState::Unknown,
        }
    }

    /// Counts one probe result; returns the new state if it changed.
    pub fn record(&mut self, ok: bool) -> Option<CheckState> {
        let before = self.state;
        if ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_failed = 0;
            if self.consecutive_ok >= self.rise {
                self.state = CheckState::Up;
            }
        } else {
            self.consecutive_failed = self.consecutive_failed.saturating_add(1);
            self.consecutive_ok = 0;
            if self.consecutive_failed >= self.fall {
                self.state = CheckState::Down;
            }
        }
        (self.state != before).then_some(self.state)
    }

    /// Forgets history, e.g. when the stack is (re)started.
    pub fn reset(&mut self) {
        *self = CheckCounter::new(self.rise, self.fall);
    }
}

/// The stack's health as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check is up.
    Operational,
    /// Every critical check is up, some other check is down.
    Degraded,
    /// Some critical check is down.
    Down,
    /// Nothing is down but some critical check has not risen yet.
    Pending,
}

impl Verdict {
    /// Combines `(critical, state)` pairs. No checks at all is Operational:
    /// a node without checks trusts its services driver alone.
    pub fn from_checks(checks: impl IntoIterator<Item = (bool, CheckState)>) -> Verdict {
        let mut verdict = Verdict::Operational;
        for (critical, state) in checks {
            verdict = match (critical, state, verdict) {
                (true, CheckState::Down, _) => return Verdict::Down,
                (true, CheckState::Unknown, _) => Verdict::Pending,
                (false, CheckState::Down, Verdict::Operational) => Verdict::Degraded,
                (_, _, current) => current,
            };
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_only_after_fall_consecutive_failures() {
        let mut c = CheckCounter::new(2, 3);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(CheckState::Up));
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a success resets the failure run");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(CheckState::Down));
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(CheckState::Up));
    }

    #[test]
    fn reset_returns_to_unknown() {
        let mut c = CheckCounter::new(1, 1);
        c.record(false);
        assert_eq!(c.state, CheckState::Down);
        c.reset();
        assert_eq!(c.state, CheckState::Unknown);
    }

    #[test]
    fn verdict_table() {
        use CheckState::*;
        let cases: &[(&[(bool, CheckState)], Verdict)] = &[
            (&[], Verdict::Operational),
            (&[(true, Up), (false, Up)], Verdict::Operational),
            (&[(true, Up), (false, Down)], Verdict::Degraded),
            (&[(true, Down), (false, Up)], Verdict::Down),
            (&[(false, Down), (true, Down)], Verdict::Down),
            (&[(true, Unknown), (true, Up)], Verdict::Pending),
            (&[(true, Unknown), (false, Down)], Verdict::Pending),
            (&[(false, Unknown)], Verdict::Operational),
        ];
        for (checks, expected) in cases {
            assert_eq!(
                Verdict::from_checks(checks.iter().copied()),
                *expected,
                "{checks:?}"
            );
        }
    }
}
