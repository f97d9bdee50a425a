//! When the master's watchdog is armed, petted and disarmed.
//!
//! The holder fences itself before its lease ends — if its agent runs. An
//! agent that was killed or frozen (SIGKILL, SIGSTOP, a hung kernel call)
//! cannot, and its mail stack would keep serving while another node takes
//! over. The watchdog closes that gap the way Patroni uses softdog: while
//! this node may hold anything, a watchdog is armed that resets the node
//! unless it is petted, and it is petted only when a reset at
//! `now + timeout` would still come no later than the lease's end:
//!
//! ```text
//! pet at t  only if  t + timeout <= lease_end
//! ```
//!
//! So whenever the agent stops, the node is reset at the latest when its
//! lease ends, which is no later than the earliest moment the decider may
//! give the role to another node ([`LeaseTiming::reassign_at`] adds the
//! drift margin on top). A live agent that cannot renew stops petting by
//! the same rule; its own fence at `lease_end - fence_budget` usually wins,
//! and if that demotion hangs, the reset ends it.
//!
//! The agent checks the rule on every tick and pets when [`pet_due`] says
//! a pet moves the reset on enough to be worth a write. A healthy master's
//! remaining lease never drops below `lease - renew_interval - commit latency`, so
//! with `timeout <= lease - renew_interval` it pets all the time, and the
//! default `lease - 2 × renew_interval` leaves a whole renewal interval for
//! the commit. When renewals stop, petting stops `timeout` before the lease
//! end, so the reset comes at the lease end: never earlier than the holder's
//! own fence, which means the watchdog resets only a node whose agent did
//! not fence it. `timeout > renew_interval` keeps a short stall of the agent
//! (a busy CPU) from resetting a healthy node.

use crate::lease::LeaseTiming;
use crate::Millis;

/// What the agent does with its watchdog now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogStep {
    /// Nothing to do.
    Keep,
    /// Start the watchdog (this node is about to hold something).
    Arm,
    /// Reset the watchdog's timer.
    Pet,
    /// Stop the watchdog (this node holds nothing any more).
    Disarm,
}

/// Why a watchdog timeout cannot protect the lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchdogTimingError {
    #[error("watchdog timeout {timeout_ms} ms must be at most lease_ms - renew_interval_ms = {max_ms} ms, or a healthy master could not pet it between renewals")]
    TooLong { timeout_ms: u64, max_ms: u64 },
    #[error("watchdog timeout {timeout_ms} ms must be above renew_interval_ms = {min_ms} ms, or a short stall of the agent would reset a healthy master")]
    TooShort { timeout_ms: u64, min_ms: u64 },
}

/// The default timeout: a healthy master pets it with a whole renewal
/// interval to spare for each renewal's commit.
pub fn default_timeout_ms(lease: &LeaseTiming) -> u64 {
    lease.lease_ms.saturating_sub(2 * lease.renew_interval_ms)
}

/// Checks that `timeout_ms` leaves a healthy master room to pet and is not
/// set off by a short stall.
pub fn check_timeout(lease: &LeaseTiming, timeout_ms: u64) -> Result<(), WatchdogTimingError> {
    let max_ms = lease.lease_ms.saturating_sub(lease.renew_interval_ms);
    if timeout_ms > max_ms {
        return Err(WatchdogTimingError::TooLong { timeout_ms, max_ms });
    }
    let min_ms = lease.renew_interval_ms;
    if timeout_ms <= min_ms {
        return Err(WatchdogTimingError::TooShort { timeout_ms, min_ms });
    }
    Ok(())
}

/// The step for this moment.
///
/// - `holds`: this node may hold something for a leased epoch (promoting,
///   master, demoting);
/// - `lease_end`: the end of its lease as the holder knows it;
/// - `armed`: whether the watchdog is armed now.
pub fn step(
    holds: bool,
    lease_end: Option<Millis>,
    armed: bool,
    timeout_ms: u64,
    now: Millis,
) -> WatchdogStep {
    // Arming starts the timer just as petting does: same rule.
    let fits = lease_end.is_some_and(|end| now.plus(timeout_ms) <= end);
    match (holds, armed) {
        (false, false) => WatchdogStep::Keep,
        (false, true) => WatchdogStep::Disarm,
        (true, false) if fits => WatchdogStep::Arm,
        (true, true) if fits => WatchdogStep::Pet,
        (true, _) => WatchdogStep::Keep,
    }
}

/// How often a healthy master pets at most while its lease end stands
/// still (between renewals).
pub const PET_EVERY_MS: u64 = 50;

/// The last pet: when, and the lease end it was allowed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastPet {
    pub at: Millis,
    pub lease_end: Millis,
}

