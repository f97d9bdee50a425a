//! Storage replication for sites without shared volumes: every mail node
//! keeps its own copy of the data; the master snapshots its copy at an
//! interval and ships each snapshot, incrementally, to the other mail nodes.
//!
//! # Layout
//! - this file: [`SnapshotName`] (who took a snapshot, under which epoch,
//!   when), [`LiveOrigin`] and the [`SnapshotStore`] trait, the one
//!   interface both file systems offer;
//! - [`btrfs`]: subvolumes, `btrfs send -p` / `btrfs receive`;
//! - [`zfs`]: datasets, `zfs send -i` / `zfs receive` (command building
//!   unit-tested: ZFS cannot run on the machines that test mailherd).
//!
//! The transfer itself (the stream over the peer channel) and the schedule
//! belong to the agent; the volume a promotion mounts is
//! [`crate::volume::replicated::ReplicatedVolume`].
//!
//! # What a failover loses
//! A promoted backup starts from its newest complete snapshot. Whatever the
//! old master wrote after the snapshot it last shipped is not on the new
//! master: that is the data age (RPO) the promotion reports, at most about
//! one interval plus one transfer. The old master's copy is not destroyed:
//! btrfs keeps it under `retired/` for manual recovery.

pub mod btrfs;
pub mod zfs;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mailherd_config::{VolumeDriver, VolumeSection};

use crate::DriverError;

/// A snapshot's name: `e<epoch>-<unix ms>-<node>`, zero-padded so that the
/// lexical order is the order of (epoch, time). A higher epoch's snapshot is
/// newer whatever the clocks say: it was taken by a later master.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName {
    pub epoch: u64,
    pub taken_ms: u64,
    pub node: String,
}

impl SnapshotName {
    /// A name for a snapshot taken now by `node` as master under `epoch`.
    pub fn now(epoch: u64, node: &str) -> SnapshotName {
        SnapshotName {
            epoch,
            taken_ms: unix_ms(SystemTime::now()),
            node: node.to_string(),
        }
    }

    /// How old the data in this snapshot is at `now` (zero if the taker's
    /// clock was ahead).
    pub fn age_at(&self, now: SystemTime) -> Duration {
        Duration::from_millis(unix_ms(now).saturating_sub(self.taken_ms))
    }
}

pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{:010}-{:013}-{}", self.epoch, self.taken_ms, self.node)
    }
}

impl FromStr for SnapshotName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("{text:?} is not a snapshot name ({why})");
        let rest = text.strip_prefix('e').ok_or_else(|| bad("no leading e"))?;
        let mut parts = rest.splitn(3, '-');
        let (Some(epoch), Some(taken), Some(node)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("want e<epoch>-<ms>-<node>"));
        };
        if epoch.len() != 10 || taken.len() != 13 {
            return Err(bad("epoch and time must be 10 and 13 digits"));
        }
        let epoch = epoch.parse().map_err(|_| bad("epoch is not a number"))?;
        let taken_ms = taken.parse().map_err(|_| bad("time is not a number"))?;
        if !valid_node_name(node) {
            return Err(bad("node name must be 1-63 of a-z, 0-9, -"));
        }
        Ok(SnapshotName {
            epoch,
            taken_ms,
            node: node.to_string(),
        })
    }
}

/// Node names go into file and dataset names: keep them plain.
fn valid_node_name(node: &str) -> bool {
    (1..=63).contains(&node.len())
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The newest snapshot both lists hold: the parent of an incremental send.
pub fn newest_common<'a>(
    ours: &'a [SnapshotName],
    theirs: &[SnapshotName],
) -> Option<&'a SnapshotName> {
    ours.iter().filter(|name| theirs.contains(name)).max()
}

/// Where a promotion's live data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveOrigin {
    /// This agent's own live copy, made earlier in its current run (a
    /// reconciler's re-mount): nothing was lost.
    Kept,
    /// Made from this complete snapshot; what the old master wrote after it
    /// is not here.
    Snapshot(SnapshotName),
    /// No snapshot existed: an empty copy (a new cluster).
    Empty,
}

