//! The agent's monotonic clock, in the core's [`Millis`].
//!
//! All lease arithmetic uses this clock (never wall time), so a wall-clock
//! jump cannot extend or shorten a lease.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mailherd_core::Millis;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    pub fn now(&self) -> Millis {
        Millis(self.origin.elapsed().as_millis() as u64)
    }

    /// The same clock at an earlier `Instant` (clamped to the origin).
    pub fn at(&self, instant: Instant) -> Millis {
        Millis(instant.saturating_duration_since(self.origin).as_millis() as u64)
    }

    /// Wall-clock milliseconds, for records shown to people only.
    pub fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
