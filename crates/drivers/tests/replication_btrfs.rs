//! The btrfs store and the replicated volume on real btrfs file systems:
//! two loop devices stand for two nodes' disks. Streams go from
//! `btrfs send` to `btrfs receive` through a pipe here (the agent carries
//! them over the peer channel instead). Every mount happens on a thread
//! with a private mount namespace.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{block_on, in_private_mount_namespace, require_root, run};
use mailherd_drivers::replication::btrfs::BtrfsStore;
use mailherd_drivers::replication::{newest_common, LiveOrigin, SnapshotName, SnapshotStore};
use mailherd_drivers::volume::replicated::ReplicatedVolume;
use mailherd_drivers::{DriverError, Volume};

/// A loop device over a fresh btrfs image, mounted (in the calling
/// thread's mount namespace) on `<dir>/fs`; the pool is `<dir>/fs/pool`.
struct Disk {
    device: String,
    dir: tempfile::TempDir,
}

impl Disk {
    fn new() -> Disk {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(256 * 1024 * 1024))
            .expect("create image");
        let image = image.to_str().unwrap();
        run("mkfs.btrfs", &["-q", "-f", image]);
        let device = run("losetup", &["--find", "--show", image])
            .trim()
            .to_string();
        let fs = dir.path().join("fs");
        std::fs::create_dir_all(&fs).unwrap();
        run("mount", &["-t", "btrfs", &device, fs.to_str().unwrap()]);
        std::fs::create_dir_all(fs.join("pool")).unwrap();
        Disk { device, dir }
    }

    fn pool(&self) -> PathBuf {
        self.dir.path().join("fs/pool")
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("vmail")
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path().join("fs"))
            .status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// `send` on one store piped into `receive` on the other; commits on
/// success like the agent does. Returns the stream's size.
async fn ship(
    from: &dyn SnapshotStore,
    to: &dyn SnapshotStore,
    name: &SnapshotName,
) -> Result<(Option<SnapshotName>, u64), String> {
    let parent = newest_common(
        &from.snapshots().await.unwrap(),
        &to.snapshots().await.unwrap(),
    )
    .cloned();
    let send = from.send_argv(name, parent.as_ref());
    let receive = to.prepare_receive(name, parent.as_ref()).await.unwrap();
    let stream = Command::new(&send[0])
        .args(&send[1..])
        .stdout(Stdio::piped())
        .output()
        .expect("run send");
    assert!(stream.status.success(), "{send:?} failed");
    let result = pipe_into(&receive, &stream.stdout);
    match result {
        Ok(()) => {
            to.commit_received(name).await.map_err(|e| e.to_string())?;
            Ok((parent, stream.stdout.len() as u64))
        }
        Err(error) => {
            to.abort_received(name).await.unwrap();
            Err(error)
        }
    }
}

fn pipe_into(argv: &[String], bytes: &[u8]) -> Result<(), String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run receive");
    let _ = std::io::Write::write_all(child.stdin.as_mut().unwrap(), bytes);
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn write(mount_point: &Path, file: &str) {
    std::fs::write(mount_point.join(file), format!("mail {file}\n")).unwrap();
}

fn has(mount_point: &Path, file: &str) -> bool {
    mount_point.join(file).exists()
}

fn snapshot(epoch: u64, node: &str) -> SnapshotName {
    // Names carry milliseconds: keep two in a row distinct.
    std::thread::sleep(Duration::from_millis(2));
    SnapshotName::now(epoch, node)
}

