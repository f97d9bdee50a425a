//! What one server says about itself: its variables and `SHOW SLAVE
//! STATUS`, and the health read from them (pure).

use serde::Serialize;

use crate::gtid::GtidPos;

/// A server's replication-relevant state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeState {
    pub version: String,
    pub server_id: u32,
    pub gtid_domain_id: u32,
    pub read_only: bool,
    pub log_bin: bool,
    pub log_slave_updates: bool,
    pub auto_increment_increment: u32,
    pub auto_increment_offset: u32,
    /// The last GTIDs this server wrote to its binary log.
    pub gtid_binlog_pos: String,
    /// The last GTIDs its replication applied.
    pub gtid_slave_pos: String,
    /// Its replica side, when it has one configured.
    pub replica: Option<ReplicaStatus>,
}

/// `SHOW SLAVE STATUS`, by column name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaStatus {
    pub master_host: String,
    pub master_port: u16,
    pub master_user: String,
    /// `Yes`, `No` or `Connecting`.
    pub io_running: String,
    pub sql_running: String,
    /// NULL (None) while the SQL thread does not run or the IO thread is
    /// not connected.
    pub seconds_behind_master: Option<u64>,
    pub last_io_errno: u32,
    pub last_io_error: String,
    pub last_sql_errno: u32,
    pub last_sql_error: String,
    /// `No`, `Slave_Pos` or `Current_Pos`.
    pub using_gtid: String,
    /// The last GTIDs received (in the relay log).
    pub gtid_io_pos: String,
}

impl ReplicaStatus {
    pub fn io_running(&self) -> bool {
        self.io_running == "Yes"
    }

    pub fn sql_running(&self) -> bool {
        self.sql_running == "Yes"
    }

    /// `host:port` of its master.
    pub fn source(&self) -> String {
        format!("{}:{}", self.master_host, self.master_port)
    }
}

/// How healthy a server's replication is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Up,
    Degraded,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }
}

/// The role a server plays, as it says.
pub fn role(state: &NodeState) -> &'static str {
    match (&state.replica, state.read_only) {
        (None, false) => "primary",
        (None, true) => "read-only, replicating from nobody",
        (Some(_), true) => "replica",
        (Some(_), false) => "writable replica",
    }
}

/// The health of a server's replication, with the reason:
/// - down: a replica thread stopped (with its error, if any), or a server
///   that replicates from nobody and is read-only (it can neither take
///   writes nor receive them);
/// - degraded: the IO thread is still connecting, the lag is above
///   `max_lag_s`, or a replica is writable outside master-master
///   (`writable_replica_ok`);
/// - up: a primary, or a replica whose threads run within the lag bound.
pub fn health(state: &NodeState, max_lag_s: u64, writable_replica_ok: bool) -> (Health, String) {
    let Some(replica) = &state.replica else {
        return if state.read_only {
            (
                Health::Down,
                "read_only is ON and it replicates from nobody".to_string(),
            )
        } else {
            (
                Health::Up,
                "primary: writable, replicates from nobody".to_string(),
            )
        };
    };
    let source = replica.source();
    if !replica.sql_running() {
        return (
            Health::Down,
            match replica.last_sql_errno {
                0 => format!("SQL thread stopped (replica of {source})"),
                errno => format!(
                    "SQL thread stopped: error {errno}: {}",
                    replica.last_sql_error
                ),
            },
        );
    }
    match replica.io_running.as_str() {
        "Yes" => {}
        "Connecting" => {
            return (
                Health::Degraded,
                match replica.last_io_errno {
                    0 => format!("IO thread connecting to {source}"),
                    errno => format!(
                        "IO thread connecting to {source}: error {errno}: {}",
                        replica.last_io_error
                    ),
                },
            )
        }
        _ => {
            return (
                Health::Down,
                match replica.last_io_errno {
                    0 => format!("IO thread stopped (replica of {source})"),
                    errno => format!(
                        "IO thread stopped: error {errno}: {}",
                        replica.last_io_error
                    ),
                },
            )
        }
    }
    if let Some(lag) = replica.seconds_behind_master {
        if lag > max_lag_s {
            return (
                Health::Degraded,
                format!("{lag} s behind {source} (more than {max_lag_s} s)"),
            );
        }
    }
    if !state.read_only && !writable_replica_ok {
        return (
            Health::Degraded,
            format!("replica of {source} with read_only OFF: writes here would diverge"),
        );
    }
    let lag = replica
        .seconds_behind_master
        .map_or("lag unknown".to_string(), |lag| format!("{lag} s behind"));
    (Health::Up, format!("replicating from {source}, {lag}"))
}

