//! The epoch file: invariant 2's fence on shared volumes.
//!
//! Every promotion writes its epoch into `<mount point>/.mailherd-epoch`.
//! A node whose epoch is lower than the one found there was superseded
//! while it was away (partitioned, frozen) and must not touch the volume.
//! The file is replaced atomically and durably (write a temporary file,
//! fsync it, rename it over, fsync the directory), so after a crash it holds
//! either the old or the new epoch, never a torn one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::DriverError;

/// The epoch file's name at the root of a mounted volume.
pub const EPOCH_FILE: &str = ".mailherd-epoch";
const EPOCH_TEMP_FILE: &str = ".mailherd-epoch.tmp";

/// Reads the epoch recorded under `mount_point`; `None` if the volume has
/// never been claimed.
pub fn read_epoch(mount_point: &Path) -> Result<Option<u64>, DriverError> {
    let path = mount_point.join(EPOCH_FILE);
    let content = match std::fs::read_to_string(&path) {
        Ok(content) => content,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DriverError::Io {
                op: "read",
                path,
                source,
            })
        }
    };
    // Refuse rather than guess: a file that is not ours to parse may have
    // been written by something that also writes to the volume.
    content
        .trim()
        .parse::<u64>()
        .map(Some)
        .map_err(|_| DriverError::EpochFileCorrupt {
            path,
            content: content.chars().take(64).collect(),
        })
}

/// Refuses a volume carrying a higher epoch than `ours`, else records
/// `ours` on it durably.
pub fn claim_epoch(volume: &str, mount_point: &Path, ours: u64) -> Result<(), DriverError> {
    match read_epoch(mount_point)? {
        Some(found) if found > ours => {
            return Err(DriverError::StaleEpoch {
                volume: volume.to_string(),
                ours,
                found,
            })
        }
        Some(found) if found == ours => return Ok(()),
        _ => {}
    }
    write_epoch(mount_point, ours)
}

fn write_epoch(mount_point: &Path, epoch: u64) -> Result<(), DriverError> {
    let temp_path = mount_point.join(EPOCH_TEMP_FILE);
    let final_path = mount_point.join(EPOCH_FILE);
    let io_error = |op: &'static str, path: &PathBuf| {
        let path = path.clone();
        move |source| DriverError::Io { op, path, source }
    };
    let mut file = File::create(&temp_path).map_err(io_error("create", &temp_path))?;
    file.write_all(format!("{epoch}\n").as_bytes())
        .map_err(io_error("write", &temp_path))?;
    file.sync_all().map_err(io_error("fsync", &temp_path))?;
    drop(file);
    std::fs::rename(&temp_path, &final_path).map_err(io_error("rename into place", &final_path))?;
    // The rename is only durable once the directory entry is.
    File::open(mount_point)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error("fsync directory", &mount_point.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_only_move_forward() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        assert_eq!(read_epoch(root).unwrap(), None);
        claim_epoch("mail", root, 3).unwrap();
        assert_eq!(read_epoch(root).unwrap(), Some(3));
        claim_epoch("mail", root, 3).unwrap();
        claim_epoch("mail", root, 9).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(EPOCH_FILE)).unwrap(),
            "9\n"
        );
        match claim_epoch("mail", root, 8) {
            Err(DriverError::StaleEpoch {
                volume,
                ours,
                found,
            }) => {
                assert_eq!((volume.as_str(), ours, found), ("mail", 8, 9));
            }
            other => panic!("expected StaleEpoch, got {other:?}"),
        }
        assert_eq!(
            read_epoch(root).unwrap(),
            Some(9),
            "a refused claim writes nothing"
        );
        assert!(!root.join(EPOCH_TEMP_FILE).exists());
    }

    #[test]
    fn a_garbled_epoch_file_is_refused_not_overwritten() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join(EPOCH_FILE), "seven\n").unwrap();
        let error = claim_epoch("mail", directory.path(), 100).unwrap_err();
        assert!(
            matches!(error, DriverError::EpochFileCorrupt { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("seven"), "{error}");
    }
}
