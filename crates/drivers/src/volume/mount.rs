//! Mounting a device, unmounting it (lazily if it stays busy), checking it
//! takes writes, and reading the mount table.
//!
//! The syscalls run on tokio's blocking pool: mounting an ext4 volume whose
//! journal needs replaying, or syncing a large dirty cache on unmount, can
//! take seconds, and the agent's runtime must keep renewing the lease
//! meanwhile. Blocking-pool threads are spawned by the calling thread and
//! inherit its mount namespace, so "the calling thread's namespace" holds.
//!
//! The mount table is read from `/proc/thread-self/mountinfo`, not
//! `/proc/self/…`: the latter is the main thread's view, which differs from
//! the caller's when the caller entered a private mount namespace.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::DriverError;

/// Where this thread's mount table is.
pub const MOUNTINFO_PATH: &str = "/proc/thread-self/mountinfo";
/// The file the writable check creates, syncs and removes.
pub const WRITE_CHECK_FILE: &str = ".mailherd-write-check";
/// Pause between unmount attempts while the file system is busy (processes
/// of the stack still exiting).
const UNMOUNT_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long the lazy detach itself may take; it does no I/O, so anything
/// near this means the kernel is stuck.
const LAZY_UNMOUNT_BUDGET: Duration = Duration::from_secs(2);

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u64,
    /// Device number of the mounted file system (`st_dev` of its files).
    pub major: u64,
    pub minor: u64,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// The mount source as given to mount(2), e.g. `/dev/loop3`.
    pub source: String,
}

/// Undoes the kernel's octal escaping of spaces, tabs, newlines and
/// backslashes in mountinfo paths (`\040` is a space).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            digits
                .iter()
                .try_fold(0u32, |value, digit| {
                    (b'0'..=b'7')
                        .contains(digit)
                        .then(|| value * 8 + u32::from(digit - b'0'))
                })
                .and_then(|value| u8::try_from(value).ok())
        });
        if let (b'\\', Some(value)) = (bytes[i], octal) {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a mountinfo text; malformed lines are skipped (the kernel does
/// not write any, and one bad line must not hide the rest).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields.iter().position(|field| *field == "-")?;
            if separator < 6 || fields.len() < separator + 3 {
                return None;
            }
            let (major, minor) = fields[2].split_once(':')?;
            Some(MountEntry {
                mount_id: fields[0].parse().ok()?,
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
                fs_type: fields[separator + 1].to_string(),
                source: unescape_mountinfo(fields[separator + 2]),
            })
        })
        .collect()
}

/// The calling thread's mount table.
pub fn read_mount_table() -> Result<Vec<MountEntry>, DriverError> {
    let text = std::fs::read_to_string(MOUNTINFO_PATH).map_err(|source| DriverError::Io {
        op: "read",
        path: PathBuf::from(MOUNTINFO_PATH),
        source,
    })?;
    Ok(parse_mountinfo(&text))
}

/// Splits a mount(8)-style option string into mount(2) flags and the data
/// string the file system parses (`noatime,data=ordered` becomes
/// `MS_NOATIME` and `data=ordered`).
pub fn parse_mount_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match option {
            "defaults" | "rw" | "async" | "suid" | "dev" | "exec" | "nomand" | "loud" => {
                // Defaults; clear the opposite flag if an earlier option set it.
                let opposite = match option {
                    "rw" => MsFlags::MS_RDONLY,
                    "async" => MsFlags::MS_SYNCHRONOUS,
                    "suid" => MsFlags::MS_NOSUID,
                    "dev" => MsFlags::MS_NODEV,
                    "exec" => MsFlags::MS_NOEXEC,
                    "nomand" => MsFlags::MS_MANDLOCK,
                    "loud" => MsFlags::MS_SILENT,
                    _ => MsFlags::empty(),
                };
                flags.remove(opposite);
            }
            "ro" => flags.insert(MsFlags::MS_RDONLY),
            "sync" => flags.insert(MsFlags::MS_SYNCHRONOUS),
            "nosuid" => flags.insert(MsFlags::MS_NOSUID),
            "nodev" => flags.insert(MsFlags::MS_NODEV),
            "noexec" => flags.insert(MsFlags::MS_NOEXEC),
            "mand" => flags.insert(MsFlags::MS_MANDLOCK),
            "dirsync" => flags.insert(MsFlags::MS_DIRSYNC),
            "noatime" => flags.insert(MsFlags::MS_NOATIME),
            "nodiratime" => flags.insert(MsFlags::MS_NODIRATIME),
            "relatime" => flags.insert(MsFlags::MS_RELATIME),
            "strictatime" => flags.insert(MsFlags::MS_STRICTATIME),
            "lazytime" => flags.insert(MsFlags::MS_LAZYTIME),
            "silent" => flags.insert(MsFlags::MS_SILENT),
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// What is mounted on a mount point, as far as one device is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountState {
    NotMounted,
    /// The device is the top mount on the mount point.
    Ours,
    /// Something else is on top of the mount point; `source` says what.
    Other {
        source: String,
    },
}

