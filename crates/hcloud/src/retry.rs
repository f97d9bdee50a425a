//! Which failed requests are sent again, and after how long.
//!
//! The policy is the official client's, as the reference records it:
//! retry only `conflict`, `rate_limit_exceeded`, `bad_gateway` and `timeout`
//! (and a bare 502 or 504 from the edge, without an error document), with
//! exponential backoff and jitter. Everything else — `not_found`,
//! `invalid_input`, `service_error`, a refused connection — is final: a
//! retry would fail the same way, or (a timed-out POST) might act twice.
//!
//! On top of it, as integrations do: `locked` on an attach, detach, assign
//! or unassign is retried after a short fixed delay, because it only means
//! another action on the same server has not finished yet. And the
//! rate-limit headers are honoured: no request while the bucket is known to
//! be empty, no retry of a 429 before a request is allowed again.
//!
//! Pure: the caller passes the time and the random draw, so the tests here
//! pass plain numbers.

use std::time::Duration;

use crate::{ErrorCode, RateLimit, RetryPolicy};

/// What failed, as far as the retry decision cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Failure<'a> {
    /// The API sent an error document with this code.
    Api(&'a ErrorCode),
    /// An error status without an error document.
    BareStatus(u16),
    /// No answer at all.
    Transport,
}

/// The retries one request has used so far.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RetryBudget {
    pub(crate) retries: u32,
    pub(crate) locked_retries: u32,
}

