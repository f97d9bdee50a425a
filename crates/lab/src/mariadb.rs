//! `up --mariadb`: a private mariadbd on every mail node, replicated by the
//! agents (`[mariadb]`) and set up by `mailherd db setup-replication`.
//!
//! Each mail node's server lives in `<node>/mariadb/` (its datadir, its
//! my.cnf, its socket), on the lab's tmpfs beside the node and not on the
//! shared volume: every node keeps a database of its own, as with the
//! `[mariadb]` deployment the README describes. `up` installs the datadirs
//! (`mariadb-install-db`, run inside the node's network namespace so that
//! `down` finds it there if `up` dies half-way); the node's init starts
//! mariadbd before the agent and restarts it when it exits, and it is a
//! process of the node's PID namespace like the agent, so a power cut (or
//! the emulated watchdog) kills it with the rest of the node.
//!
//! The servers listen on port 3306 of their node's namespace (its lab
//! address, and the floating IP while the node holds it). Every my.cnf says
//! `read_only`, `log_bin`, `log_slave_updates` and its own `server_id`, as
//! the README asks; the admin account `mailherd` and the application
//! account `app` (no SUPER: read_only applies to it) are made on each
//! server on its own, outside the binary log. Replication is
//! semi-synchronous (AFTER_SYNC): a commit is acknowledged to the client
//! only once a replica has received it, which is what lets the lab test ask
//! that no acknowledged row is lost when the master loses power.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::state::{LabState, NodeState};

/// Where every node's server listens.
pub const PORT: u16 = 3306;
/// The account mailherd administers the servers with.
pub const ADMIN_USER: &str = "mailherd";
/// The application's account: all rights on the `app` database only.
pub const APP_USER: &str = "app";
pub const APP_DATABASE: &str = "app";
/// How long node-init waits for its mariadbd before starting the agent
/// anyway (the agent's promotion then fails and says why).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a status query waits for one server.
const STATUS_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// The lab's databases (`up --mariadb`), in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MariadbLab {
    /// The application account's password (`status --json` shows it, as it
    /// shows the lab mailbox's).
    pub app_password: String,
}

/// Paths of one node's server.
pub fn dir(node: &NodeState) -> PathBuf {
    node.dir.join("mariadb")
}

pub fn my_cnf(node_dir: &Path) -> PathBuf {
    node_dir.join("mariadb").join("my.cnf")
}

pub fn socket(node_dir: &Path) -> PathBuf {
    node_dir.join("mariadb").join("mysqld.sock")
}

pub fn admin_password_file(lab_dir: &Path) -> PathBuf {
    lab_dir.join("mariadb-admin.pw")
}

pub fn replication_password_file(lab_dir: &Path) -> PathBuf {
    lab_dir.join("mariadb-repl.pw")
}

/// What `up` prints `setup-replication`'s output into.
pub fn setup_log(lab_dir: &Path) -> PathBuf {
    lab_dir.join("mariadb-setup.log")
}

pub fn address(node: &NodeState) -> SocketAddr {
    SocketAddr::from((node.address, PORT))
}

