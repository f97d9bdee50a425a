//! End-to-end test of `up --manager keepalived`: the real `mailherd-lab`
//! with Debian's keepalived on every mail node instead of the agent, the
//! lab the benchmark compares mailherd against.
//!
//! It needs root and keepalived (`scripts/install-deps.sh`). It runs its
//! own lab beside the others: every command gets `MAILHERD_LAB_PREFIX=mhk`
//! and `MAILHERD_LAB_DIR=/var/lib/mailherd-lab-k`, so it never touches the
//! labs of `lab_e2e.rs` (`mh-*`) or `cloud_e2e.rs` (`mhc-*`).
//!
//! Assertions are about behaviour, not speed: every wait is bounded
//! generously and only fails when the behaviour never shows.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

/// Serialises the tests of this file: they share one lab.
static LAB_LOCK: Mutex<()> = Mutex::new(());

const LAB_PREFIX: &str = "mhk";
const LAB_DIR: &str = "/var/lib/mailherd-lab-k";
const FAILOVER_WAIT: Duration = Duration::from_secs(30);

fn lab_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mailherd-lab"))
}

/// Exclusive use of this file's lab, clean at the start and at the end.
struct Lab {
    _exclusive: MutexGuard<'static, ()>,
}

impl Lab {
    fn exclusive() -> Lab {
        let exclusive = LAB_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        assert!(nix::unistd::geteuid().is_root(), "the lab tests need root");
        assert!(
            Path::new("/usr/sbin/keepalived").exists(),
            "keepalived is missing: run scripts/install-deps.sh"
        );
        lab_ok(&["down"]);
        Lab {
            _exclusive: exclusive,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let output = lab(&["down"]);
        if !output.status.success() && !std::thread::panicking() {
            panic!("down failed: {}", text(&output.stderr));
        }
    }
}

/// Runs `mailherd-lab` on this file's lab (never the default one).
fn lab(args: &[&str]) -> Output {
    Command::new(lab_bin())
        .args(args)
        .env("MAILHERD_LAB_PREFIX", LAB_PREFIX)
        .env("MAILHERD_LAB_DIR", LAB_DIR)
        .stdin(Stdio::null())
        .output()
        .expect("mailherd-lab runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lab_ok(args: &[&str]) -> String {
    let output = lab(args);
    assert!(
        output.status.success(),
        "`mailherd-lab {}` failed ({}):\nstdout: {}\nstderr: {}\n{}",
        args.join(" "),
        output.status,
        text(&output.stdout),
        text(&output.stderr),
        diagnostics()
    );
    text(&output.stdout)
}

fn status() -> Value {
    serde_json::from_str(&lab_ok(&["status", "--json"])).expect("status --json prints JSON")
}

fn names_where(status: &Value, keep: impl Fn(&Value) -> bool) -> Vec<String> {
    status["nodes"]
        .as_array()
        .expect("status has nodes")
        .iter()
        .filter(|node| keep(node))
        .filter_map(|node| node["name"].as_str())
        .map(str::to_string)
        .collect()
}

/// The master when exactly one node is master and it alone holds the address.
fn only_master(status: &Value) -> Option<String> {
    let masters = names_where(status, |node| node["role"] == "master");
    let holders = names_where(status, |node| node["holds_floating_ip"] == true);
    (masters.len() == 1 && holders == masters).then(|| masters[0].clone())
}

fn role_of(status: &Value, name: &str) -> String {
    status["nodes"]
        .as_array()
        .expect("status has nodes")
        .iter()
        .find(|node| node["name"] == name)
        .and_then(|node| node["role"].as_str())
        .unwrap_or_else(|| panic!("no node {name} in {status}"))
        .to_string()
}

fn probe() -> Option<String> {
    let output = lab(&["probe", "--timeout-ms", "1000"]);
    output
        .status
        .success()
        .then(|| text(&output.stdout).trim().to_string())
}

fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    common::wait_for(what, timeout, check, diagnostics)
}

/// The lab's status and the end of every node's keepalived and notify logs.
fn diagnostics() -> String {
    let mut report = String::new();
    let status = lab(&["status", "--json"]);
    report.push_str(&format!(
        "status: {}{}\n",
        text(&status.stdout),
        text(&status.stderr)
    ));
    if let Ok(entries) = std::fs::read_dir(LAB_DIR) {
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok())
            .flat_map(|entry| {
                ["node.log", "agent.log", "keepalived-notify.log"].map(|log| entry.path().join(log))
            })
            .filter(|path| path.exists())
            .collect();
        logs.sort();
        for log in logs {
            let content = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            report.push_str(&format!("--- {}:\n{tail}\n", log.display()));
        }
    }
    report
}

/// keepalived moves the floating IP on a power cut, and on a dead banner
/// through its track script, which must not fault the backups (whose
/// stack is stopped on purpose): the node that lost its banner ends as a
/// backup again.
#[test]
fn keepalived_moves_the_floating_ip_on_power_and_service_failure() {
    let _lab = Lab::exclusive();
    lab_ok(&["up", "--manager", "keepalived", "--wait-secs", "60"]);

    let first = status();
    assert_eq!(first["manager"], "keepalived", "{first}");
    assert_eq!(first["keepalived"]["name"], "stock", "{first}");
    let old_master = wait_for("one master holding the address", FAILOVER_WAIT, || {
        only_master(&status())
    });
    // Backups are backups, not in FAULT for their stopped banner.
    let backups = wait_for(
        "the other nodes to settle as backups",
        FAILOVER_WAIT,
        || {
            let now = status();
            let backups = names_where(&now, |node| node["role"] == "backup");
            (backups.len() == 2).then_some(backups)
        },
    );
    assert!(!backups.contains(&old_master));
    let banner = probe().expect("the floating IP answers");
    assert!(banner.contains(&old_master), "{banner}");

    lab_ok(&["fail", &old_master, "--mode", "power"]);
    let new_master = wait_for("a new master after the power cut", FAILOVER_WAIT, || {
        only_master(&status()).filter(|master| *master != old_master)
    });
    let banner = wait_for(
        "the new master's banner on the floating IP, from the client",
        FAILOVER_WAIT,
        || probe().filter(|banner| banner.contains(&new_master)),
    );
    assert!(banner.starts_with("220 "), "{banner}");
    assert_eq!(role_of(&status(), &old_master), "down");

    lab_ok(&["fail", &new_master, "--mode", "service"]);
    let third = wait_for("a master after the banner died", FAILOVER_WAIT, || {
        only_master(&status()).filter(|master| *master != new_master)
    });
    assert_ne!(third, old_master, "the powered-off node cannot take over");
    wait_for(
        "the third node's banner on the floating IP",
        FAILOVER_WAIT,
        || probe().filter(|banner| banner.contains(&third)),
    );
    wait_for(
        "the node whose banner died to become a backup again",
        FAILOVER_WAIT,
        || (role_of(&status(), &new_master) == "backup").then_some(()),
    );
}
