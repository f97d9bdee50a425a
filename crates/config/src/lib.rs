//! mailherd's configuration: one TOML file per node.
//!
//! [`Config::load`] reads and parses a file, then [`Config::validate`] checks
//! everything serde cannot (references between sections, timing
//! relationships, addresses). Every problem becomes a [`Problem`] naming the
//! file, the line and the dotted key, and all problems are reported at once,
//! so an operator fixes a file in one pass.
//!
//! # Layout
//! - this file: the typed schema;
//! - [`validate`]: cross-field checks;
//! - [`locate`]: maps a dotted key back to its line in the source text.

pub mod locate;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use validate::{Problem, Problems};

/// The default place of the config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mailherd/mailherd.toml";

/// One node's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub cluster: ClusterSection,
    /// Every voter of the cluster, this node included.
    #[serde(rename = "members")]
    pub members: Vec<Member>,
    pub api: ApiSection,
    #[serde(default)]
    pub floating_ip: Option<FloatingIpSection>,
    #[serde(default)]
    pub volumes: Vec<VolumeSection>,
    #[serde(default)]
    pub services: Option<ServicesSection>,
    #[serde(default)]
    pub checks: Vec<CheckSection>,
    /// Mutual TLS on the peer channel (design §2 invariant 7). Without it
    /// the peer channel is plain, unauthenticated HTTP.
    #[serde(default)]
    pub tls: Option<TlsSection>,
}

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Must match one `[[members]]` entry's `name`.
    pub name: String,
    /// Where the Raft log, vote and state machine are kept (redb files).
    pub data_dir: PathBuf,
}

/// Cluster-wide settings; every node should carry the same values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
    /// `fast` (LAN/cloud DC) or `safe` (slow networks); individual values
    /// below override the profile.
    #[serde(default)]
    pub timing: TimingProfile,
    pub lease_ms: Option<u64>,
    pub drift_margin_ms: Option<u64>,
    pub renew_interval_ms: Option<u64>,
    pub fence_budget_ms: Option<u64>,
    pub election_timeout_min_ms: Option<u64>,
    pub election_timeout_max_ms: Option<u64>,
    pub heartbeat_interval_ms: Option<u64>,
    /// How long after a promotion the new master's checks may fail without
    /// counting (the stack is starting).
    pub grace_ms: Option<u64>,
    /// How long a node that released the role because of a failure stays
    /// ineligible before it offers itself again.
    pub fault_cooldown_ms: Option<u64>,
    /// Circuit breaker: at most this many automatic failovers ...
    #[serde(default = "default_breaker_max_failovers")]
    pub breaker_max_failovers: usize,
    /// ... within this many seconds (design §4: 2 in an hour).
    #[serde(default = "default_breaker_window_s")]
    pub breaker_window_s: u64,
    /// A recovered node of higher priority takes the role back (by a
    /// planned switchover). Off by default: every move is an interruption.
    #[serde(default)]
    pub preempt: bool,
}

fn default_breaker_max_failovers() -> usize {
    2
}

fn default_breaker_window_s() -> u64 {
    3_600
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingProfile {
    #[default]
    Fast,
    Safe,
}

/// The effective timing after applying the profile and overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timing {
    pub lease: mailherd_core::LeaseTiming,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub grace_ms: u64,
    pub fault_cooldown_ms: u64,
}

impl ClusterSection {
    pub fn breaker(&self) -> mailherd_core::decider::BreakerPolicy {
        mailherd_core::decider::BreakerPolicy {
            max_failovers: self.breaker_max_failovers,
            window_ms: self.breaker_window_s.saturating_mul(1_000),
        }
    }

    pub fn timing(&self) -> Timing {
        let (lease, drift, election_min, election_max, heartbeat, grace) = match self.timing {
            TimingProfile::Fast => (500, 100, 150, 300, 50, 2_000),
            TimingProfile::Safe => (3_000, 500, 1_000, 2_000, 250, 30_000),
        };
        let lease_ms = self.lease_ms.unwrap_or(lease);
        Timing {
            lease: mailherd_core::LeaseTiming {
                lease_ms,
                drift_margin_ms: self.drift_margin_ms.unwrap_or(drift),
                renew_interval_ms: self.renew_interval_ms.unwrap_or(lease_ms / 5),
                fence_budget_ms: self.fence_budget_ms.unwrap_or(lease_ms * 3 / 10),
            },
            election_timeout_min_ms: self.election_timeout_min_ms.unwrap_or(election_min),
            election_timeout_max_ms: self.election_timeout_max_ms.unwrap_or(election_max),
            heartbeat_interval_ms: self.heartbeat_interval_ms.unwrap_or(heartbeat),
            grace_ms: self.grace_ms.unwrap_or(grace),
            fault_cooldown_ms: self.fault_cooldown_ms.unwrap_or(30_000),
        }
    }
}

/// A voter of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub name: String,
    /// Raft node id; unique, non-zero.
    pub id: u64,
    #[serde(default)]
    pub role: MemberRole,
    /// Higher wins when the decider picks a master.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Address of the member's peer endpoint (Raft and forwarded proposals).
    pub peer: SocketAddr,
    /// Address of the member's HTTP API.
    pub api: SocketAddr,
}

