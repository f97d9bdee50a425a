//! The `local` volume driver on loop devices over ext4 images the tests
//! make. Every mount happens on a thread with a private mount namespace, so
//! the host's mount table never sees them.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{block_on, in_private_mount_namespace, require_root, LoopDevice};
use mailherd_config::{VolumeDriver, VolumeSection};
use mailherd_drivers::suite::volume_suite;
use mailherd_drivers::volume::mount::parse_mountinfo;
use mailherd_drivers::{volume_from_config, DriverError, Volume};

fn section(device: &Path, mount_point: &Path, fs_type: &str, options: &str) -> VolumeSection {
    VolumeSection {
        name: "mail".to_string(),
        driver: VolumeDriver::Local,
        device: Some(device.to_path_buf()),
        volume_id: None,
        mount_point: mount_point.to_path_buf(),
        fs_type: fs_type.to_string(),
        mount_options: options.to_string(),
        device_wait_ms: 5_000,
        replication: None,
    }
}

fn driver(device: &Path, mount_point: &Path) -> Box<dyn Volume> {
    volume_from_config(&section(device, mount_point, "ext4", "noatime"), None).expect("driver")
}

/// Whether the mount table at `mountinfo_path` has something on `mount_point`.
fn table_has(mountinfo_path: &str, mount_point: &Path) -> bool {
    let text = std::fs::read_to_string(mountinfo_path).expect("read mountinfo");
    parse_mountinfo(&text)
        .iter()
        .any(|entry| entry.mount_point == mount_point)
}

#[test]
fn local_volume_passes_the_suite_on_a_loop_device() {
    require_root();
    let loop_device = LoopDevice::new_ext4();
    let directory = tempfile::tempdir().unwrap();
    let mount_point = directory.path().join("vmail");
    let volume = driver(loop_device.path(), &mount_point);
    in_private_mount_namespace(|| {
        block_on(async {
            volume_suite(volume.as_ref(), &mount_point).await;

            // The mount is in this thread's namespace only: the process's
            // main thread (and so the host) does not see it.
            volume.mount().await.expect("mount");
            let resolved = mount_point.canonicalize().unwrap();
            assert!(table_has("/proc/thread-self/mountinfo", &resolved));
            assert!(
                !table_has("/proc/self/mountinfo", &resolved),
                "mount leaked out"
            );
            volume
                .unmount(Duration::from_secs(5))
                .await
                .expect("unmount");
        })
    });
}

#[test]
fn attach_waits_for_a_device_that_appears_late() {
    let directory = tempfile::tempdir().unwrap();
    let device = directory.path().join("by-id").join("volume-1");
    let volume = driver(&device, Path::new("/mnt/mailherd-test-unused"));
    let link_to = device.clone();
    let creator = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        std::fs::create_dir_all(link_to.parent().unwrap()).unwrap();
        // Like udev's /dev/disk/by-id links: a symlink to the block device.
        std::os::unix::fs::symlink("/dev/loop0", &link_to).unwrap();
    });
    let started = Instant::now();
    block_on(volume.attach(Duration::from_secs(3))).expect("attach");
    let waited = started.elapsed();
    creator.join().unwrap();
    assert!(
        waited >= Duration::from_millis(150),
        "attach returned after {waited:?}"
    );
    assert!(waited < Duration::from_secs(2), "attach took {waited:?}");
}

#[test]
fn attach_gives_up_on_a_missing_device_after_its_timeout() {
    let device = PathBuf::from("/dev/mailherd-test-never-there");
    let volume = driver(&device, Path::new("/mnt/mailherd-test-unused"));
    let started = Instant::now();
    let result = block_on(volume.attach(Duration::from_millis(200)));
    let took = started.elapsed();
    match result {
        Err(DriverError::DeviceMissing {
            device: named,
            waited_ms,
        }) => {
            assert_eq!(named, device);
            assert!(waited_ms >= 200, "waited {waited_ms} ms");
        }
        other => panic!("attach of a missing device gave {other:?}"),
    }
    assert!(took < Duration::from_secs(1), "attach took {took:?}");
}

#[test]
fn attach_refuses_a_path_that_is_not_a_block_device() {
    let volume = driver(
        Path::new("/dev/null"),
        Path::new("/mnt/mailherd-test-unused"),
    );
    match block_on(volume.attach(Duration::from_secs(1))) {
        Err(error @ DriverError::NotBlockDevice { .. }) => {
            assert!(error.to_string().contains("/dev/null"), "{error}")
        }
        other => panic!("attach of /dev/null gave {other:?}"),
    }
}

#[test]
fn mount_refuses_a_mount_point_holding_another_file_system_and_unmount_leaves_it() {
    require_root();
    let loop_device = LoopDevice::new_ext4();
    let directory = tempfile::tempdir().unwrap();
    let mount_point = directory.path().join("vmail");
    std::fs::create_dir(&mount_point).unwrap();
    let volume = driver(loop_device.path(), &mount_point);
    in_private_mount_namespace(|| {
        nix::mount::mount(
            Some("mailherd-test-tmpfs"),
            &mount_point,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount a tmpfs");
        block_on(async {
            match volume.mount().await {
                Err(error @ DriverError::MountPointTaken { .. }) => {
                    assert!(error.to_string().contains("mailherd-test-tmpfs"), "{error}")
                }
                other => panic!("mount over a foreign file system gave {other:?}"),
            }
            assert!(!volume.is_mounted().await.unwrap());
            match volume.claim_epoch(1).await {
                Err(DriverError::NotMounted { .. }) => {}
                other => panic!("claim_epoch on a foreign file system gave {other:?}"),
            }
            volume
                .unmount(Duration::from_secs(1))
                .await
                .expect("unmount");
        });
        let resolved = mount_point.canonicalize().unwrap();
        assert!(
            table_has("/proc/thread-self/mountinfo", &resolved),
            "unmount removed a file system that was not the volume's"
        );
    });
}

#[test]
fn mount_with_the_wrong_fs_type_names_device_mount_point_and_errno() {
    require_root();
    let loop_device = LoopDevice::new_ext4();
    let directory = tempfile::tempdir().unwrap();
    let mount_point = directory.path().join("vmail");
    let volume = volume_from_config(&section(loop_device.path(), &mount_point, "xfs", ""), None)
        .expect("driver");
    in_private_mount_namespace(|| {
        match block_on(volume.mount()) {
            Err(error @ DriverError::Mount { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains(loop_device.path().to_str().unwrap()),
                    "{message}"
                );
                assert!(
                    message.contains("vmail") && message.contains("xfs"),
                    "{message}"
                );
            }
            other => panic!("mounting ext4 as xfs gave {other:?}"),
        }
        assert!(!block_on(volume.is_mounted()).unwrap());
    });
}

#[test]
fn a_read_only_mount_fails_the_writable_check() {
    require_root();
    let loop_device = LoopDevice::new_ext4();
    let directory = tempfile::tempdir().unwrap();
    let mount_point = directory.path().join("vmail");
    let volume = volume_from_config(
        &section(loop_device.path(), &mount_point, "ext4", "ro"),
        None,
    )
    .expect("driver");
    in_private_mount_namespace(|| {
        block_on(async {
            match volume.mount().await {
                Err(DriverError::NotWritable { source, .. }) => {
                    assert_eq!(source.raw_os_error(), Some(libc::EROFS), "{source}")
                }
                other => panic!("a read-only mount gave {other:?}"),
            }
            volume
                .unmount(Duration::from_secs(5))
                .await
                .expect("unmount");
            assert!(!volume.is_mounted().await.unwrap());
        })
    });
}
