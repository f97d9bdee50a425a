//! The `hetzner` volume driver against the Hetzner Cloud API simulator on
//! loopback, with a real loop device over an ext4 image. The simulator
//! reports a `linux_device` in a temp dir, and its event hook makes that
//! path a link to the loop device while the volume is attached to this
//! server (n1) and removes it when it is detached, as the kernel's udev
//! links come and go on Hetzner. Every mount happens on a thread with a
//! private mount namespace.

mod cloud;
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloud::{Cloud, N1, N2, VOLUME_ID};
use common::{block_on, in_private_mount_namespace, require_root, LoopDevice};
use mailherd_drivers::suite::volume_suite;
use mailherd_drivers::volume::hetzner::HetznerVolume;
use mailherd_drivers::volume::mount::MountTarget;
use mailherd_drivers::{DriverError, Volume};
use mailherd_hcloud_sim::{Fault, SimEvent};

/// A loop device, a temp dir with the mount point and the device link, and
/// a simulator whose hook keeps the link in step with the attachment.
struct Setup {
    loop_device: LoopDevice,
    directory: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            loop_device: LoopDevice::new_ext4(),
            directory: tempfile::tempdir().unwrap(),
        }
    }

    fn linux_device(&self) -> PathBuf {
        self.directory
            .path()
            .join("by-id")
            .join(format!("scsi-0HC_Volume_{VOLUME_ID}"))
    }

    fn mount_point(&self) -> PathBuf {
        self.directory.path().join("vmail")
    }

    async fn start(&self) -> Cloud {
        let link = self.linux_device();
        let target = self.loop_device.path().to_path_buf();
        cloud::start(
            cloud::world(Some(link.clone())),
            Some(Arc::new(move |event| {
                if let SimEvent::VolumeAttached { server, .. } = event {
                    let _ = std::fs::remove_file(&link);
                    if server == Some(N1) {
                        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                        std::os::unix::fs::symlink(&target, &link).unwrap();
                    }
                }
            })),
        )
        .await
    }

    fn driver(&self, cloud: &Cloud, server: u64) -> HetznerVolume {
        HetznerVolume::new(
            cloud::api(&cloud.sim, server),
            VOLUME_ID,
            MountTarget {
                volume: "mail".to_string(),
                device: PathBuf::from("/dev/disk/by-id/unused-until-the-api-says"),
                mount_point: self.mount_point(),
                fs_type: "ext4".to_string(),
                options: "noatime".to_string(),
            },
        )
    }
}

fn attached_to(cloud: &Cloud) -> Option<u64> {
    cloud.sim.world().volume(VOLUME_ID).unwrap().server
}

#[test]
fn hetzner_volume_passes_the_suite_against_the_simulator() {
    require_root();
    let setup = Setup::new();
    in_private_mount_namespace(|| {
        block_on(async {
            let cloud = setup.start().await;
            let volume = setup.driver(&cloud, N1);
            assert_eq!(
                volume.describe(),
                format!(
                    "hetzner volume {VOLUME_ID} (mail) on {} (ext4)",
                    setup.mount_point().display()
                )
            );
            assert_eq!(attached_to(&cloud), Some(N2));
            volume_suite(&volume, &setup.mount_point()).await;

            // The first attach fenced n2 off (detach), then attached here;
            // the second found it here and moved nothing.
            assert_eq!(
                cloud.events(),
                [
                    SimEvent::VolumeAttached {
                        volume: VOLUME_ID,
                        server: None,
                        linux_device: setup.linux_device().display().to_string(),
                    },
                    SimEvent::VolumeAttached {
                        volume: VOLUME_ID,
                        server: Some(N1),
                        linux_device: setup.linux_device().display().to_string(),
                    },
                ]
            );
            assert_eq!(attached_to(&cloud), Some(N1));
            let attach_path = format!("/v1/volumes/{VOLUME_ID}/actions/attach");
            assert_eq!(cloud.sim.request_count("POST", &attach_path), 1);
            assert!(volume.last_api_ms().is_some());
        })
    });
}

#[test]
fn demotion_unmounts_only_and_the_next_master_fences_by_detaching() {
    require_root();
    let setup = Setup::new();
    in_private_mount_namespace(|| {
        block_on(async {
            let cloud = setup.start().await;
            let on_n1 = setup.driver(&cloud, N1);
            on_n1.attach(Duration::from_secs(5)).await.expect("attach");
            on_n1.mount().await.expect("mount");
            on_n1.claim_epoch(3).await.unwrap();
            let api_ms = on_n1.last_api_ms().expect("timed");
            // Two actions of 30–50 ms, their polls and reads.
            assert!((40..3_000).contains(&api_ms), "the move took {api_ms} ms");
            on_n1
                .unmount(Duration::from_secs(2))
                .await
                .expect("unmount");
            assert_eq!(attached_to(&cloud), Some(N1), "demotion only unmounts");

            // n2 takes it: detach from n1 first (the link goes away), then
            // attach to n2 (this test shows n2 no device: it waits in vain).
            let on_n2 = setup.driver(&cloud, N2);
            match on_n2.attach(Duration::from_millis(200)).await {
                Err(DriverError::DeviceMissing { device, .. }) => {
                    assert_eq!(device, setup.linux_device())
                }
                other => panic!("attach on n2 without its device gave {other:?}"),
            }
            assert_eq!(attached_to(&cloud), Some(N2));
            assert!(!setup.linux_device().exists(), "n1 lost the device");
            assert!(!on_n1.is_mounted().await.unwrap());
        })
    });
}

