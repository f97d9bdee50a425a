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
//! - [`locate`]: maps a dotted key back to its line in the source text;
//! - [`preset`]: `[preset]` (mailcow, classic) expanded into the services
//!   driver and checks it stands for;
//! - [`alerts`]: `[alerts]`, its channels, and `[uptime_kuma]`;
//! - [`front`]: `[haproxy]`, `[gateway]` and `[dns]`, what stands in front
//!   of the cluster (the `mailherd render` commands read them).
//! - [`mariadb`]: `[mariadb]` and its `[[mariadb.nodes]]` (GTID
//!   replication between the nodes' MariaDB servers).
//! - [`signup`]: `[signup]`, the self-service signup service and its backend.

pub mod alerts;
pub mod front;
pub mod locate;
pub mod mariadb;
pub mod preset;
pub mod signup;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use alerts::{AlertsSection, ChannelKind, ChannelSection, UptimeKumaSection};
pub use front::{DnsSection, GatewaySection, HaproxySection, HaproxyTls, TcpService};
pub use mariadb::{MariadbNode, MariadbSection, ReplicationMode};
pub use preset::{PresetName, PresetSection};
pub use signup::{DovecotBackendSection, MailcowBackendSection, SignupBackend, SignupSection};
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
    /// A whole stack's services driver and checks in a few lines
    /// (mailcow, classic); what `[services]` and `[[checks]]` say wins.
    /// Already expanded into `services` and `checks` in a parsed config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<PresetSection>,
    #[serde(default)]
    pub services: Option<ServicesSection>,
    #[serde(default)]
    pub checks: Vec<CheckSection>,
    /// Mutual TLS on the peer channel (design §2 invariant 7). Without it
    /// the peer channel is plain, unauthenticated HTTP.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// The watchdog that resets this node if its agent stops while it may
    /// hold the role (a killed or frozen agent).
    #[serde(default)]
    pub watchdog: WatchdogSection,
    /// The Hetzner Cloud API, for `driver = "hetzner"` floating IPs and
    /// volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hetzner: Option<HetznerSection>,
    /// Alert channels (webhook, ntfy, Slack, Telegram, e-mail) and the rules
    /// that keep them from flooding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsSection>,
    /// Heartbeats to an Uptime Kuma push monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_kuma: Option<UptimeKumaSection>,
    /// HAProxy in front of the nodes (`mailherd render haproxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy: Option<HaproxySection>,
    /// A Postfix mail gateway in front of the cluster (`mailherd render
    /// postfix-gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySection>,
    /// The cluster's DNS records (`mailherd render dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSection>,
    /// The nodes' MariaDB servers, replicated from the master's (`mailherd
    /// db ...`, and a promotion step that makes the new master's writable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mariadb: Option<MariadbSection>,
    /// The reconciler: how often the host is compared with the role.
    #[serde(default)]
    pub reconciler: ReconcilerSection,
    /// The garbage collector: how often it runs, how long history is kept.
    #[serde(default)]
    pub gc: GcSection,
    /// The self-service signup service (`mailherd signup`); the agent
    /// ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signup: Option<SignupSection>,
}

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Must match one `[[members]]` entry's `name`.
    pub name: String,
    /// Where the Raft log, vote and state machine are kept (redb files).
    pub data_dir: PathBuf,
    /// This node is being added to a running cluster (`mailherd members
    /// add`): it never starts a cluster of its own, it waits to be added.
    #[serde(default)]
    pub join: bool,
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
    /// Address with prefix length, e.g. `10.77.0.100/24`; for `hetzner`
    /// the floating IP itself (`/32` is implied), which must be the one the
    /// API shows for `floating_ip_id`.
    pub address: String,
    /// Interface the address is added to.
    pub interface: String,
    /// `hetzner`: the floating IP's id in the Hetzner Cloud project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_ip_id: Option<u64>,
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
    /// Netlink add/remove and gratuitous ARP on a shared segment.
    Local,
    /// Assigned to this server through the Hetzner Cloud API, then added
    /// locally as a /32.
    Hetzner,
}

/// A volume the master mounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSection {
    pub name: String,
    pub driver: VolumeDriver,
    /// Block device, e.g. `/dev/loop7` or `/dev/disk/by-id/...` (`local`
    /// only: a `hetzner` volume's device is the API's `linux_device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    /// `hetzner`: the volume's id in the Hetzner Cloud project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<u64>,
    pub mount_point: PathBuf,
    #[serde(default = "default_fs_type")]
    pub fs_type: String,
    #[serde(default)]
    pub mount_options: String,
    /// How long to wait for the device to appear on promotion.
    #[serde(default = "default_device_wait_ms")]
    pub device_wait_ms: u64,
    /// `btrfs` and `zfs`: where this node keeps its copy of the data and
    /// how often the master ships snapshots of it to the other mail nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationSection>,
}

