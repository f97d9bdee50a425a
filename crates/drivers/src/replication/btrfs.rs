//! The btrfs store: one directory (the pool) on a mounted btrfs file
//! system, holding
//! - `live`: the writable subvolume the master mounts (bind) on the
//!   volume's mount point, with `live.owner` naming the agent run that made
//!   it;
//! - `snapshots/<name>`: snapshots taken here or received. Only read-only
//!   ones count as complete: `btrfs subvolume snapshot -r` makes one
//!   read-only at once, `btrfs receive` only as its last act, so a
//!   transfer in progress or cut short is never listed (and a read-only
//!   received subvolume cannot even be renamed, so it stays where received);
//! - `retired/live-<ms>`: live copies set aside at a demotion or found at
//!   a promotion from an earlier run. Never deleted by mailherd.
//!
//! btrfs finds an incremental stream's parent by UUID on the receiving side
//! (a received snapshot keeps the sender's UUID as its received UUID, and
//! `btrfs send` names a received parent by that), so a snapshot received
//! from one master serves as the parent when the next master sends.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{unix_ms, LiveOrigin, SnapshotName, SnapshotStore};
use crate::services::process::{require_success, run_command};
use crate::volume::mount::{read_mount_table, run_blocking};
use crate::DriverError;

/// statfs(2)'s f_type of btrfs.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
/// Subvolume create, snapshot and delete are metadata operations.
const BTRFS_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct BtrfsStore {
    volume: String,
    pool: PathBuf,
}

impl BtrfsStore {
    pub fn new(volume: &str, pool: &Path) -> BtrfsStore {
        BtrfsStore {
            volume: volume.to_string(),
            pool: pool.to_path_buf(),
        }
    }

    fn live(&self) -> PathBuf {
        self.pool.join("live")
    }

    fn owner_file(&self) -> PathBuf {
        self.pool.join("live.owner")
    }

    fn snapshot(&self, name: &SnapshotName) -> PathBuf {
        self.pool.join("snapshots").join(name.to_string())
    }

    async fn btrfs(&self, what: &'static str, args: &[&Path]) -> Result<(), DriverError> {
        let argv: Vec<String> = std::iter::once("btrfs".to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        let run = run_command(what, &argv, &Default::default(), BTRFS_COMMAND_TIMEOUT).await?;
        require_success(what, &argv, run)
    }

    async fn delete_subvolume(&self, path: &Path) -> Result<(), DriverError> {
        if tokio::fs::symlink_metadata(path).await.is_err() {
            return Ok(());
        }
        self.btrfs(
            "btrfs subvolume delete",
            &[Path::new("subvolume"), Path::new("delete"), path],
        )
        .await
    }

    async fn exists(path: &Path) -> bool {
        tokio::fs::symlink_metadata(path).await.is_ok()
    }

    fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DriverError {
        let path = path.to_path_buf();
        move |source| DriverError::Io { op, path, source }
    }
}

#[async_trait]
impl SnapshotStore for BtrfsStore {
    fn describe(&self) -> String {
        format!(
            "btrfs-replicated volume {}: pool {}",
            self.volume,
            self.pool.display()
        )
    }

    async fn check(&self) -> Result<(), DriverError> {
        let pool = self.pool.clone();
        let volume = self.volume.clone();
        run_blocking(move || {
            let stat = nix::sys::statfs::statfs(&pool).map_err(|errno| DriverError::Io {
                op: "statfs the replication pool",
                path: pool.clone(),
                source: std::io::Error::from(errno),
            })?;
            if stat.filesystem_type().0 as i64 != BTRFS_SUPER_MAGIC {
                return Err(DriverError::InvalidConfig {
                    section: "volumes",
                    reason: format!(
                        "volume {volume:?}: replication pool {} is not on a btrfs file system \
                         (f_type {:#x})",
                        pool.display(),
                        stat.filesystem_type().0
                    ),
                });
            }
            for dir in ["snapshots", "retired"] {
                let path = pool.join(dir);
                std::fs::create_dir_all(&path).map_err(Self::io("create", &path))?;
            }
            Ok(())
        })
        .await
    }

