//! `down`: remove everything `up` made, also after a crash of the lab.
//!
//! Discovery does not trust the state file alone: namespaces are found by
//! their `mh-` prefix, loop devices by their backing file inside the lab
//! directory, mounts by their mount point. The order matters:
//!
//! 1. kill every process in every lab namespace (the nodes' PID-namespace
//!    inits first, which takes their mount namespaces and volume mounts
//!    with them);
//! 2. unmount anything left mounted under the lab directory on the host;
//! 3. detach the loop devices (only now nothing holds them);
//! 4. delete the namespaces, which deletes every veth and the bridge;
//! 5. delete the lab directory, after checking nothing is mounted inside.
//!
//! The lab adds no firewall rules (the bridge lives in its own namespace,
//! out of reach of the host's iptables), so there are none to remove.
//! Every step runs even when an earlier one failed; the errors are reported
//! together at the end. With nothing up, `down` succeeds and says so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::state::LabState;
use crate::topology;

/// What a teardown removed, for its report.
#[derive(Debug, Default)]
pub struct Removed {
    pub namespaces: Vec<String>,
    pub loop_devices: Vec<PathBuf>,
    pub mounts: Vec<PathBuf>,
    pub lab_dir: bool,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.loop_devices.is_empty()
            && self.mounts.is_empty()
            && !self.lab_dir
    }
}

pub fn run() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("mailherd-lab down needs root");
    }
    let removed = teardown()?;
    if removed.is_empty() {
        println!("no lab was up; nothing to remove");
    } else {
        println!(
            "lab down: removed {} namespaces ({}), {} loop devices, {} mounts{}",
            removed.namespaces.len(),
            removed.namespaces.join(", "),
            removed.loop_devices.len(),
            removed.mounts.len(),
            if removed.lab_dir {
                format!(", {}", topology::lab_dir().display())
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Removes everything; `up` calls this too when it fails.
pub fn teardown() -> Result<Removed> {
    let lab_dir = topology::lab_dir();
    let mut removed = Removed::default();
    let mut errors: Vec<String> = Vec::new();

    let state = match topology::state_file() {
        path if path.exists() => match LabState::load(&path) {
            Ok(state) => Some(state),
            Err(error) => {
                eprintln!("warning: {error:#}; finding the lab's parts by name instead");
                None
            }
        },
        _ => None,
    };
    let mut namespaces: BTreeSet<String> =
        crate::netns::list_lab_namespaces()?.into_iter().collect();
    if let Some(state) = &state {
        namespaces.extend(
            state
                .namespaces()
                .into_iter()
                .filter(|name| crate::netns::exists(name)),
        );
    }

    // 1. Processes. Node inits first: their death ends the node's PID
    //    namespace, so the rest goes at once rather than one by one.
    for namespace in &namespaces {
        if let Ok(Some(init)) = crate::node::init_pid(namespace) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    for namespace in &namespaces {
        if let Err(error) = crate::node::kill_namespace_processes(namespace) {
            errors.push(format!("{error:#}"));
        }
    }

    // 2. Host mounts under the lab dir (a crashed preparation, a hand-made
    //    mount), but not the lab's own tmpfs: the volume image is in it.
    match unmount_under(&lab_dir, Depth::Below) {
        Ok(mounts) => removed.mounts = mounts,
        Err(error) => errors.push(format!("{error:#}")),
    }

    // 3. Loop devices, then the tmpfs that held their images.
    match detach_loop_devices(&lab_dir) {
        Ok(devices) => removed.loop_devices = devices,
        Err(error) => errors.push(format!("{error:#}")),
    }
    match unmount_under(&lab_dir, Depth::Itself) {
        Ok(mounts) => removed.mounts.extend(mounts),
        Err(error) => errors.push(format!("{error:#}")),
    }

    // 4. Namespaces (and with them every veth and the bridge).
    for namespace in &namespaces {
        match crate::netns::delete(namespace) {
            Ok(()) => removed.namespaces.push(namespace.clone()),
            Err(error) => errors.push(format!("{error:#}")),
        }
    }

    // 5. Files, never while something is mounted inside (that would delete
    //    the volume's contents, or a host directory bound there).
    if lab_dir.exists() {
        match mounts_under(&lab_dir) {
            Ok(left) if left.is_empty() => match std::fs::remove_dir_all(&lab_dir) {
                Ok(()) => removed.lab_dir = true,
                Err(error) => errors.push(format!("cannot remove {}: {error}", lab_dir.display())),
            },
            Ok(left) => errors.push(format!(
                "not removing {}: still mounted there: {left:?}",
                lab_dir.display()
            )),
            Err(error) => errors.push(format!("{error:#}")),
        }
    }

    if !errors.is_empty() {
        bail!("down could not remove everything: {}", errors.join("; "));
    }
    Ok(removed)
}

/// Mount points at or below `dir` in the host mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    Ok(parse_mounts_under(&mountinfo, dir))
}

fn parse_mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(escaped.replace("\\040", " ")))
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect();
    // Deepest first, so inner mounts go before the ones they sit on.
    found.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    found.dedup();
    found
}

/// Which mounts [`unmount_under`] takes away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Those strictly inside the directory.
    Below,
    /// Those on the directory itself (every layer).
    Itself,
}

fn unmount_under(dir: &Path, depth: Depth) -> Result<Vec<PathBuf>> {
    let mut unmounted = Vec::new();
    // Stacked mounts show up once per layer: repeat until none is left.
    for _ in 0..16 {
        let mounts: Vec<PathBuf> = mounts_under(dir)?
            .into_iter()
            .filter(|mount_point| (mount_point == dir) == (depth == Depth::Itself))
            .collect();
        if mounts.is_empty() {
            return Ok(unmounted);
        }
        for mount_point in mounts {
            nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("cannot unmount {}", mount_point.display()))?;
            unmounted.push(mount_point);
        }
    }
    bail!("mounts under {} keep coming back", dir.display())
}

/// Detaches every loop device backed by a file in `lab_dir` and waits until
/// the kernel has let go of them (a device still mounted somewhere is only
/// marked for detaching).
fn detach_loop_devices(lab_dir: &Path) -> Result<Vec<PathBuf>> {
    let devices = crate::volume::loop_devices_under(lab_dir)?;
    for device in &devices {
        crate::volume::detach_loop(device)?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = crate::volume::loop_devices_under(lab_dir)?;
        if left.is_empty() {
            return Ok(devices);
        }
        if Instant::now() > deadline {
            bail!(
                "loop devices {left:?} are still in use (mounted in a namespace outside the lab?); \
                 see `grep loop /proc/*/mountinfo`"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_under_the_lab_dir_deepest_first() {
        let mountinfo = "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                         30 22 7:3 / /var/lib/mailherd-lab/mnt rw - ext4 /dev/loop3 rw\n\
                         31 30 7:3 /postfix-spool /var/lib/mailherd-lab/mnt/x rw - ext4 /dev/loop3 rw\n\
                         32 22 0:40 / /var/lib/mailherd-lab-other rw - tmpfs tmpfs rw\n";
        let found = parse_mounts_under(mountinfo, Path::new("/var/lib/mailherd-lab"));
        assert_eq!(
            found,
            [
                PathBuf::from("/var/lib/mailherd-lab/mnt/x"),
                PathBuf::from("/var/lib/mailherd-lab/mnt")
            ]
        );
    }
}
