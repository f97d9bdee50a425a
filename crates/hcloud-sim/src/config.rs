//! [`SimConfig`]: the token, the timing and the rate limit of a simulator.

use std::path::PathBuf;
use std::time::Duration;

/// How the simulated API behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The only bearer token accepted; anything else is `401 unauthorized`.
    pub token: String,
    /// How long an action runs before it ends. Hetzner reports about 3 s for
    /// attach and detach and gives no number for floating IPs.
    pub action_duration: Duration,
    /// Each action's duration is drawn uniformly from `action_duration ±
    /// jitter`, so tests do not depend on a fixed order of completions.
    pub jitter: Duration,
    /// Added before every answer of the API and the metadata service, as a
    /// network round trip and the API's own work would.
    pub latency: Duration,
    pub rate_limit: RateLimitConfig,
    /// If set, the world is written there (JSON, atomically) after every
    /// change, so a restarted simulator can start from where it was.
    pub state_file: Option<PathBuf>,
}

impl SimConfig {
    /// Hetzner-like timing: actions of 3 s ± 1 s, no added latency, and
    /// Hetzner's rate limit.
    pub fn new(token: impl Into<String>) -> SimConfig {
        SimConfig {
            token: token.into(),
            action_duration: Duration::from_secs(3),
            jitter: Duration::from_secs(1),
            latency: Duration::ZERO,
            rate_limit: RateLimitConfig::default(),
            state_file: None,
        }
    }
}

/// The token bucket of the rate limit: `limit` requests, refilling at
/// `refill_per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    pub limit: u32,
    pub refill_per_second: f64,
}

impl Default for RateLimitConfig {
    /// Hetzner's: 3600 requests an hour, one more every second.
    fn default() -> Self {
        RateLimitConfig {
            limit: 3600,
            refill_per_second: 1.0,
        }
    }
}
