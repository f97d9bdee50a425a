//! Volume drivers: the shared storage the master mounts (mail queue, mail
//! store, databases).
//!
//! # Layout
//! - this file: the [`Volume`] trait and [`volume_from_config`];
//! - [`local`]: a block device that is simply present on the node;
//! - [`mount`]: mount/unmount, the writable check and `/proc` mount table
//!   reading, shared by every driver that ends with a mounted device;
//! - [`epoch`]: the `.mailherd-epoch` file that fences stale masters.

pub mod epoch;
pub mod local;
pub mod mount;

use std::time::Duration;

use async_trait::async_trait;
use mailherd_config::{VolumeDriver, VolumeSection};

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
}

/// Builds the driver the config names.
pub fn volume_from_config(section: &VolumeSection) -> Result<Box<dyn Volume>, DriverError> {
    match section.driver {
        VolumeDriver::Local => Ok(Box::new(local::LocalVolume::from_config(section)?)),
    }
}
