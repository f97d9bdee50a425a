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
    // n1 holds the data: replication from it first, and it is the agents'
    // first choice.
    for config in &configs {
        let text = std::fs::read_to_string(config).unwrap();
        std::fs::write(
            config,
            text.replacen(
                "name = \"n1\"\nid = 1\n",
                "name = \"n1\"\nid = 1\npriority = 200\n",
                1,
            ),
        )
        .unwrap();
    }
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
    n1.run("CREATE DATABASE app");
    n1.run("CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))");
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
    let first = wait_for("a first master", Duration::from_secs(30), || {
        master(&agents)
    });
    assert_eq!(first, 0, "n1 has the highest priority");
    let epoch = agents[0].status().unwrap()["epoch"].as_u64().unwrap();
    let steps = wait_for("the promotion record", Duration::from_secs(10), || {
        promotion_steps(&agents[1], epoch)
    });
    assert!(
        steps
            .iter()
            .any(|step| step["name"] == "promote_database" && step["ok"] == true),
        "{steps:?}"
    );
    assert_eq!(
        read_only(n1).as_deref(),
        Some("0"),
        "the master's promotion made it writable"
    );

    let mut expected = Vec::new();
    for i in 0..25 {
        n1.app_insert(&format!("row-{i}")).unwrap();
        expected.push(format!("row-{i}"));
    }
    for server in &cluster.servers[1..] {
        wait_for(
            &format!("{} to replicate", server.name),
            Duration::from_secs(20),
            || (server.rows() == expected).then_some(()),
        );
        assert_eq!(read_only(server).as_deref(), Some("1"));
    }

    // n1 loses power: its agent and its server die at once.
    agents[0].kill();
    cluster.servers[0].kill();
    let second = wait_for("a new master", Duration::from_secs(60), || {
        master(&agents).filter(|i| *i != 0)
    });
    let new_master = &cluster.servers[second];
    assert_eq!(read_only(new_master).as_deref(), Some("0"));
    assert_eq!(new_master.rows(), expected, "no committed row lost");
    new_master.app_insert("after-failover").unwrap();
    expected.push("after-failover".into());
    let other = &cluster.servers[3 - second];
    wait_for(
        "the other replica to follow the new master",
        Duration::from_secs(30),
        || (other.rows() == expected).then_some(()),
    );
    assert_eq!(read_only(other).as_deref(), Some("1"));

    // n1 comes back: its server read-only (my.cnf), its agent a backup that
    // makes it follow the new master.
    cluster.servers[0].start();
    agents[0].start();
    let n1 = &cluster.servers[0];
    wait_for(
        "the old master to rejoin as a replica",
        Duration::from_secs(60),
        || (n1.rows() == expected).then_some(()),
    );
    assert_eq!(read_only(n1).as_deref(), Some("1"));
    assert!(
        n1.app_insert("refused").is_err(),
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
