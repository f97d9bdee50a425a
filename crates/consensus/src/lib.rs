//! mailherd's consensus: an [openraft] node (pinned `=0.10.0-alpha.37`)
//! whose log and state machine live in redb under `data_dir`, talking to its
//! peers over HTTP (axum server side, reqwest client side, JSON bodies).
//!
//! The replicated state machine is [`mailherd_core::ClusterState`]; a Raft
//! entry carries a [`mailherd_core::Command`] and applying it yields the
//! [`mailherd_core::CommandResult`] of `ClusterState::apply`. This crate
//! provides primitives only: who leads, commit a command, confirm
//! leadership with a quorum, watch the applied state. Whether a node may
//! *hold the master role* is decided elsewhere by the core's lease and CAS
//! rules: an openraft leader keeps `ServerState::Leader` when its quorum
//! lease lapses (it only refuses proposals), so "Raft leader" never means
//! "may act".
//!
//! # Usage
//!
//! ```no_run
//! # async fn run(config: mailherd_consensus::ConsensusConfig, listener: tokio::net::TcpListener)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! let consensus = mailherd_consensus::Consensus::open(config).await?;
//! // Serve the peer endpoints on the address the voters map names.
//! let router = consensus.peer_router();
//! tokio::spawn(async move { axum::serve(listener, router).await });
//! // Safe on every node at every start: a no-op once the cluster exists.
//! consensus.initialize_if_new().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`ConsensusConfig`], [`ConsensusOptions`], their checks and
//!   the openraft `Config` built from them.
//! - [`types`]: the openraft type configuration, [`Leadership`],
//!   [`LogStatus`] and the wire messages of the peer endpoints.
//! - `arrivals`: when log entries arrived here, for the decider's lease
//!   arithmetic.
//! - `db`: the redb file and its tables, shared by the two stores below.
//! - `log_store`: the Raft log, vote and committed index (`RaftLogStorage`).
//! - `state_machine`: `ClusterState` as a persistent openraft state machine,
//!   snapshots as its JSON, and the watch channel behind [`Consensus::state`].
//! - `network`: the HTTP client that carries openraft's RPCs to peers.
//! - `server`: the axum router answering those RPCs, `/raft/propose` and
//!   `/raft/relay`.
//! - `handle`: [`Consensus`], the handle the agent holds: open, initialise,
//!   propose (forwarding to the leader, or relayed through the other voters
//!   as well), leadership, shutdown.
//! - [`error`]: [`ConsensusError`] and [`ProposeError`].

mod arrivals;
pub mod config;
mod db;
pub mod error;
mod handle;
mod log_store;
mod network;
mod server;
mod state_machine;
pub mod types;

pub use config::{ConsensusConfig, ConsensusOptions};
pub use error::{ConsensusError, ProposeError};
pub use handle::{Consensus, Relayed};
pub use types::{Leadership, LogStatus};

#[cfg(test)]
mod storage_tests;
