//! The `local` volume driver: a block device that is present on whichever
//! node is master (a loop device in the lab, a SAN LUN or DRBD primary in
//! production). Attaching only waits for the device node; fencing the
//! device itself is outside this driver, which is why the epoch file
//! matters most here.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mailherd_config::VolumeSection;

use super::mount::{run_blocking, MountState, MountTarget, UnmountOutcome};
use super::{epoch, Volume};
use crate::DriverError;

/// How often attach looks for the device node.
const DEVICE_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A block device mounted on a fixed mount point.
#[derive(Debug, Clone)]
pub struct LocalVolume {
    target: MountTarget,
    /// Serialises mount and unmount. A mount runs on the blocking pool and
    /// finishes even when the promotion that asked for it is abandoned; the
    /// demotion's unmount must wait for it, or it would find nothing
    /// mounted and leave the late mount behind on a backup.
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl LocalVolume {
    pub fn new(target: MountTarget) -> Self {
        LocalVolume::with_serial(target, Arc::new(tokio::sync::Mutex::new(())))
    }

    /// A volume whose mounts and unmounts are serialised by `serial`, shared
    /// with other views of the same volume (the hetzner driver makes one per
    /// call, once it knows the device).
    pub(crate) fn with_serial(target: MountTarget, serial: Arc<tokio::sync::Mutex<()>>) -> Self {
        LocalVolume { target, serial }
    }

    pub fn from_config(section: &VolumeSection) -> Result<Self, DriverError> {
        let invalid = |reason: String| DriverError::InvalidConfig {
            section: "volumes",
            reason: format!("volume {:?}: {reason}", section.name),
        };
        let device = section
            .device
            .clone()
            .ok_or_else(|| invalid("device is missing".to_string()))?;
        if !device.is_absolute() {
            return Err(invalid(format!(
                "device {} is not an absolute path",
                device.display()
            )));
        }
        if !section.mount_point.is_absolute() || section.mount_point == Path::new("/") {
            return Err(invalid(format!(
                "mount point {} must be an absolute path other than /",
                section.mount_point.display()
            )));
        }
        if section.fs_type.is_empty() {
            return Err(invalid("fs_type is empty".to_string()));
        }
        Ok(LocalVolume::new(MountTarget {
            volume: section.name.clone(),
            device,
            mount_point: section.mount_point.clone(),
            fs_type: section.fs_type.clone(),
            options: section.mount_options.clone(),
        }))
    }

    async fn require_mounted(&self) -> Result<(), DriverError> {
        let target = self.target.clone();
        match run_blocking(move || target.state()).await? {
            MountState::Ours => Ok(()),
            // Writing the epoch into a bare mount-point directory (or into
            // someone else's file system) would fence nothing.
            MountState::NotMounted | MountState::Other { .. } => Err(DriverError::NotMounted {
                volume: self.target.volume.clone(),
                mount_point: self.target.mount_point.clone(),
            }),
        }
    }
}

#[async_trait]
impl Volume for LocalVolume {
    fn describe(&self) -> String {
        format!(
            "local volume {}: {} on {} ({})",
            self.target.volume,
            self.target.device.display(),
            self.target.mount_point.display(),
            self.target.fs_type
        )
    }

    async fn attach(&self, timeout: Duration) -> Result<(), DriverError> {
        let started = Instant::now();
        loop {
            match tokio::fs::metadata(&self.target.device).await {
                Ok(metadata) if metadata.file_type().is_block_device() => return Ok(()),
                Ok(_) => {
                    return Err(DriverError::NotBlockDevice {
                        device: self.target.device.clone(),
                    })
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DriverError::Io {
                        op: "stat",
                        path: self.target.device.clone(),
                        source,
                    })
                }
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(DriverError::DeviceMissing {
                    device: self.target.device.clone(),
                    waited_ms: waited.as_millis() as u64,
                });
            }
            tokio::time::sleep(DEVICE_POLL_INTERVAL.min(timeout - waited)).await;
        }
    }

    async fn mount(&self) -> Result<(), DriverError> {
        let guard = self.serial.clone().lock_owned().await;
        let target = self.target.clone();
        // The guard travels with the blocking work, not with this future.
        run_blocking(move || {
            let _serial = guard;
            target.mount_blocking()
        })
        .await?;
        self.target.check_writable().await
    }

    async fn claim_epoch(&self, epoch: u64) -> Result<(), DriverError> {
        self.require_mounted().await?;
        let volume = self.target.volume.clone();
        let mount_point = self.target.mount_point.clone();
        run_blocking(move || epoch::claim_epoch(&volume, &mount_point, epoch)).await
    }

    async fn unmount(&self, timeout: Duration) -> Result<(), DriverError> {
        let _serial = self.serial.lock().await;
        match self.target.unmount(timeout).await? {
            UnmountOutcome::Unmounted => {}
            UnmountOutcome::Detached { busy_for_ms } => tracing::warn!(
                volume = %self.target.volume,
                mount_point = %self.target.mount_point.display(),
                busy_for_ms,
                "volume still busy when the unmount timeout ended: detached lazily"
            ),
        }
        Ok(())
    }

    async fn is_mounted(&self) -> Result<bool, DriverError> {
        let target = self.target.clone();
        Ok(run_blocking(move || target.state()).await? == MountState::Ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailherd_config::VolumeDriver;

    fn section(device: &str, mount_point: &str) -> VolumeSection {
        VolumeSection {
            name: "mail".into(),
            driver: VolumeDriver::Local,
            device: Some(device.into()),
            volume_id: None,
            mount_point: mount_point.into(),
            fs_type: "ext4".into(),
            mount_options: String::new(),
            device_wait_ms: 5_000,
            replication: None,
        }
    }

    #[test]
    fn config_is_checked_and_described() {
        let volume = LocalVolume::from_config(&section("/dev/loop7", "/var/vmail")).unwrap();
        assert_eq!(
            volume.describe(),
            "local volume mail: /dev/loop7 on /var/vmail (ext4)"
        );
        for (device, mount_point, expected) in [
            ("loop7", "/var/vmail", "not an absolute path"),
            ("/dev/loop7", "/", "other than /"),
            ("/dev/loop7", "vmail", "other than /"),
        ] {
            let error = LocalVolume::from_config(&section(device, mount_point)).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
