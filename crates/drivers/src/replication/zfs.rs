//! The ZFS store: one dataset, `<pool>/data`, with `mountpoint=legacy` (so
//! only a promotion mounts it) and snapshots `<pool>/data@<name>`.
//!
//! - The master mounts `<pool>/data` and snapshots it; `zfs send -i`
//!   ships each snapshot from the newest one the receiver has.
//! - A receiver first rolls its dataset back to that parent (`zfs rollback
//!   -r`), so the stream applies; `zfs receive -u` is atomic: a snapshot
//!   exists only once it is complete, and the dataset stays unmounted.
//! - A promotion by a run other than the one that made the copy current
//!   rolls back to the newest snapshot. Unlike btrfs, ZFS cannot set the
//!   unshipped writes of an old master aside without breaking the
//!   incremental chain: they are destroyed by that rollback.
//!
//! ZFS cannot run where mailherd is tested, so every command is built by a
//! pure function (`*_argv`) and unit-tested; the store runs them as built.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use super::{LiveOrigin, SnapshotName, SnapshotStore};
use crate::services::process::{require_success, run_command, run_command_with_stdout};
use crate::volume::mount::{read_mount_table, run_blocking};
use crate::DriverError;

/// The user property naming the agent run that made the copy current.
const OWNER_PROPERTY: &str = "mailherd:owner";
const ZFS_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ZfsStore {
    volume: String,
    /// The parent dataset, e.g. `tank/mailherd`.
    pool: String,
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

impl ZfsStore {
    pub fn new(volume: &str, pool: &str) -> ZfsStore {
        ZfsStore {
            volume: volume.to_string(),
            pool: pool.to_string(),
        }
    }

    /// The dataset holding the copy.
    pub fn dataset(&self) -> String {
        format!("{}/data", self.pool)
    }

    fn at(&self, name: &SnapshotName) -> String {
        format!("{}@{name}", self.dataset())
    }

    pub fn exists_argv(&self, dataset: &str) -> Vec<String> {
        argv(&["zfs", "list", "-H", "-o", "name", dataset])
    }

    pub fn create_argv(&self) -> Vec<String> {
        argv(&[
            "zfs",
            "create",
            "-p",
            "-o",
            "mountpoint=legacy",
            "-o",
            "canmount=noauto",
            &self.dataset(),
        ])
    }

    pub fn list_argv(&self) -> Vec<String> {
        argv(&[
            "zfs",
            "list",
            "-H",
            "-t",
            "snapshot",
            "-o",
            "name",
            "-s",
            "createtxg",
            "-d",
            "1",
            &self.dataset(),
        ])
    }

    /// Reads `zfs list` output: the snapshot names after `@` that are ours.
    pub fn parse_list(&self, output: &str) -> Vec<SnapshotName> {
        let prefix = format!("{}@", self.dataset());
        let mut names: Vec<SnapshotName> = output
            .lines()
            .filter_map(|line| line.trim().strip_prefix(&prefix))
            .filter_map(|name| name.parse().ok())
            .collect();
        names.sort();
        names
    }

    pub fn get_owner_argv(&self) -> Vec<String> {
        argv(&[
            "zfs",
            "get",
            "-H",
            "-o",
            "value",
            OWNER_PROPERTY,
            &self.dataset(),
        ])
    }

    pub fn set_owner_argv(&self, instance: &str) -> Vec<String> {
        argv(&[
            "zfs",
            "set",
            &format!("{OWNER_PROPERTY}={instance}"),
            &self.dataset(),
        ])
    }

    pub fn clear_owner_argv(&self) -> Vec<String> {
        argv(&["zfs", "inherit", OWNER_PROPERTY, &self.dataset()])
    }

    pub fn rollback_argv(&self, to: &SnapshotName) -> Vec<String> {
        argv(&["zfs", "rollback", "-r", &self.at(to)])
    }

    pub fn mount_argv(&self, mount_point: &Path) -> Vec<String> {
        argv(&[
            "mount",
            "-t",
            "zfs",
            &self.dataset(),
            &mount_point.to_string_lossy(),
        ])
    }

    pub fn snapshot_argv(&self, name: &SnapshotName) -> Vec<String> {
        argv(&["zfs", "snapshot", &self.at(name)])
    }

    pub fn receive_argv(&self, parent: Option<&SnapshotName>) -> Vec<String> {
        match parent {
            Some(_) => argv(&["zfs", "receive", "-u", &self.dataset()]),
            // A full stream replaces whatever copy is there.
            None => argv(&["zfs", "receive", "-u", "-F", &self.dataset()]),
        }
    }

    pub fn destroy_argv(&self, name: &SnapshotName) -> Vec<String> {
        argv(&["zfs", "destroy", &self.at(name)])
    }

    async fn run(&self, what: &'static str, argv: Vec<String>) -> Result<String, DriverError> {
        let run =
            run_command_with_stdout(what, &argv, &Default::default(), ZFS_COMMAND_TIMEOUT).await?;
        let stdout = run.stdout.clone();
        require_success(what, &argv, run)?;
        Ok(stdout)
    }

    async fn succeeds(&self, argv: Vec<String>) -> Result<bool, DriverError> {
        let run = run_command("zfs list", &argv, &Default::default(), ZFS_COMMAND_TIMEOUT).await?;
        Ok(run.status.success())
    }
}

#[async_trait]
impl SnapshotStore for ZfsStore {
    fn describe(&self) -> String {
        format!(
            "zfs-replicated volume {}: dataset {}",
            self.volume,
            self.dataset()
        )
    }

    async fn check(&self) -> Result<(), DriverError> {
        self.run("zfs list (the pool)", self.exists_argv(&self.pool))
            .await?;
        if !self.succeeds(self.exists_argv(&self.dataset())).await? {
            self.run("zfs create", self.create_argv()).await?;
        }
        Ok(())
    }

    async fn snapshots(&self) -> Result<Vec<SnapshotName>, DriverError> {
        // The listing is read from stdout's kept tail; page through names
        // by keeping few snapshots (`keep`), as the agent does.
        let output = self.run("zfs list -t snapshot", self.list_argv()).await?;
        Ok(self.parse_list(&output))
    }

    async fn open_live(&self, instance: &str) -> Result<LiveOrigin, DriverError> {
        let owner = self.run("zfs get", self.get_owner_argv()).await?;
        if owner.trim() == instance {
            return Ok(LiveOrigin::Kept);
        }
        let origin = match self.snapshots().await?.pop() {
            Some(newest) => {
                self.run("zfs rollback", self.rollback_argv(&newest))
                    .await?;
                LiveOrigin::Snapshot(newest)
            }
            None => LiveOrigin::Empty,
        };
        self.run("zfs set", self.set_owner_argv(instance)).await?;
        Ok(origin)
    }

    async fn mount_live(&self, mount_point: &Path) -> Result<(), DriverError> {
        let (store, path) = (self.clone(), mount_point.to_path_buf());
        if run_blocking(move || store.live_mounted_now(&path)).await? {
            return Ok(());
        }
        tokio::fs::create_dir_all(mount_point)
            .await
            .map_err(|source| DriverError::Io {
                op: "create",
                path: mount_point.to_path_buf(),
                source,
            })?;
        self.run("mount -t zfs", self.mount_argv(mount_point))
            .await
            .map(|_| ())
    }

    fn live_mounted_now(&self, mount_point: &Path) -> Result<bool, DriverError> {
        let Ok(resolved) = std::fs::canonicalize(mount_point) else {
            return Ok(false);
        };
        let dataset = self.dataset();
        Ok(read_mount_table()?
            .iter()
            .rev()
            .find(|entry| entry.mount_point == resolved)
            .is_some_and(|top| top.fs_type == "zfs" && top.source == dataset))
    }

    async fn retire_live(&self) -> Result<Option<String>, DriverError> {
        self.run("zfs inherit", self.clear_owner_argv()).await?;
        Ok(Some(format!(
            "{} (writes after its newest snapshot are rolled back at the next promotion or receive)",
            self.dataset()
        )))
    }

    async fn take(&self, name: &SnapshotName) -> Result<(), DriverError> {
        self.run("zfs snapshot", self.snapshot_argv(name))
            .await
            .map(|_| ())
    }

    fn send_argv(&self, name: &SnapshotName, parent: Option<&SnapshotName>) -> Vec<String> {
        let mut argv = argv(&["zfs", "send"]);
        if let Some(parent) = parent {
            argv.push("-i".to_string());
            argv.push(self.at(parent));
        }
        argv.push(self.at(name));
        argv
    }

    async fn prepare_receive(
        &self,
        _name: &SnapshotName,
        parent: Option<&SnapshotName>,
    ) -> Result<Vec<String>, DriverError> {
        if let Some(parent) = parent {
            // Snapshots newer than the parent (an old master's) would make
            // the incremental stream refuse to apply.
            self.run("zfs rollback", self.rollback_argv(parent)).await?;
        }
        Ok(self.receive_argv(parent))
    }

    async fn commit_received(&self, _name: &SnapshotName) -> Result<(), DriverError> {
        // `zfs receive` is atomic: the snapshot exists once it succeeded.
        Ok(())
    }

    async fn abort_received(&self, _name: &SnapshotName) -> Result<(), DriverError> {
        // Nor does a failed one leave anything (no resumable receive, -s).
        Ok(())
    }

    async fn remove(&self, name: &SnapshotName) -> Result<(), DriverError> {
        self.run("zfs destroy", self.destroy_argv(name))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(epoch: u64, taken_ms: u64) -> SnapshotName {
        SnapshotName {
            epoch,
            taken_ms,
            node: "n1".into(),
        }
    }

    #[test]
    fn commands_name_the_dataset_and_snapshots() {
        let store = ZfsStore::new("mail", "tank/mailherd");
        let (old, new) = (name(3, 1_000), name(4, 2_000));
        assert_eq!(
            store.send_argv(&new, Some(&old)).join(" "),
            "zfs send -i tank/mailherd/data@e0000000003-0000000001000-n1 \
             tank/mailherd/data@e0000000004-0000000002000-n1"
        );
        assert_eq!(
            store.send_argv(&new, None).join(" "),
            "zfs send tank/mailherd/data@e0000000004-0000000002000-n1"
        );
        assert_eq!(
            store.receive_argv(Some(&old)).join(" "),
            "zfs receive -u tank/mailherd/data"
        );
        assert_eq!(
            store.receive_argv(None).join(" "),
            "zfs receive -u -F tank/mailherd/data"
        );
        assert_eq!(
            store.rollback_argv(&old).join(" "),
            "zfs rollback -r tank/mailherd/data@e0000000003-0000000001000-n1"
        );
        assert_eq!(
            store.create_argv().join(" "),
            "zfs create -p -o mountpoint=legacy -o canmount=noauto tank/mailherd/data"
        );
        assert_eq!(
            store.snapshot_argv(&new).join(" "),
            "zfs snapshot tank/mailherd/data@e0000000004-0000000002000-n1"
        );
        assert_eq!(
            store.destroy_argv(&old).join(" "),
            "zfs destroy tank/mailherd/data@e0000000003-0000000001000-n1"
        );
        assert_eq!(
            store.mount_argv(Path::new("/var/vmail")).join(" "),
            "mount -t zfs tank/mailherd/data /var/vmail"
        );
        assert_eq!(
            store.set_owner_argv("run-42").join(" "),
            "zfs set mailherd:owner=run-42 tank/mailherd/data"
        );
        assert_eq!(
            store.list_argv().join(" "),
            "zfs list -H -t snapshot -o name -s createtxg -d 1 tank/mailherd/data"
        );
    }

    #[test]
    fn listing_keeps_only_our_snapshots_in_order() {
        let store = ZfsStore::new("mail", "tank/mailherd");
        let output = "tank/mailherd/data@e0000000004-0000000002000-n1\n\
                      tank/mailherd/data@manual-backup\n\
                      tank/other/data@e0000000009-0000000002000-n1\n\
                      tank/mailherd/data@e0000000003-0000000001000-n1\n";
        assert_eq!(
            store.parse_list(output),
            vec![name(3, 1_000), name(4, 2_000)]
        );
    }
}
