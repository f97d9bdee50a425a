//! Three real agents on loopback (no floating IP, volumes or stack: the
//! role alone): they elect one master; when the master's agent is killed,
//! another node takes the role with a higher epoch; the restarted agent
//! does not take it back on its own.
//!
//! The lab tests (crates/lab/tests) do the same with namespaces, addresses,
//! a shared volume and a real mail stack.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::cluster::exclusive;
use common::wait_for;
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

struct Node {
    name: String,
    config: PathBuf,
    api: String,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, dir: &Path) {
        let log = dir.join(format!("{}.log", self.name));
        self.child = Some(common::start_agent(&self.config, &log));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as systemd stops a unit; waits for the agent to exit (it
    /// must, within its shutdown limit and backstop: a minute).
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let exited = common::wait_exit(&mut child, Duration::from_secs(90));
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within 90 s of SIGTERM", self.name);
            }
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

/// The agents' log tails on the test's output if it fails.
fn logs_on_failure(nodes: &[Node], dir: &Path) -> common::LogsOnFailure {
    common::LogsOnFailure(
        nodes
            .iter()
            .map(|n| dir.join(format!("{}.log", n.name)))
            .collect(),
    )
}

fn cluster(dir: &Path) -> Vec<Node> {
    cluster_of(dir, 3, "")
}

/// `n` agents on loopback; `cluster_extra` is added to every `[cluster]`
/// section. Every agent accepts the token in `dir/token`.
fn cluster_of(dir: &Path, n: usize, cluster_extra: &str) -> Vec<Node> {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let token_file = format!("token_file = \"{}\"\n", dir.join("token").display());
    common::cluster::write_configs(dir, n, cluster_extra, &token_file)
        .into_iter()
        .map(|(name, config, api)| Node {
            name,
            config,
            api: format!("http://127.0.0.1:{api}"),
            child: None,
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
    let dir = common::tempdir();
    let mut nodes = cluster(dir.path());
    let _logs = logs_on_failure(&nodes, dir.path());
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
    let dir = common::tempdir();
    let mut nodes = cluster(dir.path());
    let _logs = logs_on_failure(&nodes, dir.path());
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
    let dir = common::tempdir();
    let mut nodes = cluster(dir.path());
    let _logs = logs_on_failure(&nodes, dir.path());
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
    let dir = common::tempdir();
    let mut nodes = cluster(dir.path());
    let _logs = logs_on_failure(&nodes, dir.path());
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
    let dir = common::tempdir();
    // Five voters so that two can die and a quorum remains; one failover
    // per hour allowed.
    let mut nodes = cluster_of(dir.path(), 5, "breaker_max_failovers = 1");
    let _logs = logs_on_failure(&nodes, dir.path());
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
    // The alert in the log: the deciding node says so once, loudly.
    let logs: String = nodes
        .iter()
        .filter_map(|n| std::fs::read_to_string(dir.path().join(format!("{}.log", n.name))).ok())
        .collect();
    assert!(
        logs.contains("CIRCUIT BREAKER OPEN"),
        "no breaker alert in the agents' logs"
    );

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
    let dir = common::tempdir();
    let mut nodes = cluster(dir.path());
    let _logs = logs_on_failure(&nodes, dir.path());
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
    // Any node's status, once it applied the new assignment (a node that
    // lags by a few entries shows the old history for a moment).
    let status = wait_for(
        "a status with the new assignment",
        Duration::from_secs(10),
        || {
            nodes
                .iter()
                .filter_map(|n| n.status())
                .find(|s| s["epoch"].as_u64() >= Some(after_epoch))
        },
    );
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

/// 3 → 5 → 3: two nodes join a running cluster as voters (the master
/// keeps its role and epoch throughout), carry the quorum while two of the
/// original backups are down, and leave again.
#[test]
fn members_join_and_leave_a_running_cluster_without_moving_the_master() {
    let _cluster = exclusive();
    let dir = common::tempdir();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let (ports, all_members) = common::members(5);
    // The first three know only each other; the two joiners know everyone.
    let first_members: String = all_members
        .split("[[members]]")
        .filter(|part| !part.trim().is_empty())
        .take(3)
        .map(|part| format!("[[members]]{part}"))
        .collect();
    let mut nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, (peer, api))| {
            let name = format!("n{}", i + 1);
            let config = dir.path().join(format!("{name}.toml"));
            let (members, join) = if i < 3 {
                (first_members.as_str(), "")
            } else {
                (all_members.as_str(), "join = true\n")
            };
            let text = format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n{join}\n[cluster]\nname = \"test\"\n\n{members}[api]\nlisten = \"127.0.0.1:{api}\"\npeer_listen = \"127.0.0.1:{peer}\"\ntoken_file = \"{}\"\n",
                dir.path().join(&name).display(),
                dir.path().join("token").display()
            );
            std::fs::write(&config, text).unwrap();
            Node {
                name,
                config,
                api: format!("http://127.0.0.1:{api}"),
                child: None,
            }
        })
        .collect();
    // Declared after `dir`, so dropped (and printed) before it is deleted.
    let _logs = logs_on_failure(&nodes, dir.path());
    // All five start at once, like the other tests' nodes: a port picked
    // early and bound late could meanwhile be taken by an outgoing
    // connection. The joiners wait to be added.
    for node in nodes.iter_mut() {
        node.start(dir.path());
    }
    let (master, epoch) = one_master(&nodes[..3], "a first master");
    let token_file = dir.path().join("token");
    let token_file = token_file.to_str().unwrap();
    // The master must never move: checked after every step. A status
    // read can time out on a loaded machine; the epoch is the proof that no
    // assignment was made meanwhile (not even back to the same node).
    let same_master = |nodes: &[Node], what: &str| {
        let status = wait_for("the master's status", Duration::from_secs(10), || {
            nodes[master].status()
        });
        assert_eq!(
            (status["role"].as_str(), status["epoch"].as_u64()),
            (Some("master"), Some(epoch)),
            "the master moved {what}: {status}"
        );
        let (names, now_epoch) = masters(nodes);
        assert!(
            names.iter().all(|name| *name == nodes[master].name) && now_epoch == epoch,
            "the master moved {what}: masters {names:?} at epoch {now_epoch}"
        );
    };

    // Joiners wait to be added: they start no cluster of their own.
    for node in &nodes[3..] {
        let status = wait_for("the joiner's API", Duration::from_secs(10), || {
            node.status()
        });
        assert_ne!(status["role"], "master", "{status}");
    }
    // Added through a backup's API: it points the CLI at the leader.
    let backup = (0..3).find(|i| *i != master).unwrap();
    for (i, (peer, api)) in ports.iter().enumerate().skip(3) {
        let (ok, stdout, stderr) = cli(
            &nodes[backup],
            &[
                "members",
                "add",
                "--name",
                &format!("n{}", i + 1),
                "--id",
                &(i + 1).to_string(),
                "--peer",
                &format!("127.0.0.1:{peer}"),
                "--member-api",
                &format!("127.0.0.1:{api}"),
                "--token-file",
                token_file,
            ],
        );
        assert!(ok, "adding n{}: {stdout}{stderr}", i + 1);
        same_master(&nodes, "while adding a member");
    }
    wait_for("five members in the status", Duration::from_secs(5), || {
        let status = nodes[master].status()?;
        let names: Vec<&str> = status["members"]
            .as_array()?
            .iter()
            .filter_map(|m| m["name"].as_str())
            .collect();
        (names == ["n1", "n2", "n3", "n4", "n5"]).then_some(())
    });
    // The joiners follow the cluster: they know the master.
    for node in &nodes[3..] {
        wait_for(
            "a joiner to see the master",
            Duration::from_secs(10),
            || {
                let status = node.status()?;
                (status["assignment"]["node"] == nodes[master].name).then_some(())
            },
        );
    }

    // Five voters: the master keeps its lease with the two original
    // backups down, because the joiners count. (The master leads Raft once
    // it is promoted; losing a leader would cost any master its lease.)
    wait_for("the master to lead Raft", Duration::from_secs(10), || {
        let status = nodes[master].status()?;
        (status["leader"]["name"] == nodes[master].name).then_some(())
    });
    let others: Vec<usize> = (0..3).filter(|i| *i != master).collect();
    for i in &others {
        nodes[*i].kill();
    }
    std::thread::sleep(Duration::from_secs(3));
    same_master(&nodes, "with two of five voters down");
    for i in &others {
        nodes[*i].start(dir.path());
    }
    for i in &others {
        wait_for(
            "a restarted backup to know the leader",
            Duration::from_secs(10),
            || {
                let status = nodes[*i].status()?;
                (!status["leader"].is_null()).then_some(())
            },
        );
    }

    // The master cannot be removed; the joiners can, one by one.
    let (ok, _, stderr) = cli(
        &nodes[others[0]],
        &[
            "members",
            "remove",
            &nodes[master].name,
            "--token-file",
            token_file,
        ],
    );
    assert!(!ok && stderr.contains("switchover"), "{stderr}");
    for name in ["n4", "n5"] {
        let (ok, stdout, stderr) = cli(
            &nodes[others[0]],
            &["members", "remove", name, "--token-file", token_file],
        );
        assert!(ok, "removing {name}: {stdout}{stderr}");
        same_master(&nodes[..3], "while removing a member");
    }
    for node in nodes.iter_mut().skip(3) {
        node.kill();
    }
    // The status document is rebuilt every 100 ms.
    wait_for(
        "three members in the status",
        Duration::from_secs(5),
        || {
            let status = nodes[master].status()?;
            (status["members"].as_array()?.len() == 3).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    same_master(&nodes[..3], "after the joiners left");
}
