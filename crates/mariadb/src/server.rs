//! The cluster's servers as the config names them ([`Topology`]) and one
//! admin connection to a server ([`Server`]): bounded connect, read its
//! [`NodeState`], run a statement with the node named in every error.

use std::net::SocketAddr;
use std::time::Duration;

use mailherd_config::{Config, ReplicationMode, Secret};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};

use crate::error::DbError;
use crate::state::{NodeState, ReplicaStatus};

/// One server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbNode {
    /// The member it runs on.
    pub name: String,
    pub address: SocketAddr,
    pub server_id: u32,
}

/// Every server and how to log in: `[mariadb]` with the secrets read.
#[derive(Debug, Clone)]
pub struct Topology {
    pub mode: ReplicationMode,
    pub nodes: Vec<DbNode>,
    pub admin_user: String,
    pub admin_password: Option<Secret>,
    pub replication_user: String,
    pub replication_host: String,
    pub replication_password: Secret,
    pub connect_timeout: Duration,
    pub max_promotion_lag: Duration,
    pub follow_interval: Duration,
}

impl Topology {
    /// From a validated config with a `[mariadb]` section; reads the
    /// password files.
    pub fn from_config(config: &Config) -> Result<Topology, DbError> {
        let section = config
            .mariadb
            .as_ref()
            .ok_or_else(|| DbError::Config("the config has no [mariadb] section".to_string()))?;
        let admin_password = section
            .admin_password()
            .map_err(|error| DbError::Config(format!("mariadb.admin_password_file: {error}")))?;
        let replication_password = section
            .replication_password()
            .map_err(|error| {
                DbError::Config(format!("mariadb.replication_password_file: {error}"))
            })?
            .ok_or_else(|| {
                DbError::Config("mariadb.replication_password_file is not set".to_string())
            })?;
        Ok(Topology {
            mode: section.mode,
            nodes: section
                .nodes
                .iter()
                .map(|node| DbNode {
                    name: node.name.clone(),
                    address: node.address,
                    server_id: config.mariadb_server_id(node),
                })
                .collect(),
            admin_user: section.admin_user.clone(),
            admin_password,
            replication_user: section.replication_user.clone(),
            replication_host: section.replication_host.clone(),
            replication_password,
            connect_timeout: Duration::from_millis(section.connect_timeout_ms),
            max_promotion_lag: Duration::from_millis(section.max_promotion_lag_ms),
            follow_interval: Duration::from_millis(section.follow_interval_ms),
        })
    }

    /// The index of node `name`.
    pub fn index(&self, name: &str) -> Result<usize, DbError> {
        self.nodes
            .iter()
            .position(|node| node.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                DbError::Config(format!(
                    "`{name}` has no [[mariadb.nodes]] entry (known: {known:?})"
                ))
            })
    }

    /// The node `node` replicates from while `master` is master: the
    /// master (primary-replica) or the other node (master-master).
    pub fn source_of(&self, node: usize, master: usize) -> Option<usize> {
        match self.mode {
            ReplicationMode::PrimaryReplica => (node != master).then_some(master),
            ReplicationMode::MasterMaster => (0..self.nodes.len()).find(|other| *other != node),
        }
    }
}

/// An admin connection to one server.
pub struct Server {
    pub node: DbNode,
    conn: Conn,
}

impl Server {
    /// Logs in as the admin, bounded by the topology's connect timeout.
    pub async fn connect(topology: &Topology, node: &DbNode) -> Result<Server, DbError> {
        let password = topology
            .admin_password
            .as_ref()
            .map(|secret| secret.expose().to_string());
        let conn = connect_as(
            node,
            &topology.admin_user,
            password,
            topology.connect_timeout,
        )
        .await?;
        Ok(Server {
            node: node.clone(),
            conn,
        })
    }

    fn fail(&self, what: &str, error: impl std::fmt::Display) -> DbError {
        DbError::Statement {
            node: self.node.name.clone(),
            address: self.node.address.to_string(),
            what: what.to_string(),
            reason: error.to_string(),
        }
    }

    /// Runs `sql`; `what` names it in errors (the statement itself may hold
    /// a password and is never shown).
    pub async fn exec(&mut self, what: &str, sql: &str) -> Result<(), DbError> {
        self.conn
            .query_drop(sql)
            .await
            .map_err(|error| self.fail(what, error))
    }

    /// The first column of the first row of `sql`, as text.
    pub async fn value(&mut self, sql: &str) -> Result<Option<String>, DbError> {
        let row: Option<Row> = self
            .conn
            .query_first(sql)
            .await
            .map_err(|error| self.fail(sql, error))?;
        Ok(row.and_then(|row| text_at(&row, 0)))
    }

