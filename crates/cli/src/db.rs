//! `mailherd db ...`: MariaDB GTID replication between the nodes' servers
//! (`[mariadb]`).
//!
//! - `setup-replication`: from the master to every other node (master-master:
//!   both ways), repeatable; says what it changed and what to persist;
//! - `status`: every server's role, threads, lag, positions and errors;
//! - `promote` and `follow`: the promotion step and a backup's follow, as
//!   the agent runs them, for an operator without agents (or keepalived's
//!   notify) and for tests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use mailherd_config::Config;
use mailherd_drivers::database::MariadbReplication;
use mailherd_drivers::Database;
use mailherd_mariadb::{Health, NodeStatus, SetupReport, Topology};

#[derive(clap::Subcommand)]
pub enum DbCommand {
    /// Set up GTID replication from the master to every other node: the
    /// replication account, server_id, gtid_domain_id, auto_increment
    /// (master-master), read_only, CHANGE MASTER TO ... MASTER_USE_GTID=
    /// slave_pos. Changes only what differs; exit 1 unless every server is
    /// healthy afterwards.
    SetupReplication {
        #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The node whose server holds the data (default: the cluster's
        /// current master, asked from this node's agent).
        #[arg(long, value_name = "NODE")]
        master: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every server's role, IO/SQL threads, Seconds_Behind_Master, GTID
    /// positions and last errors; exit 0 all up, 1 otherwise.
    Status {
        #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Make this node's server the master's: apply the relay log (bounded
    /// by max_promotion_lag_ms), stop replicating, read_only=OFF; then
    /// repoint the others (best effort). What the agent's promotion does.
    Promote {
        #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Make this node's server a read-only replica of NODE's (an old
    /// master rejoins this way). What a backup's agent does on its own.
    Follow {
        #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[arg(long, value_name = "NODE")]
        master: String,
    },
}

fn load_topology(path: &std::path::Path) -> anyhow::Result<(Config, Topology)> {
    let config = crate::load(path).with_context(|| format!("loading {}", path.display()))?;
    let topology = Topology::from_config(&config)?;
    Ok((config, topology))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run(command: DbCommand) -> anyhow::Result<ExitCode> {
    match command {
        DbCommand::SetupReplication {
            config,
            master,
            json,
        } => {
            let (config, topology) = load_topology(&config)?;
            let runtime = runtime()?;
            let master = match master {
                Some(master) => master,
                None => runtime.block_on(current_master(&config))?,
            };
            let report = runtime
                .block_on(mailherd_mariadb::setup(&topology, &master))
                .context("setting up replication")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_setup(&report);
            }
            Ok(if report.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DbCommand::Status { config, json } => {
            let (_, topology) = load_topology(&config)?;
            let nodes = runtime()?.block_on(mailherd_mariadb::status(&topology));
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                print_status(&nodes);
            }
            Ok(if nodes.iter().all(|n| n.health == Health::Up) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DbCommand::Promote { config } => {
            let (config, topology) = load_topology(&config)?;
            let database = MariadbReplication::new(topology, &config.node.name)?;
            runtime()?.block_on(async {
                let done = database.promote().await?;
                println!("{}: {done}", config.node.name);
                let mut all_followed = true;
                for (node, result) in database.repoint_others().await {
                    match result {
                        Ok(done) => println!("{node}: {done}"),
                        Err(error) => {
                            all_followed = false;
                            println!("{node}: not repointed: {error}");
                        }
                    }
                }
                if !all_followed {
                    println!(
                        "(a node that was not repointed follows this master once its agent \
                         sees it, or by `mailherd db follow` on it)"
                    );
                }
                anyhow::Ok(ExitCode::SUCCESS)
            })
        }
        DbCommand::Follow { config, master } => {
            let (config, topology) = load_topology(&config)?;
            let database = MariadbReplication::new(topology, &config.node.name)?;
            let done = runtime()?.block_on(database.follow(&master, &|| true))?;
            println!("{}: {done}", config.node.name);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The master's name from this node's agent.
async fn current_master(config: &Config) -> anyhow::Result<String> {
    let url = format!("http://{}/status", config.me().api);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .context("building the HTTP client")?;
    let answer = async {
        let response = client.get(&url).send().await?.error_for_status()?;
        response.json::<mailherd_agent::StatusDocument>().await
    }
    .await;
    match answer {
        Ok(doc) => match doc.assignment {
            Some(assignment) => Ok(assignment.node),
            None => bail!("the agent at {url} knows no master yet: pass --master NODE"),
        },
        Err(error) => bail!(
            "no --master given and the agent at {url} did not answer ({error}): pass --master NODE"
        ),
    }
}

fn print_setup(report: &SetupReport) {
    println!("replication {} from {}:", report.mode, report.master);
    for node in &report.nodes {
        println!(
            "  {} ({}): {} — {}",
            node.name,
            node.address,
            node.health.as_str(),
            node.detail
        );
        if node.changes.is_empty() {
            println!("      nothing to change");
        }
        for change in &node.changes {
            println!("      {change}");
        }
    }
    if !report.persist.is_empty() {
        println!("set at run time only; add to each server's my.cnf ([mariadbd]) to keep after a restart:");
        for line in &report.persist {
            println!("  {line}");
        }
    }
    for warning in &report.warnings {
        println!("{warning}");
    }
}

fn print_status(nodes: &[NodeStatus]) {
    for node in nodes {
        println!(
            "{} ({}): {} — {}: {}",
            node.name,
            node.address,
            node.role,
            node.health.as_str(),
            node.detail
        );
        let Some(state) = &node.state else { continue };
        println!(
            "    server_id {}, gtid_domain_id {}, read_only {}, gtid_binlog_pos {}, gtid_slave_pos {}",
            state.server_id,
            state.gtid_domain_id,
            if state.read_only { "ON" } else { "OFF" },
            or_empty(&state.gtid_binlog_pos),
            or_empty(&state.gtid_slave_pos),
        );
        if let Some(replica) = &state.replica {
            println!(
                "    master {} (Using_Gtid {}), IO {}, SQL {}, Seconds_Behind_Master {}, Gtid_IO_Pos {}",
                replica.source(),
                replica.using_gtid,
                replica.io_running,
                replica.sql_running,
                replica
                    .seconds_behind_master
                    .map_or("NULL".to_string(), |s| s.to_string()),
                or_empty(&replica.gtid_io_pos),
            );
            if replica.last_io_errno != 0 {
                println!(
                    "    Last_IO_Error {}: {}",
                    replica.last_io_errno, replica.last_io_error
                );
            }
            if replica.last_sql_errno != 0 {
                println!(
                    "    Last_SQL_Error {}: {}",
                    replica.last_sql_errno, replica.last_sql_error
                );
            }
        }
    }
}

fn or_empty(text: &str) -> &str {
    if text.is_empty() {
        "(empty)"
    } else {
        text
    }
}