#[test]
fn snapshots_replicate_incrementally_and_a_promotion_starts_from_the_newest() {
    require_root();
    in_private_mount_namespace(|| {
        let (disk_a, disk_b) = (Disk::new(), Disk::new());
        let store_a: Arc<dyn SnapshotStore> = Arc::new(BtrfsStore::new("mail", &disk_a.pool()));
        let store_b: Arc<dyn SnapshotStore> = Arc::new(BtrfsStore::new("mail", &disk_b.pool()));
        let (mp_a, mp_b) = (disk_a.mount_point(), disk_b.mount_point());
        let volume_a = ReplicatedVolume::new("mail", mp_a.clone(), store_a.clone());
        let volume_b = ReplicatedVolume::new("mail", mp_b.clone(), store_b.clone());
        block_on(async {
            // Node a is the first master: nothing to start from.
            volume_a
                .attach(Duration::from_secs(1))
                .await
                .expect("attach a");
            volume_b
                .attach(Duration::from_secs(1))
                .await
                .expect("attach b");
            assert!(!volume_a.is_mounted().await.unwrap());
            volume_a.mount().await.expect("mount a");
            assert!(volume_a.is_mounted().await.unwrap());
            assert_eq!(volume_a.opened().unwrap().origin, LiveOrigin::Empty);
            volume_a.claim_epoch(1).await.expect("claim 1");
            write(&mp_a, "m1");

            // First snapshot: a full stream; the second: incremental.
            let s1 = snapshot(1, "a");
            store_a.take(&s1).await.expect("take s1");
            let (parent, full_bytes) = ship(&*store_a, &*store_b, &s1).await.expect("ship s1");
            assert_eq!(parent, None);
            write(&mp_a, "m2");
            let s2 = snapshot(1, "a");
            store_a.take(&s2).await.expect("take s2");
            let (parent, _) = ship(&*store_a, &*store_b, &s2).await.expect("ship s2");
            assert_eq!(parent.as_ref(), Some(&s1));
            assert_eq!(
                store_b.snapshots().await.unwrap(),
                vec![s1.clone(), s2.clone()]
            );
            assert!(full_bytes > 0);

            // Written after the last shipped snapshot: the loss window.
            write(&mp_a, "m3");
            // A remount by the same run keeps the live copy as it is.
            volume_a.mount().await.expect("mount a again");
            assert!(has(&mp_a, "m3"));

            // a dies; b is promoted from its newest complete snapshot.
            volume_b.mount().await.expect("mount b");
            let opened = volume_b.opened().unwrap();
            assert_eq!(opened.origin, LiveOrigin::Snapshot(s2.clone()));
            assert!(opened.data_age_ms().is_some());
            assert!(has(&mp_b, "m1") && has(&mp_b, "m2") && !has(&mp_b, "m3"));
            // The epoch came with the snapshot; a's stale epoch is refused.
            match volume_b.claim_epoch(0).await {
                Err(DriverError::StaleEpoch { found: 1, .. }) => {}
                other => panic!("a stale claim on the promoted copy gave {other:?}"),
            }
            volume_b.claim_epoch(2).await.expect("claim 2");
            write(&mp_b, "m4");

            // a comes back as a backup: its copy is set aside, not lost.
            volume_a
                .unmount(Duration::from_secs(5))
                .await
                .expect("unmount a");
            assert!(!volume_a.is_mounted().await.unwrap());
            let retired: Vec<_> = std::fs::read_dir(disk_a.pool().join("retired"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(retired.len(), 1, "{retired:?}");
            assert!(
                has(&retired[0], "m3"),
                "the unshipped write is kept in {retired:?}"
            );
            // The store lists it (for `/status` → `replication[].retired`).
            assert_eq!(
                store_a.retired().await.expect("list retired"),
                vec![retired[0].display().to_string()]
            );
            assert_eq!(
                store_b.retired().await.expect("none on b"),
                Vec::<String>::new()
            );

            // b's snapshot goes to a incrementally: its parent is s2, which
            // b only received (btrfs matches it by received UUID).
            let s3 = snapshot(2, "b");
            store_b.take(&s3).await.expect("take s3");
            let (parent, _) = ship(&*store_b, &*store_a, &s3).await.expect("ship s3");
            assert_eq!(parent.as_ref(), Some(&s2));

            // A new run on a (its agent restarted) never reuses a live copy
            // an earlier run made; it starts from the newest snapshot, s3.
            volume_b
                .unmount(Duration::from_secs(5))
                .await
                .expect("unmount b");
            let volume_a2 = ReplicatedVolume::new("mail", mp_a.clone(), store_a.clone());
            volume_a2.mount().await.expect("mount a (new run)");
            assert_eq!(
                volume_a2.opened().unwrap().origin,
                LiveOrigin::Snapshot(s3.clone())
            );
            assert!(has(&mp_a, "m1") && has(&mp_a, "m2") && has(&mp_a, "m4"));
            assert!(!has(&mp_a, "m3"));
            let stale_live = ReplicatedVolume::new("mail", mp_b.clone(), store_b.clone());
            stale_live.mount().await.expect("mount b (new run)");
            assert_eq!(
                stale_live.opened().unwrap().origin,
                LiveOrigin::Snapshot(s3.clone())
            );
            stale_live
                .unmount(Duration::from_secs(5))
                .await
                .expect("unmount b");

            // A cut stream never becomes a snapshot.
            write(&mp_a, "m5");
            let s4 = snapshot(2, "a");
            store_a.take(&s4).await.expect("take s4");
            let send = store_a.send_argv(&s4, None);
            let stream = Command::new(&send[0]).args(&send[1..]).output().unwrap();
            let receive = store_b.prepare_receive(&s4, None).await.unwrap();
            let cut = &stream.stdout[..stream.stdout.len() / 2];
            assert!(
                pipe_into(&receive, cut).is_err(),
                "a cut stream was accepted"
            );
            store_b.abort_received(&s4).await.expect("abort");
            assert!(!store_b.snapshots().await.unwrap().contains(&s4));
            assert!(
                !disk_b
                    .pool()
                    .join("snapshots")
                    .join(s4.to_string())
                    .exists(),
                "the cut stream left its subvolume behind"
            );

            // Pruning deletes old snapshots; the newest stay usable parents.
            store_a.remove(&s1).await.expect("remove s1");
            assert!(!store_a.snapshots().await.unwrap().contains(&s1));
            let (parent, _) = ship(&*store_a, &*store_b, &s4).await.expect("ship s4");
            assert_eq!(parent.as_ref(), Some(&s3));
            volume_a2
                .unmount(Duration::from_secs(5))
                .await
                .expect("unmount a");
        });
    });
}

#[test]
fn a_pool_that_is_not_btrfs_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // /tmp is tmpfs or ext4 here, never btrfs.
    let store = BtrfsStore::new("mail", dir.path());
    let error = block_on(store.check()).unwrap_err().to_string();
    assert!(error.contains("not on a btrfs file system"), "{error}");
    assert!(error.contains(&dir.path().display().to_string()), "{error}");
}
