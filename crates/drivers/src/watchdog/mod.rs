//! Watchdog drivers: something outside the agent that resets the node
//! unless the agent keeps petting it (see `mailherd_core::watchdog` for when
//! it is armed and petted).
//!
//! # Layout
//! - this file: the [`Watchdog`] trait and [`watchdog_from_config`];
//! - [`device`]: the Linux watchdog device (`/dev/watchdog`: softdog or a
//!   hardware timer), whose reset is a real reboot;
//! - [`socket`]: an emulated watchdog spoken to over a Unix datagram socket;
//!   the lab's node init implements it and powers the node off.

pub mod device;
pub mod socket;

use std::time::Duration;

use mailherd_config::{WatchdogDriver, WatchdogSection};

use crate::DriverError;

/// A watchdog timer. Calls are quick (an ioctl, a datagram) and made from
/// the agent's control loop; none blocks.
pub trait Watchdog: Send {
    /// One line for logs and `/status`, e.g. `device /dev/watchdog`.
    fn describe(&self) -> String;
    /// Starts the timer with `timeout`; returns the timeout now in force,
    /// which the caller must use for its petting rule. A driver that cannot
    /// set exactly `timeout` fails rather than run a longer one.
    fn arm(&mut self, timeout: Duration) -> Result<Duration, DriverError>;
    /// Restarts the timer.
    fn pet(&mut self) -> Result<(), DriverError>;
    /// Stops the timer. Also stops one a previous run of the agent left
    /// running (after it was killed), so it is called once at start-up.
    fn disarm(&mut self) -> Result<(), DriverError>;
}

/// Builds the driver the config names.
pub fn watchdog_from_config(section: &WatchdogSection) -> Box<dyn Watchdog> {
    match section.driver {
        WatchdogDriver::Device => Box::new(device::DeviceWatchdog::new(section.path.clone())),
        WatchdogDriver::Socket => Box::new(socket::SocketWatchdog::new(section.path.clone())),
    }
}
