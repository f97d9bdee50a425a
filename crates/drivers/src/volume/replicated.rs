//! The `btrfs` and `zfs` volume drivers: this node's own copy of a
//! replicated volume (see [`crate::replication`]) as a resource the master
//! holds.
//!
//! - attach: the pool is there and of the right kind;
//! - mount: the live copy is made (kept if this agent run made it, else
//!   from the newest complete snapshot, the older one set aside) and
//!   mounted on the mount point; where it came from is kept for the
//!   promotion record (the data age, RPO);
//! - claim_epoch: the epoch file in the live copy, as for shared volumes
//!   (it fences a snapshot of a stale master's timeline the same way);
//! - unmount: the mount goes, then the live copy is set aside, so no later
//!   promotion can take an old copy for current.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use mailherd_config::VolumeSection;

use super::mount::{run_blocking, unmount_while_ours, MountTarget, UnmountOutcome};
use super::{epoch, Volume};
use crate::replication::{store_from_config, unix_ms, LiveOrigin, SnapshotStore};
use crate::DriverError;

/// What the last mount started from, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub origin: LiveOrigin,
    /// When the live copy was opened (unix ms).
    pub at_ms: u64,
}

impl Opened {
    /// How old the data was when it was opened: the time since the
    /// snapshot it came from was taken. `None` unless it came from one.
    pub fn data_age_ms(&self) -> Option<u64> {
        match &self.origin {
            LiveOrigin::Snapshot(name) => Some(self.at_ms.saturating_sub(name.taken_ms)),
            LiveOrigin::Kept | LiveOrigin::Empty => None,
        }
    }
}

pub struct ReplicatedVolume {
    volume: String,
    mount_point: PathBuf,
    store: Arc<dyn SnapshotStore>,
    /// Names this agent run (see [`SnapshotStore::open_live`]).
    instance: String,
    opened: Arc<Mutex<Option<Opened>>>,
    /// Serialises mount and unmount, as for the local driver.
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl ReplicatedVolume {
    pub fn from_config(section: &VolumeSection) -> Result<Self, DriverError> {
        if !section.mount_point.is_absolute() || section.mount_point == std::path::Path::new("/") {
            return Err(DriverError::InvalidConfig {
                section: "volumes",
                reason: format!(
                    "volume {:?}: mount point {} must be an absolute path other than /",
                    section.name,
                    section.mount_point.display()
                ),
            });
        }
        Ok(ReplicatedVolume::new(
            &section.name,
            section.mount_point.clone(),
            store_from_config(section)?,
        ))
    }

    pub fn new(volume: &str, mount_point: PathBuf, store: Arc<dyn SnapshotStore>) -> Self {
        ReplicatedVolume {
            volume: volume.to_string(),
            mount_point,
            store,
            instance: format!("{}-{}", std::process::id(), unix_ms(SystemTime::now())),
            opened: Arc::new(Mutex::new(None)),
            serial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.store
    }

    pub fn name(&self) -> &str {
        &self.volume
    }

    /// What the last mount of this run started from.
    pub fn opened(&self) -> Option<Opened> {
        self.opened.lock().expect("opened lock").clone()
    }

    fn write_check(&self) -> MountTarget {
        MountTarget {
            volume: self.volume.clone(),
            device: PathBuf::new(),
            mount_point: self.mount_point.clone(),
            fs_type: String::new(),
            options: String::new(),
        }
    }
}

#[async_trait]
impl Volume for ReplicatedVolume {
    fn describe(&self) -> String {
        format!(
            "{} on {}",
            self.store.describe(),
            self.mount_point.display()
        )
    }

    async fn attach(&self, _timeout: Duration) -> Result<(), DriverError> {
        self.store.check().await
    }

    async fn mount(&self) -> Result<(), DriverError> {
        // The work runs in a task of its own that holds the serial guard:
        // a promotion abandoned half-way cannot leave a late mount behind
        // an unmount that already ran (see the local driver).
        let guard = self.serial.clone().lock_owned().await;
        let store = self.store.clone();
        let instance = self.instance.clone();
        let mount_point = self.mount_point.clone();
        let volume = self.volume.clone();
        let opened = self.opened.clone();
        let work = tokio::spawn(async move {
            let _serial = guard;
            let origin = store.open_live(&instance).await?;
            if origin != LiveOrigin::Kept {
                let now = Opened {
                    origin: origin.clone(),
                    at_ms: unix_ms(SystemTime::now()),
                };
                match &origin {
                    LiveOrigin::Snapshot(name) => tracing::info!(
                        %volume,
                        snapshot = %name,
                        data_age_ms = now.data_age_ms(),
                        "live copy made from the newest complete snapshot"
                    ),
                    LiveOrigin::Empty => tracing::warn!(
                        %volume,
                        "no snapshot on this node: the live copy starts empty"
                    ),
                    LiveOrigin::Kept => {}
                }
                *opened.lock().expect("opened lock") = Some(now);
            }
            store.mount_live(&mount_point).await
        });
        match work.await {
            Ok(result) => result?,
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
        self.write_check().check_writable().await
    }

    async fn claim_epoch(&self, epoch: u64) -> Result<(), DriverError> {
        if !self.is_mounted().await? {
            return Err(DriverError::NotMounted {
                volume: self.volume.clone(),
                mount_point: self.mount_point.clone(),
            });
        }
        let volume = self.volume.clone();
        let mount_point = self.mount_point.clone();
        run_blocking(move || epoch::claim_epoch(&volume, &mount_point, epoch)).await
    }

    async fn unmount(&self, timeout: Duration) -> Result<(), DriverError> {
        let _serial = self.serial.lock().await;
        let store = self.store.clone();
        let mount_point = self.mount_point.clone();
        let outcome = unmount_while_ours(&self.mount_point, timeout, move || {
            store.live_mounted_now(&mount_point)
        })
        .await?;
        if let UnmountOutcome::Detached { busy_for_ms } = outcome {
            tracing::warn!(
                volume = %self.volume,
                busy_for_ms,
                "live copy still busy when the unmount timeout ended: detached lazily"
            );
        }
        if let Some(retired) = self.store.retire_live().await? {
            tracing::info!(volume = %self.volume, %retired, "live copy set aside");
        }
        Ok(())
    }

    async fn is_mounted(&self) -> Result<bool, DriverError> {
        let (store, mount_point) = (self.store.clone(), self.mount_point.clone());
        run_blocking(move || store.live_mounted_now(&mount_point)).await
    }
}