/// Something the lab runs for `--mariadb`, and its Debian package.
pub fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    for program in ["mariadbd", "mariadb-install-db"] {
        if crate::host::which(program).is_none() {
            missing.push(program);
        }
    }
    if !missing.is_empty() {
        bail!(
            "--mariadb needs {} on this host; install it with `apt-get install mariadb-server` \
             (scripts/install-deps.sh does)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// The `[mariadb]` section of every mail node's agent config.
pub fn section(state: &LabState) -> mailherd_config::MariadbSection {
    mailherd_config::MariadbSection {
        admin_password_file: Some(admin_password_file(&state.lab_dir)),
        replication_password_file: Some(replication_password_file(&state.lab_dir)),
        connect_timeout_ms: 1_000,
        follow_interval_ms: 1_000,
        max_promotion_lag_ms: 10_000,
        nodes: state
            .nodes
            .iter()
            .filter(|node| node.is_mail())
            .map(|node| mailherd_config::MariadbNode {
                name: node.name.clone(),
                address: address(node),
                server_id: None,
            })
            .collect(),
        ..mailherd_config::MariadbSection::new(ADMIN_USER)
    }
}

/// The lab's two password files (0600), made once.
pub fn write_password_files(state: &LabState) -> Result<()> {
    for path in [
        admin_password_file(&state.lab_dir),
        replication_password_file(&state.lab_dir),
    ] {
        crate::host::write_secret_file(&path, 24, "\n")?;
    }
    Ok(())
}

fn read_password(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim_end()
        .to_string())
}

/// The node's my.cnf: what the README asks of every server, plus the
/// lab's small memory settings and semi-synchronous replication.
pub fn render_my_cnf(node: &NodeState) -> String {
    let dir = dir(node);
    let data = dir.join("data");
    format!(
        "# mailherd-lab: node {name}'s own MariaDB server (up --mariadb)\n\
         [mariadbd]\n\
         user = root\n\
         datadir = {data}\n\
         socket = {socket}\n\
         pid-file = {dir}/mysqld.pid\n\
         tmpdir = {dir}/tmp\n\
         log-error = {dir}/error.log\n\
         init-file = {dir}/init.sql\n\
         # Inside the node's network namespace: its lab address {address}, and\n\
         # the floating IP while the node holds it.\n\
         bind-address = 0.0.0.0\n\
         port = {port}\n\
         skip-name-resolve\n\
         server-id = {id}\n\
         log-bin = {data}/binlog\n\
         relay-log = {data}/relay\n\
         log-slave-updates\n\
         # Writable only where the agent's promotion says so.\n\
         read-only\n\
         # A commit is acknowledged once a replica has received it.\n\
         rpl-semi-sync-master-enabled = ON\n\
         rpl-semi-sync-slave-enabled = ON\n\
         rpl-semi-sync-master-wait-point = AFTER_SYNC\n\
         rpl-semi-sync-master-wait-no-slave = OFF\n\
         rpl-semi-sync-master-timeout = 5000\n\
         innodb-buffer-pool-size = 16M\n\
         innodb-log-file-size = 16M\n\
         performance-schema = OFF\n",
        name = node.name,
        data = data.display(),
        socket = socket(&node.dir).display(),
        dir = dir.display(),
        address = node.address,
        port = PORT,
        id = node.id,
    )
}

/// The accounts, made on each server at every start, outside the binary
/// log (replication must not make them again elsewhere).
fn render_init_sql(admin_password: &str, app_password: &str) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"));
    format!(
        "SET SESSION sql_log_bin=0;\n\
         CREATE USER IF NOT EXISTS '{ADMIN_USER}'@'%' IDENTIFIED BY {admin};\n\
         GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;\n\
         CREATE USER IF NOT EXISTS '{APP_USER}'@'%' IDENTIFIED BY {app};\n\
         GRANT ALL PRIVILEGES ON {APP_DATABASE}.* TO '{APP_USER}'@'%';\n",
        admin = quote(admin_password),
        app = quote(app_password),
    )
}

