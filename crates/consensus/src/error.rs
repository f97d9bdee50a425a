//! Error types of the consensus crate.
//!
//! [`ConsensusError`] is about bringing a node up and managing it;
//! [`ProposeError`] about getting one command committed or confirming
//! leadership. A rejection by the state machine is not an error here: it
//! comes back as `Ok(Err(Rejection))` from `propose`.

use std::path::PathBuf;

use mailherd_core::NodeId;

/// Why a consensus node could not be opened, initialised or managed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("invalid consensus config: {reason}")]
    Config { reason: String },

    #[error("cannot create consensus data dir {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("consensus storage {} failed: {reason}", path.display())]
    Storage { path: PathBuf, reason: String },

    #[error("cannot initialise the raft cluster: {reason}")]
    Initialize { reason: String },

    #[error("raft node stopped: {reason}")]
    Stopped { reason: String },

    #[error("raft error: {0}")]
    Raft(String),

    #[error("cannot change the membership: {reason}")]
    Membership { reason: String },
}

/// Why a proposal (or a leadership confirmation) did not produce a result.
///
/// Whether the command may still commit depends on the variant:
/// - certainly not committed by this call: [`ProposeError::NoLeader`],
///   [`ProposeError::Transport`] (the leader was not reached, or refused the
///   request before Raft saw it), and the `confirm_leadership` errors
///   [`ProposeError::NotLeader`] and [`ProposeError::QuorumNotReached`];
/// - may still commit: [`ProposeError::Timeout`],
///   [`ProposeError::OutcomeUnknown`], [`ProposeError::Stopped`] and
///   [`ProposeError::Raft`].
///
/// The core's CAS rules (expected epoch and renewals) make re-deciding and
/// re-proposing safe either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("no answer within {after_ms} ms; the command may still commit")]
    Timeout { after_ms: u64 },

    #[error("no raft leader accepted the proposal within {after_ms} ms")]
    NoLeader { after_ms: u64 },

    #[error("cannot reach raft peer {peer}: {reason}")]
    Transport { peer: NodeId, reason: String },

    #[error("this node is not the raft leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },

    #[error("leadership not confirmed by a quorum: {reason}")]
    QuorumNotReached { reason: String },

    #[error("proposal outcome unknown: {reason}")]
    OutcomeUnknown { reason: String },

    #[error("raft node stopped")]
    Stopped,

    #[error("raft error: {0}")]
    Raft(String),

    #[error("cannot change the membership: {reason}")]
    Membership { reason: String },
}
