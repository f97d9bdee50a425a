//! The status document: what this node knows about the cluster, served as
//! `GET /status` and printed by `mailherd status`.

use serde::{Deserialize, Serialize};

use mailherd_config::{Config, MemberRole};

/// One member as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    pub name: String,
    /// `mail` or `witness`.
    pub kind: String,
    pub priority: u32,
    /// Ready to be assigned the role (from the replicated health reports).
    pub ready: bool,
    pub detail: String,
    /// Only known on the Raft leader: whether it heard from the member lately.
    pub reachable: Option<bool>,
    pub api: String,
}

/// One entry of the failover history, with node names resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub epoch: u64,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    /// initial, failover, switchover or handover; only failovers count
    /// against the breaker.
    pub kind: mailherd_core::AssignmentKind,
    pub assigned_at_unix_ms: u64,
    pub outcome: Option<mailherd_core::state::PromotionOutcome>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignmentStatus {
    pub node: String,
    pub id: u64,
    pub epoch: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderStatus {
    pub id: u64,
    pub name: String,
    pub term: u64,
}

/// The circuit breaker, computed from the replicated history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreakerStatus {
    /// Open: no automatic failover until reset or until the window passes.
    pub open: bool,
    pub failovers_in_window: usize,
    pub max_failovers: usize,
    pub window_s: u64,
    pub reset_at_unix_ms: u64,
}

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDocument {
    pub cluster: String,
    pub node: String,
    pub id: u64,
    /// `master`, `backup`, `witness` or `fault`.
    pub role: String,
    /// The holder's phase: backup, acquiring, promoting, master, demoting.
    pub phase: String,
    /// Highest epoch assigned in the cluster.
    pub epoch: u64,
    pub assignment: Option<AssignmentStatus>,
    pub renewals: u64,
    pub leader: Option<LeaderStatus>,
    /// How long this node's lease still runs (only while it holds the role).
    pub lease_remaining_ms: Option<u64>,
    /// The stack verdict and every check (mail nodes only).
    pub verdict: Option<crate::monitor::MonitorReport>,
    pub members: Vec<MemberStatus>,
    /// Most recent assignments, newest last.
    pub history: Vec<HistoryEntry>,
    /// Since when maintenance mode is on (no automatic failover).
    pub maintenance_since_unix_ms: Option<u64>,
    pub breaker: Option<BreakerStatus>,
    /// A switchover asked for and not yet carried out: the target's name,
    /// or "best candidate".
    pub switchover_pending: Option<String>,
    /// Only on the Raft leader: why it does not assign although it should.
    pub decider_blocked: Option<String>,
    /// The watchdog that resets this node if its agent stops while holding
    /// the role; absent when off (or on a witness, or unusable by timing).
    #[serde(default)]
    pub watchdog: Option<crate::watchdog::WatchdogStatus>,
    /// Every worker of the agent (control loop, check monitor, reconciler,
    /// garbage collector, alert delivery, Uptime Kuma push) and what it
    /// last did.
    #[serde(default)]
    pub workers: Vec<crate::workers::WorkerStatus>,
    /// Storage replication of `btrfs` and `zfs` volumes: newest snapshot
    /// here, the data age the last promotion started from, transfers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replication: Vec<crate::storage::VolumeReplicationStatus>,
    pub updated_unix_ms: u64,
}

impl StatusDocument {
    /// The document before the control loop has run once.
    pub fn starting(config: &Config) -> StatusDocument {
        let me = config.me();
        StatusDocument {
            cluster: config.cluster.name.clone(),
            node: me.name.clone(),
            id: me.id,
            role: if me.role == MemberRole::Witness {
                "witness".into()
            } else {
                "backup".into()
            },
            phase: "starting".into(),
            epoch: 0,
            assignment: None,
            renewals: 0,
            leader: None,
            lease_remaining_ms: None,
            verdict: None,
            members: Vec::new(),
            history: Vec::new(),
            maintenance_since_unix_ms: None,
            breaker: None,
            switchover_pending: None,
            decider_blocked: None,
            watchdog: None,
            workers: Vec::new(),
            replication: Vec::new(),
            updated_unix_ms: 0,
        }
    }
}