/// Writes the node's my.cnf and init.sql.
pub fn write_node_files(state: &LabState, lab: &MariadbLab, node: &NodeState) -> Result<()> {
    let dir = dir(node);
    std::fs::create_dir_all(dir.join("tmp"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(my_cnf(&node.dir), render_my_cnf(node))?;
    let admin = read_password(&admin_password_file(&state.lab_dir))?;
    let init = dir.join("init.sql");
    std::fs::write(&init, render_init_sql(&admin, &lab.app_password))?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

/// Installs every mail node's datadir, in parallel, each inside its node's
/// network namespace.
pub fn install_all(state: &LabState) -> Result<()> {
    let install_db = crate::host::which("mariadb-install-db")
        .context("mariadb-install-db is missing (Debian package mariadb-server)")?;
    std::thread::scope(|scope| {
        let handles: Vec<_> = state
            .nodes
            .iter()
            .filter(|node| node.is_mail())
            .map(|node| {
                let install_db = &install_db;
                scope.spawn(move || install(install_db, node))
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("installing a datadir panicked")))?;
        }
        Ok(())
    })
}

fn install(install_db: &Path, node: &NodeState) -> Result<()> {
    let dir = dir(node);
    let output = crate::netns::command(&node.namespace, install_db)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg("--user=root")
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg(format!("--tmpdir={}", dir.join("tmp").display()))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", install_db.display()))?;
    if !output.status.success() {
        bail!(
            "mariadb-install-db for node {} failed ({}): {}",
            node.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `mariadbd --defaults-file=<node>/mariadb/my.cnf`, started by node-init.
pub fn server_command(node_dir: &Path) -> Result<Command> {
    let mariadbd = crate::host::which("mariadbd")
        .context("mariadbd is missing (Debian package mariadb-server)")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node_dir.join("mariadb").join("stderr.log"))?;
    let mut command = Command::new(mariadbd);
    command
        .arg(format!("--defaults-file={}", my_cnf(node_dir).display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(command)
}

/// Waits until the server at `node_dir` accepts connections on its socket
/// (it opens the socket and the TCP port together, after its init file).
pub fn wait_ready(node_dir: &Path, timeout: Duration) -> bool {
    let path = socket(node_dir);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs `mailherd db setup-replication --master MASTER` inside the
/// master's namespace, with the master's own config; its output goes to
/// [`setup_log`]. Fails with that output when it fails.
pub fn setup_replication(state: &LabState, master: &NodeState) -> Result<()> {
    let output = crate::netns::command(&master.namespace, &state.agent_bin)
        .args([
            "db",
            "setup-replication",
            "--master",
            &master.name,
            "--config",
        ])
        .arg(&master.config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .context("cannot run `mailherd db setup-replication`")?;
    let text = format!(
        "$ mailherd db setup-replication --master {} --config {}\n{}{}",
        master.name,
        master.config.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(setup_log(&state.lab_dir), &text)?;
    if !output.status.success() {
        bail!(
            "`mailherd db setup-replication` failed ({}):\n{text}",
            output.status
        );
    }
    Ok(())
}

/// The application's (empty) database, made on the master as its admin,
/// so that it replicates to the others.
pub fn create_app_database(state: &LabState, master: &NodeState) -> Result<()> {
    let topology = topology(state)?;
    let node = topology
        .nodes
        .iter()
        .find(|node| node.name == master.name)
        .with_context(|| format!("{} is not in [mariadb]", master.name))?
        .clone();
    crate::netns::run_in(&master.namespace, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut server = mailherd_mariadb::Server::connect(&topology, &node)
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            let created = server
                .exec(
                    "CREATE DATABASE app",
                    &format!("CREATE DATABASE IF NOT EXISTS {APP_DATABASE}"),
                )
                .await;
            server.disconnect().await;
            created.map_err(|error| anyhow::anyhow!("{error}"))
        })
    })
}

/// The replication topology of the lab's `[mariadb]` (from the first mail
/// node's config, as the agents read it).
fn topology(state: &LabState) -> Result<mailherd_mariadb::Topology> {
    let node = state
        .nodes
        .iter()
        .find(|node| node.is_mail())
        .context("the lab has no mail node")?;
    let config = mailherd_config::Config::load(&node.config)
        .with_context(|| format!("cannot load {}", node.config.display()))?;
    mailherd_mariadb::Topology::from_config(&config).map_err(|error| anyhow::anyhow!("{error}"))
}

/// One server as `status --json` shows it, read from the server.
#[derive(Debug, Serialize)]
pub struct ServerJson {
    pub name: String,
    pub address: String,
    /// `primary`, `replica`, ... as `mailherd db status` says; `down` when
    /// it cannot be read.
    pub role: String,
    pub read_only: Option<bool>,
    /// `host:port` of its source, while it replicates.
    pub replicating_from: Option<String>,
    pub io_running: Option<String>,
    pub sql_running: Option<String>,
    pub gtid_binlog_pos: Option<String>,
    /// The replica's last IO or SQL error (`Last_IO_Error`,
    /// `Last_SQL_Error`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_error: Option<String>,
    /// Why the server could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every mail node's server, read from the client namespace.
pub fn query(state: &LabState) -> Result<Vec<ServerJson>> {
    let mut topology = topology(state)?;
    topology.connect_timeout = Duration::from_millis(STATUS_CONNECT_TIMEOUT_MS);
    let statuses = crate::netns::run_in(&state.client.namespace, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(mailherd_mariadb::status(&topology)))
    })?;
    Ok(statuses
        .into_iter()
        .map(|status| {
            let state = status.state.as_ref();
            let replica = state.and_then(|state| state.replica.as_ref());
            ServerJson {
                role: if state.is_some() {
                    status.role.clone()
                } else {
                    "down".to_string()
                },
                read_only: state.map(|state| state.read_only),
                replicating_from: replica.map(|replica| replica.source()),
                io_running: replica.map(|replica| replica.io_running.clone()),
                sql_running: replica.map(|replica| replica.sql_running.clone()),
                gtid_binlog_pos: state.map(|state| state.gtid_binlog_pos.clone()),
                replication_error: replica.and_then(|replica| {
                    if replica.last_io_errno != 0 {
                        Some(format!(
                            "IO {}: {}",
                            replica.last_io_errno, replica.last_io_error
                        ))
                    } else if replica.last_sql_errno != 0 {
                        Some(format!(
                            "SQL {}: {}",
                            replica.last_sql_errno, replica.last_sql_error
                        ))
                    } else {
                        None
                    }
                }),
                error: status.error.clone(),
                name: status.name,
                address: status.address,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn my_cnf_has_what_the_readme_asks_of_every_server() {
        let state = crate::state::tests::sample(Path::new("/var/lib/x"));
        let node = &state.nodes[1];
        let text = render_my_cnf(node);
        for line in [
            "log-bin = /var/lib/x/n2/mariadb/data/binlog",
            "log-slave-updates",
            "read-only",
            "server-id = 2",
            "port = 3306",
            "socket = /var/lib/x/n2/mariadb/mysqld.sock",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn init_sql_makes_the_accounts_outside_the_binary_log() {
        let sql = render_init_sql("a'b", "c");
        assert!(sql.starts_with("SET SESSION sql_log_bin=0;\n"), "{sql}");
        assert!(sql.contains("IDENTIFIED BY 'a''b'"), "{sql}");
        assert!(sql.contains("GRANT ALL PRIVILEGES ON app.* TO 'app'@'%'"));
    }

    #[test]
    fn every_mail_node_is_in_the_section_and_no_witness() {
        let state = crate::state::tests::sample(Path::new("/var/lib/x"));
        let section = section(&state);
        let names: Vec<&str> = section.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2"]);
        assert_eq!(section.nodes[0].address.to_string(), "10.77.0.11:3306");
    }
}
