//! Per-IP and global rate limits: sliding windows of attempt times.
//!
//! Every signup attempt counts, successful or not, so that guessing which
//! addresses exist (409 versus 201) is as limited as making accounts. Pure:
//! time comes in as an argument.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Which limit refused an attempt, and when the next one would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerIp { retry_after: Duration },
    Global { retry_after: Duration },
}

impl Refusal {
    pub fn retry_after(self) -> Duration {
        match self {
            Refusal::PerIp { retry_after } | Refusal::Global { retry_after } => retry_after,
        }
    }
}

pub struct RateLimits {
    per_ip_limit: usize,
    global_limit: usize,
    window: Duration,
    per_ip: BTreeMap<IpAddr, VecDeque<Instant>>,
    global: VecDeque<Instant>,
}

impl RateLimits {
    pub fn new(per_ip_limit: u32, global_limit: u32, window: Duration) -> RateLimits {
        RateLimits {
            per_ip_limit: per_ip_limit as usize,
            global_limit: global_limit as usize,
            window,
            per_ip: BTreeMap::new(),
            global: VecDeque::new(),
        }
    }

    /// Counts an attempt from `ip` at `now`, or refuses it (a refused
    /// attempt is not counted, so a client that waits gets through).
    pub fn attempt(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let window = self.window;
        let expire = |times: &mut VecDeque<Instant>| {
            while times
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= window)
            {
                times.pop_front();
            }
        };
        let retry_after = |times: &VecDeque<Instant>| {
            let oldest = *times.front().expect("a full window has entries");
            window.saturating_sub(now.saturating_duration_since(oldest))
        };
        expire(&mut self.global);
        // Forget clients whose window is empty, so the map stays as small as
        // the set of recent clients.
        self.per_ip.retain(|_, times| {
            expire(times);
            !times.is_empty()
        });
        let times = self.per_ip.entry(ip).or_default();
        if times.len() >= self.per_ip_limit {
            return Err(Refusal::PerIp {
                retry_after: retry_after(times),
            });
        }
        if self.global.len() >= self.global_limit {
            return Err(Refusal::Global {
                retry_after: retry_after(&self.global),
            });
        }
        times.push_back(now);
        self.global.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn per_ip_limit_refuses_until_the_window_moves_on() {
        let start = Instant::now();
        let mut limits = RateLimits::new(2, 10, Duration::from_secs(60));
        assert!(limits.attempt(ip(1), start).is_ok());
        assert!(limits
            .attempt(ip(1), start + Duration::from_secs(10))
            .is_ok());
        let refused = limits
            .attempt(ip(1), start + Duration::from_secs(20))
            .unwrap_err();
        assert_eq!(
            refused,
            Refusal::PerIp {
                retry_after: Duration::from_secs(40)
            }
        );
        // Another client is not affected.
        assert!(limits
            .attempt(ip(2), start + Duration::from_secs(20))
            .is_ok());
        // The first attempt leaves the window.
        assert!(limits
            .attempt(ip(1), start + Duration::from_secs(60))
            .is_ok());
    }

    #[test]
    fn global_limit_counts_every_client() {
        let start = Instant::now();
        let mut limits = RateLimits::new(5, 3, Duration::from_secs(60));
        for last in 1..=3 {
            assert!(limits.attempt(ip(last), start).is_ok());
        }
        assert!(matches!(
            limits.attempt(ip(4), start),
            Err(Refusal::Global { .. })
        ));
        assert!(limits
            .attempt(ip(4), start + Duration::from_secs(61))
            .is_ok());
    }
}