/// `[volumes.replication]`: storage replication for sites without shared
/// volumes. Every mail node has its own copy; the master takes a snapshot
/// every `interval_ms` and streams it (incrementally) to the others over
/// the peer channel. A promoted backup starts from its newest complete
/// snapshot: what was written after that snapshot is lost (the RPO).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSection {
    /// btrfs: a directory on a mounted btrfs file system that belongs to
    /// mailherd (it makes `live`, `snapshots/` and `retired/`
    /// there). zfs: a dataset (`tank/mailherd`) whose children mailherd
    /// manages.
    pub pool: String,
    #[serde(default = "default_replication_interval_ms")]
    pub interval_ms: u64,
    /// Complete snapshots each node keeps (the newest ones); at least 2, so
    /// a peer that missed one send still shares a parent with the master.
    #[serde(default = "default_replication_keep")]
    pub keep: usize,
    /// The longest one snapshot's transfer to one peer may take.
    #[serde(default = "default_replication_send_timeout_ms")]
    pub send_timeout_ms: u64,
}

fn default_replication_interval_ms() -> u64 {
    10_000
}

fn default_replication_keep() -> usize {
    6
}

fn default_replication_send_timeout_ms() -> u64 {
    300_000
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
    /// A block device that is simply present on the master.
    Local,
    /// Detached from whichever server holds it (the fence) and attached to
    /// this one through the Hetzner Cloud API.
    Hetzner,
    /// This node's own copy in a btrfs file system, replicated from the
    /// master with `btrfs send`/`receive` (`[volumes.replication]`).
    Btrfs,
    /// The same with ZFS datasets (`zfs send -i`/`zfs receive`).
    Zfs,
}

/// `[hetzner]`: how the `hetzner` drivers reach the Hetzner Cloud API and
/// which server this node is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HetznerSection {
    /// The API root, with its version (a simulator's in the lab).
    #[serde(default = "default_hetzner_api_url")]
    pub api_url: String,
    /// A file holding the API token (mode 0600). Without it the token comes
    /// from the environment variable `HCLOUD_TOKEN`. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// This server's id. Without it the agent asks the metadata service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u64>,
    /// The metadata service root (asked only without `server_id`).
    #[serde(default = "default_hetzner_metadata_url")]
    pub metadata_url: String,
    /// How long one action (assign, attach, detach) may run before the
    /// move fails.
    #[serde(default = "default_hetzner_action_timeout_ms")]
    pub action_timeout_ms: u64,
    /// How often a running action is polled (the official client: 500 ms).
    #[serde(default = "default_hetzner_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

/// The public Hetzner Cloud API.
pub const DEFAULT_HETZNER_API_URL: &str = "https://api.hetzner.cloud/v1";
/// The metadata service of a Hetzner Cloud server.
pub const DEFAULT_HETZNER_METADATA_URL: &str = "http://169.254.169.254";

fn default_hetzner_api_url() -> String {
    DEFAULT_HETZNER_API_URL.to_string()
}

fn default_hetzner_metadata_url() -> String {
    DEFAULT_HETZNER_METADATA_URL.to_string()
}

fn default_hetzner_action_timeout_ms() -> u64 {
    60_000
}

fn default_hetzner_poll_interval_ms() -> u64 {
    500
}

impl HetznerSection {
    /// A section with every default, for `server_id` (tests, the lab).
    pub fn new(api_url: impl Into<String>) -> HetznerSection {
        HetznerSection {
            api_url: api_url.into(),
            token_file: None,
            server_id: None,
            metadata_url: default_hetzner_metadata_url(),
            action_timeout_ms: default_hetzner_action_timeout_ms(),
            poll_interval_ms: default_hetzner_poll_interval_ms(),
        }
    }
}

