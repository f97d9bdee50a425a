//! The rules that keep a channel from flooding, pure: time enters as
//! milliseconds since the alerter started, so tests step it by hand.
//!
//! In order: a failover's start and end go out once per epoch (whatever
//! the caller repeats); an alert identical to one sent within the window
//! is suppressed; the rest spends a token of the channel's bucket.
//! Failover alerts skip the bucket: they are bounded by their epoch (and
//! the breaker bounds epochs), and a flood of check alerts must not hide a
//! failover.

use std::collections::{BTreeSet, HashMap};

use crate::event::{Alert, FailoverPhase};

/// What the rules decided for one alert on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// This failover's start (or end) already went out on this channel.
    RepeatedFailover,
    /// Identical to an alert sent within the window.
    Duplicate,
    /// The channel's token bucket is empty.
    RateLimited,
}

/// The limits of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Identical alerts within this many ms are suppressed; 0: never.
    pub window_ms: u64,
    pub rate_per_minute: u32,
    pub burst: u32,
}

/// How many epochs' failover alerts are remembered. Epochs only grow, so
/// older ones can never come back (a repeat of one is dropped anyway:
/// see [`Rules::check`]).
const REMEMBERED_EPOCHS: usize = 256;

/// One token of the bucket, in the units of `Rules::token_units`.
const TOKEN: u64 = 60_000;

/// One channel's memory.
#[derive(Debug)]
pub struct Rules {
    limits: Limits,
    /// (epoch, phase) of failover alerts that went out.
    failovers_sent: BTreeSet<(u64, FailoverPhase)>,
    /// When each fingerprint last went out.
    last_sent: HashMap<String, u64>,
    /// Tokens in units of 1/60 000 of a token: one millisecond adds
    /// `rate_per_minute` units, so refilling never rounds.
    token_units: u64,
    refilled_at_ms: u64,
}

impl Rules {
    pub fn new(limits: Limits) -> Rules {
        Rules {
            limits,
            failovers_sent: BTreeSet::new(),
            last_sent: HashMap::new(),
            token_units: u64::from(limits.burst) * TOKEN,
            refilled_at_ms: 0,
        }
    }

    /// Decides about `alert` at `now_ms` and remembers it if it is sent.
    pub fn check(&mut self, alert: &Alert, now_ms: u64) -> Verdict {
        if let (Some(phase), Some(epoch)) = (alert.kind.failover_phase(), alert.fields.epoch) {
            let oldest_remembered = self.failovers_sent.first().map(|(epoch, _)| *epoch);
            let forgotten = self.failovers_sent.len() >= REMEMBERED_EPOCHS
                && oldest_remembered.is_some_and(|oldest| epoch < oldest);
            if forgotten || self.failovers_sent.contains(&(epoch, phase)) {
                return Verdict::RepeatedFailover;
            }
            self.failovers_sent.insert((epoch, phase));
            while self.failovers_sent.len() > REMEMBERED_EPOCHS {
                self.failovers_sent.pop_first();
            }
            return Verdict::Send;
        }

        let fingerprint = alert.fingerprint();
        if self.limits.window_ms > 0 {
            if let Some(&sent_at) = self.last_sent.get(&fingerprint) {
                if now_ms.saturating_sub(sent_at) < self.limits.window_ms {
                    return Verdict::Duplicate;
                }
            }
        }

        self.refill(now_ms);
        if self.token_units < TOKEN {
            return Verdict::RateLimited;
        }
        self.token_units -= TOKEN;
        // Forget what is past the window, so the map stays small.
        let window_ms = self.limits.window_ms;
        self.last_sent
            .retain(|_, sent_at| now_ms.saturating_sub(*sent_at) < window_ms);
        self.last_sent.insert(fingerprint, now_ms);
        Verdict::Send
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.refilled_at_ms);
        let capacity = u64::from(self.limits.burst) * TOKEN;
        self.token_units = self
            .token_units
            .saturating_add(elapsed.saturating_mul(u64::from(self.limits.rate_per_minute)))
            .min(capacity);
        self.refilled_at_ms = self.refilled_at_ms.max(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AlertFields, AlertKind, Severity};

