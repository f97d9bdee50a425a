//! The mount probe: the directory is a mount point (listed in
//! `/proc/self/mountinfo`, so a bind mount of the same filesystem counts),
//! not mounted read-only, and a small file can be created, fsynced and
//! removed in it.
//!
//! The filesystem calls block; they run on tokio's blocking pool and the
//! probe stops waiting for them at the deadline. A call stuck in the kernel
//! (a dead network filesystem) keeps its thread until it returns, but the
//! probe has answered "timed out" by then.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mailherd_config::CheckSection;
use tokio::time::Instant;

use crate::{timed_out, Verdict};

const MOUNTINFO: &str = "/proc/self/mountinfo";

pub(crate) async fn probe(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let mount_point = check
        .mount_point
        .clone()
        .ok_or_else(|| "no mount_point configured".to_string())?;
    let blocking = tokio::task::spawn_blocking(move || check_mount(&mount_point));
    let detail = tokio::time::timeout_at(deadline, blocking)
        .await
        .map_err(|_| timed_out(check.timeout_ms, "the filesystem"))?
        .map_err(|error| format!("mount check crashed: {error}"))??;
    Ok(Verdict {
        detail,
        goodbye: None,
    })
}

/// A mounted filesystem as mountinfo lists it.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    mount_point: PathBuf,
    /// Per-mount options: `rw` or `ro`, then the others.
    options: String,
    fs_type: String,
    source: String,
}

fn check_mount(mount_point: &Path) -> Result<String, String> {
    let shown = mount_point.display();
    let metadata = std::fs::metadata(mount_point).map_err(|error| format!("{shown}: {error}"))?;
    if !metadata.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    // Symlinks resolved: mountinfo lists the real path.
    let real = std::fs::canonicalize(mount_point).map_err(|error| format!("{shown}: {error}"))?;
    let described = match std::fs::read_to_string(MOUNTINFO) {
        Ok(mountinfo) => {
            // The last entry wins: a later mount over the same point hides
            // the earlier ones.
            let mount = parse_mountinfo(&mountinfo)
                .into_iter()
                .rev()
                .find(|mount| mount.mount_point == real)
                .ok_or_else(|| format!("{shown} is not a mount point"))?;
            if mount.options.split(',').any(|option| option == "ro") {
                return Err(format!(
                    "{shown} is mounted read-only ({} {})",
                    mount.fs_type, mount.source
                ));
            }
            format!("{shown} mounted ({} {})", mount.fs_type, mount.source)
        }
        // Without /proc: a mount point is on another device than its
        // parent (a bind mount of the same filesystem is missed).
        Err(_) => {
            let parent = real.parent().unwrap_or(&real);
            let parent_metadata = std::fs::metadata(parent)
                .map_err(|error| format!("{}: {error}", parent.display()))?;
            if parent != real && parent_metadata.dev() == metadata.dev() {
                return Err(format!("{shown} is not a mount point"));
            }
            format!("{shown} mounted")
        }
    };
    write_probe_file(&real).map_err(|error| format!("{shown} is not writable: {error}"))?;
    Ok(format!("{described}, writable"))
}

/// Creates, writes, fsyncs and removes a small file: what the mail stack
/// does with every message.
fn write_probe_file(directory: &Path) -> Result<(), String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let path = directory.join(format!(".mailherd-probe-{}-{nanos}", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| format!("create: {error}"))?;
        file.write_all(b"mailherd mount probe\n")
            .map_err(|error| format!("write: {error}"))?;
        file.sync_all().map_err(|error| format!("fsync: {error}"))
    })();
    // Removed even when the write failed (a full disk), if it was created.
    let removed = std::fs::remove_file(&path);
    written?;
    removed.map_err(|error| format!("remove: {error}"))
}

/// The entries of a mountinfo file (proc(5)): `id parent major:minor root
/// mount_point options [optional fields] - fs_type source super_options`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut fields = before.split(' ');
            let mount_point = fields.nth(4)?;
            let options = fields.next()?;
            let mut after = after.split(' ');
            let fs_type = after.next()?;
            let source = after.next().unwrap_or_default();
            Some(Mount {
                mount_point: PathBuf::from(unescape(mount_point)),
                options: options.to_string(),
                fs_type: unescape(fs_type),
                source: unescape(source),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let text = "\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/x
36 22 7:0 / /srv/mail\\040box rw,noatime master:3 - ext4 /dev/loop7 rw
37 22 0:40 / /mnt/ro ro,relatime - tmpfs tmpfs ro
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[1].mount_point, PathBuf::from("/srv/mail box"));
        assert_eq!(mounts[1].fs_type, "ext4");
        assert_eq!(mounts[1].source, "/dev/loop7");
        assert_eq!(mounts[2].options, "ro,relatime");
    }

    #[test]
    fn octal_escapes_at_the_end_are_decoded() {
        assert_eq!(unescape("a\\134"), "a\\");
        assert_eq!(unescape("a\\13"), "a\\13");
        assert_eq!(unescape("plain"), "plain");
    }
}