/// How the mail stack is started and stopped.
///
/// The keys after `driver` apply to some drivers only; validation refuses a
/// key the driver does not use. Driver-specific keys are optional in the
/// type so that a missing one is reported with the file, line and key; the
/// accessors below give their defaults.
///
/// | driver | needs | may have |
/// | --- | --- | --- |
/// | `command` | `start`, `stop`, `status` | `kill` |
/// | `systemd` | `units` | `systemctl` |
/// | `compose` | `project`, `compose_file` | `compose_command`, `docker_socket` |
///
/// `start_timeout_ms`, `stop_timeout_ms` and `env` apply to every driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesSection {
    pub driver: ServicesDriver,
    /// argv of the start command (`command` driver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start: Vec<String>,
    /// argv of the stop command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// argv of a status command: exit 0 means running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<String>,
    /// argv run after a stop that timed out, to kill what is left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kill: Vec<String>,
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
    /// Extra environment for the commands.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,

    /// systemd: the units of the stack, started in this order, e.g.
    /// `["postfix.service", "dovecot.service"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// systemd: the `systemctl` program (default `systemctl`, found on
    /// `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemctl: Option<PathBuf>,

    /// compose: the compose project name (`-p`), e.g. mailcow's
    /// `mailcowdockerized` (`COMPOSE_PROJECT_NAME` in mailcow.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// compose: the compose file (`-f`); a `docker-compose.override.yml`
    /// beside it is used too, as compose does on its own. The commands run
    /// in its directory, so its `.env` is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_file: Option<PathBuf>,
    /// compose: the compose program as an argv prefix, e.g.
    /// `["docker", "compose"]` or `["docker-compose"]`. Default: `docker
    /// compose` when `docker compose version` works, else `docker-compose`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compose_command: Vec<String>,
    /// compose: the Docker Engine API socket (default
    /// `/var/run/docker.sock`), read for the containers' state and used to
    /// kill them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_socket: Option<PathBuf>,
}

/// The `systemctl` of a systemd driver without `systemctl`.
pub const DEFAULT_SYSTEMCTL: &str = "systemctl";

impl ServicesSection {
    /// A section for `driver` with the default timeouts and nothing else
    /// set; set the driver's keys with struct update syntax.
    pub fn new(driver: ServicesDriver) -> ServicesSection {
        ServicesSection {
            driver,
            start: Vec::new(),
            stop: Vec::new(),
            status: Vec::new(),
            kill: Vec::new(),
            start_timeout_ms: default_start_timeout_ms(),
            stop_timeout_ms: default_stop_timeout_ms(),
            env: BTreeMap::new(),
            units: Vec::new(),
            systemctl: None,
            project: None,
            compose_file: None,
            compose_command: Vec::new(),
            docker_socket: None,
        }
    }

    /// The `systemctl` program (`systemctl`, default `systemctl`).
    pub fn systemctl_program(&self) -> PathBuf {
        self.systemctl
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSTEMCTL))
    }

    /// The Docker Engine socket (`docker_socket`, default
    /// [`DEFAULT_DOCKER_SOCKET`]).
    pub fn docker_socket_path(&self) -> PathBuf {
        self.docker_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DOCKER_SOCKET))
    }
}

impl Default for ServicesSection {
    /// A `command` section with nothing set (which does not validate).
    fn default() -> Self {
        ServicesSection::new(ServicesDriver::Command)
    }
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
    /// Operator-given argv lists for start, stop, status and kill.
    Command,
    /// `systemctl start|stop|kill|is-active` on a list of units.
    Systemd,
    /// `docker compose -p P -f FILE up -d` / `down`, state from the Docker
    /// Engine API (mailcow).
    Compose,
}

impl ServicesDriver {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ServicesDriver::Command => "command",
            ServicesDriver::Systemd => "systemd",
            ServicesDriver::Compose => "compose",
        }
    }
}