/// One node's copy of a replicated volume. Every call is idempotent where
/// it can be, and names the pool and the command in its errors.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// One line for logs and `/status`.
    fn describe(&self) -> String;
    /// The pool is there and is the right file system; the store's own
    /// directories or datasets exist (made if missing).
    async fn check(&self) -> Result<(), DriverError>;
    /// The complete snapshots, oldest first.
    async fn snapshots(&self) -> Result<Vec<SnapshotName>, DriverError>;
    /// Makes the live copy a promotion mounts. `instance` names this agent's
    /// run: a live copy made by another run (a crash, an earlier term) is
    /// retired first, never reused, because a newer master may have written
    /// since; then the newest snapshot becomes the live copy.
    async fn open_live(&self, instance: &str) -> Result<LiveOrigin, DriverError>;
    /// Mounts the live copy on `mount_point` (already there is fine).
    async fn mount_live(&self, mount_point: &Path) -> Result<(), DriverError>;
    /// Whether the live copy is what is mounted on `mount_point`. Reads the
    /// mount table and stats: call it on a blocking thread.
    fn live_mounted_now(&self, mount_point: &Path) -> Result<bool, DriverError>;
    /// After the unmount of a demotion: sets the live copy aside (it may
    /// hold writes no snapshot has) and says where; `None` if there was
    /// none.
    async fn retire_live(&self) -> Result<Option<String>, DriverError>;
    /// The live copies set aside so far and still there, oldest first: they
    /// may hold writes no snapshot has, and only the operator deletes them.
    /// None for stores that roll such writes back instead (ZFS).
    async fn retired(&self) -> Result<Vec<String>, DriverError> {
        Ok(Vec::new())
    }
    /// Takes a read-only snapshot of the live copy.
    async fn take(&self, name: &SnapshotName) -> Result<(), DriverError>;
    /// The command that writes the stream of `name` to stdout: incremental
    /// from `parent`, which the receiver has, or full without one.
    fn send_argv(&self, name: &SnapshotName, parent: Option<&SnapshotName>) -> Vec<String>;
    /// Gets ready to receive `name` from `parent` (removes a half-received
    /// leftover of an interrupted transfer) and returns the command that
    /// reads the stream on stdin.
    async fn prepare_receive(
        &self,
        name: &SnapshotName,
        parent: Option<&SnapshotName>,
    ) -> Result<Vec<String>, DriverError>;
    /// The receive command exited successfully: makes `name` a complete
    /// snapshot.
    async fn commit_received(&self, name: &SnapshotName) -> Result<(), DriverError>;
    /// The receive failed: removes what it left.
    async fn abort_received(&self, name: &SnapshotName) -> Result<(), DriverError>;
    /// Deletes a complete snapshot.
    async fn remove(&self, name: &SnapshotName) -> Result<(), DriverError>;
}

/// Builds the store of a replicated volume (`driver = "btrfs"` or `"zfs"`).
pub fn store_from_config(section: &VolumeSection) -> Result<Arc<dyn SnapshotStore>, DriverError> {
    let invalid = |reason: &str| DriverError::InvalidConfig {
        section: "volumes",
        reason: format!("volume {:?}: {reason}", section.name),
    };
    let replication = section
        .replication
        .as_ref()
        .ok_or_else(|| invalid("[volumes.replication] is missing"))?;
    match section.driver {
        VolumeDriver::Btrfs => Ok(Arc::new(btrfs::BtrfsStore::new(
            &section.name,
            replication.pool.as_ref(),
        ))),
        VolumeDriver::Zfs => Ok(Arc::new(zfs::ZfsStore::new(
            &section.name,
            &replication.pool,
        ))),
        VolumeDriver::Local | VolumeDriver::Hetzner => {
            Err(invalid("only btrfs and zfs volumes replicate"))
        }
    }
}

/// Which snapshots to delete so that the newest `keep` remain.
pub fn to_prune(snapshots: &[SnapshotName], keep: usize) -> Vec<SnapshotName> {
    let mut sorted = snapshots.to_vec();
    sorted.sort();
    let excess = sorted.len().saturating_sub(keep);
    sorted.truncate(excess);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(epoch: u64, taken_ms: u64, node: &str) -> SnapshotName {
        SnapshotName {
            epoch,
            taken_ms,
            node: node.into(),
        }
    }

    #[test]
    fn names_round_trip_and_sort_by_epoch_then_time() {
        let a = name(3, 1_700_000_000_123, "n1");
        assert_eq!(a.to_string(), "e0000000003-1700000000123-n1");
        assert_eq!(a.to_string().parse::<SnapshotName>().unwrap(), a);
        // A later master's snapshot is newer even if its clock is behind.
        let b = name(4, 1_600_000_000_000, "n2");
        assert!(b > a);
        assert!(b.to_string() > a.to_string());
        for bad in [
            "",
            "x0000000003-1700000000123-n1",
            "e3-1700000000123-n1",
            "e0000000003-17-n1",
            "e0000000003-1700000000123-",
            "e0000000003-1700000000123-N1",
            "e0000000003-1700000000123-n1/x",
            "e000000000x-1700000000123-n1",
        ] {
            assert!(bad.parse::<SnapshotName>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_parent_is_the_newest_snapshot_both_sides_hold() {
        let (s1, s2, s3, s4) = (
            name(1, 10, "n1"),
            name(1, 20, "n1"),
            name(2, 5, "n2"),
            name(2, 15, "n2"),
        );
        let master = vec![s1.clone(), s2.clone(), s3.clone(), s4.clone()];
        assert_eq!(newest_common(&master, &[s1.clone(), s3.clone()]), Some(&s3));
        assert_eq!(newest_common(&master, std::slice::from_ref(&s1)), Some(&s1));
        assert_eq!(newest_common(&master, &[]), None);
        // A snapshot only the receiver has (an old master's) is no parent.
        assert_eq!(newest_common(&master, &[name(1, 30, "n3")]), None);
        assert_eq!(to_prune(&master, 2), vec![s1, s2]);
        assert!(to_prune(&master, 6).is_empty());
    }

    #[test]
    fn age_is_measured_from_the_time_in_the_name() {
        let taken = name(1, 1_000_000, "n1");
        let now = UNIX_EPOCH + Duration::from_millis(1_002_500);
        assert_eq!(taken.age_at(now), Duration::from_millis(2_500));
        // A taker whose clock ran ahead gives zero, not an underflow.
        assert_eq!(
            taken.age_at(UNIX_EPOCH + Duration::from_millis(10)),
            Duration::ZERO
        );
    }
}
