//! Three real agents on loopback (no floating IP, volumes or stack: the
//! role alone): they elect one master; when the master's agent is killed,
//! another node takes the role with a higher epoch; the restarted agent
//! does not take it back on its own.
//!
//! The lab tests (crates/lab/tests) do the same with namespaces, addresses,
//! a shared volume and a real mail stack.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_for;
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

/// One cluster at a time: on a two-core CI machine, six clusters of three
/// to five agents at once starve each other of CPU, and what would then be
/// tested is the scheduler.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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

fn cluster(dir: &Path) -> Vec<Node> {
    cluster_of(dir, 3, "")
}

/// `n` agents on loopback; `cluster_extra` is added to every `[cluster]`
/// section. Every agent accepts the token in `dir/token`.
fn cluster_of(dir: &Path, n: usize, cluster_extra: &str) -> Vec<Node> {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let (ports, members) = common::members(n);
    ports
        .iter()
        .enumerate()
        .map(|(i, (peer, api))| {
            let name = format!("n{}", i + 1);
            let config = dir.join(format!("{name}.toml"));
            let text = format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n\n[cluster]\nname = \"test\"\n{cluster_extra}\n\n{members}[api]\nlisten = \"127.0.0.1:{api}\"\npeer_listen = \"127.0.0.1:{peer}\"\ntoken_file = \"{}\"\n",
                dir.join(&name).display(),
                dir.join("token").display()
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

/// Runs `mailherd ARGS --api <node's api>` and returns (success, stdout, stderr).
fn cli(node: &Node, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailherd"))
        .args(args)
        .args(["--api", &node.api])
        .output()
        .expect("running mailherd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for exactly one master and returns its index in `nodes` and the epoch.
fn one_master(nodes: &[Node], what: &str) -> (usize, u64) {
    wait_for(what, Duration::from_secs(30), || {
        let (names, epoch) = masters(nodes);
        (names.len() == 1).then(|| {
            (
                nodes.iter().position(|n| n.name == names[0]).unwrap(),
                epoch,
            )
        })
    })
}

/// Starts every node and waits for the first master: its index and epoch.
fn start_and_elect(nodes: &mut [Node], dir: &Path) -> (usize, u64) {
    for node in nodes.iter_mut() {
        node.start(dir);
    }
    one_master(nodes, "a first master")
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
    let _cluster = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    let (index, epoch) = start_and_elect(&mut nodes, dir.path());
    let first = nodes[index].name.clone();
    assert!(epoch >= 1);

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
    assert_ne!(status["role"], "master");
    // For two seconds: never two masters, and the restarted node never
    // takes its old epoch back. (A transient moment without a master right
    // after a former leader restarts has been seen under load; see the
    // known issues in CHANGELOG.md. It is not what this test is about.)
    let watch_until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < watch_until {
        let (names, _) = masters(&nodes);
        assert!(names.len() <= 1, "two masters: {names:?}");
        if let Some(restarted) = nodes[index].status() {
            let resumed = restarted["role"] == "master"
                && restarted["assignment"]["epoch"].as_u64() == Some(epoch);
            assert!(!resumed, "restarted {first} resumed its old epoch {epoch}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (now_master, _) = one_master(&nodes, "one master after the restart");
    if nodes[now_master].name == first {
        let status = nodes[now_master].status().unwrap();
        assert!(
            status["epoch"].as_u64().unwrap() > second_epoch,
            "{first} is master only under a new epoch"
        );
    }

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
    let _cluster = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    let (index, epoch) = start_and_elect(&mut nodes, dir.path());
    let first = nodes[index].name.clone();
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

#[test]
fn switchover_moves_the_role_to_the_named_node_and_needs_the_token() {
    let _cluster = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    let (master, epoch) = start_and_elect(&mut nodes, dir.path());
    let target = (master + 1) % nodes.len();
    let target_name = nodes[target].name.clone();
    let token_file = dir.path().join("token").display().to_string();

    // Without the right token: refused, nothing moves.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let (ok, _, stderr) = cli(
        &nodes[target],
        &[
            "switchover",
            "--to",
            &target_name,
            "--token-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(!ok && stderr.contains("401"), "{stderr}");
    // An unknown node is named in the refusal.
    let (ok, _, stderr) = cli(
        &nodes[target],
        &["switchover", "--to", "n9", "--token-file", &token_file],
    );
    assert!(!ok && stderr.contains("unknown node `n9`"), "{stderr}");

    let (ok, stdout, stderr) = cli(
        &nodes[target],
        &[
            "switchover",
            "--to",
            &target_name,
            "--token-file",
            &token_file,
        ],
    );
    assert!(ok, "{stdout}{stderr}");
    let (now_master, now_epoch) = wait_for("the switchover", Duration::from_secs(30), || {
        let (index, epoch) = one_master(&nodes, "one master");
        (index == target).then_some((index, epoch))
    });
    assert_eq!(now_master, target);
    assert_eq!(now_epoch, epoch + 1);
    let status = nodes[target].status().unwrap();
    let record = status["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(record["kind"], "switchover", "{record}");
    // A switchover is not a failover: the breaker counts only the automatic
    // ones (none, unless a loaded machine made an agent miss its lease).
    let failovers = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "failover")
        .count();
    assert_eq!(
        status["breaker"]["failovers_in_window"], failovers,
        "a switchover is not a failover: {status}"
    );
}

#[test]
fn maintenance_stops_automatic_failover_until_turned_off() {
    let _cluster = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    let (master, _) = start_and_elect(&mut nodes, dir.path());
    let other = (master + 1) % nodes.len();
    let token_file = dir.path().join("token").display().to_string();
    let (ok, _, stderr) = cli(
        &nodes[other],
        &["maintenance", "on", "--token-file", &token_file],
    );
    assert!(ok, "{stderr}");
    wait_for("maintenance to show", Duration::from_secs(10), || {
        nodes[other].status()?["maintenance_since_unix_ms"].as_u64()
    });

    nodes[master].kill();
    // The decider says why it does not act; no one takes over meanwhile.
    wait_for(
        "the decider to report maintenance",
        Duration::from_secs(30),
        || {
            nodes
                .iter()
                .filter_map(|n| n.status())
                .find(|s| s["decider_blocked"] == "maintenance mode")
        },
    );
    assert!(masters(&nodes).0.is_empty(), "no failover in maintenance");

    let (ok, _, stderr) = cli(
        &nodes[other],
        &["maintenance", "off", "--token-file", &token_file],
    );
    assert!(ok, "{stderr}");
    let (new_master, _) = one_master(&nodes, "a master after maintenance");
    assert_ne!(new_master, master);
}

#[test]
fn the_breaker_stops_a_failover_loop_until_reset() {
    let _cluster = exclusive();
    let dir = tempfile::tempdir().unwrap();
    // Five voters so that two can die and a quorum remains; one failover
    // per hour allowed.
    let mut nodes = cluster_of(dir.path(), 5, "breaker_max_failovers = 1");
    let (first, _) = start_and_elect(&mut nodes, dir.path());
    let token_file = dir.path().join("token").display().to_string();
    nodes[first].kill();
    let (second, _) = wait_for("the one allowed failover", Duration::from_secs(30), || {
        let (index, epoch) = one_master(&nodes, "one master");
        (index != first).then_some((index, epoch))
    });
    nodes[second].kill();
    // The second failover within the hour is refused, loudly.
    let blocked = wait_for("the breaker to open", Duration::from_secs(30), || {
        nodes.iter().filter_map(|n| n.status()).find_map(|s| {
            s["decider_blocked"]
                .as_str()
                .filter(|b| b.contains("circuit breaker open"))
                .map(String::from)
        })
    });
    assert!(blocked.contains("1 failovers"), "{blocked}");
    assert!(
        masters(&nodes).0.is_empty(),
        "no master while the breaker is open"
    );
    let alive = (0..nodes.len())
        .find(|i| *i != first && *i != second)
        .unwrap();
    let status = nodes[alive].status().unwrap();
    assert_eq!(status["breaker"]["open"], true, "{}", status["breaker"]);

    let (ok, _, stderr) = cli(
        &nodes[alive],
        &["breaker", "reset", "--token-file", &token_file],
    );
    assert!(ok, "{stderr}");
    let (third, _) = one_master(&nodes, "a master after the reset");
    assert!(third != first && third != second);
}

#[test]
fn epoch_and_history_survive_a_restart_of_every_agent() {
    let _cluster = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    let (master, epoch) = start_and_elect(&mut nodes, dir.path());
    let before = nodes[master].status().unwrap()["history"]
        .as_array()
        .unwrap()
        .len();
    for node in nodes.iter_mut() {
        node.terminate();
    }
    for node in nodes.iter_mut() {
        node.start(dir.path());
    }
    let (_, after_epoch) = one_master(&nodes, "a master after the restart");
    assert!(
        after_epoch > epoch,
        "the epoch went on from {epoch}, got {after_epoch}"
    );
    let status = wait_for("status", Duration::from_secs(10), || {
        nodes.iter().find_map(|n| n.status())
    });
    let history = status["history"].as_array().unwrap();
    assert!(
        history.len() > before,
        "history kept and extended: {history:?}"
    );
    assert_eq!(
        history[0]["epoch"], 1,
        "the first assignment is still there"
    );
}
