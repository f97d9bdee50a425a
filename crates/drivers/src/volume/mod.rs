//! Volume drivers: the shared storage the master mounts (mail queue, mail
//! store, databases).
//!
//! # Layout
//! - this file: the [`Volume`] trait and [`volume_from_config`];
//! - [`local`]: a block device that is simply present on the node;
//! - [`hetzner`]: a Hetzner Cloud volume, detached from whichever server
//!   has it and attached here through the API, then mounted as `local`;
//! - [`mount`]: mount/unmount, the writable check and `/proc` mount table
//!   reading, shared by every driver that ends with a mounted device;
//! - [`epoch`]: the `.mailherd-epoch` file that fences stale masters;
//! - [`replicated`]: `btrfs` and `zfs`, this node's own copy of a volume
//!   the master replicates (see [`crate::replication`]).

pub mod epoch;
pub mod hetzner;
pub mod local;
pub mod mount;
pub mod replicated;

use std::time::Duration;

use async_trait::async_trait;
use mailherd_config::{HetznerSection, VolumeDriver, VolumeSection};

use crate::DriverError;

/// One shared volume as a resource the master holds.
///
/// Mount calls work in the mount namespace of the calling thread. Every
/// call is idempotent, so the pipelines and the reconciler may repeat them.
#[async_trait]
pub trait Volume: Send + Sync {
    /// One line for logs and `/status`.
    fn describe(&self) -> String;
    /// Makes the block device available on this node and waits until it is
    /// there (local: only waits for the device node to exist).
    async fn attach(&self, timeout: Duration) -> Result<(), DriverError>;
    /// Mounts the device on the mount point (already mounted there is
    /// fine), then checks the file system takes a synced write.
    async fn mount(&self) -> Result<(), DriverError>;
    /// Fences stale masters (invariant 2): fails with
    /// [`DriverError::StaleEpoch`] if the volume carries a higher epoch than
    /// `epoch`, otherwise records `epoch` on the volume durably.
    async fn claim_epoch(&self, epoch: u64) -> Result<(), DriverError>;
    /// Unmounts; if the file system is still busy when `timeout` ends, it is
    /// detached lazily (MNT_DETACH). Not mounted is fine.
    async fn unmount(&self, timeout: Duration) -> Result<(), DriverError>;
    /// Whether this volume's device is mounted on its mount point now.
    async fn is_mounted(&self) -> Result<bool, DriverError>;
    /// The longest the cloud API part of `attach` may take (the driver
    /// enforces it); the pipeline adds it to the step's timeout. Zero for
    /// drivers without an API.
    fn api_budget(&self) -> Duration {
        Duration::ZERO
    }
    /// How long the cloud API part of the last `attach` took, for the
    /// promotion record; `None` for drivers without an API.
    fn last_api_ms(&self) -> Option<u64> {
        None
    }
}

/// Builds the driver the config names; `hetzner` is the config's
/// `[hetzner]` section, which the `hetzner` driver needs.
pub fn volume_from_config(
    section: &VolumeSection,
    hetzner: Option<&HetznerSection>,
) -> Result<Box<dyn Volume>, DriverError> {
    match section.driver {
        VolumeDriver::Local => Ok(Box::new(local::LocalVolume::from_config(section)?)),
        VolumeDriver::Hetzner => Ok(Box::new(hetzner::HetznerVolume::from_config(
            section, hetzner,
        )?)),
        VolumeDriver::Btrfs | VolumeDriver::Zfs => Ok(Box::new(
            replicated::ReplicatedVolume::from_config(section)?,
        )),
    }
}