    /// Reads the server's replication state.
    pub async fn state(&mut self) -> Result<NodeState, DbError> {
        read_state(&mut self.conn)
            .await
            .map_err(|error| self.fail("reading the replication state", error))
    }

    pub async fn disconnect(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// Reads a server's replication state over any connection (the probe
/// brings its own, perhaps over a socket): its variables and `SHOW SLAVE
/// STATUS` by column name.
pub async fn read_state(conn: &mut Conn) -> Result<NodeState, String> {
    const VARIABLES: &str = "SELECT @@version, @@server_id, @@gtid_domain_id, \
         @@read_only, @@log_bin, @@log_slave_updates, @@auto_increment_increment, \
         @@auto_increment_offset, @@gtid_binlog_pos, @@gtid_slave_pos";
    let row: Row = conn
        .query_first(VARIABLES)
        .await
        .map_err(|error| error.to_string())?
        .ok_or("no answer to the variables query")?;
    let field = |i: usize| text_at(&row, i).unwrap_or_default();
    let number = |i: usize| -> Result<u64, String> {
        field(i)
            .parse()
            .map_err(|_| format!("variable {i} is {:?}, not a number", field(i)))
    };
    let mut state = NodeState {
        version: field(0),
        server_id: number(1)? as u32,
        gtid_domain_id: number(2)? as u32,
        read_only: number(3)? != 0,
        log_bin: number(4)? != 0,
        log_slave_updates: number(5)? != 0,
        auto_increment_increment: number(6)? as u32,
        auto_increment_offset: number(7)? as u32,
        gtid_binlog_pos: field(8),
        gtid_slave_pos: field(9),
        replica: None,
    };
    let rows: Vec<Row> = conn
        .query("SHOW SLAVE STATUS")
        .await
        .map_err(|error| format!("SHOW SLAVE STATUS: {error}"))?;
    if let Some(row) = rows.first() {
        let column = |name: &str| column_text(row, name).unwrap_or_default();
        state.replica = Some(ReplicaStatus {
            master_host: column("Master_Host"),
            master_port: column("Master_Port").parse().unwrap_or(0),
            master_user: column("Master_User"),
            io_running: column("Slave_IO_Running"),
            sql_running: column("Slave_SQL_Running"),
            seconds_behind_master: column_text(row, "Seconds_Behind_Master")
                .and_then(|text| text.parse().ok()),
            last_io_errno: column("Last_IO_Errno").parse().unwrap_or(0),
            last_io_error: column("Last_IO_Error"),
            last_sql_errno: column("Last_SQL_Errno").parse().unwrap_or(0),
            last_sql_error: column("Last_SQL_Error"),
            using_gtid: column("Using_Gtid"),
            gtid_io_pos: column("Gtid_IO_Pos"),
        });
    }
    // An empty host is a replica side RESET SLAVE left behind (not ALL).
    if state
        .replica
        .as_ref()
        .is_some_and(|replica| replica.master_host.is_empty())
    {
        state.replica = None;
    }
    Ok(state)
}

/// Logs in to `node` as `user`, bounded by `timeout`.
pub async fn connect_as(
    node: &DbNode,
    user: &str,
    password: Option<String>,
    timeout: Duration,
) -> Result<Conn, DbError> {
    let options = OptsBuilder::default()
        .ip_or_hostname(node.address.ip().to_string())
        .tcp_port(node.address.port())
        .user(Some(user.to_string()))
        .pass(password)
        // One connection to what is configured, not a reconnect to a local
        // socket after a TCP login to localhost.
        .prefer_socket(false)
        .stmt_cache_size(0);
    let failed = |reason: String| DbError::Connect {
        node: node.name.clone(),
        address: node.address.to_string(),
        reason,
    };
    match tokio::time::timeout(timeout, Conn::new(options)).await {
        Err(_) => Err(failed(format!(
            "no answer within {} ms (connect_timeout_ms)",
            timeout.as_millis()
        ))),
        Ok(Err(error)) => Err(failed(describe(&error))),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// The server's words, or the OS error as the probes say it.
fn describe(error: &mysql_async::Error) -> String {
    if let mysql_async::Error::Io(mysql_async::IoError::Io(io)) = error {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect refused".to_string(),
            _ => io.to_string(),
        };
    }
    error.to_string()
}

fn text_at(row: &Row, index: usize) -> Option<String> {
    row.get::<Option<String>, usize>(index).flatten()
}

fn column_text(row: &Row, name: &str) -> Option<String> {
    row.get::<Option<String>, &str>(name).flatten()
}
