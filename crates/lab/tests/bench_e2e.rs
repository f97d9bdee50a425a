//! `mailherd-lab bench` and `nemesis` end to end, on a lab of their own
//! (prefix `mhb`, `/var/lib/mailherd-lab-b`): short runs that check what
//! the commands report and the invariants, never how fast anything was
//! (the figures live in BENCHMARKS.md, made by the full bench).

mod common;

use std::sync::Mutex;

use common::LabEnv;
use serde_json::Value;

static LAB: LabEnv = LabEnv {
    prefix: "mhb",
    dir: "/var/lib/mailherd-lab-b",
    lock: &LOCK,
};
static LOCK: Mutex<()> = Mutex::new(());

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

#[test]
fn bench_reports_design_figures_for_every_mode_with_no_dual_holder() {
    let _lab = LAB.exclusive();
    let report = json(&LAB.ok(&[
        "bench",
        "--json",
        "--rounds",
        "1",
        "--managers",
        "mailherd,keepalived",
        "--modes",
        "power,agent-kill",
        "--footprint-secs",
        "2",
    ]));
    assert_eq!(report["stack"], "banner", "{report:#}");
    for (manager, mode) in [
        ("mailherd", "power"),
        ("mailherd", "agent-kill"),
        ("keepalived", "power"),
        ("keepalived", "agent-kill"),
    ] {
        let figures = &report[manager][mode];
        assert_eq!(figures["runs"], 1, "{mode}: {figures}");
        assert_eq!(figures["failed"], 0, "{mode}: {figures}");
        let median = figures["median_ms"].as_u64().expect("median_ms");
        assert!(median > 0, "{mode}: {figures}");
        assert_eq!(
            figures["max_ms"].as_u64(),
            Some(median),
            "one run: {figures}"
        );
    }
    assert_eq!(report["dual_holder_ms"], 0, "{report:#}");
    assert_eq!(report["lost_messages"], 0);
    assert!(
        report["agent_rss_kib"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
    // The bench took its lab down again.
    assert!(!std::path::Path::new(LAB.dir).join("state.json").exists());
}

#[test]
fn bench_and_nemesis_refuse_bad_arguments_and_a_running_lab() {
    let _lab = LAB.exclusive();
    let stderr = LAB.fails(&["bench", "--rounds", "0"]);
    assert!(stderr.contains("--rounds"), "{stderr}");
    let stderr = LAB.fails(&["bench", "--nodes", "1"]);
    assert!(stderr.contains("--nodes 1"), "{stderr}");
    let stderr = LAB.fails(&["nemesis", "--nodes", "2"]);
    assert!(stderr.contains("--nodes 2"), "{stderr}");
    let stderr = LAB.fails(&["bench", "--modes", "teleport"]);
    assert!(stderr.contains("teleport"), "{stderr}");

    LAB.ok(&["up", "--wait-secs", "60"]);
    let stderr = LAB.fails(&["bench", "--rounds", "1"]);
    assert!(stderr.contains("a lab is up"), "{stderr}");
    let stderr = LAB.fails(&["nemesis", "--faults", "1"]);
    assert!(stderr.contains("a lab is up"), "{stderr}");
}

/// A short nemesis under mail load: random faults, never two holders,
/// every accepted message in the store at the end.
#[test]
fn a_short_nemesis_keeps_the_invariants_and_the_mail() {
    let _lab = LAB.exclusive();
    let report = json(&LAB.ok(&["nemesis", "--faults", "6", "--seed", "3", "--json"]));
    assert_eq!(report["faults"], 6);
    assert_eq!(report["seed"], 3);
    assert_eq!(report["dual_holder_ms"], 0, "{report:#}");
    assert_eq!(report["lost_messages"], 0, "{report:#}");
    assert!(
        report["accepted_messages"].as_u64().unwrap_or(0) > 0,
        "the load sent mail: {report:#}"
    );
    assert_eq!(report["steps"].as_array().map(Vec::len), Some(6));
    for key in ["longest_outage_ms", "breaker_trips"] {
        assert!(report[key].is_u64(), "{key} in {report:#}");
    }
}