/// The replica's applied and received positions, parsed.
pub fn positions(state: &NodeState) -> Result<(GtidPos, GtidPos), String> {
    let applied = GtidPos::parse(&state.gtid_slave_pos)?;
    let received = match &state.replica {
        Some(replica) => GtidPos::parse(&replica.gtid_io_pos)?,
        None => GtidPos::default(),
    };
    Ok((applied, received))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica() -> ReplicaStatus {
        ReplicaStatus {
            master_host: "10.0.0.11".into(),
            master_port: 3306,
            master_user: "repl".into(),
            io_running: "Yes".into(),
            sql_running: "Yes".into(),
            seconds_behind_master: Some(0),
            last_io_errno: 0,
            last_io_error: String::new(),
            last_sql_errno: 0,
            last_sql_error: String::new(),
            using_gtid: "Slave_Pos".into(),
            gtid_io_pos: "0-1-5".into(),
        }
    }

    fn state(replica: Option<ReplicaStatus>, read_only: bool) -> NodeState {
        NodeState {
            version: "10.11.6-MariaDB".into(),
            server_id: 2,
            gtid_domain_id: 0,
            read_only,
            log_bin: true,
            log_slave_updates: true,
            auto_increment_increment: 1,
            auto_increment_offset: 1,
            gtid_binlog_pos: String::new(),
            gtid_slave_pos: "0-1-5".into(),
            replica,
        }
    }

    /// One helper for the table below: the replica `edit` makes, read-only.
    fn check(edit: impl FnOnce(&mut ReplicaStatus), expect: Health, needle: &str) {
        let mut r = replica();
        edit(&mut r);
        let (health, why) = health(&state(Some(r), true), 30, false);
        assert_eq!(health, expect, "{why}");
        assert!(why.contains(needle), "{why:?} lacks {needle:?}");
    }

    #[test]
    fn replica_health_from_threads_lag_and_errors() {
        check(
            |_| {},
            Health::Up,
            "replicating from 10.0.0.11:3306, 0 s behind",
        );
        check(
            |r| {
                r.sql_running = "No".into();
                r.last_sql_errno = 1062;
                r.last_sql_error = "Duplicate entry 'a' for key 'PRIMARY'".into();
            },
            Health::Down,
            "error 1062: Duplicate entry",
        );
        check(
            |r| {
                r.io_running = "No".into();
                r.last_io_errno = 1236;
                r.last_io_error = "not in the master's binlog".into();
            },
            Health::Down,
            "IO thread stopped: error 1236",
        );
        check(
            |r| {
                r.io_running = "Connecting".into();
                r.seconds_behind_master = None;
                r.last_io_errno = 2003;
                r.last_io_error = "Can't connect".into();
            },
            Health::Degraded,
            "connecting to 10.0.0.11:3306: error 2003",
        );
        check(
            |r| r.seconds_behind_master = Some(31),
            Health::Degraded,
            "31 s behind",
        );
        check(
            |r| r.seconds_behind_master = Some(30),
            Health::Up,
            "30 s behind",
        );
    }

    #[test]
    fn primaries_and_writable_replicas() {
        assert_eq!(health(&state(None, false), 30, false).0, Health::Up);
        assert_eq!(health(&state(None, true), 30, false).0, Health::Down);
        assert_eq!(
            health(&state(Some(replica()), false), 30, false).0,
            Health::Degraded
        );
        // master-master: the master replicates from the other and is writable.
        assert_eq!(
            health(&state(Some(replica()), false), 30, true).0,
            Health::Up
        );
        assert_eq!(role(&state(None, false)), "primary");
        assert_eq!(role(&state(Some(replica()), true)), "replica");
    }
}
