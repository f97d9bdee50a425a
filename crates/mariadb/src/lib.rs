//! MariaDB GTID replication between the nodes' servers: what `mailherd db
//! ...` does, the promotion and demotion steps of the drivers, and what the
//! `mariadb_replication` probe reads.
//!
//! Only GTID replication (`MASTER_USE_GTID=slave_pos`), never a binlog file
//! and position. In primary-replica mode the master's server is the only
//! writable one; in master-master mode two servers replicate from each
//! other, and still only the master's is writable.
//!
//! # Layout
//! - [`gtid`]: positions, "has it applied what it received", divergence
//!   (pure);
//! - [`state`]: a server's variables and `SHOW SLAVE STATUS`, and the
//!   up/degraded/down health read from them (pure);
//! - [`sql`]: the statements, quoted (pure);
//! - [`server`]: the [`Topology`] from `[mariadb]` and one admin
//!   connection ([`Server`]);
//! - [`ops`]: setup, promote, demote, follow, status.

pub mod error;
pub mod gtid;
pub mod ops;
pub mod server;
pub mod sql;
pub mod state;

pub use error::DbError;
pub use ops::{follow, promote, setup, status, NodeStatus, SetupReport};
pub use server::{read_state, DbNode, Server, Topology};
pub use state::{health, Health, NodeState, ReplicaStatus};
