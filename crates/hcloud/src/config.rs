//! [`ClientConfig`] and [`RetryPolicy`]: where the API is, how long to wait
//! for it, and when to try again.
//!
//! The defaults are those of the official Go client (poll every 500 ms,
//! retries from 1 s doubling up to 60 s, at most 5). Every duration is a
//! field so tests can shrink them to milliseconds.

use std::time::Duration;

use crate::Token;

/// The public Hetzner Cloud API.
pub const DEFAULT_BASE_URL: &str = "https://api.hetzner.cloud/v1";

/// How a [`crate::Client`] reaches the API.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The API root, with its version: `https://api.hetzner.cloud/v1`, or a
    /// simulator's `http://127.0.0.1:PORT/v1`. Paths are appended to it.
    pub base_url: String,
    pub token: Token,
    /// Bound on one HTTP exchange (connect, send, read the whole body). A
    /// request that hangs must not hold a promotion step until its own
    /// timeout; a retry or the caller's fallback is more useful.
    pub request_timeout: Duration,
    /// How often [`crate::Client::wait_action`] asks about a running action.
    pub poll_interval: Duration,
    /// How long [`crate::Client::wait_action`] waits before giving up.
    pub action_timeout: Duration,
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// The defaults, against the public API.
    pub fn new(token: Token) -> ClientConfig {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_string(),
            token,
            request_timeout: Duration::from_secs(15),
            poll_interval: Duration::from_millis(500),
            action_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }

    /// The same, against another API root (a simulator, a proxy).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> ClientConfig {
        self.base_url = base_url.into();
        self
    }
}

/// When and how often a failed request is tried again.
///
/// Two independent budgets: the transient failures of the official client
/// (`conflict`, `rate_limit_exceeded`, `bad_gateway`, `timeout`, bare 502
/// and 504) back off exponentially; `locked` on an attach, detach, assign or
/// unassign is retried at a short fixed delay, because it only means another
/// action on the same server is still running, and those take seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The delay before the first retry.
    pub base: Duration,
    /// Each retry waits `factor` times longer than the one before.
    pub factor: f64,
    /// No backoff, and no wait for the rate limit, is longer than this.
    pub cap: Duration,
    /// Retries of transient failures; the request is sent at most
    /// `max_retries + 1` times.
    pub max_retries: u32,
    /// Spread each backoff at random between `base` and its exponential
    /// value, so that agents failing together do not retry in lockstep.
    pub jitter: bool,
    /// The delay between tries of an action answered `locked`.
    pub locked_retry_delay: Duration,
    /// Retries of `locked`. Actions take 1 to 10 s, so the default (30 at
    /// 1 s) outlasts one running action with room to spare.
    pub locked_max_retries: u32,
    /// How to read `RateLimit-Reset`. Hetzner documents it as the time the
    /// bucket is full again; with 3600 requests refilling at 1/s that is up
    /// to an hour away while the next request is allowed in about a second.
    /// When `true` the wait for one request is estimated as the time to the
    /// reset divided by the requests missing; when `false` the reset is
    /// taken as the moment requests are allowed again and waited for.
    pub rate_limit_reset_is_full_refill: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(60),
            max_retries: 5,
            jitter: true,
            locked_retry_delay: Duration::from_secs(1),
            locked_max_retries: 30,
            rate_limit_reset_is_full_refill: true,
        }
    }
}