/// One health check of the mail stack.
///
/// The keys common to every kind come first; the others apply to some kinds
/// only, and validation refuses a key the check's kind does not use (so a
/// typo'd kind does not silently ignore half the section). Kind-specific
/// keys are optional in the type so that a missing one is reported with the
/// file, line and key; the accessors below give their defaults.
///
/// | kind | needs | may have |
/// | --- | --- | --- |
/// | `tcp` | `address` | |
/// | `smtp` | `address` | `ehlo_name`, `tls` or `starttls`, `tls_verify`, `tls_ca_file`, `server_name`, `test_rcpt`, `test_from` |
/// | `imap`, `pop3` | `address` | `tls` or `starttls`, `tls_verify`, `tls_ca_file`, `server_name`, `user` with `password` or `password_file` |
/// | `http` | `address` | `path`, `expect_status`, `expect_body`, `server_name` |
/// | `https` | `address` | as `http`, and `tls_verify`, `tls_ca_file` |
/// | `docker` | `container`, or `compose_project` and `service` | `docker_socket` |
/// | `systemd` | `unit` | |
/// | `mariadb` | `address` or `socket`, `user` | `password` or `password_file` |
/// | `mariadb_replication` | `address` or `socket`, `user` | `password` or `password_file`, `max_lag_s` |
/// | `mount` | `mount_point` | |
/// | `postfix_queue` | `max_messages` | `queue_directory` |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    pub name: String,
    pub kind: CheckKind,
    /// `host:port` to probe (network kinds; `mariadb` unless `socket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    #[serde(default = "default_check_interval_ms")]
    pub interval_ms: u64,
    /// Bounds one whole attempt: connect, dialogue, verdict.
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_fall")]
    pub fall: u32,
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// A critical check that is down (after `fall` failed attempts) makes
    /// the node's verdict Down; a non-critical one only Degraded.
    #[serde(default = "default_true")]
    pub critical: bool,
    /// Name sent in EHLO (smtp checks).
    #[serde(default)]
    pub ehlo_name: Option<String>,

    /// TLS from the first byte (SMTPS 465, IMAPS 993, POP3S 995).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// Upgrade to TLS in the dialogue (SMTP/IMAP `STARTTLS`, POP3 `STLS`)
    /// and fail when the server does not offer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttls: Option<bool>,
    /// Verify the server's certificate (default true). `false` accepts any
    /// certificate, e.g. a lab's self-signed one; the handshake is still
    /// checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// Trust only the CA certificates in this PEM file instead of the
    /// system's roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// The name the server is known by: TLS server name (SNI and certificate
    /// verification) and the HTTP `Host`. Default: the address's IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,

    /// smtp: after EHLO, send a test message to this mailbox
    /// (`MAIL FROM`, `RCPT TO`, `DATA`) and expect `250` after the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_rcpt: Option<String>,
    /// smtp: the test message's sender; default `test_rcpt`, `""` is the
    /// null sender `<>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_from: Option<String>,

    /// imap/pop3/mariadb: log in as this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password, inline. Prefer `password_file`: a config file is read
    /// by more people than a secret should be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (trailing newline ignored), read at
    /// every attempt so a rotated password is picked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,

    /// http(s): the path requested (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// http(s): the status that passes (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// http(s): text the body must contain (case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,

    /// docker: the container's name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// docker: with `service`, every container labelled
    /// `com.docker.compose.project=<compose_project>` and
    /// `com.docker.compose.service=<service>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// docker: the Engine API socket (default `/var/run/docker.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_socket: Option<PathBuf>,

    /// systemd: the unit that must be active, e.g. `postfix.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,

    /// mariadb: a unix socket instead of `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// mariadb_replication: the most `Seconds_Behind_Master` that still
    /// passes (default [`DEFAULT_MAX_REPLICATION_LAG_S`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_s: Option<u64>,

    /// mount: the directory that must be a mount point and writable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<PathBuf>,

    /// postfix_queue: Postfix's `queue_directory` (default
    /// `/var/spool/postfix`; mailcow's is inside the postfix-vol-1 volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_directory: Option<PathBuf>,
    /// postfix_queue: the most messages (maildrop, incoming, active and
    /// deferred together) that still pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u64>,
}

/// The path of an http(s) check without `path`.
pub const DEFAULT_HTTP_PATH: &str = "/";
/// The passing status of an http(s) check without `expect_status`.
pub const DEFAULT_HTTP_STATUS: u16 = 200;
/// The Docker Engine API socket of a docker check without `docker_socket`.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The most replication lag a mariadb_replication check without
/// `max_lag_s` passes.
pub const DEFAULT_MAX_REPLICATION_LAG_S: u64 = 60;
/// Postfix's default `queue_directory`.
pub const DEFAULT_POSTFIX_QUEUE_DIRECTORY: &str = "/var/spool/postfix";

impl CheckSection {
    /// A check of `kind` with the default timing and no kind-specific keys;
    /// set the keys the kind needs with struct update syntax:
    /// `CheckSection { address: Some(a), ..CheckSection::new("smtp", CheckKind::Smtp) }`.
    pub fn new(name: impl Into<String>, kind: CheckKind) -> CheckSection {
        CheckSection {
            name: name.into(),
            kind,
            address: None,
            interval_ms: default_check_interval_ms(),
            timeout_ms: default_check_timeout_ms(),
            fall: default_fall(),
            rise: default_rise(),
            critical: true,
            ehlo_name: None,
            tls: None,
            starttls: None,
            tls_verify: None,
            tls_ca_file: None,
            server_name: None,
            test_rcpt: None,
            test_from: None,
            user: None,
            password: None,
            password_file: None,
            path: None,
            expect_status: None,
            expect_body: None,
            container: None,
            compose_project: None,
            service: None,
            docker_socket: None,
            unit: None,
            socket: None,
            max_lag_s: None,
            mount_point: None,
            queue_directory: None,
            max_messages: None,
        }
    }