/// The device number of a block device node, if it exists.
fn block_device_number(device: &Path) -> Option<(u64, u64)> {
    let metadata = std::fs::metadata(device).ok()?;
    if !metadata.file_type().is_block_device() {
        return None;
    }
    let rdev = metadata.rdev();
    Some((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)))
}

/// A device and the place it is mounted, with everything mount(2) needs.
#[derive(Debug, Clone)]
pub struct MountTarget {
    /// The volume's name, for messages.
    pub volume: String,
    pub device: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// mount(8)-style options, see [`parse_mount_options`].
    pub options: String,
}

impl MountTarget {
    /// What is on the mount point now, according to `table`.
    pub fn state_in(&self, table: &[MountEntry]) -> MountState {
        // Mount tables list resolved paths; compare against the resolved
        // mount point when it exists (a missing one cannot be mounted on).
        let mount_point = match std::fs::canonicalize(&self.mount_point) {
            Ok(path) => path,
            Err(_) => return MountState::NotMounted,
        };
        // The last entry for a path is the one on top (stacked mounts).
        let Some(top) = table
            .iter()
            .rev()
            .find(|entry| entry.mount_point == mount_point)
        else {
            return MountState::NotMounted;
        };
        let same_device = match block_device_number(&self.device) {
            Some((major, minor)) => top.major == major && top.minor == minor,
            // The device node is gone (a detached cloud volume): fall back
            // to the name it was mounted by.
            None => Path::new(&top.source) == self.device,
        };
        if same_device {
            MountState::Ours
        } else {
            MountState::Other {
                source: top.source.clone(),
            }
        }
    }

    /// What is on the mount point now.
    pub fn state(&self) -> Result<MountState, DriverError> {
        Ok(self.state_in(&read_mount_table()?))
    }

    /// Mounts the device unless it is already there, then checks writes.
    pub async fn mount(&self) -> Result<(), DriverError> {
        let target = self.clone();
        run_blocking(move || target.mount_blocking()).await?;
        self.check_writable().await
    }

    pub(crate) fn mount_blocking(&self) -> Result<(), DriverError> {
        match self.state()? {
            MountState::Ours => return Ok(()),
            MountState::Other { source } => {
                return Err(DriverError::MountPointTaken {
                    device: self.device.clone(),
                    mount_point: self.mount_point.clone(),
                    found: source,
                })
            }
            MountState::NotMounted => {}
        }
        std::fs::create_dir_all(&self.mount_point).map_err(|source| DriverError::Io {
            op: "create mount point",
            path: self.mount_point.clone(),
            source,
        })?;
        let (flags, data) = parse_mount_options(&self.options);
        let data = (!data.is_empty()).then_some(data.as_str());
        nix::mount::mount(
            Some(&self.device),
            &self.mount_point,
            Some(self.fs_type.as_str()),
            flags,
            data,
        )
        .map_err(|errno| DriverError::Mount {
            device: self.device.clone(),
            mount_point: self.mount_point.clone(),
            fs_type: self.fs_type.clone(),
            errno,
        })
    }

    /// Writes, syncs and removes a probe file: proves the file system is
    /// mounted read-write and the device accepts writes now.
    pub async fn check_writable(&self) -> Result<(), DriverError> {
        let target = self.clone();
        run_blocking(move || {
            let path = target.mount_point.join(WRITE_CHECK_FILE);
            let write = || -> std::io::Result<()> {
                let mut file = File::create(&path)?;
                file.write_all(b"mailherd write check\n")?;
                file.sync_all()?;
                drop(file);
                std::fs::remove_file(&path)
            };
            write().map_err(|source| DriverError::NotWritable {
                volume: target.volume.clone(),
                mount_point: target.mount_point.clone(),
                source,
            })
        })
        .await
    }

    /// Unmounts, retrying while busy; when `timeout` ends first, detaches
    /// lazily. Returns whether the lazy path was taken.
    ///
    /// A lazy detach removes the mount from the namespace at once, but the
    /// file system stays alive until its last user closes it: on a shared
    /// device another node must not mount it before those users are gone
    /// (the stop-then-kill of the stack ran before, and a cloud detach fences
    /// the device itself).
    pub async fn unmount(&self, timeout: Duration) -> Result<UnmountOutcome, DriverError> {
        let target = self.clone();
        // Only ever unmount our own device: whatever else an operator put on
        // the mount point is not ours to remove.
        unmount_while_ours(&self.mount_point, timeout, move || {
            Ok(target.state()? == MountState::Ours)
        })
        .await
    }
}

