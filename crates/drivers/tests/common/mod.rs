//! Helpers shared by the driver tests: running tools, throw-away network
//! namespaces and loop devices that clean up after themselves, and threads
//! that enter a namespace and run async code there.
#![allow(dead_code)] // each test binary uses a different part

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::CloneFlags;

/// These tests change network and mount namespaces: they need root, and
/// fail (rather than skip) without it, so a green run always means they ran.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "driver tests need root (network namespaces, loop devices, mounts)"
    );
}

/// Runs a tool, panicking with its stderr if it fails; returns stdout.
pub fn run(program: &str, arguments: &[&str]) -> String {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {arguments:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A name no other test of this run (or of a concurrent run) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs async `work` on a fresh current-thread runtime.
pub fn block_on<F: Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(work)
}

/// A network namespace deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// `ip -n <name> <arguments>`.
    pub fn ip(&self, arguments: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(arguments);
        run("ip", &full)
    }

    /// Runs `work` on a thread that entered this namespace. Sockets opened
    /// there stay in this namespace wherever they are used afterwards.
    pub fn enter<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let path = PathBuf::from(format!("/run/netns/{}", self.name));
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = File::open(&path).expect("open netns file");
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                    work()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the interfaces inside it.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Runs `work` on a thread with a private mount namespace whose mounts do
/// not propagate to the host; the namespace, and whatever is still mounted
/// in it, goes away with the thread.
pub fn in_private_mount_namespace<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::unshare(CloneFlags::CLONE_NEWNS).expect("unshare mount namespace");
                nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .expect("make / private");
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A loop device over a fresh ext4 image in a temp dir, detached on drop.
pub struct LoopDevice {
    pub device: PathBuf,
    _image_dir: tempfile::TempDir,
}

impl LoopDevice {
    pub fn new_ext4() -> LoopDevice {
        let image_dir = tempfile::tempdir().expect("temp dir");
        let image = image_dir.path().join("volume.img");
        File::create(&image)
            .and_then(|file| file.set_len(32 * 1024 * 1024))
            .expect("create image");
        let image_str = image.to_str().expect("utf-8 path");
        run("mkfs.ext4", &["-q", "-F", image_str]);
        let device = run("losetup", &["--find", "--show", image_str])
            .trim()
            .to_string();
        assert!(
            device.starts_with("/dev/loop"),
            "losetup printed {device:?}"
        );
        LoopDevice {
            device: PathBuf::from(device),
            _image_dir: image_dir,
        }
    }

    pub fn path(&self) -> &Path {
        &self.device
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // A device still in use gets autoclear instead and detaches when
        // its last user (a dying mount namespace) lets go.
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