    /// Whether the certificate is verified (`tls_verify`, default true).
    pub fn verifies_tls(&self) -> bool {
        self.tls_verify.unwrap_or(true)
    }

    /// The password from `password_file` (re-read at every call, trailing
    /// newline removed) or `password`; `None` when neither is set.
    pub fn read_password(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            return Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))));
        }
        Ok(self.password.clone())
    }
}

/// A secret written in the config (a password): serialised as its text so
/// a config round-trips, but never shown by `Debug`, so logging a config or
/// a check does not leak it (design §2 invariant 7).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
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
    /// An SMTP `220` banner, `250` to EHLO; optionally STARTTLS and a test
    /// message.
    Smtp,
    /// An IMAP `* OK` greeting, CAPABILITY; optionally STARTTLS and LOGIN.
    Imap,
    /// A POP3 `+OK` greeting, CAPA; optionally STLS and USER/PASS.
    Pop3,
    /// `GET path` answers the expected status (and body text).
    Http,
    /// As `http`, over TLS.
    Https,
    /// A container is running, and healthy when it has a healthcheck.
    Docker,
    /// A systemd unit is active.
    Systemd,
    /// MariaDB accepts a login and answers `SELECT 1`.
    Mariadb,
    /// MariaDB's replication: a replica's IO and SQL threads run without
    /// errors within `max_lag_s`; a server that replicates from nobody
    /// must be writable (the primary).
    MariadbReplication,
    /// A directory is a mount point and writable.
    Mount,
    /// Postfix's queue holds at most `max_messages`.
    PostfixQueue,
}

impl CheckKind {
    /// The name written in the config (`postfix_queue`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Smtp => "smtp",
            CheckKind::Imap => "imap",
            CheckKind::Pop3 => "pop3",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Docker => "docker",
            CheckKind::Systemd => "systemd",
            CheckKind::Mariadb => "mariadb",
            CheckKind::MariadbReplication => "mariadb_replication",
            CheckKind::Mount => "mount",
            CheckKind::PostfixQueue => "postfix_queue",
        }
    }
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
    /// A `[preset]` is expanded after validation (see [`preset::expand`]),
    /// so problems are reported against what the file says.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Problems> {
        let mut config: Config =
            toml::from_str(text).map_err(|error| Problems::from_parse_error(path, text, &error))?;
        let problems = validate::validate(&config, path, text);
        if problems.is_empty() {
            preset::expand(&mut config);
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

    /// The server_id of `[[mariadb.nodes]]` entry `node`: its own, or its
    /// member's id (validation makes sure that fits and is distinct).
    pub fn mariadb_server_id(&self, node: &MariadbNode) -> u32 {
        node.server_id.unwrap_or_else(|| {
            self.members
                .iter()
                .find(|m| m.name == node.name)
                .map(|m| u32::try_from(m.id).unwrap_or(u32::MAX))
                .unwrap_or(0)
        })
    }

    pub fn member_by_id(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The cluster's members now: this config's `[[members]]`, updated and
    /// extended by the replicated directory (members added to the running
    /// cluster), without the members taken out. Sorted by id.
    pub fn effective_members(&self, state: &mailherd_core::ClusterState) -> Vec<Member> {
        let mut members: BTreeMap<u64, Member> =
            self.members.iter().map(|m| (m.id, m.clone())).collect();
        for info in state.members.values() {
            members.insert(
                info.id,
                Member {
                    name: info.name.clone(),
                    id: info.id,
                    role: if info.mail {
                        MemberRole::Mail
                    } else {
                        MemberRole::Witness
                    },
                    priority: info.priority,
                    peer: info.peer,
                    api: info.api,
                },
            );
        }
        members
            .into_values()
            .filter(|m| !state.removed_members.contains(&m.id))
            .collect()
    }
}

/// `[reconciler]`: the worker that compares what the host holds (address,
/// mounts, stack) with this node's role and repairs drift (design
/// invariant 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerSection {
    /// How often the host is read and compared; 0 turns the reconciler off.
    #[serde(default = "default_reconcile_interval_ms")]
    pub interval_ms: u64,
}