    async fn snapshots(&self) -> Result<Vec<SnapshotName>, DriverError> {
        let dir = self.pool.join("snapshots");
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(Self::io("list", &dir))?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(Self::io("list", &dir))? {
            let file_name = entry.file_name();
            match file_name.to_string_lossy().parse::<SnapshotName>() {
                Ok(name) => names.push(name),
                Err(why) => tracing::warn!(dir = %dir.display(), "ignoring {why}"),
            }
        }
        let dir_for_check = dir.clone();
        let mut complete = run_blocking(move || {
            let mut complete = Vec::new();
            for name in names {
                let path = dir_for_check.join(name.to_string());
                if is_read_only_subvolume(&path).map_err(Self::io("read the flags of", &path))? {
                    complete.push(name);
                }
            }
            Ok(complete)
        })
        .await?;
        complete.sort();
        Ok(complete)
    }

    async fn open_live(&self, instance: &str) -> Result<LiveOrigin, DriverError> {
        let live = self.live();
        if Self::exists(&live).await {
            let owner = tokio::fs::read_to_string(self.owner_file())
                .await
                .unwrap_or_default();
            if owner.trim() == instance {
                return Ok(LiveOrigin::Kept);
            }
            let retired = self.retire_live().await?;
            tracing::warn!(
                volume = %self.volume,
                retired = ?retired,
                "a live copy from an earlier run was set aside; starting from the newest snapshot"
            );
        }
        let origin = match self.snapshots().await?.pop() {
            Some(newest) => {
                self.btrfs(
                    "btrfs subvolume snapshot",
                    &[
                        Path::new("subvolume"),
                        Path::new("snapshot"),
                        &self.snapshot(&newest),
                        &live,
                    ],
                )
                .await?;
                LiveOrigin::Snapshot(newest)
            }
            None => {
                self.btrfs(
                    "btrfs subvolume create",
                    &[Path::new("subvolume"), Path::new("create"), &live],
                )
                .await?;
                LiveOrigin::Empty
            }
        };
        let owner = self.owner_file();
        let instance = instance.to_string();
        run_blocking(move || {
            let write = || -> std::io::Result<()> {
                let temporary = owner.with_extension("owner.new");
                let mut file = std::fs::File::create(&temporary)?;
                std::io::Write::write_all(&mut file, instance.as_bytes())?;
                file.sync_all()?;
                std::fs::rename(&temporary, &owner)
            };
            write().map_err(Self::io("write", &owner))
        })
        .await?;
        Ok(origin)
    }

    async fn mount_live(&self, mount_point: &Path) -> Result<(), DriverError> {
        let store = self.clone();
        let live = self.live();
        let mount_point = mount_point.to_path_buf();
        run_blocking(move || {
            if store.live_mounted_now(&mount_point)? {
                return Ok(());
            }
            std::fs::create_dir_all(&mount_point).map_err(Self::io("create", &mount_point))?;
            nix::mount::mount(
                Some(&live),
                &mount_point,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|errno| DriverError::Mount {
                device: live.clone(),
                mount_point: mount_point.clone(),
                fs_type: "btrfs (bind)".to_string(),
                errno,
            })
        })
        .await
    }

    fn live_mounted_now(&self, mount_point: &Path) -> Result<bool, DriverError> {
        let Ok(resolved) = std::fs::canonicalize(mount_point) else {
            return Ok(false);
        };
        if !read_mount_table()?
            .iter()
            .any(|entry| entry.mount_point == resolved)
        {
            return Ok(false);
        }
        // A bind mount of the live subvolume shows its root: the same
        // device (each subvolume has its own) and inode.
        let (Ok(on_top), Ok(subvolume)) =
            (std::fs::metadata(&resolved), std::fs::metadata(self.live()))
        else {
            return Ok(false);
        };
        Ok(on_top.dev() == subvolume.dev() && on_top.ino() == subvolume.ino())
    }