/// Whether a pet that [`step`] allows is worth sending now.
///
/// Any subset of allowed pets is safe: each one alone keeps the reset
/// before the lease end. Petting on every tick (100 a second) buys nothing
/// over petting once per renewal, when the lease end moves, plus every
/// [`PET_EVERY_MS`] while it stands still, which keeps the last pet within
/// that much of the latest allowed one: a stalled master is reset at most
/// `PET_EVERY_MS` before its lease end instead of at it.
pub fn pet_due(last: Option<LastPet>, lease_end: Millis, now: Millis) -> bool {
    match last {
        None => true,
        Some(last) => lease_end > last.lease_end || now.since(last.at) >= PET_EVERY_MS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::test_timing;

    #[test]
    fn a_pet_is_due_when_the_lease_moved_or_the_last_one_is_old() {
        let last = Some(LastPet {
            at: Millis(1_000),
            lease_end: Millis(1_500),
        });
        assert!(pet_due(None, Millis(1_500), Millis(1_000)));
        // Same lease end, soon after: not worth a pet.
        assert!(!pet_due(last, Millis(1_500), Millis(1_010)));
        assert!(!pet_due(last, Millis(1_500), Millis(1_049)));
        // Same lease end, PET_EVERY_MS later: the timer moves on.
        assert!(pet_due(last, Millis(1_500), Millis(1_050)));
        // A renewal moved the lease end: pet at once.
        assert!(pet_due(last, Millis(1_600), Millis(1_001)));
    }

    #[test]
    fn the_fast_profile_defaults_to_300_ms_and_allows_up_to_400() {
        let lease = test_timing();
        assert_eq!(default_timeout_ms(&lease), 300);
        assert_eq!(check_timeout(&lease, 300), Ok(()));
        assert_eq!(check_timeout(&lease, 400), Ok(()));
        assert!(matches!(
            check_timeout(&lease, 401),
            Err(WatchdogTimingError::TooLong { .. })
        ));
        assert!(matches!(
            check_timeout(&lease, 100),
            Err(WatchdogTimingError::TooShort { .. })
        ));
        // A hardware watchdog counts whole seconds: too coarse for 500 ms.
        assert!(check_timeout(&lease, 1_000).is_err());
    }

    #[test]
    fn arms_while_holding_and_disarms_after() {
        let now = Millis(1_000);
        assert_eq!(
            step(true, Some(Millis(1_300)), false, 300, now),
            WatchdogStep::Arm
        );
        // Arming starts the timer: not when it would run past the lease.
        assert_eq!(
            step(true, Some(Millis(1_299)), false, 300, now),
            WatchdogStep::Keep
        );
        assert_eq!(step(true, None, false, 300, now), WatchdogStep::Keep);
        assert_eq!(step(false, None, true, 300, now), WatchdogStep::Disarm);
        assert_eq!(step(false, None, false, 300, now), WatchdogStep::Keep);
    }

    #[test]
    fn pets_only_while_a_reset_would_come_before_the_lease_ends() {
        let end = Millis(1_500);
        assert_eq!(
            step(true, Some(end), true, 300, Millis(1_200)),
            WatchdogStep::Pet
        );
        assert_eq!(
            step(true, Some(end), true, 300, Millis(1_201)),
            WatchdogStep::Keep
        );
        assert_eq!(step(true, None, true, 300, Millis(0)), WatchdogStep::Keep);
    }

    /// Whatever moment the agent stops at, the reset (last pet + timeout)
    /// comes no later than the lease end the holder had then, and a healthy
    /// master renewing on time is never reset.
    #[test]
    fn a_stopped_agent_is_reset_within_its_lease_and_a_healthy_one_never() {
        let lease = test_timing();
        for (timeout, commit_latency) in [300, 400]
            .into_iter()
            .flat_map(|t| [0u64, 20, 40, 80, 99].map(move |l| (t, l)))
        {
            let mut lease_end = None;
            let mut last_pet = None;
            let mut armed = false;
            for now in 0..5_000u64 {
                // A renewal started every renew interval, confirmed later.
                if now >= commit_latency && (now - commit_latency) % lease.renew_interval_ms == 0 {
                    lease_end = Some(lease.lease_end(Millis(now - commit_latency)));
                }
                match step(true, lease_end, armed, timeout, Millis(now)) {
                    WatchdogStep::Arm => {
                        armed = true;
                        last_pet = Some(now);
                    }
                    WatchdogStep::Pet => last_pet = Some(now),
                    _ => {}
                }
                if let Some(pet) = last_pet {
                    // Healthy: the next pet always comes before the reset.
                    assert!(now < pet + timeout, "reset a healthy master at {now}");
                    // Stopped right now: the reset is within the lease.
                    assert!(Millis(pet + timeout) <= lease_end.unwrap());
                }
            }
            assert!(last_pet.is_some());
        }
    }

    /// When renewals stop, the reset comes exactly at the lease end: after
    /// the holder's own fence, so only an agent that did not fence is reset.
    #[test]
    fn without_renewals_the_reset_comes_at_the_lease_end() {
        let lease = test_timing();
        let timeout = default_timeout_ms(&lease);
        let end = lease.lease_end(Millis(0));
        let mut last_pet = None;
        for now in 0..1_000u64 {
            if step(true, Some(end), true, timeout, Millis(now)) == WatchdogStep::Pet {
                last_pet = Some(now);
            }
        }
        let reset = Millis(last_pet.unwrap() + timeout);
        assert_eq!(reset, end);
        assert!(reset > lease.fence_at(end));
    }
}
