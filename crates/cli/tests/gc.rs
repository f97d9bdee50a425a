//! The reconciler, the garbage collector and JSON logs with three real
//! agents on loopback. Their "mail stack" is a `command` services driver
//! whose state is a file per node (`nX.running`), so a stack "left running
//! on a backup" is one `touch` away:
//!
//! - n1 (highest priority) becomes master and runs its stack;
//! - on n3 (reconciler every 200 ms) a stack started by hand is stopped by
//!   the reconciler, which logs the split-brain alarm (a JSON line with its
//!   fields) and shows what it did in `/status` under `workers`;
//! - on n2 (reconciler off) `mailherd gc --dry-run` reports the stack
//!   through the agent and `mailherd gc` stops it; on the master n1 `gc`
//!   refuses; with n2's agent killed, `gc` only reports (the stack and the
//!   dead agent's pid file) until `--force` removes them.
//!
//! Every agent logs with `--log-json`: each line of every log must be a JSON
//! object with `level`, `target` and `fields`.
//!
//! The lab test `crates/lab/tests/reconcile_e2e.rs` does the same with a
//! floating address and a mounted volume in network namespaces.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_for;
use mailherd_agent::gc::{Garbage, GcReport};
use serde_json::Value;

const TOKEN: &str = "gc-test-token-0123456789";

