//! Services drivers: start and stop the mail stack on the master.
//!
//! # Layout
//! - this file: the [`Services`] trait and [`services_from_config`];
//! - [`command`]: operator-given argv for start, stop, status and kill;
//! - [`systemd`]: `systemctl start|stop|kill|is-active` on a list of units;
//! - [`compose`]: `docker compose up -d` / `down` of a compose project
//!   (mailcow), its state read and its stragglers killed through the
//!   Docker Engine API;
//! - [`process`]: running one command with a timeout in its own process
//!   group and keeping the tail of its stderr, shared by every driver that
//!   runs commands.

pub mod command;
pub mod compose;
pub mod process;
pub mod systemd;

use std::time::Duration;

use async_trait::async_trait;
use mailherd_config::{ServicesDriver, ServicesSection};

use crate::DriverError;

/// The mail stack as one resource the master runs.
#[async_trait]
pub trait Services: Send + Sync {
    /// One line for logs and `/status`.
    fn describe(&self) -> String;
    /// Starts the stack; the start command must return within `timeout`
    /// (a daemon that forks itself away is fine).
    async fn start(&self, timeout: Duration) -> Result<(), DriverError>;
    /// Stops the stack; if the stop command fails or outlives `timeout`, the
    /// kill command runs (with the same timeout). `Ok` means the stack was
    /// stopped one way or the other; the fallback is logged.
    async fn stop(&self, timeout: Duration) -> Result<(), DriverError>;
    /// Kills the stack at once (the kill command), for urgent demotions
    /// where the lease leaves no time for a graceful stop.
    async fn kill(&self, timeout: Duration) -> Result<(), DriverError>;
    /// Whether the stack runs now: `true` as long as any part of it still
    /// runs (a demotion reads this back to know nothing is left), so a
    /// half-started or half-stopped stack is running. Whether the stack is
    /// *healthy* is for the checks.
    async fn is_running(&self) -> Result<bool, DriverError>;
}

/// Builds the driver the config names.
pub fn services_from_config(section: &ServicesSection) -> Result<Box<dyn Services>, DriverError> {
    match section.driver {
        ServicesDriver::Command => Ok(Box::new(command::CommandServices::from_config(section)?)),
        ServicesDriver::Systemd => Ok(Box::new(systemd::SystemdServices::from_config(section)?)),
        ServicesDriver::Compose => Ok(Box::new(compose::ComposeServices::from_config(section)?)),
    }
}