    fn alert(kind: AlertKind, summary: &str, epoch: Option<u64>) -> Alert {
        Alert {
            id: format!("{summary}-{}", rand_suffix()),
            kind,
            severity: Severity::Warning,
            cluster: "c".into(),
            node: "n1".into(),
            at_unix_ms: 0,
            at: String::new(),
            summary: summary.into(),
            fields: AlertFields {
                epoch,
                ..AlertFields::default()
            },
        }
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    const LIMITS: Limits = Limits {
        window_ms: 60_000,
        rate_per_minute: 6,
        burst: 2,
    };

    /// Runs `steps` (time, kind, summary, epoch, expected) through one channel.
    fn check(limits: Limits, steps: &[(u64, AlertKind, &str, Option<u64>, Verdict)]) {
        let mut rules = Rules::new(limits);
        for (i, (at, kind, summary, epoch, expected)) in steps.iter().enumerate() {
            let got = rules.check(&alert(*kind, summary, *epoch), *at);
            assert_eq!(got, *expected, "step {i}: {kind:?} {summary:?} at {at} ms");
        }
    }

    use AlertKind::*;
    use Verdict::*;

    #[test]
    fn one_start_and_one_end_per_epoch() {
        check(
            LIMITS,
            &[
                (0, FailoverStarted, "s", Some(5), Send),
                (1, FailoverStarted, "s again", Some(5), RepeatedFailover),
                (2, FailoverCompleted, "c", Some(5), Send),
                (3, FailoverFailed, "f", Some(5), RepeatedFailover),
                (4, FailoverCompleted, "c", Some(5), RepeatedFailover),
                (5, FailoverStarted, "s", Some(6), Send),
                (6, FailoverFailed, "f", Some(6), Send),
            ],
        );
    }

    #[test]
    fn failovers_skip_the_bucket() {
        let mut steps = vec![
            (0, NodeDown, "a", None, Send),
            (0, NodeDown, "b", None, Send),
            (0, NodeDown, "c", None, RateLimited),
        ];
        for epoch in 1..=5 {
            steps.push((0, FailoverStarted, "s", Some(epoch), Send));
            steps.push((0, FailoverCompleted, "c", Some(epoch), Send));
        }
        check(LIMITS, &steps);
    }

    #[test]
    fn identical_alerts_within_the_window_are_suppressed() {
        check(
            Limits {
                burst: 100,
                ..LIMITS
            },
            &[
                (0, CheckDegraded, "smtp slow", None, Send),
                (10, CheckDegraded, "smtp slow", None, Duplicate),
                (59_999, CheckDegraded, "smtp slow", None, Duplicate),
                (30_000, CheckDegraded, "imap slow", None, Send),
                (30_000, NodeDown, "smtp slow", None, Send),
                (60_000, CheckDegraded, "smtp slow", None, Send),
                (60_001, CheckDegraded, "smtp slow", None, Duplicate),
            ],
        );
        // A window of 0 suppresses nothing.
        check(
            Limits {
                window_ms: 0,
                burst: 100,
                ..LIMITS
            },
            &[
                (0, CheckDegraded, "x", None, Send),
                (0, CheckDegraded, "x", None, Send),
            ],
        );
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        // 6 per minute: a token every 10 s, at most 2 saved up.
        check(
            LIMITS,
            &[
                (0, NodeDown, "1", None, Send),
                (0, NodeDown, "2", None, Send),
                (0, NodeDown, "3", None, RateLimited),
                (9_999, NodeDown, "4", None, RateLimited),
                (10_000, NodeDown, "5", None, Send),
                (10_001, NodeDown, "6", None, RateLimited),
                (1_000_000, NodeDown, "7", None, Send),
                (1_000_000, NodeDown, "8", None, Send),
                (1_000_000, NodeDown, "9", None, RateLimited),
            ],
        );
    }

    /// Regression guard: a very old epoch's repeat, after its memory was
    /// pruned, must not pass as new.
    #[test]
    fn pruned_epochs_stay_repeats() {
        let mut rules = Rules::new(LIMITS);
        for epoch in 1..=(REMEMBERED_EPOCHS as u64 + 10) {
            assert_eq!(
                rules.check(&alert(FailoverStarted, "s", Some(epoch)), 0),
                Send
            );
        }
        assert_eq!(
            rules.check(&alert(FailoverStarted, "s", Some(1)), 0),
            RepeatedFailover
        );
    }
}