/// Unmounts `mount_point` for as long as `ours` says the top mount there is
/// ours, retrying while busy; when `timeout` ends first, detaches lazily.
/// Shared by every driver that ends with a mount.
pub async fn unmount_while_ours(
    mount_point: &Path,
    timeout: Duration,
    ours: impl Fn() -> Result<bool, DriverError> + Clone + Send + 'static,
) -> Result<UnmountOutcome, DriverError> {
    let deadline = Instant::now() + timeout;
    loop {
        let (path, ours) = (mount_point.to_path_buf(), ours.clone());
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(
            remaining,
            run_blocking(move || unmount_once(&path, MntFlags::empty(), ours)),
        )
        .await;
        match attempt {
            Ok(Ok(UnmountAttempt::Done)) => return Ok(UnmountOutcome::Unmounted),
            Ok(Ok(UnmountAttempt::Busy)) if Instant::now() < deadline => {
                tokio::time::sleep(UNMOUNT_RETRY_PAUSE.min(deadline - Instant::now())).await;
            }
            Ok(Ok(UnmountAttempt::Busy)) | Err(_) => break,
            Ok(Err(error)) => return Err(error),
        }
    }
    let path = mount_point.to_path_buf();
    let detach = tokio::time::timeout(
        LAZY_UNMOUNT_BUDGET,
        run_blocking(move || unmount_once(&path, MntFlags::MNT_DETACH, ours)),
    )
    .await
    .map_err(|_| DriverError::Timeout {
        what: format!("lazy unmount of {}", mount_point.display()),
        after_ms: LAZY_UNMOUNT_BUDGET.as_millis() as u64,
    })??;
    match detach {
        UnmountAttempt::Done => Ok(UnmountOutcome::Detached {
            busy_for_ms: timeout.as_millis() as u64,
        }),
        // MNT_DETACH never reports busy; be explicit rather than loop.
        UnmountAttempt::Busy => Err(DriverError::Unmount {
            mount_point: mount_point.to_path_buf(),
            errno: Errno::EBUSY,
        }),
    }
}

fn unmount_once(
    mount_point: &Path,
    flags: MntFlags,
    ours: impl Fn() -> Result<bool, DriverError>,
) -> Result<UnmountAttempt, DriverError> {
    if !ours()? {
        return Ok(UnmountAttempt::Done);
    }
    match nix::mount::umount2(mount_point, flags) {
        Ok(()) => Ok(UnmountAttempt::Done),
        Err(Errno::EBUSY) => Ok(UnmountAttempt::Busy),
        // Unmounted between the table read and the call.
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(UnmountAttempt::Done),
        Err(errno) => Err(DriverError::Unmount {
            mount_point: mount_point.to_path_buf(),
            errno,
        }),
    }
}

/// How an unmount ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmountOutcome {
    Unmounted,
    /// Still busy after the timeout: detached lazily.
    Detached {
        busy_for_ms: u64,
    },
}

enum UnmountAttempt {
    Done,
    Busy,
}

/// Runs blocking file-system work on the blocking pool. A panic there is a
/// bug in this crate, so it is passed on.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_optional_fields_and_escapes() {
        let text = "\
22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw
36 35 98:0 /mnt1 /mnt/my\\040vol rw,noatime master:1 shared:2 - ext4 /dev/loop3 rw,errors=continue
bogus line
37 36 7:3 / /var/mail rw - ext4 /dev/loop3 rw
";
        let entries = parse_mountinfo(text);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].mount_point, PathBuf::from("/mnt/my vol"));
        assert_eq!((entries[1].major, entries[1].minor), (98, 0));
        assert_eq!(entries[1].fs_type, "ext4");
        assert_eq!(entries[1].source, "/dev/loop3");
        assert_eq!(entries[2].mount_id, 37);
    }

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let (flags, data) =
            parse_mount_options("defaults,noatime,nodev,data=ordered,errors=remount-ro");
        assert_eq!(flags, MsFlags::MS_NOATIME | MsFlags::MS_NODEV);
        assert_eq!(data, "data=ordered,errors=remount-ro");

        let (flags, data) = parse_mount_options("ro,rw");
        assert_eq!(flags, MsFlags::empty(), "a later rw undoes ro");
        assert_eq!(data, "");

        let (flags, data) = parse_mount_options("");
        assert_eq!(flags, MsFlags::empty());
        assert_eq!(data, "");
    }

    #[test]
    fn state_compares_the_top_mount_with_the_device() {
        let directory = tempfile::tempdir().unwrap();
        let mount_point = directory.path().canonicalize().unwrap();
        let target = MountTarget {
            volume: "mail".into(),
            device: PathBuf::from("/dev/mailherd-test-no-such-device"),
            mount_point: mount_point.clone(),
            fs_type: "ext4".into(),
            options: String::new(),
        };
        let entry = |source: &str| MountEntry {
            mount_id: 1,
            major: 7,
            minor: 3,
            mount_point: mount_point.clone(),
            fs_type: "ext4".into(),
            source: source.into(),
        };
        assert_eq!(target.state_in(&[]), MountState::NotMounted);
        assert_eq!(
            target.state_in(&[entry("/dev/mailherd-test-no-such-device")]),
            MountState::Ours
        );
        assert_eq!(
            target.state_in(&[entry("/dev/mailherd-test-no-such-device"), entry("tmpfs")]),
            MountState::Other {
                source: "tmpfs".into()
            },
            "the last entry is the one on top"
        );
    }
}