/// Rate-limit headers and the unix time (seconds) they were seen at, so the
/// bucket's refill since then can be accounted for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ObservedRateLimit {
    pub(crate) rate_limit: RateLimit,
    pub(crate) seen_at_unix: f64,
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (0 for the first):
    /// `base × factor^retry`, capped; with jitter, drawn between `base` and
    /// that, `unit_random` being a draw from `[0, 1)`.
    pub fn backoff(&self, retry: u32, unit_random: f64) -> Duration {
        let base = self.base.as_secs_f64();
        let exponential = base * self.factor.powi(retry.min(i32::MAX as u32) as i32);
        let capped = exponential.min(self.cap.as_secs_f64());
        let seconds = if self.jitter && capped > base {
            base + (capped - base) * unit_random.clamp(0.0, 1.0)
        } else {
            capped
        };
        Duration::from_secs_f64(seconds.max(0.0))
    }

    /// How long from `now_unix` until the rate limit is expected to allow
    /// one request, by the headers seen at `observed.seen_at_unix`.
    pub(crate) fn rate_limit_wait(&self, observed: &ObservedRateLimit, now_unix: f64) -> Duration {
        let ObservedRateLimit {
            rate_limit,
            seen_at_unix,
        } = *observed;
        let reset = rate_limit.reset_unix as f64;
        let missing = rate_limit.limit.saturating_sub(rate_limit.remaining);
        let allowed_at = if self.rate_limit_reset_is_full_refill && missing > 0 {
            // The bucket refills evenly until the reset: one request's worth
            // takes the time to the reset divided by the requests missing.
            seen_at_unix + (reset - seen_at_unix).max(0.0) / missing as f64
        } else {
            reset
        };
        Duration::from_secs_f64((allowed_at - now_unix).max(0.0))
    }

    /// The wait before sending a request at all: only when the last headers
    /// said the bucket was empty, never longer than the cap.
    pub(crate) fn wait_before_request(
        &self,
        observed: Option<&ObservedRateLimit>,
        now_unix: f64,
    ) -> Option<Duration> {
        let observed = observed?;
        if observed.rate_limit.remaining > 0 {
            return None;
        }
        let wait = self.rate_limit_wait(observed, now_unix).min(self.cap);
        (!wait.is_zero()).then_some(wait)
    }

    /// The delay before sending a failed request again, or `None` to give
    /// up. Counts the retry in `budget`. `locked_is_retried` is true only
    /// for the action requests (attach, detach, assign, unassign).
    pub(crate) fn retry_delay(
        &self,
        failure: Failure<'_>,
        budget: &mut RetryBudget,
        locked_is_retried: bool,
        observed: Option<&ObservedRateLimit>,
        now_unix: f64,
        unit_random: f64,
    ) -> Option<Duration> {
        match failure {
            Failure::Api(ErrorCode::Locked) => {
                if !locked_is_retried || budget.locked_retries >= self.locked_max_retries {
                    return None;
                }
                budget.locked_retries += 1;
                Some(self.locked_retry_delay)
            }
            Failure::Api(ErrorCode::RateLimitExceeded) | Failure::BareStatus(429) => {
                let backoff = self.next_backoff(budget, unit_random)?;
                // Honour the headers when they promise a request within the
                // cap; beyond it they are no better a guide than the backoff.
                let header_wait = observed
                    .map(|observed| self.rate_limit_wait(observed, now_unix))
                    .filter(|wait| *wait <= self.cap)
                    .unwrap_or_default();
                Some(backoff.max(header_wait))
            }
            Failure::Api(ErrorCode::Conflict | ErrorCode::BadGateway | ErrorCode::Timeout)
            | Failure::BareStatus(502 | 504) => self.next_backoff(budget, unit_random),
            Failure::Api(_) | Failure::BareStatus(_) | Failure::Transport => None,
        }
    }

    fn next_backoff(&self, budget: &mut RetryBudget, unit_random: f64) -> Option<Duration> {
        if budget.retries >= self.max_retries {
            return None;
        }
        let delay = self.backoff(budget.retries, unit_random);
        budget.retries += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        }
    }

    fn seconds(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_cap() {
        let policy = policy();
        let delays: Vec<_> = (0..8).map(|retry| policy.backoff(retry, 0.5)).collect();
        assert_eq!(delays, seconds(&[1, 2, 4, 8, 16, 32, 60, 60]));
    }

    #[test]
    fn jitter_stays_between_base_and_the_exponential_value() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(3, 0.0), Duration::from_secs(1));
        assert_eq!(policy.backoff(3, 1.0), Duration::from_secs(8));
        assert_eq!(policy.backoff(3, 0.5), Duration::from_secs_f64(4.5));
        assert_eq!(policy.backoff(0, 0.9), Duration::from_secs(1));
    }

    /// One row: a failure, whether it is an action request, and the delays
    /// of the successive retries until the policy gives up.
    fn check(failure: Failure<'_>, locked_is_retried: bool, expected: &[Duration]) {
        let policy = RetryPolicy {
            max_retries: 3,
            locked_max_retries: 2,
            ..policy()
        };
        let mut budget = RetryBudget::default();
        let mut delays = Vec::new();
        while let Some(delay) =
            policy.retry_delay(failure, &mut budget, locked_is_retried, None, 0.0, 0.0)
        {
            delays.push(delay);
            assert!(delays.len() < 10, "{failure:?} retried forever");
        }
        assert_eq!(delays, expected, "{failure:?}");
    }

    #[test]
    fn only_the_transient_failures_are_retried() {
        let backoff = seconds(&[1, 2, 4]);
        check(Failure::Api(&ErrorCode::Conflict), false, &backoff);
        check(Failure::Api(&ErrorCode::RateLimitExceeded), false, &backoff);
        check(Failure::Api(&ErrorCode::BadGateway), false, &backoff);
        check(Failure::Api(&ErrorCode::Timeout), false, &backoff);
        check(Failure::BareStatus(502), false, &backoff);
        check(Failure::BareStatus(504), false, &backoff);
        check(Failure::BareStatus(429), false, &backoff);

        check(Failure::Api(&ErrorCode::NotFound), true, &[]);
        check(Failure::Api(&ErrorCode::ServiceError), true, &[]);
        check(Failure::Api(&ErrorCode::InvalidInput), true, &[]);
        check(Failure::Api(&ErrorCode::VolumeAlreadyAttached), true, &[]);
        check(Failure::BareStatus(503), true, &[]);
        check(Failure::BareStatus(500), true, &[]);
        check(Failure::Transport, true, &[]);
    }

    #[test]
    fn locked_is_retried_at_a_fixed_delay_for_actions_only() {
        check(Failure::Api(&ErrorCode::Locked), true, &seconds(&[1, 1]));
        check(Failure::Api(&ErrorCode::Locked), false, &[]);
    }

    fn observed(
        limit: u64,
        remaining: u64,
        reset_unix: u64,
        seen_at_unix: f64,
    ) -> ObservedRateLimit {
        ObservedRateLimit {
            rate_limit: RateLimit {
                limit,
                remaining,
                reset_unix,
            },
            seen_at_unix,
        }
    }

    #[test]
    fn an_empty_bucket_delays_the_next_request_by_one_refill() {
        let policy = policy();
        // Hetzner: 3600 requests, full again in an hour: one per second.
        let empty = observed(3600, 0, 1_003_600, 1_000_000.0);
        assert_eq!(
            policy.wait_before_request(Some(&empty), 1_000_000.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            policy.wait_before_request(Some(&empty), 1_000_000.25),
            Some(Duration::from_secs_f64(0.75))
        );
        assert_eq!(policy.wait_before_request(Some(&empty), 1_000_002.0), None);
        let not_empty = observed(3600, 1, 1_003_599, 1_000_000.0);
        assert_eq!(
            policy.wait_before_request(Some(&not_empty), 1_000_000.0),
            None
        );
        assert_eq!(policy.wait_before_request(None, 1_000_000.0), None);

        // Read as "allowed again at the reset", bounded by the cap.
        let literal = RetryPolicy {
            rate_limit_reset_is_full_refill: false,
            ..policy
        };
        assert_eq!(
            literal.wait_before_request(Some(&empty), 1_000_000.0),
            Some(Duration::from_secs(60))
        );
        let soon = observed(3600, 0, 1_000_005, 1_000_000.0);
        assert_eq!(
            literal.wait_before_request(Some(&soon), 1_000_000.0),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn a_429_waits_for_the_headers_when_they_are_within_the_cap() {
        let policy = RetryPolicy {
            rate_limit_reset_is_full_refill: false,
            ..policy()
        };
        let code = ErrorCode::RateLimitExceeded;
        let mut budget = RetryBudget::default();
        let soon = observed(10, 0, 1_000_005, 1_000_000.0);
        let delay = policy.retry_delay(
            Failure::Api(&code),
            &mut budget,
            false,
            Some(&soon),
            1_000_000.0,
            0.0,
        );
        assert_eq!(delay, Some(Duration::from_secs(5)));
        // A reset beyond the cap is ignored: the backoff applies.
        let far = observed(10, 0, 1_000_500, 1_000_000.0);
        let delay = policy.retry_delay(
            Failure::Api(&code),
            &mut budget,
            false,
            Some(&far),
            1_000_000.0,
            0.0,
        );
        assert_eq!(delay, Some(Duration::from_secs(2)));
    }
}
