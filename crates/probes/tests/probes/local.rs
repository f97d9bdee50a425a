//! Local resources: a tmpfs mounted for the test (as root), a Postfix
//! queue directory made of files, and systemd as this host has it.

use super::*;

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A tmpfs mounted on a directory for the test's life; unmounted on drop,
/// also when the test fails.
struct TmpfsMount {
    mount_point: PathBuf,
}

impl TmpfsMount {
    /// `None` (with a message) where mounting is not allowed: not root, or a
    /// container without CAP_SYS_ADMIN.
    fn new(mount_point: &Path, read_only: bool) -> Option<TmpfsMount> {
        std::fs::create_dir_all(mount_point).unwrap();
        let flags = if read_only {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        match mount(
            Some("mailherd-test"),
            mount_point,
            Some("tmpfs"),
            flags,
            Some("size=1m"),
        ) {
            Ok(()) => Some(TmpfsMount {
                mount_point: mount_point.to_path_buf(),
            }),
            Err(error) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs on {} ({error}); the mounted cases of the mount probe are not tested",
                    mount_point.display()
                );
                None
            }
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = umount2(&self.mount_point, MntFlags::MNT_DETACH);
    }
}

fn mount_check(mount_point: &Path) -> CheckSection {
    CheckSection {
        mount_point: Some(mount_point.to_path_buf()),
        ..local_check(CheckKind::Mount, 1_000)
    }
}

#[tokio::test]
async fn mount_passes_on_a_writable_tmpfs_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("volume");
    let Some(_tmpfs) = TmpfsMount::new(&mount_point, false) else {
        return;
    };
    let result = probe(&mount_check(&mount_point)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.detail,
        format!(
            "{} mounted (tmpfs mailherd-test), writable",
            mount_point.display()
        )
    );
    assert_eq!(std::fs::read_dir(&mount_point).unwrap().count(), 0);
}

#[tokio::test]
async fn mount_fails_on_a_read_only_mount() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("volume");
    let Some(_tmpfs) = TmpfsMount::new(&mount_point, true) else {
        return;
    };
    let result = probe(&mount_check(&mount_point)).await;
    assert_failed(&result, "is mounted read-only (tmpfs mailherd-test)");
}

#[tokio::test]
async fn mount_fails_on_a_plain_directory_and_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-mounted");
    std::fs::create_dir(&plain).unwrap();
    let result = probe(&mount_check(&plain)).await;
    assert_failed(
        &result,
        &format!("{} is not a mount point", plain.display()),
    );

    let missing = dir.path().join("missing");
    let result = probe(&mount_check(&missing)).await;
    assert_failed(&result, "No such file or directory");

    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let result = probe(&mount_check(&file)).await;
    assert_failed(&result, "is not a directory");
}

/// A Postfix queue directory with `counts` files in (maildrop, incoming,
/// active, deferred), deferred ones hashed into subdirectories as Postfix
/// does, and mail on hold that must not count.
fn queue_directory(counts: [usize; 4]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (queue, count) in ["maildrop", "incoming", "active", "deferred"]
        .into_iter()
        .zip(counts)
    {
        for i in 0..count {
            let sub = if queue == "deferred" {
                dir.path().join(queue).join(format!("{:X}", i % 3))
            } else {
                dir.path().join(queue)
            };
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("4Xq{i}")), "queue file").unwrap();
        }
        std::fs::create_dir_all(dir.path().join(queue)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("hold")).unwrap();
    std::fs::write(dir.path().join("hold").join("held"), "held").unwrap();
    dir
}

fn queue_check(directory: &Path, max_messages: u64) -> CheckSection {
    CheckSection {
        queue_directory: Some(directory.to_path_buf()),
        max_messages: Some(max_messages),
        ..local_check(CheckKind::PostfixQueue, 1_000)
    }
}

#[tokio::test]
async fn postfix_queue_counts_every_queue_but_hold() {
    let queue = queue_directory([1, 2, 3, 7]);
    let result = probe(&queue_check(queue.path(), 13)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.detail,
        "13 queued messages (maildrop 1, incoming 2, active 3, deferred 7), at most 13"
    );

    let result = probe(&queue_check(queue.path(), 12)).await;
    assert_failed(
        &result,
        "over 12 queued messages (counting stopped at 13: maildrop 1, incoming 2, active 3, deferred 7)",
    );

    let empty = queue_directory([0, 0, 0, 0]);
    let result = probe(&queue_check(empty.path(), 0)).await;
    assert!(result.ok, "{result:?}");
}

#[tokio::test]
async fn postfix_queue_stops_counting_past_the_limit() {
    let queue = queue_directory([0, 0, 50, 50]);
    let result = probe(&queue_check(queue.path(), 10)).await;
    assert_failed(
        &result,
        "over 10 queued messages (counting stopped at 11: maildrop 0, incoming 0, active 11)",
    );
}

#[tokio::test]
async fn postfix_queue_fails_on_a_directory_that_is_not_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let result = probe(&queue_check(dir.path(), 10)).await;
    assert_failed(&result, "maildrop: No such file or directory");
    assert_failed(&result, "is queue_directory a Postfix queue?");
}

#[tokio::test]
async fn systemd_fails_clearly_on_an_inactive_unit_or_without_systemd() {
    let unit = CheckSection {
        unit: Some("mailherd-probe-test-absent.service".to_string()),
        ..local_check(CheckKind::Systemd, 2_000)
    };
    let result = probe(&unit).await;
    assert!(!result.ok, "{result:?}");
    // With systemd as PID 1 the unit is "inactive"; in a container
    // systemctl complains that systemd is not running; without systemctl
    // it cannot be run. Each says so.
    let clear = [
        "mailherd-probe-test-absent.service is inactive",
        "systemctl is-active mailherd-probe-test-absent.service failed (exit status: 1): System has not been booted with systemd",
        "cannot run systemctl: No such file or directory",
    ];
    assert!(
        clear.iter().any(|text| result.detail.starts_with(text)),
        "unclear detail: {result:?}"
    );
    eprintln!("systemd probe here: {}", result.detail);
}
