//! The database in the agents' pipelines: three real agents on loopback,
//! each with a real mariadbd of its own (`[mariadb]`, no other resource).
//! The first master's promotion makes its server writable; when that node
//! loses power (agent and server killed), the new master's promotion
//! applies its relay log and makes its server writable with every
//! committed row, the third server follows it, and the old node, back
//! with its server, rejoins as a read-only replica on its own agent's
//! follow.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use common::mariadb::{Cluster, Mariadbd};
use common::wait_for;
use serde_json::Value;

struct Agent {
    config: PathBuf,
    api: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn start(&mut self) {
        self.child = Some(common::start_agent(&self.config, &self.log));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn status(&self) -> Option<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_mailherd"))
            .args(["status", "--json", "--api", &self.api])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The node whose agent says it is a master done promoting.
fn master(agents: &[Agent]) -> Option<usize> {
    let masters: Vec<usize> = agents
        .iter()
        .enumerate()
        .filter(|(_, agent)| {
            agent
                .status()
                .is_some_and(|s| s["role"] == "master" && s["phase"] == "master")
        })
        .map(|(i, _)| i)
        .collect();
    (masters.len() == 1).then(|| masters[0])
}

/// As `wait_for`, printing the agents' logs before failing.
fn wait_or_dump<T>(
    agents: &[Agent],
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        if started.elapsed() > limit {
            for agent in agents {
                let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("--- {} ---", agent.log.display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_only(server: &Mariadbd) -> Option<String> {
    server.value("SELECT @@read_only")
}

/// The recorded steps of the promotion of `epoch`, from any agent.
fn promotion_steps(agent: &Agent, epoch: u64) -> Option<Vec<Value>> {
    let status = agent.status()?;
    let entry = status["history"]
        .as_array()?
        .iter()
        .find(|entry| entry["epoch"] == epoch)?
        .clone();
    entry["outcome"]["steps"].as_array().cloned()
}

#[test]
fn agents_promote_the_masters_database_and_the_old_master_rejoins() {
    let mut cluster = Cluster::new(3);
    let configs = cluster.configs("follow_interval_ms = 300");
    // n1 holds the data: replication from it first.
    let setup = Command::new(env!("CARGO_BIN_EXE_mailherd"))
        .args(["db", "setup-replication", "--master", "n1", "--config"])
        .arg(&configs[0])
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "{}{}",
        String::from_utf8_lossy(&setup.stdout),
        String::from_utf8_lossy(&setup.stderr)
    );
    let n1 = &cluster.servers[0];
    n1.create_app_table();
    n1.run("SET GLOBAL read_only=ON");

    let mut agents: Vec<Agent> = configs
        .iter()
        .enumerate()
        .map(|(i, config)| Agent {
            config: config.clone(),
            api: format!("http://127.0.0.1:{}", cluster.ports[i].1),
            log: cluster.dir.path().join(format!("n{}.log", i + 1)),
            child: None,
        })
        .collect();
    for agent in &mut agents {
        agent.start();
    }
    // Whoever the agents pick (n1 held the data until now), its promotion
    // makes its server the writable master and the others follow it.
    let first = wait_for("a first master", Duration::from_secs(30), || {
        master(&agents)
    });
    let epoch = agents[first].status().unwrap()["epoch"].as_u64().unwrap();
    let steps = wait_for("the promotion record", Duration::from_secs(10), || {
        promotion_steps(&agents[(first + 1) % 3], epoch)
    });
    assert!(
        steps
            .iter()
            .any(|step| step["name"] == "promote_database" && step["ok"] == true),
        "{steps:?}"
    );
    let primary = &cluster.servers[first];
    assert_eq!(
        read_only(primary).as_deref(),
        Some("0"),
        "the master's promotion made it writable"
    );

    let mut expected = Vec::new();
    for i in 0..25 {
        primary.app_insert(&format!("row-{i}")).unwrap();
        expected.push(format!("row-{i}"));
    }
    for (i, server) in cluster
        .servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
    {
        wait_for(
            &format!("{} to follow the master", server.name),
            Duration::from_secs(30),
            || (server.try_rows().ok()? == expected).then_some(()),
        );
        assert_eq!(read_only(server).as_deref(), Some("1"), "n{}", i + 1);
    }

    // The master loses power: its agent and its server die at once.
    agents[first].kill();
    cluster.servers[first].kill();
    let second = wait_or_dump(&agents, "a new master", Duration::from_secs(60), || {
        master(&agents).filter(|i| *i != first)
    });
    let new_master = &cluster.servers[second];
    assert_eq!(read_only(new_master).as_deref(), Some("0"));
    assert_eq!(new_master.rows(), expected, "no committed row lost");
    new_master.app_insert("after-failover").unwrap();
    expected.push("after-failover".into());
    let other = &cluster.servers[3 - first - second];
    wait_for(
        "the other replica to follow the new master",
        Duration::from_secs(30),
        || (other.try_rows().ok()? == expected).then_some(()),
    );
    assert_eq!(read_only(other).as_deref(), Some("1"));

    // The old master comes back: its server read-only (my.cnf), its agent
    // a backup that makes it follow the new master.
    cluster.servers[first].start();
    agents[first].start();
    let old = &cluster.servers[first];
    wait_for(
        "the old master to rejoin as a replica",
        Duration::from_secs(60),
        || (old.try_rows().ok()? == expected).then_some(()),
    );
    assert_eq!(read_only(old).as_deref(), Some("1"));
    assert!(
        old.app_insert("refused").is_err(),
        "the old master stays read-only"
    );
    let status = Command::new(env!("CARGO_BIN_EXE_mailherd"))
        .args(["db", "status", "--json", "--config"])
        .arg(&configs[0])
        .output()
        .unwrap();
    let nodes: Value = serde_json::from_slice(&status.stdout).unwrap();
    for node in nodes.as_array().unwrap() {
        assert_eq!(node["health"], "up", "{node}");
    }
    assert!(status.status.success());
}
