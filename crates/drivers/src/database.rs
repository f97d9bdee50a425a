//! The [`Database`] trait: the replicated database whose writable side
//! follows the master, and its one driver, MariaDB GTID replication
//! ([`MariadbReplication`], on `mailherd_mariadb`).
//!
//! The promotion pipeline makes this node's database the writable master
//! ([`Database::promote`]) and then repoints the others, best effort
//! ([`Database::repoint_others`]); the demotion pipeline makes it read-only
//! ([`Database::demote`]); a backup's agent keeps it following whoever is
//! master ([`Database::follow`]). These calls are serialised on a node, so
//! a follow that started while this node was still a backup finishes before
//! a promotion of this node touches the same server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mailherd_config::Config;
use mailherd_mariadb::Topology;
use tokio::sync::Mutex;

use crate::DriverError;

/// This node's database in the replication topology.
#[async_trait]
pub trait Database: Send + Sync {
    /// Apply what was received (bounded by the promotion lag bound), stop
    /// replicating (primary-replica), become writable. Returns what it did.
    async fn promote(&self) -> Result<String, DriverError>;
    /// Make every other node a read-only replica of this one; one result
    /// per node (the old master may be down: that is not a failure of the
    /// promotion).
    async fn repoint_others(&self) -> Vec<(String, Result<String, DriverError>)>;
    /// Become read-only.
    async fn demote(&self) -> Result<String, DriverError>;
    /// Be a read-only replica of `master` (a member's name). Idempotent.
    /// `still_valid` is asked once this node's earlier calls are done: a
    /// follow decided before this node was assigned the role must not run
    /// after its promotion (`Ok("skipped ...")` then).
    async fn follow(
        &self,
        master: &str,
        still_valid: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<String, DriverError>;
    /// Whether this node's database is writable.
    async fn is_writable(&self) -> Result<bool, DriverError>;
    /// The longest a promotion may take (the lag bound and connections).
    fn promotion_budget(&self) -> Duration;
    /// How often a backup checks that it follows the master.
    fn follow_interval(&self) -> Duration;
}

/// MariaDB GTID replication (`[mariadb]`).
pub struct MariadbReplication {
    topology: Arc<Topology>,
    /// This node's index in the topology.
    me: usize,
    /// Serialises every change this node makes (see the module doc).
    serial: Mutex<()>,
}

impl MariadbReplication {
    pub fn new(topology: Topology, me: &str) -> Result<MariadbReplication, DriverError> {
        let me = topology.index(me)?;
        Ok(MariadbReplication {
            topology: Arc::new(topology),
            me,
            serial: Mutex::new(()),
        })
    }
}

/// The database driver of a config with `[mariadb]`, for this node.
pub fn database_from_config(config: &Config) -> Result<Option<Arc<dyn Database>>, DriverError> {
    if config.mariadb.is_none() {
        return Ok(None);
    }
    let topology = Topology::from_config(config)?;
    Ok(Some(Arc::new(MariadbReplication::new(
        topology,
        &config.node.name,
    )?)))
}

#[async_trait]
impl Database for MariadbReplication {
    async fn promote(&self) -> Result<String, DriverError> {
        let _serial = self.serial.lock().await;
        Ok(mailherd_mariadb::promote(&self.topology, self.me).await?)
    }

    async fn repoint_others(&self) -> Vec<(String, Result<String, DriverError>)> {
        let _serial = self.serial.lock().await;
        let topology = &self.topology;
        futures::future::join_all(
            (0..topology.nodes.len())
                .filter(|node| *node != self.me)
                .map(|node| async move {
                    let result = mailherd_mariadb::follow(topology, node, self.me)
                        .await
                        .map_err(DriverError::from);
                    (topology.nodes[node].name.clone(), result)
                }),
        )
        .await
    }

    async fn demote(&self) -> Result<String, DriverError> {
        let _serial = self.serial.lock().await;
        Ok(mailherd_mariadb::ops::demote(&self.topology, self.me).await?)
    }

    async fn follow(
        &self,
        master: &str,
        still_valid: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<String, DriverError> {
        let _serial = self.serial.lock().await;
        if !still_valid() {
            return Ok("skipped: the role moved meanwhile".to_string());
        }
        let master = self.topology.index(master)?;
        Ok(mailherd_mariadb::follow(&self.topology, self.me, master).await?)
    }

    async fn is_writable(&self) -> Result<bool, DriverError> {
        Ok(mailherd_mariadb::ops::is_writable(&self.topology, self.me).await?)
    }

    fn promotion_budget(&self) -> Duration {
        // Connect, drain (bounded), stop, flip: the lag bound plus a few
        // connections' worth.
        self.topology.max_promotion_lag + self.topology.connect_timeout * 3
    }

    fn follow_interval(&self) -> Duration {
        self.topology.follow_interval
    }
}
