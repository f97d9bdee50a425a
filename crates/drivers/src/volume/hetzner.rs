//! The `hetzner` volume driver: a Hetzner Cloud volume, attached to one
//! server at a time through the API.
//!
//! Attach reads the volume; if another server has it, detaches it there
//! first and waits (this is the fence: the old master loses the device,
//! whatever it still believes), then attaches it here with automount off
//! (mailherd mounts it itself, after the epoch check) and waits, reads the
//! device path from `linux_device`, and waits for that device to appear.
//! From there on it is a [`LocalVolume`] on that device: the same mount,
//! writable check, epoch file and unmount. Demotion only unmounts; the
//! volume stays attached until the next master detaches it, so a node
//! being fenced never needs the API to let go.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use mailherd_config::{HetznerSection, VolumeSection};

use super::local::LocalVolume;
use super::mount::MountTarget;
use super::Volume;
use crate::hetzner::{HetznerApi, MoveError, Progress};
use crate::DriverError;

/// Actions a move may need: detach elsewhere, attach here.
const MOVE_ACTIONS: u32 = 2;

/// How long unmount and the mount checks may ask the API for the device
/// path when no attach has told it yet (an agent restarted with the volume
/// still mounted): they must not hang on an unreachable API.
const DEVICE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// A Hetzner Cloud volume mounted on a fixed mount point.
#[derive(Debug)]
pub struct HetznerVolume {
    api: HetznerApi,
    volume_id: u64,
    /// Name, mount point, fs type and options; `device` is a placeholder
    /// until the API names the device.
    template: MountTarget,
    /// The API's `linux_device`, once an attach (or a lookup) read it.
    device: Mutex<Option<PathBuf>>,
    /// Serialises mount and unmount across the per-call [`LocalVolume`]s
    /// (see [`LocalVolume`]'s field of the same name).
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl HetznerVolume {
    pub fn new(api: HetznerApi, volume_id: u64, target: MountTarget) -> Self {
        HetznerVolume {
            api,
            volume_id,
            template: target,
            device: Mutex::new(None),
            serial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn from_config(
        section: &VolumeSection,
        hetzner: Option<&HetznerSection>,
    ) -> Result<Self, DriverError> {
        let invalid = |reason: String| DriverError::InvalidConfig {
            section: "volumes",
            reason: format!("volume {:?}: {reason}", section.name),
        };
        let hetzner = hetzner.ok_or(DriverError::NotConfigured {
            what: "[hetzner] (needed by the hetzner volume driver)",
        })?;
        let volume_id = section
            .volume_id
            .ok_or_else(|| invalid("volume_id is missing".to_string()))?;
        if section.device.is_some() {
            return Err(invalid(
                "a hetzner volume's device is the API's linux_device; remove `device`".to_string(),
            ));
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
        Ok(HetznerVolume::new(
            HetznerApi::from_config(hetzner)?,
            volume_id,
            MountTarget {
                volume: section.name.clone(),
                device: default_linux_device(volume_id),
                mount_point: section.mount_point.clone(),
                fs_type: section.fs_type.clone(),
                options: section.mount_options.clone(),
            },
        ))
    }

    fn resource(&self) -> String {
        format!(
            "hetzner volume {} ({})",
            self.volume_id, self.template.volume
        )
    }

    fn known_device(&self) -> Option<PathBuf> {
        self.device
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn remember_device(&self, device: PathBuf) {
        *self.device.lock().unwrap_or_else(PoisonError::into_inner) = Some(device);
    }

    /// The volume as a local block device at `device`.
    fn local(&self, device: PathBuf) -> LocalVolume {
        LocalVolume::with_serial(
            MountTarget {
                device,
                ..self.template.clone()
            },
            Arc::clone(&self.serial),
        )
    }

    /// The volume on the device it has, for the calls after attach: the
    /// device an attach read; else the API's, asked briefly; else the
    /// usual Hetzner path (what a mount table entry would show).
    async fn local_for_checks(&self) -> LocalVolume {
        if let Some(device) = self.known_device() {
            return self.local(device);
        }
        let lookup = tokio::time::timeout(
            DEVICE_LOOKUP_TIMEOUT,
            self.api.client().volume(self.volume_id),
        )
        .await;
        match lookup {
            Ok(Ok(volume)) => {
                if let Some(device) = volume.linux_device.filter(|device| !device.is_empty()) {
                    let device = PathBuf::from(device);
                    self.remember_device(device.clone());
                    return self.local(device);
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(volume = self.volume_id, %error, "cannot look up linux_device")
            }
            Err(_) => tracing::debug!(
                volume = self.volume_id,
                "linux_device lookup timed out; assuming the usual path"
            ),
        }
        self.local(self.template.device.clone())
    }

    /// The API part of attach: the volume attached here, its device known.
    async fn attach_here(&self, progress: Progress) -> Result<(), MoveError> {
        let client = self.api.client();
        let id = self.volume_id;
        let server = progress
            .run("finding this server's id", self.api.server_id())
            .await?;
        let current = progress
            .run("reading the volume", client.volume(id))
            .await?;
        let volume = if current.server == Some(server) {
            current
        } else {
            if let Some(other) = current.server {
                let detach = format!("detaching from server {other} (the fence)");
                progress
                    .run(detach.clone(), client.detach_and_wait(id))
                    .await?;
                progress.done(format!("detached from server {other}"));
            }
            let attach = format!("attaching to server {server} (automount off)");
            progress
                .run(attach.clone(), client.attach_and_wait(id, server, false))
                .await?;
            progress.done(format!("attached to server {server}"));
            let after = progress
                .run("reading the attachment back", client.volume(id))
                .await?;
            if after.server != Some(server) {
                return Err(MoveError::new(
                    "checking the attachment",
                    format!(
                        "the API shows server {:?} after the attach to server {server}",
                        after.server
                    ),
                ));
            }
            after
        };
        let device = volume
            .linux_device
            .filter(|device| !device.is_empty())
            .ok_or_else(|| {
                MoveError::new(
                    "reading linux_device",
                    "the API names no device for the attached volume",
                )
            })?;
        self.remember_device(PathBuf::from(device));
        Ok(())
    }
}

/// The path Hetzner usually gives (`linux_device`); only a fallback, the
/// API's answer wins (its case varies).
fn default_linux_device(volume_id: u64) -> PathBuf {
    PathBuf::from(format!("/dev/disk/by-id/scsi-0HC_Volume_{volume_id}"))
}

#[async_trait]
impl Volume for HetznerVolume {
    fn describe(&self) -> String {
        format!(
            "hetzner volume {} ({}) on {} ({})",
            self.volume_id,
            self.template.volume,
            self.template.mount_point.display(),
            self.template.fs_type
        )
    }

    /// Detach elsewhere, attach here, then wait up to `timeout` for the
    /// device (the API part has its own budget, [`Volume::api_budget`]).
    async fn attach(&self, timeout: Duration) -> Result<(), DriverError> {
        let budget = self.api.move_budget(MOVE_ACTIONS);
        self.api
            .timed_move(&self.resource(), budget, |progress| {
                self.attach_here(progress)
            })
            .await?;
        let device = self
            .known_device()
            .expect("a successful attach has read the device");
        self.local(device).attach(timeout).await
    }

    async fn mount(&self) -> Result<(), DriverError> {
        self.local_for_checks().await.mount().await
    }

    async fn claim_epoch(&self, epoch: u64) -> Result<(), DriverError> {
        self.local_for_checks().await.claim_epoch(epoch).await
    }

    async fn unmount(&self, timeout: Duration) -> Result<(), DriverError> {
        self.local_for_checks().await.unmount(timeout).await
    }

    async fn is_mounted(&self) -> Result<bool, DriverError> {
        self.local_for_checks().await.is_mounted().await
    }

    fn api_budget(&self) -> Duration {
        self.api.move_budget(MOVE_ACTIONS)
    }

    fn last_api_ms(&self) -> Option<u64> {
        self.api.last_move_ms()
    }
}