struct Node {
    name: String,
    config: PathBuf,
    log: PathBuf,
    running_file: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).expect("creating the agent's log");
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_mailherd"))
                .args(["agent", "--log-json", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting the agent"),
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `mailherd ARGS --config <this node's config>`: (exit ok, stdout, stderr).
    fn mailherd(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_mailherd"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("running mailherd");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn status(&self) -> Option<Value> {
        let (ok, out, _) = self.mailherd(&["status", "--json"]);
        ok.then(|| serde_json::from_str(&out).ok()).flatten()
    }

    /// `mailherd gc ARGS --json`: exit ok, the report, stderr.
    fn gc(&self, args: &[&str]) -> (bool, GcReport, String) {
        let mut all = vec!["gc", "--json"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.mailherd(&all);
        let report = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("gc printed no report ({e}): {out}\nstderr: {err}"));
        (ok, report, err)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three agents; `extra[i]` is appended to node i's config.
fn cluster(dir: &Path, extra: [&str; 3]) -> Vec<Node> {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let (ports, members) = common::members(3);
    // n1 first: the decider picks the highest priority.
    let members = members.replacen("id = 1\n", "id = 1\npriority = 200\n", 1);
    ports
        .iter()
        .enumerate()
        .map(|(i, (peer, api))| {
            let name = format!("n{}", i + 1);
            let config = dir.join(format!("{name}.toml"));
            let running_file = dir.join(format!("{name}.running"));
            let file = running_file.display();
            let text = format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{data}\"\n\n\
                 [cluster]\nname = \"test\"\n\n{members}\
                 [api]\nlisten = \"127.0.0.1:{api}\"\npeer_listen = \"127.0.0.1:{peer}\"\ntoken_file = \"{token}\"\n\n\
                 [services]\ndriver = \"command\"\n\
                 start = [\"/bin/sh\", \"-c\", \"touch {file}\"]\n\
                 stop = [\"/bin/sh\", \"-c\", \"rm -f {file}\"]\n\
                 kill = [\"/bin/sh\", \"-c\", \"rm -f {file}\"]\n\
                 status = [\"/bin/sh\", \"-c\", \"test -f {file}\"]\n\n\
                 [gc]\ninterval_s = 0\n\n{extra}\n",
                data = dir.join(&name).display(),
                token = dir.join("token").display(),
                extra = extra[i],
            );
            std::fs::write(&config, text).unwrap();
            Node {
                log: dir.join(format!("{name}.log")),
                name,
                config,
                running_file,
                child: None,
            }
        })
        .collect()
}

/// The worker called `name` in a status document.
fn worker(status: &Value, name: &str) -> Value {
    status["workers"]
        .as_array()
        .and_then(|workers| workers.iter().find(|w| w["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no worker {name} in {}", status["workers"]))
}

#[test]
fn reconciler_and_gc_remove_a_stack_left_on_a_backup_and_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(
        dir.path(),
        [
            "[reconciler]\ninterval_ms = 200\n",
            "[reconciler]\ninterval_ms = 0\n",
            "[reconciler]\ninterval_ms = 200\n",
        ],
    );
    for node in nodes.iter_mut() {
        node.start();
    }
    // n1 has the highest priority, but the first decider may not have
    // heard from it yet: then a switchover puts it in place.
    let first = wait_for("a master", Duration::from_secs(30), || {
        nodes.iter().position(|n| {
            n.status().is_some_and(|s| {
                s["phase"] == "master" && s["assignment"]["node"] == n.name.as_str()
            })
        })
    });
    if first != 0 {
        let (ok, out, err) = nodes[0].mailherd(&["switchover", "--to", "n1"]);
        assert!(ok, "switchover to n1: {out}\n{err}");
    }
    wait_for("n1 to be master", Duration::from_secs(30), || {
        let status = nodes[0].status()?;
        (status["phase"] == "master").then_some(())
    });
    assert!(nodes[0].running_file.exists(), "the master runs its stack");
    for node in &nodes[1..] {
        wait_for("the backups to be ready", Duration::from_secs(30), || {
            (node.status()?["phase"] == "backup").then_some(())
        });
    }

    // The reconciler on n3: a stack started by hand on a backup is stopped,
    // with the split-brain alarm.
    std::fs::write(&nodes[2].running_file, "").unwrap();
    wait_for(
        "n3's reconciler to stop the stack",
        Duration::from_secs(20),
        || (!nodes[2].running_file.exists()).then_some(()),
    );
    let reconciler = wait_for(
        "n3's reconciler to say what it did",
        Duration::from_secs(10),
        || {
            let reconciler = worker(&nodes[2].status()?, "reconciler");
            reconciler["last_action"]
                .as_str()
                .is_some_and(|a| a.contains("released mail stack"))
                .then_some(reconciler)
        },
    );
    assert!(reconciler["runs"].as_u64().unwrap() >= 1, "{reconciler}");
    let alarm = std::fs::read_to_string(&nodes[2].log)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["split_brain"] == true)
        .expect("n3 logged the split-brain alarm");
    assert_eq!(alarm["level"], "ERROR", "{alarm}");
    assert!(
        alarm["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("SPLIT-BRAIN ALARM"),
        "{alarm}"
    );
    assert_eq!(alarm["fields"]["stray"], "mail stack (running)", "{alarm}");
    // The master's stack was never touched.
    assert!(nodes[0].running_file.exists());
    let n1 = nodes[0].status().unwrap();
    assert_eq!(n1["phase"], "master");
    for name in ["control_loop", "reconciler", "gc"] {
        worker(&n1, name);
    }

    // The garbage collector on n2 (its reconciler is off), through its agent.
    std::fs::write(&nodes[1].running_file, "").unwrap();
    let (ok, report, err) = nodes[1].gc(&["--dry-run"]);
    assert!(ok, "{err}");
    assert_eq!(report.agent, "running", "{report:?}");
    assert_eq!(report.phase.as_deref(), Some("backup"), "{report:?}");
    assert_eq!(
        report.findings(),
        vec![(Garbage::StackOnBackup, "would remove")]
    );
    assert!(nodes[1].running_file.exists(), "a dry run removes nothing");
    let (ok, report, err) = nodes[1].gc(&[]);
    assert!(ok, "{err}");
    assert_eq!(report.findings(), vec![(Garbage::StackOnBackup, "removed")]);
    assert!(!nodes[1].running_file.exists(), "gc stopped the stack");
    // The reply comes before the loop records the pass and republishes
    // the status document.
    wait_for(
        "n2's gc worker to show the removal",
        Duration::from_secs(10),
        || {
            let gc_worker = worker(&nodes[1].status()?, "gc");
            (gc_worker["state"] == "idle"
                && gc_worker["last_action"]
                    .as_str()
                    .is_some_and(|a| a.contains("(removed)")))
            .then_some(())
        },
    );

    // The master: gc refuses to touch it; a dry run reports why not.
    let (ok, out, err) = nodes[0].mailherd(&["gc"]);
    assert!(!ok, "gc on the master must refuse: {out}");
    assert!(err.contains("is the master"), "{err}");
    let (ok, report, err) = nodes[0].gc(&["--dry-run"]);
    assert!(ok, "{err}");
    assert_eq!(report.findings(), vec![], "{report:?}");
    assert!(report.host_refused.is_some(), "{report:?}");
    assert!(nodes[0].running_file.exists());

    // n2's agent dies (SIGKILL): its pid file stays behind, unlocked. gc
    // reports only, until --force.
    nodes[1].kill();
    std::fs::write(&nodes[1].running_file, "").unwrap();
    let pid_file = dir.path().join("n2").join("agent.pid");
    assert!(pid_file.exists());
    let expected = |action| {
        vec![
            (Garbage::StackOnBackup, action),
            (
                Garbage::StaleFile {
                    path: pid_file.display().to_string(),
                },
                action,
            ),
        ]
    };
    for args in [&["--dry-run"][..], &[][..]] {
        let (ok, report, err) = nodes[1].gc(args);
        assert!(ok, "{err}");
        assert!(err.contains("does not answer"), "{err}");
        assert!(err.contains("reporting only"), "{err}");
        assert_eq!(report.agent, "down");
        assert_eq!(report.findings(), expected("would remove"));
    }
    assert!(nodes[1].running_file.exists() && pid_file.exists());
    let (ok, report, err) = nodes[1].gc(&["--force"]);
    assert!(ok, "{err}");
    assert_eq!(report.findings(), expected("removed"));
    assert!(!nodes[1].running_file.exists() && !pid_file.exists());
    // The text report says the same in words.
    std::fs::write(&nodes[1].running_file, "").unwrap();
    let (ok, out, _) = nodes[1].mailherd(&["gc", "--dry-run"]);
    assert!(ok);
    assert!(
        out.contains("mail stack running on a node that is not the master: would remove"),
        "{out}"
    );

    // `mailherd status` shows the workers.
    let (ok, out, _) = nodes[0].mailherd(&["status"]);
    assert!(ok);
    assert!(
        out.contains("workers:") && out.contains("reconciler"),
        "{out}"
    );

    // Every line every agent logged is a JSON object with level, target
    // and fields.
    for node in nodes.iter_mut() {
        node.kill();
        let log = std::fs::read_to_string(&node.log).unwrap();
        assert!(log.lines().count() > 3, "{}: {log}", node.name);
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", node.name));
            assert!(value["level"].is_string(), "{line}");
            assert!(value["target"].is_string(), "{line}");
            assert!(value["fields"].is_object(), "{line}");
        }
    }
}
