//! The openraft type configuration and the small value types that cross
//! this crate's boundary (wire messages, leadership view, log status).
//!
//! Everything openraft is generic over is fixed here, so the rest of the
//! crate (and nobody outside it) has to spell out openraft's generics.

use std::fmt;

use mailherd_core::{Command, CommandResult, NodeId};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// mailherd's Raft: log entries carry a [`Proposal`], applying one yields
    /// the state machine's [`CommandResult`]; nodes are addressed by their
    /// peer endpoint (`host:port`) in [`BasicNode::addr`].
    pub TypeConfig:
        D = Proposal,
        R = CommandResult,
        NodeId = NodeId,
        Node = BasicNode,
);

/// The openraft handle as used in this crate.
pub(crate) type MailherdRaft = openraft::Raft<TypeConfig, crate::state_machine::StateMachineStore>;

/// Log ids, votes, entries and snapshot metadata, spelled once.
pub(crate) type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub(crate) type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub(crate) type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub(crate) type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// A snapshot is the `ClusterState` serialised as JSON: small (the history
/// is capped) and readable with any tool when an operator has to look.
pub(crate) type SnapshotData = Vec<u8>;

/// A [`Command`] as a Raft log payload.
///
/// openraft wants its application data to be `Display`; `Command` lives in
/// the pure core, which does not care about log formatting, so the newtype
/// adds it here. It serialises exactly like the `Command` it wraps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Proposal(pub Command);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Who leads the Raft group, as seen from this node's openraft metrics.
///
/// `is_me` only says that openraft considers this node the leader. A leader
/// keeps that state when its quorum lease lapses, so it says nothing about
/// whether this node may act on the master role: use
/// [`Consensus::confirm_leadership`](crate::Consensus::confirm_leadership)
/// and the core's CAS rules for that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// The leader this node knows of, if any.
    pub leader: Option<NodeId>,
    /// This node's current Raft term.
    pub term: u64,
    /// Whether this node is the leader (openraft `ServerState::Leader`).
    pub is_me: bool,
}

/// Where this node's log and snapshot stand, for `/status` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStatus {
    /// Index of the last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied to the state machine.
    pub last_applied_index: Option<u64>,
    /// Index of the last entry covered by the current snapshot.
    pub snapshot_index: Option<u64>,
    /// Index of the last entry removed from the log (everything up to it is
    /// only in the snapshot now).
    pub purged_index: Option<u64>,
}

/// Body of `POST /raft/snapshot`: the leader's vote plus a whole snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotRequest {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    /// The `ClusterState` JSON, carried as a string so that it stays
    /// readable on the wire instead of becoming an array of numbers.
    pub data: String,
}

/// Answer of `POST /raft/propose`, and the outcome of a local write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum ProposeReply {
    /// The entry was committed and applied; this is what `apply` returned.
    Applied { result: CommandResult },
    /// The node that received the proposal is not (or no longer) an
    /// accepting leader; `leader` is its best guess of who is.
    ForwardToLeader { leader: Option<NodeId> },
    /// The entry was appended but not applied before the deadline; it may
    /// still commit.
    TimedOut,
    /// The entry was appended but then discarded by a leader change; it may
    /// have been committed by the next leader anyway.
    OutcomeUnknown { reason: String },
    /// The receiving node's Raft is shut down.
    Stopped,
    /// The receiving node could not handle the proposal.
    Failed { reason: String },
}
