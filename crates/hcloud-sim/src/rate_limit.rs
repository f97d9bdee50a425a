//! The token bucket behind the rate limit and its three headers.

use std::time::Instant;

use crate::RateLimitConfig;

/// `limit` requests, refilled continuously at `refill_per_second`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    refill_per_second: f64,
    tokens: f64,
    last_refill: Instant,
}

/// The `RateLimit-*` headers at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimitHeaders {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Unix time at which the bucket is full again (Hetzner's meaning).
    pub(crate) reset_unix: u64,
}

impl TokenBucket {
    pub(crate) fn new(config: RateLimitConfig, now: Instant) -> TokenBucket {
        TokenBucket {
            capacity: f64::from(config.limit),
            refill_per_second: config.refill_per_second.max(0.0),
            tokens: f64::from(config.limit),
            last_refill: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_second).min(self.capacity);
        self.last_refill = now;
    }

    /// Takes one request's token; false when the bucket is empty.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub(crate) fn headers(&mut self, now: Instant, unix_now: f64) -> RateLimitHeaders {
        self.refill(now);
        let missing = self.capacity - self.tokens;
        let seconds_to_full = if missing <= 0.0 {
            0.0
        } else if self.refill_per_second > 0.0 {
            missing / self.refill_per_second
        } else {
            // Never refills: a year is as good as never for a header.
            365.0 * 24.0 * 3600.0
        };
        RateLimitHeaders {
            limit: self.capacity as u64,
            remaining: self.tokens.floor() as u64,
            reset_unix: (unix_now + seconds_to_full).ceil() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_bucket_empties_and_refills() {
        let start = Instant::now();
        let config = RateLimitConfig {
            limit: 3,
            refill_per_second: 2.0,
        };
        let mut bucket = TokenBucket::new(config, start);
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start));
        let headers = bucket.headers(start, 1000.0);
        assert_eq!((headers.limit, headers.remaining), (3, 0));
        // 3 tokens missing at 2/s: full in 1.5 s.
        assert_eq!(headers.reset_unix, 1002);
        assert!(bucket.try_take(start + Duration::from_millis(500)));
        assert!(!bucket.try_take(start + Duration::from_millis(600)));
        let full = bucket.headers(start + Duration::from_secs(10), 1010.0);
        assert_eq!((full.remaining, full.reset_unix), (3, 1010));
    }
}
