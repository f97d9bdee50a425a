//! [`DriverError`]: what a driver could not do, naming the resource and the
//! OS error, so an operator reading one line of a promotion record knows
//! which address, device or command failed and why.

use std::path::PathBuf;

use nix::errno::Errno;

/// Why a driver call failed.
///
/// Every variant names the resource (address and interface, device and mount
/// point, command) and carries the OS error or the command's own words.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The config section cannot be turned into a driver.
    #[error("invalid {section} config: {reason}")]
    InvalidConfig {
        section: &'static str,
        reason: String,
    },

    /// The driver does not support what the config asks for.
    #[error("{driver} driver does not support {what}")]
    Unsupported { driver: &'static str, what: String },

    /// A call needs a setting the config left out.
    #[error("{what} is not configured")]
    NotConfigured { what: &'static str },

    /// The named interface is not in this network namespace (or netlink
    /// could not say).
    #[error("interface {interface} not found: {reason}")]
    InterfaceNotFound { interface: String, reason: String },

    /// A netlink request about an address failed.
    #[error("netlink {op} of {address} on {interface} failed: {reason}")]
    Netlink {
        op: &'static str,
        address: String,
        interface: String,
        reason: String,
    },

    /// The gratuitous ARP announcing the address could not be sent.
    #[error("cannot send gratuitous arp for {address} on {interface}: {reason}")]
    Garp {
        address: String,
        interface: String,
        reason: String,
    },

    /// The block device did not appear in time.
    #[error("device {} did not appear within {waited_ms} ms", device.display())]
    DeviceMissing { device: PathBuf, waited_ms: u64 },

    /// The device path exists but is not a block device.
    #[error("{} is not a block device", device.display())]
    NotBlockDevice { device: PathBuf },

    /// mount(2) failed.
    #[error("cannot mount {} on {} ({fs_type}): {errno}", device.display(), mount_point.display())]
    Mount {
        device: PathBuf,
        mount_point: PathBuf,
        fs_type: String,
        errno: Errno,
    },

    /// Something other than our device is mounted on the mount point.
    #[error("{} already has {found} mounted on it, not {}", mount_point.display(), device.display())]
    MountPointTaken {
        device: PathBuf,
        mount_point: PathBuf,
        found: String,
    },

    /// umount2(2) failed with an error other than "busy".
    #[error("cannot unmount {}: {errno}", mount_point.display())]
    Unmount { mount_point: PathBuf, errno: Errno },

    /// The volume was mounted but a probe file could not be written and
    /// synced (read-only, full, I/O errors).
    #[error("volume {volume} on {} is not writable: {source}", mount_point.display())]
    NotWritable {
        volume: String,
        mount_point: PathBuf,
        source: std::io::Error,
    },

    /// An operation that needs the volume mounted found it not mounted.
    #[error("volume {volume} is not mounted on {}", mount_point.display())]
    NotMounted {
        volume: String,
        mount_point: PathBuf,
    },

    /// The volume carries a higher epoch than ours: a newer master used it,
    /// so we must not.
    #[error("volume {volume} carries epoch {found}, newer than ours ({ours}): refusing to use it")]
    StaleEpoch {
        volume: String,
        ours: u64,
        found: u64,
    },

    /// The epoch file holds something that is not an epoch.
    #[error("epoch file {} holds {content:?}, not an epoch number", path.display())]
    EpochFileCorrupt { path: PathBuf, content: String },

    /// Some other file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A database replication operation failed (the error names the node
    /// and its address).
    #[error(transparent)]
    Database(#[from] mailherd_mariadb::DbError),

    /// A command could not be started at all.
    #[error("cannot run {what} `{argv0}`: {source}")]
    Spawn {
        what: &'static str,
        argv0: String,
        source: std::io::Error,
    },

    /// A command ran and failed.
    #[error("{what} `{argv0}` failed ({status}){}", stderr_suffix(stderr_tail))]
    Command {
        what: &'static str,
        argv0: String,
        status: String,
        stderr_tail: String,
    },

    /// A cloud API move failed: which resource, which step, why (the
    /// client's error names the request, never the token), and what had
    /// been done before, so a half-done move is never reported as nothing.
    #[error("{resource}: {step} failed: {reason}{}", done_suffix(done))]
    Cloud {
        resource: String,
        step: String,
        reason: String,
        /// The steps that did succeed before, in order.
        done: Vec<String>,
    },

    /// A Docker Engine API request failed (the `compose` driver).
    #[error("Docker Engine at {}: {doing}: {reason}", socket.display())]
    DockerApi {
        socket: PathBuf,
        doing: String,
        reason: String,
    },

    /// Containers still run after they were killed.
    #[error("containers of compose project {project} still run after the kill: {containers}")]
    ContainersLeft { project: String, containers: String },

    /// Something did not finish in time.
    #[error("{what} did not finish within {after_ms} ms")]
    Timeout { what: String, after_ms: u64 },

    /// The stop command failed and so did the kill command run after it:
    /// the stack may still be running.
    #[error("stop failed ({stop}) and kill failed too ({kill})")]
    StopAndKillFailed {
        stop: Box<DriverError>,
        kill: Box<DriverError>,
    },
}

fn done_suffix(done: &[String]) -> String {
    if done.is_empty() {
        String::new()
    } else {
        format!(" (done before: {})", done.join(", "))
    }
}

fn stderr_suffix(stderr_tail: &str) -> String {
    if stderr_tail.is_empty() {
        String::new()
    } else {
        format!(": {stderr_tail}")
    }
}
