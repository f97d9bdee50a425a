//! The operations: set replication up, promote a server to master, make a
//! server follow the master, demote a server, read every server's status.
//!
//! Every operation compares what a server says with what it should be and
//! changes only the difference, so it can be repeated (a rerun of `db
//! setup-replication`, the agent's periodic follow) without touching what
//! is already right. Each returns what it did, as sentences.

use std::time::{Duration, Instant};

use mailherd_config::ReplicationMode;
use serde::Serialize;

use crate::error::DbError;
use crate::gtid::{GtidPos, GtidState};
use crate::server::{connect_as, Server, Topology};
use crate::sql::{account, ChangeMaster};
use crate::state::{health, role, Health, NodeState};

/// How often a promotion looks at the relay log while it drains.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long a promotion tries to reach each other replica when it looks
/// for transactions it lacks: short, because an unreachable one costs this
/// much on every failover (they are asked at once, not one after another).
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long `setup` waits for a replica's threads to run.
const SETUP_SETTLE: Duration = Duration::from_secs(10);
/// The lag `status` and `setup` call degraded.
pub const STATUS_MAX_LAG_S: u64 = 60;
/// MariaDB's "access denied" (the replication password drifted).
const ER_ACCESS_DENIED: u32 = 1045;
/// The server-wide named lock (`GET_LOCK`) that repointings of one server
/// take turns on, and how long one waits for it.
const REPOINT_LOCK: &str = "mailherd_repoint";
const REPOINT_LOCK_WAIT_S: u64 = 10;

/// The settings a node should have while `master` is master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desired {
    pub server_id: u32,
    pub gtid_domain_id: u32,
    pub read_only: bool,
    pub auto_increment_increment: u32,
    pub auto_increment_offset: u32,
    /// The node it replicates from.
    pub source: Option<usize>,
}

/// What node `node` should look like while `master` is master: distinct
/// server ids; one GTID domain for primary-replica (one writer at a time),
/// a domain per node and interleaved AUTO_INCREMENT for master-master;
/// read-only everywhere but on the master.
pub fn desired(topology: &Topology, node: usize, master: usize) -> Desired {
    let server_id = topology.nodes[node].server_id;
    let (gtid_domain_id, increment, offset) = match topology.mode {
        ReplicationMode::PrimaryReplica => (0, 1, 1),
        ReplicationMode::MasterMaster => (server_id, topology.nodes.len() as u32, node as u32 + 1),
    };
    Desired {
        server_id,
        gtid_domain_id,
        read_only: node != master,
        auto_increment_increment: increment,
        auto_increment_offset: offset,
        source: topology.source_of(node, master),
    }
}

/// The `SET GLOBAL`s that bring `state` to `desired` (name, from, to);
/// read_only comes separately (it is the fence, set first or last).
pub fn variable_changes(state: &NodeState, desired: &Desired) -> Vec<(&'static str, u64, u64)> {
    [
        ("server_id", state.server_id, desired.server_id),
        (
            "gtid_domain_id",
            state.gtid_domain_id,
            desired.gtid_domain_id,
        ),
        (
            "auto_increment_increment",
            state.auto_increment_increment,
            desired.auto_increment_increment,
        ),
        (
            "auto_increment_offset",
            state.auto_increment_offset,
            desired.auto_increment_offset,
        ),
    ]
    .into_iter()
    .filter(|(_, from, to)| from != to)
    .map(|(name, from, to)| (name, u64::from(from), u64::from(to)))
    .collect()
}

/// The conflict warning of master-master mode (reference: MariaDB).
pub const MASTER_MASTER_WARNING: &str = "WARNING: master-master: auto_increment_increment/offset only keep \
AUTO_INCREMENT keys unique; rows with natural keys (mailcow's mailbox key is the username) written on \
both sides collide, and error 1062 stops replication. Route every write to one primary (the mailherd \
master: the other server stays read_only).";

/// What `setup` did on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub address: String,
    /// Sentences: what changed; empty when nothing needed to.
    pub changes: Vec<String>,
    /// The health after the change.
    pub health: Health,
    pub detail: String,
}