/// The failed attach's error: names the volume and `what`, nothing mounted.
async fn expect_cloud_error(volume: &HetznerVolume, what: &[&str]) -> String {
    let error = volume
        .attach(Duration::from_secs(2))
        .await
        .expect_err("the attach must fail");
    assert!(
        matches!(error, DriverError::Cloud { .. }),
        "not a cloud error: {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("hetzner volume {VOLUME_ID} (mail): ")),
        "{message}"
    );
    for needle in what {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    assert!(!volume.is_mounted().await.unwrap(), "{message}");
    message
}

#[test]
fn transient_api_failures_are_retried_and_the_attach_succeeds() {
    require_root();
    let setup = Setup::new();
    in_private_mount_namespace(|| {
        block_on(async {
            let cloud = setup.start().await;
            let volume = setup.driver(&cloud, N1);
            let attach = format!("/volumes/{VOLUME_ID}/actions/attach");
            let detach = format!("/volumes/{VOLUME_ID}/actions/detach");
            cloud.sim.inject(Fault::http(&detach, 423, "locked", 3));
            cloud
                .sim
                .inject(Fault::http(&attach, 429, "rate_limit_exceeded", 1));
            cloud
                .sim
                .inject(Fault::http(&attach, 502, "bad_gateway", 2));
            cloud.sim.inject(Fault::bare_status(&attach, 504, 1));
            volume
                .attach(Duration::from_secs(5))
                .await
                .expect("attach through locked, 429, 502, 504");
            assert!(cloud.sim.faults().is_empty());
            assert_eq!(attached_to(&cloud), Some(N1));
            volume.mount().await.expect("mount");
            volume.unmount(Duration::from_secs(2)).await.unwrap();
        })
    });
}

#[test]
fn failed_moves_are_named_with_what_was_done_and_mount_nothing() {
    require_root();
    let setup = Setup::new();
    in_private_mount_namespace(|| {
        block_on(async {
            let cloud = setup.start().await;
            let volume = setup.driver(&cloud, N1);

            // The fence fails: still on n2, nothing done.
            cloud
                .sim
                .inject(Fault::action_error("detach_volume", "server_error", 1));
            let message = expect_cloud_error(
                &volume,
                &["detaching from server 2 (the fence) failed", "server_error"],
            )
            .await;
            assert!(!message.contains("done before"), "{message}");
            assert_eq!(attached_to(&cloud), Some(N2));

            // The fence works but the attach fails: the error says the
            // volume was detached (attached nowhere now).
            cloud
                .sim
                .inject(Fault::action_error("attach_volume", "server_error", 1));
            expect_cloud_error(
                &volume,
                &[
                    "attaching to server 1 (automount off) failed",
                    "done before: detached from server 2",
                ],
            )
            .await;
            assert_eq!(attached_to(&cloud), None);

            // Not retried: 500.
            cloud.sim.inject(Fault::http(
                &format!("/volumes/{VOLUME_ID}/actions/attach"),
                500,
                "service_error",
                1,
            ));
            expect_cloud_error(&volume, &["service_error"]).await;

            // A slow attach: still running when the action timeout ends.
            cloud.sim.inject(Fault::action_stuck("attach_volume", 1));
            expect_cloud_error(&volume, &["still running after"]).await;
            assert_eq!(attached_to(&cloud), None);
        })
    });
}

#[test]
fn the_device_path_is_the_apis_and_is_not_required_before_an_attach() {
    require_root();
    let setup = Setup::new();
    in_private_mount_namespace(|| {
        block_on(async {
            let cloud = setup.start().await;
            let volume = setup.driver(&cloud, N1);
            // A restarted agent's cleanup: nothing known yet, nothing mounted.
            assert!(!volume.is_mounted().await.unwrap());
            volume.unmount(Duration::from_millis(100)).await.unwrap();
            volume.attach(Duration::from_secs(5)).await.unwrap();
            volume.mount().await.unwrap();
            let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            let resolved = setup.mount_point().canonicalize().unwrap();
            assert!(mountinfo.contains(&resolved.display().to_string()));
            // A fresh driver (an agent restarted while mounted) finds the
            // device through the API and sees the mount as its own.
            let restarted = setup.driver(&cloud, N1);
            assert!(restarted.is_mounted().await.unwrap());
            restarted
                .unmount(Duration::from_secs(2))
                .await
                .expect("unmount");
            assert!(!volume.is_mounted().await.unwrap());
        })
    });
}
