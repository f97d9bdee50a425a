//! Floating IP drivers: put the cluster's service address on the master and
//! take it off everywhere else.
//!
//! # Layout
//! - this file: the [`FloatingIp`] trait and [`floating_ip_from_config`];
//! - [`local`]: a same-L2 address (netlink add/remove + gratuitous ARP);
//! - [`hetzner`]: a Hetzner Cloud floating IP (assign through the API,
//!   then the address as /32 locally);
//! - `netlink`: interface lookup and address add/remove/list, shared by
//!   every driver that ends with an address on a local interface;
//! - `garp`: building and sending gratuitous ARP frames over AF_PACKET.

mod garp;
pub mod hetzner;
pub mod local;
mod netlink;

use std::time::Duration;

use async_trait::async_trait;
use mailherd_config::{FloatingIpDriver, FloatingIpSection, HetznerSection};

use crate::DriverError;

pub use garp::{garp_frame, GARP_COUNT, GARP_SPACING};

/// The floating IP as one resource the master holds.
///
/// All calls work in the network namespace of the calling thread (the agent
/// runs inside its node's namespace). Every call is idempotent, so the
/// pipelines and the reconciler may repeat them freely.
#[async_trait]
pub trait FloatingIp: Send + Sync {
    /// One line for logs and `/status`, e.g. `local 10.77.0.100/24 on eth0`.
    fn describe(&self) -> String;
    /// Adds the address (already present is fine), then announces it so the
    /// neighbours send traffic here at once.
    async fn acquire(&self) -> Result<(), DriverError>;
    /// Announces the address again; called periodically while master so a
    /// neighbour that missed the takeover catches up.
    async fn refresh(&self) -> Result<(), DriverError>;
    /// Removes the address; absent is fine.
    async fn release(&self) -> Result<(), DriverError>;
    /// Whether the address is on the interface now.
    async fn is_held(&self) -> Result<bool, DriverError>;
    /// The longest the cloud API part of `acquire` may take (the driver
    /// enforces it); the pipeline adds it to the step's timeout. Zero for
    /// drivers without an API.
    fn api_budget(&self) -> Duration {
        Duration::ZERO
    }
    /// How long the cloud API part of the last `acquire` took, for the
    /// promotion record; `None` for drivers without an API.
    fn last_api_ms(&self) -> Option<u64> {
        None
    }
}

/// Builds the driver the config names; `hetzner` is the config's
/// `[hetzner]` section, which the `hetzner` driver needs.
pub fn floating_ip_from_config(
    section: &FloatingIpSection,
    hetzner: Option<&HetznerSection>,
) -> Result<Box<dyn FloatingIp>, DriverError> {
    match section.driver {
        FloatingIpDriver::Local => Ok(Box::new(local::LocalFloatingIp::from_config(section)?)),
        FloatingIpDriver::Hetzner => Ok(Box::new(hetzner::HetznerFloatingIp::from_config(
            section, hetzner,
        )?)),
    }
}