impl Default for ReconcilerSection {
    fn default() -> Self {
        ReconcilerSection {
            interval_ms: default_reconcile_interval_ms(),
        }
    }
}

/// Every few seconds: a stray address on a backup is a split-brain risk,
/// found within one interval; reading the host is a few syscalls.
fn default_reconcile_interval_ms() -> u64 {
    3_000
}

/// The shortest reconcile interval accepted: each round reads the mount
/// table, the interface's addresses and the stack's state.
pub const MIN_RECONCILE_INTERVAL_MS: u64 = 200;

/// `[gc]`: the garbage collector (stale mounts, stray addresses and stacks
/// on non-masters, stale agent files, old failover history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSection {
    /// How often the worker runs; 0 leaves it to `mailherd gc`.
    #[serde(default = "default_gc_interval_s")]
    pub interval_s: u64,
    /// Failover history entries older than this are dropped (never those
    /// inside `cluster.breaker_window_s`, which the breaker counts).
    #[serde(default = "default_history_retention_days")]
    pub history_retention_days: u64,
}

impl Default for GcSection {
    fn default() -> Self {
        GcSection {
            interval_s: default_gc_interval_s(),
            history_retention_days: default_history_retention_days(),
        }
    }
}

impl GcSection {
    pub fn history_retention_ms(&self) -> u64 {
        self.history_retention_days.saturating_mul(86_400_000)
    }
}

fn default_gc_interval_s() -> u64 {
    300
}

fn default_history_retention_days() -> u64 {
    30
}

/// The shortest garbage collection interval accepted.
pub const MIN_GC_INTERVAL_S: u64 = 10;

/// `[watchdog]`: how a killed or frozen agent's node is stopped before its
/// lease ends (see `mailherd_core::watchdog`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogSection {
    #[serde(default)]
    pub mode: WatchdogMode,
    #[serde(default)]
    pub driver: WatchdogDriver,
    /// The device (`device` driver) or the emulator's datagram socket
    /// (`socket` driver).
    #[serde(default = "default_watchdog_path")]
    pub path: PathBuf,
    /// Default: `lease_ms - 2 × renew_interval_ms` (rounded down to whole
    /// seconds for a device); allowed: above `renew_interval_ms`, at most
    /// `lease_ms - renew_interval_ms`.
    pub timeout_ms: Option<u64>,
}

impl Default for WatchdogSection {
    fn default() -> Self {
        WatchdogSection {
            mode: WatchdogMode::default(),
            driver: WatchdogDriver::default(),
            path: default_watchdog_path(),
            timeout_ms: None,
        }
    }
}

fn default_watchdog_path() -> PathBuf {
    PathBuf::from("/dev/watchdog")
}

/// Like Patroni's watchdog modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogMode {
    /// Never used.
    Off,
    /// Used when the driver works and the timing allows one; otherwise the
    /// agent says why once and goes on without it.
    #[default]
    Automatic,
    /// A node that cannot arm it does not take the role.
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogDriver {
    /// The Linux watchdog device (`/dev/watchdog`, e.g. softdog): its
    /// timeout counts whole seconds.
    #[default]
    Device,
    /// An emulated watchdog listening on a Unix datagram socket (the lab's
    /// node init, which powers the node off).
    Socket,
}

impl WatchdogSection {
    /// The timeout to arm with, or why no timeout can protect this lease.
    pub fn timeout_ms(&self, lease: &mailherd_core::LeaseTiming) -> Result<u64, String> {
        let timeout = match (self.timeout_ms, self.driver) {
            (Some(ms), _) => ms,
            (None, WatchdogDriver::Socket) => mailherd_core::watchdog::default_timeout_ms(lease),
            // Whole seconds, rounded down so that it still fits.
            (None, WatchdogDriver::Device) => {
                mailherd_core::watchdog::default_timeout_ms(lease) / 1_000 * 1_000
            }
        };
        if self.driver == WatchdogDriver::Device && (timeout == 0 || timeout % 1_000 != 0) {
            return Err(format!(
                "a watchdog device counts whole seconds, and this lease's default is {} ms \
                 (lease_ms - 2 × renew_interval_ms); use a lease of at least {} ms \
                 (e.g. `timing = \"safe\"`) or set timeout_ms in whole seconds",
                mailherd_core::watchdog::default_timeout_ms(lease),
                1_000 + 2 * lease.renew_interval_ms
            ));
        }
        mailherd_core::watchdog::check_timeout(lease, timeout).map_err(|e| e.to_string())?;
        Ok(timeout)
    }
}