    async fn retire_live(&self) -> Result<Option<String>, DriverError> {
        let live = self.live();
        if !Self::exists(&live).await {
            return Ok(None);
        }
        let retired = self
            .pool
            .join("retired")
            .join(format!("live-{}", unix_ms(SystemTime::now())));
        tokio::fs::create_dir_all(self.pool.join("retired"))
            .await
            .map_err(Self::io("create", &self.pool.join("retired")))?;
        tokio::fs::rename(&live, &retired)
            .await
            .map_err(Self::io("retire", &live))?;
        let _ = tokio::fs::remove_file(self.owner_file()).await;
        Ok(Some(retired.display().to_string()))
    }

    async fn retired(&self) -> Result<Vec<String>, DriverError> {
        let dir = self.pool.join("retired");
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(Self::io("list", &dir)(error)),
        };
        let mut retired = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(Self::io("list", &dir))? {
            retired.push(entry.path().display().to_string());
        }
        // `live-<unix ms>`: by name is by age while the digits last.
        retired.sort_by_key(|path| (path.len(), path.clone()));
        Ok(retired)
    }

    async fn take(&self, name: &SnapshotName) -> Result<(), DriverError> {
        self.btrfs(
            "btrfs subvolume snapshot -r",
            &[
                Path::new("subvolume"),
                Path::new("snapshot"),
                Path::new("-r"),
                &self.live(),
                &self.snapshot(name),
            ],
        )
        .await
    }

    fn send_argv(&self, name: &SnapshotName, parent: Option<&SnapshotName>) -> Vec<String> {
        let mut argv = vec!["btrfs".to_string(), "send".to_string(), "-q".to_string()];
        if let Some(parent) = parent {
            argv.push("-p".to_string());
            argv.push(self.snapshot(parent).display().to_string());
        }
        argv.push(self.snapshot(name).display().to_string());
        argv
    }

    async fn prepare_receive(
        &self,
        name: &SnapshotName,
        _parent: Option<&SnapshotName>,
    ) -> Result<Vec<String>, DriverError> {
        // A leftover of the same name is a cut transfer of this very
        // snapshot (a complete one would not be sent again).
        self.delete_subvolume(&self.snapshot(name)).await?;
        Ok(vec![
            "btrfs".to_string(),
            "receive".to_string(),
            "-q".to_string(),
            self.pool.join("snapshots").display().to_string(),
        ])
    }

    async fn commit_received(&self, name: &SnapshotName) -> Result<(), DriverError> {
        let path = self.snapshot(name);
        let checked = path.clone();
        let complete = run_blocking(move || {
            is_read_only_subvolume(&checked).map_err(Self::io("read the flags of", &checked))
        })
        .await?;
        if complete {
            Ok(())
        } else {
            Err(DriverError::Io {
                op: "complete the received snapshot",
                path,
                source: std::io::Error::other(
                    "btrfs receive exited without making it read-only (a cut stream)",
                ),
            })
        }
    }

    async fn abort_received(&self, name: &SnapshotName) -> Result<(), DriverError> {
        self.delete_subvolume(&self.snapshot(name)).await
    }

    async fn remove(&self, name: &SnapshotName) -> Result<(), DriverError> {
        self.delete_subvolume(&self.snapshot(name)).await
    }
}

// BTRFS_IOC_SUBVOL_GETFLAGS: _IOR(0x94, 25, __u64).
nix::ioctl_read!(btrfs_subvol_getflags, 0x94, 25, u64);
/// BTRFS_SUBVOL_RDONLY.
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;

/// Whether `path` is a read-only subvolume. A missing path is not; a
/// plain directory fails the ioctl (ENOTTY) and is not either.
fn is_read_only_subvolume(path: &Path) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let directory = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    let mut flags: u64 = 0;
    // SAFETY: the ioctl writes one u64 into `flags`, which outlives the call;
    // the descriptor is open for its duration.
    match unsafe { btrfs_subvol_getflags(directory.as_raw_fd(), &mut flags) } {
        Ok(_) => Ok(flags & BTRFS_SUBVOL_RDONLY != 0),
        Err(nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL) => Ok(false),
        Err(errno) => Err(std::io::Error::from(errno)),
    }
}
