//! The shared volume: an image file, one loop device, ext4.
//!
//! Every mail node sees the same `/dev/loopN`, as servers see one SAN volume;
//! only the master mounts it, in its own private mount namespace (the agent's
//! `local` volume driver does that). `up` prepares the file system once, in a
//! throw-away mount namespace, so a crash cannot leave a mount on the host.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::host::run;
use crate::state::LabState;

/// Creates a sparse image file of `size` bytes.
pub fn create_image(path: &Path, size: u64) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.set_len(size)
        .with_context(|| format!("cannot size {}", path.display()))?;
    Ok(())
}

/// Attaches `image` to a free loop device and returns the device.
pub fn attach_loop(image: &Path) -> Result<PathBuf> {
    let image = image.to_str().context("the image path is not UTF-8")?;
    let device = run("losetup", &["--find", "--show", image])
        .context("cannot attach the volume image to a loop device")?;
    Ok(PathBuf::from(device.trim()))
}

pub fn make_filesystem(device: &Path) -> Result<()> {
    let device = device.to_str().context("the device path is not UTF-8")?;
    run("mkfs.ext4", &["-q", "-F", "-L", "mailherd-lab", device])
        .context("cannot make the volume's file system")?;
    Ok(())
}

/// Loop devices whose backing file lies inside `lab_dir` (also found when
/// the image was already deleted: losetup then appends " (deleted)").
pub fn loop_devices_under(lab_dir: &Path) -> Result<Vec<PathBuf>> {
    let listing = run(
        "losetup",
        &[
            "--list",
            "--noheadings",
            "--raw",
            "--output",
            "NAME,BACK-FILE",
        ],
    )?;
    Ok(parse_loop_listing(&listing, lab_dir))
}

fn parse_loop_listing(listing: &str, lab_dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}/", lab_dir.display());
    listing
        .lines()
        .filter_map(|line| {
            let (name, back_file) = line.split_once(' ')?;
            // `--raw` escapes spaces in paths as \x20; ours have none.
            back_file.starts_with(&prefix).then(|| PathBuf::from(name))
        })
        .collect()
}

pub fn detach_loop(device: &Path) -> Result<()> {
    let device = device.to_str().context("the device path is not UTF-8")?;
    run("losetup", &["--detach", device])?;
    Ok(())
}

/// Runs the generated preparation script (see
/// [`stack::volume_preparation_script`](crate::stack::volume_preparation_script))
/// in a private mount namespace: the volume is mounted only for that script.
pub fn prepare(state: &LabState) -> Result<()> {
    run_preparation(state, &crate::stack::volume_preparation_script(state)?)
}

/// `--storage btrfs`: one btrfs disk per mail node (a sparse image on the
/// lab's tmpfs, a loop device), recorded in the state file at once so that
/// `down` finds them after a crash.
pub fn create_pools(state: &mut LabState) -> Result<()> {
    for index in 0..state.nodes.len() {
        if !state.nodes[index].is_mail() {
            continue;
        }
        let image = state.nodes[index].pool_image();
        std::fs::create_dir_all(&state.nodes[index].dir)?;
        create_image(&image, crate::topology::VOLUME_SIZE_BYTES)?;
        let device = attach_loop(&image)?;
        state.nodes[index].pool_device = Some(device.clone());
        state.save()?;
        let device = device.to_str().context("the device path is not UTF-8")?;
        run(
            "mkfs.btrfs",
            &["-q", "-f", "-L", "mailherd-lab-pool", device],
        )
        .with_context(|| {
            format!(
                "cannot make the btrfs disk of node {}",
                state.nodes[index].name
            )
        })?;
    }
    Ok(())
}

/// `--storage btrfs`: fills a seed subvolume on the first mail node's disk
/// with what the shared volume would hold, snapshots it, and sends that
/// snapshot to every other mail node with `btrfs send | btrfs receive`:
/// every node starts with the same complete snapshot (as an operator
/// seeds a new cluster), so whichever is elected first starts from it.
pub fn prepare_pools(state: &LabState) -> Result<()> {
    let mail: Vec<_> = state.nodes.iter().filter(|node| node.is_mail()).collect();
    let first = mail.first().context("a lab has mail nodes")?;
    let seed = mailherd_drivers::replication::SnapshotName::now(0, "seed").to_string();
    let quote = |path: &Path| crate::stack::sh_quote(&path.display().to_string());
    let mount = |node: &crate::state::NodeState| -> Result<String> {
        let device = node
            .pool_device
            .as_deref()
            .with_context(|| format!("node {} has no btrfs disk", node.name))?;
        Ok(format!(
            "mkdir -p {fs}\nmount -t btrfs {device} {fs}\nmkdir -p {pool}/snapshots {pool}/retired\n",
            fs = quote(&node.pool_fs()),
            device = quote(device),
            pool = quote(&node.pool()),
        ))
    };
    let mut script = String::from(
        "#!/bin/sh\n\
         # Generated by mailherd-lab: seeds every mail node's btrfs disk once at `up`.\n\
         # Runs in a private mount namespace, so its mounts vanish with it.\n\
         set -eu\n\
         PATH=/usr/sbin:/usr/bin:/sbin:/bin\n",
    );
    script.push_str(&format!("MNT={}\n", quote(&state.volume.mount_point)));
    script.push_str(&mount(first)?);
    let seed_subvolume = first.pool().join("seed");
    script.push_str(&format!(
        "btrfs -q subvolume create {seed_subvolume}\nmount --bind {seed_subvolume} \"$MNT\"\n",
        seed_subvolume = quote(&seed_subvolume)
    ));
    script.push_str(&crate::stack::volume_content_script(state)?);
    let snapshot = first.pool().join("snapshots").join(&seed);
    script.push_str(&format!(
        "umount \"$MNT\"\nbtrfs -q subvolume snapshot -r {seed_subvolume} {snapshot}\nbtrfs -q subvolume delete {seed_subvolume}\n",
        seed_subvolume = quote(&seed_subvolume),
        snapshot = quote(&snapshot),
    ));
    for node in &mail[1..] {
        script.push_str(&mount(node)?);
        script.push_str(&format!(
            "btrfs send -q {snapshot} | btrfs receive -q {snapshots}\n",
            snapshot = quote(&snapshot),
            snapshots = quote(&node.pool().join("snapshots")),
        ));
    }
    run_preparation(state, &script)
}

fn run_preparation(state: &LabState, text: &str) -> Result<()> {
    let script = state.lab_dir.join("prepare-volume.sh");
    std::fs::write(&script, text).with_context(|| format!("cannot write {}", script.display()))?;
    let log = state.lab_dir.join("prepare-volume.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "/bin/sh"])
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("cannot run unshare")?;
    if !status.success() {
        bail!(
            "preparing the volume failed ({status}); {} says:\n{}",
            log.display(),
            crate::host::tail(&log, 20)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_loop_devices_backed_by_lab_files() {
        let listing = "/dev/loop0 /var/lib/docker/devicemapper/data\n\
                       /dev/loop3 /var/lib/mailherd-lab/volume.img\n\
                       /dev/loop4 /var/lib/mailherd-lab/volume.img\\x20(deleted)\n\
                       /dev/loop5 /var/lib/mailherd-lab-other/volume.img\n";
        let found = parse_loop_listing(listing, Path::new("/var/lib/mailherd-lab"));
        assert_eq!(
            found,
            [PathBuf::from("/dev/loop3"), PathBuf::from("/dev/loop4")]
        );
    }
}