/// What `setup` did, and what the operator must still do by hand.
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    pub master: String,
    pub mode: &'static str,
    pub nodes: Vec<NodeReport>,
    /// Settings changed with SET GLOBAL, which a restart forgets: lines
    /// for each node's my.cnf.
    pub persist: Vec<String>,
    pub warnings: Vec<String>,
}

impl SetupReport {
    /// Every node up.
    pub fn healthy(&self) -> bool {
        self.nodes.iter().all(|node| node.health == Health::Up)
    }
}

/// Connects to every node, naming all that fail (not only the first).
async fn connect_all(topology: &Topology) -> Result<Vec<Server>, DbError> {
    let attempts = futures::future::join_all(
        topology
            .nodes
            .iter()
            .map(|node| Server::connect(topology, node)),
    )
    .await;
    let mut servers = Vec::new();
    let mut errors = Vec::new();
    for attempt in attempts {
        match attempt {
            Ok(server) => servers.push(server),
            Err(error) => errors.push(error.to_string()),
        }
    }
    match errors.len() {
        0 => Ok(servers),
        1 => Err(DbError::Config(errors.remove(0))),
        _ => Err(DbError::Config(errors.join("\n"))),
    }
}

/// `mailherd db setup-replication`: replication from `master` to every
/// other node (master-master: both ways), the replication account on the
/// master, distinct server ids, GTID domains, AUTO_INCREMENT offsets and
/// read_only as [`desired`] says. Repeatable: it changes only what differs.
pub async fn setup(topology: &Topology, master_name: &str) -> Result<SetupReport, DbError> {
    let master = topology.index(master_name)?;
    let mut servers = connect_all(topology).await?;
    let mut states = Vec::new();
    for server in &mut servers {
        states.push(server.state().await?);
    }
    // Every node may become master: each needs its binary log, with what it
    // replicated in it, so that the others find their position there.
    let mut unfit = Vec::new();
    for (server, state) in servers.iter().zip(&states) {
        let mut missing = Vec::new();
        if !state.log_bin {
            missing.push("log_bin");
        }
        if !state.log_slave_updates {
            missing.push("log_slave_updates");
        }
        if !missing.is_empty() {
            unfit.push(DbError::Unfit {
                node: server.node.name.clone(),
                address: server.node.address.to_string(),
                reason: format!(
                    "{} OFF: add `{}` to its my.cnf ([mariadbd]) and restart it (these cannot be set at run time)",
                    missing.join(" and "),
                    missing.join("` and `")
                ),
            });
        }
    }
    if !unfit.is_empty() {
        let text: Vec<String> = unfit.iter().map(ToString::to_string).collect();
        return Err(DbError::Config(text.join("\n")));
    }

    let mut changes: Vec<Vec<String>> = vec![Vec::new(); servers.len()];
    let mut persist = Vec::new();
    // The master first: its settings and the replication account, so that
    // the replicas can log in at once.
    let mut order: Vec<usize> = vec![master];
    order.extend((0..servers.len()).filter(|i| *i != master));
    for &i in &order {
        let want = desired(topology, i, master);
        let server = &mut servers[i];
        let state = &states[i];
        if want.read_only && !state.read_only {
            server
                .exec("SET GLOBAL read_only=ON", "SET GLOBAL read_only=ON")
                .await?;
            changes[i].push("read_only OFF -> ON".to_string());
        }
        let mut changed_variables = Vec::new();
        for (name, from, to) in variable_changes(state, &want) {
            server
                .exec(
                    &format!("SET GLOBAL {name}"),
                    &format!("SET GLOBAL {name}={to}"),
                )
                .await?;
            changes[i].push(format!("{name} {from} -> {to}"));
            changed_variables.push(format!("{name} = {to}"));
        }
        if !changed_variables.is_empty() {
            persist.push(format!(
                "{}: {}",
                server.node.name,
                changed_variables.join(", ")
            ));
        }
        if i == master {
            if let Some(replica) = &state.replica {
                if want.source.is_none() {
                    stop_replication(server).await?;
                    changes[i].push(format!(
                        "stopped replicating from {} (it is the master)",
                        replica.source()
                    ));
                }
            }
            changes[i].extend(ensure_replication_account(topology, server).await?);
            if !want.read_only && state.read_only {
                server
                    .exec("SET GLOBAL read_only=OFF", "SET GLOBAL read_only=OFF")
                    .await?;
                changes[i].push("read_only ON -> OFF".to_string());
            }
        }
    }
    // Then replication, replicas first in master-master too (the master's
    // account exists now, and reaches the other side through it).
    let mut replication_order: Vec<usize> = (0..servers.len()).filter(|i| *i != master).collect();
    replication_order.push(master);
    let master_pos = servers[master].value("SELECT @@gtid_binlog_state").await?;
    let master_pos = GtidState::parse(&master_pos.unwrap_or_default()).map_err(DbError::Config)?;
    for i in replication_order {
        let want = desired(topology, i, master);
        let Some(source) = want.source else { continue };
        if i == master {
            // Master-master: the master asks the other side for what comes
            // after its own transactions, so the other side must have them
            // in its binary log first.
            let pos = servers[master].value("SELECT @@gtid_binlog_pos").await?;
            let pos = GtidPos::parse(&pos.unwrap_or_default()).map_err(DbError::Config)?;
            wait_applied(&mut servers[source], &pos, SETUP_SETTLE).await?;
        }
        let source_node = topology.nodes[source].clone();
        changes[i].extend(
            point_at(
                topology,
                &mut servers[i],
                &source_node,
                &topology.nodes[master].name,
                &master_pos,
            )
            .await?,
        );
    }

    // Let the replicas connect, then say how they are.
    let started = Instant::now();
    let mut reports;
    loop {
        reports = Vec::new();
        for (i, server) in servers.iter_mut().enumerate() {
            let state = server.state().await?;
            let (health, detail) = health(
                &state,
                STATUS_MAX_LAG_S,
                topology.mode == ReplicationMode::MasterMaster && i == master,
            );
            reports.push(NodeReport {
                name: server.node.name.clone(),
                address: server.node.address.to_string(),
                changes: changes[i].clone(),
                health,
                detail,
            });
        }
        // A replica just started may show a thread stopped for a moment,
        // or still connecting: give it the settle time before judging.
        let settled = reports.iter().all(|report| report.health == Health::Up);
        if settled || started.elapsed() > SETUP_SETTLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for server in servers {
        server.disconnect().await;
    }
    let mut warnings = Vec::new();
    if topology.mode == ReplicationMode::MasterMaster {
        warnings.push(MASTER_MASTER_WARNING.to_string());
    }
    Ok(SetupReport {
        master: master_name.to_string(),
        mode: topology.mode.as_str(),
        nodes: reports,
        persist,
        warnings,
    })
}

/// Waits until `server` has applied `pos` (or `limit` passes: what
/// follows then reports the state as it is).
async fn wait_applied(server: &mut Server, pos: &GtidPos, limit: Duration) -> Result<(), DbError> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let applied = server.value("SELECT @@gtid_slave_pos").await?;
        if GtidPos::parse(&applied.unwrap_or_default())
            .map_err(DbError::Config)?
            .covers(pos)
        {
            return Ok(());
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    Ok(())
}

/// The replication account on the master: created when missing, its
/// password set when it no longer logs in, granted REPLICATION SLAVE.
async fn ensure_replication_account(
    topology: &Topology,
    master: &mut Server,
) -> Result<Vec<String>, DbError> {
    let who = account(&topology.replication_user, &topology.replication_host);
    let password = crate::sql::quote(topology.replication_password.expose());
    let exists = master
        .value(&format!(
            "SELECT COUNT(*) FROM mysql.user WHERE User={} AND Host={}",
            crate::sql::quote(&topology.replication_user),
            crate::sql::quote(&topology.replication_host)
        ))
        .await?
        .is_some_and(|count| count != "0");
    let mut changes = Vec::new();
    if !exists {
        master
            .exec(
                &format!("CREATE USER {who}"),
                &format!("CREATE USER IF NOT EXISTS {who} IDENTIFIED BY {password}"),
            )
            .await?;
        changes.push(format!("created the replication account {who}"));
    } else {
        let logs_in = connect_as(
            &master.node,
            &topology.replication_user,
            Some(topology.replication_password.expose().to_string()),
            topology.connect_timeout,
        )
        .await;
        if let Ok(conn) = logs_in {
            let _ = conn.disconnect().await;
        } else {
            master
                .exec(
                    &format!("ALTER USER {who}"),
                    &format!("ALTER USER {who} IDENTIFIED BY {password}"),
                )
                .await?;
            changes.push(format!(
                "set the password of {who} (it did not log in with replication_password_file)"
            ));
        }
    }
    let grants = master
        .value(&format!("SHOW GRANTS FOR {who}"))
        .await?
        .unwrap_or_default();
    if !grants.contains("REPLICATION SLAVE") && !grants.contains("ALL PRIVILEGES") {
        master
            .exec(
                &format!("GRANT REPLICATION SLAVE TO {who}"),
                &format!("GRANT REPLICATION SLAVE ON *.* TO {who}"),
            )
            .await?;
        changes.push(format!("granted REPLICATION SLAVE to {who}"));
    }
    Ok(changes)
}

async fn stop_replication(server: &mut Server) -> Result<(), DbError> {
    server.exec("STOP ALL SLAVES", "STOP ALL SLAVES").await?;
    server.exec("RESET SLAVE ALL", "RESET SLAVE ALL").await
}

/// Makes `server` replicate from `source` by GTID, changing only what
/// differs: nothing when it already does, `START SLAVE` when its threads
/// merely stopped, otherwise `CHANGE MASTER TO ... MASTER_USE_GTID=
/// slave_pos`. A server that wrote transactions of its own (an old master)
/// is demoted with `MASTER_DEMOTE_TO_SLAVE=1` — refused with
/// [`DbError::Diverged`] when the master lacks some of them.
///
/// Two actors may repoint one server at once: a new master repointing the
/// others while that server's own agent makes it follow. Each would read
/// the state, then STOP, CHANGE MASTER, START in between the other's
/// statements (ERROR 1198: a running slave). So a server-wide named lock
/// makes them take turns, and each decides on the state it reads holding
/// it; the second then finds nothing left to change.
async fn point_at(
    topology: &Topology,
    server: &mut Server,
    source: &crate::server::DbNode,
    master_name: &str,
    master_pos: &GtidState,
) -> Result<Vec<String>, DbError> {
    let locked = server
        .value(&format!(
            "SELECT GET_LOCK('{REPOINT_LOCK}', {REPOINT_LOCK_WAIT_S})"
        ))
        .await?;
    if locked.as_deref() != Some("1") {
        return Err(DbError::Statement {
            node: server.node.name.clone(),
            address: server.node.address.to_string(),
            what: format!("GET_LOCK('{REPOINT_LOCK}')"),
            reason: format!(
                "another repointing of this server held the lock for {REPOINT_LOCK_WAIT_S} s"
            ),
        });
    }
    let result = match server.state().await {
        Ok(state) => {
            point_at_locked(topology, server, &state, source, master_name, master_pos).await
        }
        Err(error) => Err(error),
    };
    // Also released when the connection closes, should this fail.
    let _ = server
        .value(&format!("SELECT RELEASE_LOCK('{REPOINT_LOCK}')"))
        .await;
    result
}

async fn point_at_locked(
    topology: &Topology,
    server: &mut Server,
    state: &NodeState,
    source: &crate::server::DbNode,
    master_name: &str,
    master_pos: &GtidState,
) -> Result<Vec<String>, DbError> {
    let host = source.address.ip().to_string();
    let mut changes = Vec::new();
    let pointed = state.replica.as_ref().is_some_and(|replica| {
        replica.master_host == host
            && replica.master_port == source.address.port()
            && replica.master_user == topology.replication_user
            && replica.using_gtid.eq_ignore_ascii_case("Slave_Pos")
            && replica.last_io_errno != ER_ACCESS_DENIED
    });
    if pointed {
        let replica = state.replica.as_ref().expect("pointed means configured");
        let stopped_cleanly = (!replica.io_running() && replica.last_io_errno == 0)
            || (!replica.sql_running() && replica.last_sql_errno == 0);
        if stopped_cleanly && replica.io_running != "Connecting" {
            server.exec("START SLAVE", "START SLAVE").await?;
            changes.push(format!("started replicating from {}", source.name));
        }
        return Ok(changes);
    }
    let binlog = GtidPos::parse(&state.gtid_binlog_pos).map_err(DbError::Config)?;
    let applied = GtidPos::parse(&state.gtid_slave_pos).map_err(DbError::Config)?;
    // Transactions in its binary log that replication did not bring: it
    // wrote them itself, as master.
    let wrote_itself = !applied.covers(&binlog);
    if wrote_itself {
        let lost = binlog.missing_from(master_pos);
        if !lost.is_empty() {
            let gtids: Vec<String> = lost.iter().map(ToString::to_string).collect();
            return Err(DbError::Diverged {
                node: server.node.name.clone(),
                address: server.node.address.to_string(),
                master: master_name.to_string(),
                gtids: gtids.join(","),
            });
        }
    }
    if state.replica.is_some() {
        server.exec("STOP SLAVE", "STOP SLAVE").await?;
    }
    replicate_from(topology, server, source, wrote_itself).await?;
    changes.push(format!(
        "replicating from {} ({}) by GTID (MASTER_USE_GTID=slave_pos{})",
        source.name,
        source.address,
        if wrote_itself {
            ", MASTER_DEMOTE_TO_SLAVE=1: its own transactions kept as applied"
        } else {
            ""
        }
    ));
    Ok(changes)
}

/// Points a stopped `server` at `source` by GTID and starts replicating;
/// `demote` keeps the transactions it wrote itself as applied
/// (`MASTER_DEMOTE_TO_SLAVE=1`).
async fn replicate_from(
    topology: &Topology,
    server: &mut Server,
    source: &crate::server::DbNode,
    demote: bool,
) -> Result<(), DbError> {
    let change = ChangeMaster {
        host: source.address.ip().to_string(),
        port: source.address.port(),
        user: &topology.replication_user,
        password: topology.replication_password.expose(),
        demote,
    };
    server
        .exec("CHANGE MASTER TO (GTID)", &change.statement())
        .await?;
    server.exec("START SLAVE", "START SLAVE").await
}

/// The promotion step: make node `me` the writable master. Waits until it
/// has applied everything it received (the SQL thread is started if it was
/// stopped without an error), at most `max_promotion_lag`; then, in
/// primary-replica mode, `STOP ALL SLAVES; RESET SLAVE ALL`; then
/// `read_only=OFF`.
pub async fn promote(topology: &Topology, me: usize) -> Result<String, DbError> {
    let node = &topology.nodes[me];
    let mut server = Server::connect(topology, node).await?;
    let started = Instant::now();
    let mut state = server.state().await?;
    let mut done = Vec::new();
    if let Some(replica) = &state.replica {
        if !replica.sql_running() {
            if replica.last_sql_errno != 0 {
                return Err(DbError::Unfit {
                    node: node.name.clone(),
                    address: node.address.to_string(),
                    reason: format!(
                        "cannot apply its relay log: error {}: {}",
                        replica.last_sql_errno, replica.last_sql_error
                    ),
                });
            }
            server
                .exec("START SLAVE SQL_THREAD", "START SLAVE SQL_THREAD")
                .await?;
        }
        loop {
            let (applied, received) = crate::state::positions(&state).map_err(DbError::Config)?;
            if applied.covers(&received) {
                done.push(format!(
                    "applied all it received ({applied}) in {} ms",
                    started.elapsed().as_millis()
                ));
                break;
            }
            if let Some(replica) = &state.replica {
                if !replica.sql_running() && replica.last_sql_errno != 0 {
                    return Err(DbError::Unfit {
                        node: node.name.clone(),
                        address: node.address.to_string(),
                        reason: format!(
                            "stopped applying its relay log at {applied} (received {received}): error {}: {}",
                            replica.last_sql_errno, replica.last_sql_error
                        ),
                    });
                }
            }
            if started.elapsed() >= topology.max_promotion_lag {
                return Err(DbError::LagExceeded {
                    node: node.name.clone(),
                    address: node.address.to_string(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    applied: applied.to_string(),
                    received: received.to_string(),
                    behind: applied.behind(&received),
                });
            }
            tokio::time::sleep(DRAIN_POLL).await;
            state = server.state().await?;
        }
        if topology.mode == ReplicationMode::PrimaryReplica {
            let asked = Instant::now();
            match catch_up(topology, me, &mut server, &state, started).await? {
                Some(caught_up) => {
                    done.push(caught_up);
                    state = server.state().await?;
                }
                None => done.push(format!(
                    "no other replica had more ({} ms)",
                    asked.elapsed().as_millis()
                )),
            }
            let source = state
                .replica
                .as_ref()
                .map(|r| r.source())
                .unwrap_or_default();
            let stopping = Instant::now();
            stop_replication(&mut server).await?;
            done.push(format!(
                "stopped replicating from {source} ({} ms)",
                stopping.elapsed().as_millis()
            ));
        }
    }
    if state.read_only {
        server
            .exec("SET GLOBAL read_only=OFF", "SET GLOBAL read_only=OFF")
            .await?;
        done.push("read_only OFF".to_string());
    } else {
        done.push("already writable".to_string());
    }
    server.disconnect().await;
    Ok(done.join("; "))
}

/// Before a replica becomes master: another replica of the same old master
/// may have received transactions this one has not (with semi-synchronous
/// replication the master's acknowledgement may have come from any one
/// replica). Asks every other reachable, read-only replica at once (not
/// the old master: it is gone, or demoted and read by its replicas
/// anyway); if the most advanced one holds transactions this server lacks,
/// waits until it applied what it received, replicates from it until this
/// server has them all, and says so. Within `max_promotion_lag` from
/// `started`, like the relay log's drain.
async fn catch_up(
    topology: &Topology,
    me: usize,
    server: &mut Server,
    state: &NodeState,
    started: Instant,
) -> Result<Option<String>, DbError> {
    let node = &topology.nodes[me];
    let old_source = state
        .replica
        .as_ref()
        .map(|r| (r.master_host.clone(), r.master_port));
    let (mine, _) = crate::state::positions(state).map_err(DbError::Config)?;
    let peers = topology.nodes.iter().enumerate().filter(|(index, peer)| {
        *index != me && Some((peer.address.ip().to_string(), peer.address.port())) != old_source
    });
    let readings = futures::future::join_all(peers.map(|(_, peer)| async move {
        let connected =
            tokio::time::timeout(PEER_CONNECT_TIMEOUT, Server::connect(topology, peer)).await;
        let mut other = match connected {
            Ok(Ok(other)) => other,
            // Unreachable: it cannot serve anything anyway.
            Ok(Err(_)) | Err(_) => return None,
        };
        let state = other.state().await.ok()?;
        // Only a replica can be ahead without being a writer of its own.
        (state.read_only && state.replica.is_some()).then_some((other, state))
    }))
    .await;
    let mut ahead: Option<(Server, NodeState, GtidPos)> = None;
    for (other, state) in readings.into_iter().flatten() {
        let Ok((_, received)) = crate::state::positions(&state) else {
            continue;
        };
        if mine.covers(&received) {
            continue;
        }
        let further = ahead
            .as_ref()
            .is_none_or(|(_, _, best)| received.covers(best) && !best.covers(&received));
        if further {
            ahead = Some((other, state, received));
        }
    }
    let Some((mut other, mut other_state, received)) = ahead else {
        return Ok(None);
    };
    let bound = |waited: Duration, applied: &GtidPos, received: &GtidPos| DbError::LagExceeded {
        node: node.name.clone(),
        address: node.address.to_string(),
        waited_ms: waited.as_millis() as u64,
        applied: applied.to_string(),
        received: received.to_string(),
        behind: applied.behind(received),
    };
    // What the other replica received is served from its binary log only
    // once it applied it (log_slave_updates).
    loop {
        let (applied, _) = crate::state::positions(&other_state).map_err(DbError::Config)?;
        let logged = GtidPos::parse(&other_state.gtid_binlog_pos).map_err(DbError::Config)?;
        if applied.covers(&received) && logged.covers(&received) {
            break;
        }
        if started.elapsed() >= topology.max_promotion_lag {
            return Err(bound(started.elapsed(), &mine, &received));
        }
        tokio::time::sleep(DRAIN_POLL).await;
        other_state = other.state().await?;
    }
    let source = other.node.clone();
    other.disconnect().await;
    server.exec("STOP ALL SLAVES", "STOP ALL SLAVES").await?;
    replicate_from(topology, server, &source, false).await?;
    loop {
        let now = server.state().await?;
        let applied = GtidPos::parse(&now.gtid_slave_pos).map_err(DbError::Config)?;
        if applied.covers(&received) {
            return Ok(Some(format!(
                "caught up from {} ({}), which had received more: {} transaction(s) up to {received}",
                source.name,
                source.address,
                mine.behind(&received)
            )));
        }
        if let Some(replica) = &now.replica {
            if replica.last_io_errno != 0 || replica.last_sql_errno != 0 {
                return Err(DbError::Unfit {
                    node: node.name.clone(),
                    address: node.address.to_string(),
                    reason: format!(
                        "cannot fetch what {} has beyond {mine}: {} {}",
                        source.name, replica.last_io_error, replica.last_sql_error
                    ),
                });
            }
        }
        if started.elapsed() >= topology.max_promotion_lag {
            return Err(bound(started.elapsed(), &applied, &received));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// The demotion step: `read_only=ON` on node `me`, so nothing writes here
/// once it is not master. Repointing waits until the new master is known
/// ([`follow`]).
pub async fn demote(topology: &Topology, me: usize) -> Result<String, DbError> {
    let mut server = Server::connect(topology, &topology.nodes[me]).await?;
    let read_only = server.value("SELECT @@read_only").await?;
    let result = if read_only.as_deref() == Some("0") {
        server
            .exec("SET GLOBAL read_only=ON", "SET GLOBAL read_only=ON")
            .await?;
        "read_only ON".to_string()
    } else {
        "already read_only".to_string()
    };
    server.disconnect().await;
    Ok(result)
}

/// Whether node `me` is writable (`read_only` OFF).
pub async fn is_writable(topology: &Topology, me: usize) -> Result<bool, DbError> {
    let mut server = Server::connect(topology, &topology.nodes[me]).await?;
    let read_only = server.value("SELECT @@read_only").await?;
    server.disconnect().await;
    Ok(read_only.as_deref() == Some("0"))
}

/// Makes node `node` a read-only replica of master `master` (or, in
/// master-master, of the other node): read_only first, then replication
/// as [`point_at`] does. What `setup` does for one replica; the new
/// master runs it for every other node, a backup's agent for itself.
pub async fn follow(topology: &Topology, node: usize, master: usize) -> Result<String, DbError> {
    if node == master {
        return Err(DbError::Config(format!(
            "{} cannot follow itself",
            topology.nodes[node].name
        )));
    }
    let mut server = Server::connect(topology, &topology.nodes[node]).await?;
    let state = server.state().await?;
    let mut changes = Vec::new();
    if !state.read_only {
        server
            .exec("SET GLOBAL read_only=ON", "SET GLOBAL read_only=ON")
            .await?;
        changes.push("read_only ON".to_string());
    }
    let want = desired(topology, node, master);
    // A replica with the master's server_id would skip the master's events
    // as its own: the ids (and domains) are part of following.
    for (name, from, to) in variable_changes(&state, &want) {
        server
            .exec(
                &format!("SET GLOBAL {name}"),
                &format!("SET GLOBAL {name}={to}"),
            )
            .await?;
        changes.push(format!("{name} {from} -> {to}"));
    }
    let source = want
        .source
        .expect("a node that is not the master replicates");
    let master_node = &topology.nodes[master];
    let mut master_server = Server::connect(topology, master_node).await?;
    let master_pos = master_server.value("SELECT @@gtid_binlog_state").await?;
    master_server.disconnect().await;
    let master_pos = GtidState::parse(&master_pos.unwrap_or_default()).map_err(DbError::Config)?;
    changes.extend(
        point_at(
            topology,
            &mut server,
            &topology.nodes[source].clone(),
            &master_node.name,
            &master_pos,
        )
        .await?,
    );
    server.disconnect().await;
    Ok(if changes.is_empty() {
        "unchanged".to_string()
    } else {
        changes.join("; ")
    })
}

/// One node's line in `db status`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    /// `None` when it could not be read (see `error`).
    pub state: Option<NodeState>,
    pub role: String,
    pub health: Health,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every node's replication state and health; an unreachable node is down
/// with its error, not a failure of the whole status.
pub async fn status(topology: &Topology) -> Vec<NodeStatus> {
    let writable_replica_ok = topology.mode == ReplicationMode::MasterMaster;
    futures::future::join_all(topology.nodes.iter().map(|node| async move {
        let read = async {
            let mut server = Server::connect(topology, node).await?;
            let state = server.state().await;
            server.disconnect().await;
            state
        }
        .await;
        match read {
            Ok(state) => {
                let (health, detail) = health(&state, STATUS_MAX_LAG_S, writable_replica_ok);
                NodeStatus {
                    name: node.name.clone(),
                    address: node.address.to_string(),
                    role: role(&state).to_string(),
                    state: Some(state),
                    health,
                    detail,
                    error: None,
                }
            }
            Err(error) => NodeStatus {
                name: node.name.clone(),
                address: node.address.to_string(),
                state: None,
                role: "unknown".to_string(),
                health: Health::Down,
                detail: error.to_string(),
                error: Some(error.to_string()),
            },
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::DbNode;
    use mailherd_config::Secret;

    fn topology(mode: ReplicationMode, nodes: usize) -> Topology {
        Topology {
            mode,
            nodes: (0..nodes)
                .map(|i| DbNode {
                    name: format!("n{}", i + 1),
                    address: format!("10.0.0.{}:3306", 11 + i).parse().unwrap(),
                    server_id: i as u32 + 1,
                })
                .collect(),
            admin_user: "mailherd".into(),
            admin_password: None,
            replication_user: "repl".into(),
            replication_host: "%".into(),
            replication_password: Secret::new("pw"),
            connect_timeout: Duration::from_secs(1),
            max_promotion_lag: Duration::from_secs(1),
            follow_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn primary_replica_has_one_domain_and_one_writer() {
        let t = topology(ReplicationMode::PrimaryReplica, 3);
        let master = desired(&t, 1, 1);
        assert_eq!(
            master,
            Desired {
                server_id: 2,
                gtid_domain_id: 0,
                read_only: false,
                auto_increment_increment: 1,
                auto_increment_offset: 1,
                source: None,
            }
        );
        for replica in [0, 2] {
            let d = desired(&t, replica, 1);
            assert!(d.read_only);
            assert_eq!(d.source, Some(1));
            assert_eq!(d.gtid_domain_id, 0);
        }
    }

    #[test]
    fn master_master_interleaves_keys_and_separates_domains() {
        let t = topology(ReplicationMode::MasterMaster, 2);
        let (a, b) = (desired(&t, 0, 0), desired(&t, 1, 0));
        assert_eq!(
            (a.auto_increment_increment, a.auto_increment_offset),
            (2, 1)
        );
        assert_eq!(
            (b.auto_increment_increment, b.auto_increment_offset),
            (2, 2)
        );
        assert_ne!(a.gtid_domain_id, b.gtid_domain_id);
        // Both replicate from the other; only the master writes.
        assert_eq!((a.source, b.source), (Some(1), Some(0)));
        assert_eq!((a.read_only, b.read_only), (false, true));
    }

    #[test]
    fn only_differing_variables_change() {
        let t = topology(ReplicationMode::PrimaryReplica, 3);
        let state = NodeState {
            version: String::new(),
            server_id: 1,
            gtid_domain_id: 0,
            read_only: true,
            log_bin: true,
            log_slave_updates: true,
            auto_increment_increment: 1,
            auto_increment_offset: 1,
            gtid_binlog_pos: String::new(),
            gtid_slave_pos: String::new(),
            replica: None,
        };
        assert!(variable_changes(&state, &desired(&t, 0, 0)).is_empty());
        assert_eq!(
            variable_changes(&state, &desired(&t, 2, 0)),
            vec![("server_id", 1, 3)]
        );
    }
}
