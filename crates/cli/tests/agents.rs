//! Three real agents on loopback (no floating IP, volumes or stack: the
//! role alone): they elect one master; when the master's agent is killed,
//! another node takes the role with a higher epoch; the restarted agent
//! does not take it back on its own.
//!
//! The lab tests (crates/lab/tests) do the same with namespaces, addresses,
//! a shared volume and a real mail stack.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Node {
    name: String,
    config: PathBuf,
    api: String,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, dir: &Path) {
        let log = std::fs::File::create(dir.join(format!("{}.log", self.name))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mailherd"))
            .args(["agent", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the agent");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as systemd stops a unit; waits for the agent to exit.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    fn status(&self) -> Option<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_mailherd"))
            .args(["status", "--json", "--api", &self.api])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cluster(dir: &Path) -> Vec<Node> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut members = String::new();
    for (i, (peer, api)) in ports.iter().enumerate() {
        members.push_str(&format!(
            "[[members]]\nname = \"n{n}\"\nid = {n}\npeer = \"127.0.0.1:{peer}\"\napi = \"127.0.0.1:{api}\"\n\n",
            n = i + 1
        ));
    }
    ports
        .iter()
        .enumerate()
        .map(|(i, (peer, api))| {
            let name = format!("n{}", i + 1);
            let config = dir.join(format!("{name}.toml"));
            let text = format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n\n[cluster]\nname = \"test\"\n\n{members}[api]\nlisten = \"127.0.0.1:{api}\"\npeer_listen = \"127.0.0.1:{peer}\"\n",
                dir.join(&name).display()
            );
            std::fs::write(&config, text).unwrap();
            Node {
                name,
                config,
                api: format!("http://127.0.0.1:{api}"),
                child: None,
            }
        })
        .collect()
}

/// Polls until `f` returns Some, or panics after `limit` naming `what`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The names of the nodes that report `master`, and the epoch they agree on.
fn masters(nodes: &[Node]) -> (Vec<String>, u64) {
    let mut names = Vec::new();
    let mut epoch = 0;
    for node in nodes {
        if let Some(status) = node.status() {
            if status["role"] == "master" {
                names.push(node.name.clone());
            }
            epoch = epoch.max(status["epoch"].as_u64().unwrap_or(0));
        }
    }
    (names, epoch)
}

#[test]
fn agents_elect_one_master_and_fail_over_when_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in nodes.iter_mut() {
        node.start(dir.path());
    }
    let (first, epoch) = wait_for("a first master", Duration::from_secs(30), || {
        let (names, epoch) = masters(&nodes);
        (names.len() == 1).then(|| (names[0].clone(), epoch))
    });
    assert!(epoch >= 1);

    let index = nodes.iter().position(|n| n.name == first).unwrap();
    nodes[index].kill();
    let (second, second_epoch) = wait_for("a new master", Duration::from_secs(30), || {
        let (names, epoch) = masters(&nodes);
        (names.len() == 1 && names[0] != first).then(|| (names[0].clone(), epoch))
    });
    assert!(
        second_epoch > epoch,
        "epochs must grow: {epoch} then {second_epoch}"
    );

    // The old master comes back: it must not take the role back on its own.
    nodes[index].start(dir.path());
    let status = wait_for(
        "the restarted agent to answer",
        Duration::from_secs(30),
        || nodes[index].status(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (names, _) = masters(&nodes);
    assert_eq!(
        names,
        vec![second.clone()],
        "restarted {first} must stay a backup"
    );
    assert_ne!(status["role"], "master");

    // History: two assignments, both completed.
    let status = nodes
        .iter()
        .find(|n| n.name == second)
        .unwrap()
        .status()
        .unwrap();
    let history = status["history"].as_array().unwrap();
    assert!(history.len() >= 2, "{history:?}");
}

#[test]
fn a_master_stopped_cleanly_releases_and_hands_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in nodes.iter_mut() {
        node.start(dir.path());
    }
    let (first, epoch) = wait_for("a first master", Duration::from_secs(30), || {
        let (names, epoch) = masters(&nodes);
        (names.len() == 1).then(|| (names[0].clone(), epoch))
    });
    let index = nodes.iter().position(|n| n.name == first).unwrap();
    nodes[index].terminate();
    let (second, _) = wait_for("a new master", Duration::from_secs(30), || {
        let (names, epoch) = masters(&nodes);
        (names.len() == 1 && names[0] != first && epoch > 1).then(|| (names[0].clone(), epoch))
    });
    // The fast path: the new epoch was assigned because the old master
    // released, not because its lease ran out.
    let status = nodes
        .iter()
        .find(|n| n.name == second)
        .unwrap()
        .status()
        .unwrap();
    let history = status["history"].as_array().unwrap();
    let next = history
        .iter()
        .find(|h| h["epoch"].as_u64() == Some(epoch + 1))
        .unwrap_or_else(|| panic!("no epoch {} in {history:?}", epoch + 1));
    let reason = next["reason"].as_str().unwrap();
    assert!(reason.contains("released"), "assigned for: {reason}");
    // The stopped node is marked as shut down, not picked again.
    let members = status["members"].as_array().unwrap();
    let old = members
        .iter()
        .find(|m| m["name"] == first.as_str())
        .unwrap();
    assert_eq!(old["ready"], false, "{old}");

    // Started again, it reports itself ready (no fault cooldown).
    nodes[index].start(dir.path());
    wait_for(
        "the restarted node to be ready",
        Duration::from_secs(30),
        || {
            let status = nodes.iter().find(|n| n.name == second)?.status()?;
            let members = status["members"].as_array()?.clone();
            members
                .iter()
                .any(|m| m["name"] == first.as_str() && m["ready"] == true)
                .then_some(())
        },
    );
}