fn default_priority() -> u32 {
    100
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Can hold the master role.
    #[default]
    Mail,
    /// Votes only; never holds the role.
    Witness,
}

/// Where this node's HTTP API and peer endpoint listen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub listen: SocketAddr,
    pub peer_listen: SocketAddr,
    /// A file holding the token that `POST /v1/...` requests must present
    /// (`Authorization: Bearer <token>`). Without it the control endpoints
    /// refuse every request. The token is never logged or served.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// The cluster CA and this node's certificate for the peer channel.
///
/// All three files go together (validation refuses a partial section):
/// peers must present a certificate signed by `ca_file`, and this node
/// presents `cert_file` both as server and as client. `mailherd tls init-ca`
/// and `mailherd tls issue` make them. The fields are optional only so that
/// a missing one is reported with the file, line and key like every other
/// problem; use [`TlsSection::files`] to read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The cluster CA certificate (PEM), the only trusted root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the CA, with the node's
    /// peer IP address and name as subject alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// This node's private key (PEM). Never logged or served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// The three files of a complete `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TlsSection {
    /// A section naming all three files.
    pub fn new(
        ca_file: impl Into<PathBuf>,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> TlsSection {
        TlsSection {
            ca_file: Some(ca_file.into()),
            cert_file: Some(cert_file.into()),
            key_file: Some(key_file.into()),
        }
    }

    /// The three files; `None` when one is missing, which a validated
    /// config never has.
    pub fn files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            ca_file: self.ca_file.clone()?,
            cert_file: self.cert_file.clone()?,
            key_file: self.key_file.clone()?,
        })
    }
}

/// The floating IP the master holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpSection {
    pub driver: FloatingIpDriver,
    /// Address with prefix length, e.g. `10.77.0.100/24`.
    pub address: String,
    /// Interface the address is added to.
    pub interface: String,
    /// Gratuitous ARP refresh period while master; 0 turns refresh off.
    #[serde(default = "default_garp_refresh_ms")]
    pub garp_refresh_ms: u64,
}

fn default_garp_refresh_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloatingIpDriver {
    Local,
}

/// A volume the master mounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSection {
    pub name: String,
    pub driver: VolumeDriver,
    /// Block device, e.g. `/dev/loop7` or `/dev/disk/by-id/...`.
    pub device: PathBuf,
    pub mount_point: PathBuf,
    #[serde(default = "default_fs_type")]
    pub fs_type: String,
    #[serde(default)]
    pub mount_options: String,
    /// How long to wait for the device to appear on promotion.
    #[serde(default = "default_device_wait_ms")]
    pub device_wait_ms: u64,
}

fn default_fs_type() -> String {
    "ext4".to_string()
}

fn default_device_wait_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeDriver {
    Local,
}

/// How the mail stack is started and stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesSection {
    pub driver: ServicesDriver,
    /// argv of the start command (`command` driver).
    #[serde(default)]
    pub start: Vec<String>,
    /// argv of the stop command.
    #[serde(default)]
    pub stop: Vec<String>,
    /// argv of a status command: exit 0 means running.
    #[serde(default)]
    pub status: Vec<String>,
    /// argv run after a stop that timed out, to kill what is left.
    #[serde(default)]
    pub kill: Vec<String>,
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
    /// Extra environment for the commands.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_start_timeout_ms() -> u64 {
    30_000
}

fn default_stop_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServicesDriver {
    Command,
}

/// One health check of the mail stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    pub name: String,
    pub kind: CheckKind,
    /// `host:port` to probe.
    pub address: SocketAddr,
    #[serde(default = "default_check_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_fall")]
    pub fall: u32,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_true")]
    pub critical: bool,
    /// Name sent in EHLO (smtp checks).
    #[serde(default)]
    pub ehlo_name: Option<String>,
}

fn default_check_interval_ms() -> u64 {
    200
}
fn default_check_timeout_ms() -> u64 {
    500
}
fn default_fall() -> u32 {
    2
}
fn default_rise() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The port accepts a TCP connection.
    Tcp,
    /// An SMTP `220` banner, then `250` to EHLO.
    Smtp,
    /// An IMAP `* OK` greeting.
    Imap,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Problems),
}

impl ApiSection {
    /// Reads the control token from `token_file` (trimmed). `None` when no
    /// file is configured.
    pub fn read_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Some(text.trim().to_string()))
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text).map_err(ConfigError::Invalid)
    }

    /// Parses and validates `text`; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Problems> {
        let config: Config =
            toml::from_str(text).map_err(|error| Problems::from_parse_error(path, text, &error))?;
        let problems = validate::validate(&config, path, text);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Renders the config as TOML (used by the lab to write node configs).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises")
    }

    /// This node's own `[[members]]` entry. Validation guarantees it exists.
    pub fn me(&self) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == self.node.name)
            .expect("validated config has the node among its members")
    }

    pub fn member_by_id(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}
