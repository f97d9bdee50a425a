//! `[mariadb]` with its `[[mariadb.nodes]]`: the MariaDB servers of the
//! cluster's nodes, replicated by GTID from the master's database to the
//! others, and what the promotion pipeline may wait for.
//!
//! The schema only; validation is in `validate/mariadb.rs`, the work in
//! `mailherd_drivers::database`. Passwords are named by file, never written
//! in the config.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

/// `[mariadb]`: one section, the same on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MariadbSection {
    /// `primary-replica` (default): the master's database is the only
    /// writable one and every other node replicates from it.
    /// `master-master`: two nodes replicate from each other (distinct
    /// gtid_domain_id, auto_increment offsets); only the master's is
    /// writable all the same.
    #[serde(default)]
    pub mode: ReplicationMode,
    /// The account mailherd logs in with on every node (it needs SUPER or
    /// READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, BINLOG MONITOR, CREATE
    /// USER and the right to grant REPLICATION SLAVE), from every node.
    pub admin_user: String,
    /// A file holding the admin password (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_file: Option<PathBuf>,
    /// The account replicas connect to the master with; `db
    /// setup-replication` creates it with REPLICATION SLAVE.
    #[serde(default = "default_replication_user")]
    pub replication_user: String,
    /// The host part of the replication account (`'repl'@'%'`).
    #[serde(default = "default_replication_host")]
    pub replication_host: String,
    /// A file holding the replication password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_password_file: Option<PathBuf>,
    /// How long a promotion waits for the new master to apply what it
    /// received (relay log drained) before it gives up and fails.
    #[serde(default = "default_max_promotion_lag_ms")]
    pub max_promotion_lag_ms: u64,
    /// Bounds each connection to a node's server.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How often a backup's agent makes sure its database follows the
    /// current master (read_only, replicating from it).
    #[serde(default = "default_follow_interval_ms")]
    pub follow_interval_ms: u64,
    /// The servers, one per mail node (`name` is a member's name).
    #[serde(default)]
    pub nodes: Vec<MariadbNode>,
}

/// One node's MariaDB server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MariadbNode {
    /// The member (`[[members]] name`) this server runs on.
    pub name: String,
    /// Where every node (and the replicas) reach it: `ip:port`.
    pub address: SocketAddr,
    /// Its server_id; default the member's id. Distinct on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    #[default]
    PrimaryReplica,
    MasterMaster,
}

impl ReplicationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::PrimaryReplica => "primary-replica",
            ReplicationMode::MasterMaster => "master-master",
        }
    }
}

fn default_replication_user() -> String {
    "mailherd_repl".to_string()
}
fn default_replication_host() -> String {
    "%".to_string()
}
fn default_max_promotion_lag_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_follow_interval_ms() -> u64 {
    5_000
}

impl MariadbSection {
    /// A section with every default and no nodes (tests, the lab).
    pub fn new(admin_user: impl Into<String>) -> MariadbSection {
        MariadbSection {
            mode: ReplicationMode::default(),
            admin_user: admin_user.into(),
            admin_password_file: None,
            replication_user: default_replication_user(),
            replication_host: default_replication_host(),
            replication_password_file: None,
            max_promotion_lag_ms: default_max_promotion_lag_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            follow_interval_ms: default_follow_interval_ms(),
            nodes: Vec::new(),
        }
    }

    /// The node of member `name`.
    pub fn node(&self, name: &str) -> Option<&MariadbNode> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The admin password (`None`: log in without one).
    pub fn admin_password(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret(self.admin_password_file.as_ref())
    }

    /// The replication password (`None`: the account has none).
    pub fn replication_password(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret(self.replication_password_file.as_ref())
    }
}

fn read_secret(path: Option<&PathBuf>) -> Result<Option<Secret>, ConfigError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))))
}
