//! End-to-end tests: the real `mailherd-lab` driving real `mailherd` agents.
//!
//! They need root (namespaces, loop devices, mounts) and the `mailherd`
//! binary next to `mailherd-lab` (`cargo build --bins` before `cargo test`),
//! or another agent build named by `MAILHERD_BIN`.
//! One lab exists per machine, so every test holds [`LAB_LOCK`] and runs
//! `down` first and last (also when it fails, from `Drop`).
//!
//! Assertions are about behaviour, never about how fast it happened: every
//! wait is bounded generously and only fails when the behaviour never shows.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{lab_bin, only_master, text, LabEnv};
use serde_json::Value;

/// The machine's default lab (`mh-` namespaces, [`LAB_DIR`]); the tests
/// share it, one at a time.
static LAB: LabEnv = LabEnv {
    prefix: "mh",
    dir: LAB_DIR,
    lock: &LAB_LOCK,
};
static LAB_LOCK: Mutex<()> = Mutex::new(());

const LAB_DIR: &str = "/var/lib/mailherd-lab";
const FAILOVER_WAIT: Duration = Duration::from_secs(30);
const MAIL_WAIT: Duration = Duration::from_secs(60);

fn lab(args: &[&str]) -> Output {
    LAB.run(args)
}

/// Runs the lab, asserts success, returns stdout.
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

fn nodes_with_role(status: &Value, role: &str) -> Vec<String> {
    status["nodes"]
        .as_array()
        .expect("status has nodes")
        .iter()
        .filter(|node| node["role"] == role)
        .map(|node| node["name"].as_str().expect("nodes have names").to_string())
        .collect()
}

fn role_of(status: &Value, node: &str) -> String {
    status["nodes"]
        .as_array()
        .expect("status has nodes")
        .iter()
        .find(|entry| entry["name"] == node)
        .and_then(|entry| entry["role"].as_str())
        .unwrap_or("missing")
        .to_string()
}

/// The mail nodes whose eth0 carries the floating IP, read with `ip -n`.
fn floating_ip_holders(status: &Value) -> Vec<String> {
    let floating_ip = status["floating_ip"]
        .as_str()
        .expect("status has the floating IP");
    status["nodes"]
        .as_array()
        .expect("status has nodes")
        .iter()
        .filter(|node| node["kind"] == "mail")
        .filter(|node| {
            holds_address(
                node["namespace"].as_str().expect("nodes have namespaces"),
                floating_ip,
            )
        })
        .map(|node| node["name"].as_str().expect("nodes have names").to_string())
        .collect()
}

fn holds_address(namespace: &str, address: &str) -> bool {
    let output = Command::new("ip")
        .args([
            "-n", namespace, "-4", "-o", "address", "show", "dev", "eth0",
        ])
        .output()
        .expect("ip runs");
    text(&output.stdout)
        .split_whitespace()
        .any(|word| word.split('/').next() == Some(address))
}

/// Polls `check` every 250 ms until it returns `Some`, for at most `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    common::wait_for(what, timeout, check, diagnostics)
}

/// What a failing test prints: the lab's status and the end of every
/// node's agent and node log.
fn diagnostics() -> String {
    LAB.diagnostics(&["agent.log", "node.log"], 60)
}

fn subjects() -> Option<Vec<String>> {
    common::subjects_of(&lab(&["mail", "list", "--json"]))
}

fn probe() -> Option<String> {
    let output = lab(&["probe", "--timeout-ms", "1000"]);
    output
        .status
        .success()
        .then(|| text(&output.stdout).trim().to_string())
}

/// Namespaces the lab may have left (all carry the `mh-` prefix).
fn lab_namespaces() -> Vec<String> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    text(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("mh-"))
        .map(str::to_string)
        .collect()
}

/// Loop devices backed by a file of the lab.
fn lab_loop_devices() -> Vec<String> {
    let output = Command::new("losetup")
        .args([
            "--list",
            "--noheadings",
            "--raw",
            "--output",
            "NAME,BACK-FILE",
        ])
        .output()
        .expect("losetup runs");
    text(&output.stdout)
        .lines()
        .filter(|line| line.contains(LAB_DIR))
        .map(str::to_string)
        .collect()
}

fn assert_nothing_left_behind() {
    assert_eq!(
        lab_namespaces(),
        Vec::<String>::new(),
        "lab namespaces remain"
    );
    assert_eq!(
        lab_loop_devices(),
        Vec::<String>::new(),
        "lab loop devices remain"
    );
    assert!(!Path::new(LAB_DIR).exists(), "{LAB_DIR} remains");
}

#[test]
fn down_with_nothing_up_succeeds() {
    let _lab = LAB.exclusive();
    let stdout = lab_ok(&["down"]);
    assert!(stdout.contains("nothing to remove"), "{stdout}");
    assert_nothing_left_behind();
}

#[test]
fn missing_agent_binary_is_a_clear_error_and_leaves_nothing_behind() {
    let _lab = LAB.exclusive();
    let stderr = LAB.fails(&["up", "--nodes", "3", "--agent-bin", "/nonexistent"]);
    assert!(
        stderr.contains("/nonexistent"),
        "the error names the path: {stderr}"
    );
    assert!(
        stderr.contains("cargo build --bins"),
        "the error says how to get the agent: {stderr}"
    );
    assert_nothing_left_behind();
}

#[test]
fn bad_arguments_are_refused_before_anything_is_made() {
    let _lab = LAB.exclusive();
    let stderr = LAB.fails(&["up", "--nodes", "8"]);
    assert!(stderr.contains("between 2 and 7"), "{stderr}");
    let stderr = LAB.fails(&["up", "--nodes", "3", "--witness", "3"]);
    assert!(stderr.contains("--witness"), "{stderr}");
    let stderr = LAB.fails(&["up", "--nodes", "3", "--cloud", "aws"]);
    assert!(stderr.contains("invalid value 'aws'"), "{stderr}");
    // Two voters cannot elect anyone after losing one: the agent's own
    // validation says so, before the lab builds anything.
    let stderr = LAB.fails(&["up", "--nodes", "2"]);
    assert!(stderr.contains("witness"), "{stderr}");
    let stderr = LAB.fails(&["fail", "n1", "--mode", "power"]);
    assert!(stderr.contains("no lab is up"), "{stderr}");
    assert_nothing_left_behind();
}

#[test]
fn up_twice_fails_and_leaves_the_first_lab_intact() {
    let _lab = LAB.exclusive();
    lab_ok(&["up", "--nodes", "3", "--stack", "banner"]);
    let master = wait_for("exactly one master", FAILOVER_WAIT, || {
        only_master(&status())
    });
    let state_before = std::fs::read_to_string(Path::new(LAB_DIR).join("state.json"))
        .expect("the state file exists");

    let stderr = LAB.fails(&["up", "--nodes", "2", "--witness", "1", "--stack", "mail"]);
    assert!(stderr.contains("lab already up"), "{stderr}");
    assert!(stderr.contains("mailherd-lab down"), "{stderr}");

    let state_after = std::fs::read_to_string(Path::new(LAB_DIR).join("state.json"))
        .expect("the state file survives");
    assert_eq!(
        state_after, state_before,
        "the second up must not touch the first lab"
    );
    let status = status();
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(3));
    assert_eq!(only_master(&status).as_deref(), Some(master.as_str()));
    let banner = wait_for("a banner on the floating IP", FAILOVER_WAIT, probe);
    assert!(banner.starts_with("220 "), "{banner}");
}

#[test]
fn fail_with_an_unknown_node_lists_the_known_nodes() {
    let _lab = LAB.exclusive();
    lab_ok(&["up", "--nodes", "2", "--witness", "1", "--stack", "banner"]);
    let stderr = LAB.fails(&["fail", "n9", "--mode", "power"]);
    assert!(stderr.contains("\"n9\""), "{stderr}");
    assert!(stderr.contains("n1, n2, w1"), "{stderr}");
    let stderr = LAB.fails(&["fail", "w1", "--mode", "service"]);
    assert!(stderr.contains("witness"), "{stderr}");
    // Nothing was harmed.
    wait_for("exactly one master", FAILOVER_WAIT, || {
        only_master(&status())
    });
}

/// Starts `watch` in the background; its output is read after it is killed.
fn start_watch() -> Child {
    Command::new(lab_bin())
        .args(["watch", "--interval-ms", "20", "--duration-ms", "120000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("watch starts")
}

fn stop_watch(mut watch: Child) -> String {
    let _ = watch.kill();
    let _ = watch.wait();
    let mut output = String::new();
    watch
        .stdout
        .take()
        .expect("watch stdout is piped")
        .read_to_string(&mut output)
        .expect("watch output is text");
    output
}

/// The common scenario: mail accepted before a fault to the master is
/// listed over IMAP after another node took over, with exactly one master
/// and one holder of the floating IP before and after.
///
/// With `hold_queue`, the old master's queue manager is frozen first, so the
/// mail is accepted into the queue on the shared volume but not delivered:
/// the new master must deliver it from there.
fn mail_survives_a_fault_of_the_master(mode: &str, hold_queue: bool) -> (String, String) {
    lab_ok(&["up", "--nodes", "3", "--stack", "mail"]);
    let master = wait_for("exactly one master", FAILOVER_WAIT, || {
        only_master(&status())
    });
    wait_for(
        "the master's banner on the floating IP",
        FAILOVER_WAIT,
        || probe().filter(|banner| banner.contains(&format!("{master}.lab.test"))),
    );
    wait_for(
        "only the master to hold the floating IP",
        FAILOVER_WAIT,
        || (floating_ip_holders(&status()) == vec![master.clone()]).then_some(()),
    );
    if hold_queue {
        freeze_queue_manager(&format!("mh-{master}"));
    }

    let subject = format!("before-{mode}-{}", std::process::id());
    // Like any SMTP client, retry until the server takes the mail: what
    // must survive is mail that was acknowledged with 250.
    let reply = wait_for("the mail to be accepted over SMTP", FAILOVER_WAIT, || {
        let output = lab(&["mail", "send", "--subject", &subject]);
        output.status.success().then(|| text(&output.stdout))
    });
    assert!(reply.starts_with("250"), "the mail was accepted: {reply}");

    // The fault goes to whoever is master now.
    let old_master = wait_for("exactly one master", FAILOVER_WAIT, || {
        only_master(&status())
    });
    if hold_queue && old_master != master {
        // The queued mail is on the shared volume either way; note the move.
        eprintln!("note: the role moved from {master} to {old_master} before the fault");
    }
    lab_ok(&["fail", &old_master, "--mode", mode]);
    let new_master = wait_for("another node as the only master", FAILOVER_WAIT, || {
        only_master(&status()).filter(|master| *master != old_master)
    });
    let banner = wait_for(
        "the new master's SMTP banner on the floating IP",
        FAILOVER_WAIT,
        || {
            probe().filter(|banner| {
                banner.starts_with("220 ") && banner.contains(&format!("{new_master}.lab.test"))
            })
        },
    );
    assert!(banner.contains("Postfix"), "{banner}");
    wait_for(
        "the mail sent before the fault, over IMAP",
        MAIL_WAIT,
        || subjects().filter(|subjects| subjects.contains(&subject)),
    );

    let status = status();
    assert_eq!(
        only_master(&status).as_deref(),
        Some(new_master.as_str()),
        "exactly one master after the failover"
    );
    assert_eq!(
        floating_ip_holders(&status),
        vec![new_master.clone()],
        "only the new master holds the floating IP"
    );
    (old_master, new_master)
}

/// SIGSTOPs Postfix's qmgr in `namespace` (a power cut SIGKILLs it later).
fn freeze_queue_manager(namespace: &str) {
    let output = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
        .expect("ip runs");
    let qmgr: Vec<i32> = text(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim() == "qmgr")
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(qmgr.len(), 1, "one qmgr runs on the master in {namespace}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qmgr[0]),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("qmgr can be stopped");
}

/// After `heal`, the old master answers again and does not take the role back.
fn heal_and_check(old_master: &str, new_master: &str) {
    lab_ok(&["heal", old_master]);
    wait_for(
        "the healed node to answer as a non-master",
        FAILOVER_WAIT,
        || {
            let status = status();
            let role = role_of(&status, old_master);
            (role != "down" && role != "master").then_some(())
        },
    );
    // Never two masters or two holders of the address while the healed node
    // rejoins; then exactly one master, holding the address. (A transient
    // moment without a master right after a former leader rejoins has been
    // seen under load: a known issue in CHANGELOG.md, not what this checks.)
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        let status = status();
        let masters = nodes_with_role(&status, "master");
        assert!(
            masters.len() <= 1,
            "two masters {masters:?}\n{}",
            diagnostics()
        );
        let holders = floating_ip_holders(&status);
        assert!(
            holders.len() <= 1,
            "two holders {holders:?}\n{}",
            diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Read together: if the role moves once more meanwhile (the known
    // issue above), waiting for the node that was master a moment ago to
    // hold the address would wait for the wrong node.
    let master = wait_for(
        "exactly one master, holding the floating IP, after heal",
        FAILOVER_WAIT,
        || {
            let status = status();
            only_master(&status).filter(|master| floating_ip_holders(&status) == [master.clone()])
        },
    );
    if master != new_master {
        eprintln!("note: the role moved from {new_master} to {master} after {old_master} rejoined");
    }
}

/// Also the queue: mail accepted but not yet delivered when the power went
/// is delivered by the new master from the queue on the shared volume.
#[test]
fn power_failure_of_the_master_keeps_the_mail() {
    let _lab = LAB.exclusive();
    let (old_master, new_master) = mail_survives_a_fault_of_the_master("power", true);
    assert_eq!(
        role_of(&status(), &old_master),
        "down",
        "a powered-off node is down"
    );
    heal_and_check(&old_master, &new_master);
}

#[test]
fn service_failure_of_the_master_keeps_the_mail() {
    let _lab = LAB.exclusive();
    let (old_master, new_master) = mail_survives_a_fault_of_the_master("service", false);
    // The node itself stays up; its agent answers.
    assert_ne!(role_of(&status(), &old_master), "down");
    heal_and_check(&old_master, &new_master);
}

#[test]
fn partition_of_the_master_fences_it_and_keeps_the_mail() {
    let _lab = LAB.exclusive();
    let (old_master, new_master) = mail_survives_a_fault_of_the_master("partition", false);
    let namespace = format!("mh-{old_master}");
    wait_for(
        "the cut-off node to drop the floating IP",
        FAILOVER_WAIT,
        || (!holds_address(&namespace, "10.77.0.100")).then_some(()),
    );
    // Read from inside its own namespace, the cut-off node is not master.
    assert_ne!(role_of(&status(), &old_master), "master");
    heal_and_check(&old_master, &new_master);
}

#[test]
fn watch_shows_a_failover_live() {
    let _lab = LAB.exclusive();
    lab_ok(&["up", "--nodes", "2", "--witness", "1", "--stack", "banner"]);
    let old_master = wait_for("exactly one master", FAILOVER_WAIT, || {
        only_master(&status())
    });
    wait_for("a banner on the floating IP", FAILOVER_WAIT, probe);
    let watch = start_watch();
    // Let the watcher (another process) record the old master's banner
    // before the fault; otherwise its first probe may race the power cut.
    std::thread::sleep(Duration::from_secs(1));
    lab_ok(&["fail", &old_master, "--mode", "power"]);
    let new_master = wait_for("another node as the only master", FAILOVER_WAIT, || {
        only_master(&status()).filter(|master| *master != old_master)
    });
    wait_for("the new master's banner", FAILOVER_WAIT, || {
        probe().filter(|banner| banner.contains(&format!("{new_master}.lab.test")))
    });
    // Give watch a few probe intervals to record the new banner.
    std::thread::sleep(Duration::from_millis(500));
    let output = stop_watch(watch);
    let old_line = output
        .lines()
        .position(|line| line.contains(&format!("banner: 220 {old_master}.lab.test")));
    let new_line = output
        .lines()
        .position(|line| line.contains(&format!("banner: 220 {new_master}.lab.test")));
    assert!(
        old_line.is_some() && new_line.is_some() && old_line < new_line,
        "watch output:\n{output}"
    );
}

/// Waits for the checker to finish and asserts no two nodes ever held the
/// address, the mount or the stack at once; returns its report.
fn assert_never_two_holders(checker: Child) -> Value {
    let output = checker.wait_with_output().expect("invariants runs");
    assert!(output.status.success(), "invariants failed");
    let report: Value = serde_json::from_slice(&output.stdout).expect("invariants prints JSON");
    assert_eq!(report["dual_holder_ms"], 0, "{report}\n{}", diagnostics());
    for key in [
        "max_address_holders",
        "max_mount_holders",
        "max_stack_holders",
    ] {
        assert!(report[key].as_u64() <= Some(1), "{key}: {report}");
    }
    report
}

/// A fault to the master of a fresh banner lab, watched by the invariant
/// checker: another node ends as the only master, and no two nodes ever
/// held the address, the volume or the stack at once. Returns (old, new).
fn fault_the_master_and_check(up: &[&str], fail: &[&str]) -> (String, String) {
    lab_ok(up);
    let master = wait_for("exactly one master", FAILOVER_WAIT, || {
        only_master(&status())
    });
    wait_for("the master's banner", FAILOVER_WAIT, || {
        probe().filter(|banner| banner.contains(&format!("{master}.lab.test")))
    });
    let checker = LAB.start_invariants(Duration::from_secs(12));
    std::thread::sleep(Duration::from_millis(500));
    let mut args = vec!["fail", master.as_str()];
    args.extend_from_slice(fail);
    lab_ok(&args);
    let new_master = wait_for("another node as the only master", FAILOVER_WAIT, || {
        only_master(&status()).filter(|m| *m != master)
    });
    wait_for("the new master's banner", FAILOVER_WAIT, || {
        probe().filter(|banner| banner.contains(&format!("{new_master}.lab.test")))
    });
    let report = assert_never_two_holders(checker);
    let changes = report["address_changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c[1] == serde_json::json!([new_master])),
        "the checker saw the address move to {new_master}: {report}\n{}",
        diagnostics()
    );
    (master, new_master)
}

fn node_log(node: &str) -> String {
    std::fs::read_to_string(format!("{LAB_DIR}/{node}/node.log")).unwrap_or_default()
}

#[test]
fn a_killed_agent_is_fenced_by_its_watchdog() {
    let _lab = LAB.exclusive();
    let (old, new) = fault_the_master_and_check(&["up", "--nodes", "3"], &["--mode", "agent-kill"]);
    assert!(
        node_log(&old).contains("WATCHDOG FIRED"),
        "{}",
        node_log(&old)
    );
    assert_eq!(
        role_of(&status(), &old),
        "down",
        "the watchdog powered it off"
    );
    heal_and_check(&old, &new);
}

#[test]
fn a_frozen_agent_is_fenced_by_its_watchdog() {
    let _lab = LAB.exclusive();
    let (old, new) =
        fault_the_master_and_check(&["up", "--nodes", "3"], &["--mode", "agent-freeze"]);
    assert!(
        node_log(&old).contains("WATCHDOG FIRED"),
        "{}",
        node_log(&old)
    );
    let status = status();
    assert_eq!(
        role_of(&status, &old),
        "down",
        "the watchdog powered it off"
    );
    heal_and_check(&old, &new);
}

/// The master still reaches clients but none of its peers: it fences
/// itself, the majority elects another master.
#[test]
fn a_master_cut_off_from_its_peers_but_not_from_clients_gives_way() {
    let _lab = LAB.exclusive();
    let (old, new) = fault_the_master_and_check(
        &["up", "--nodes", "3"],
        &["--mode", "partition", "--from", "peers"],
    );
    assert!(!holds_address(&format!("mh-{old}"), "10.77.0.100"));
    heal_and_check(&old, &new);
}

/// The master hears nothing from its peers but they hear it (an asymmetric
/// partition): it cannot commit renewals and fences itself; openraft's
/// quorum-loss probing silences it as leader so the others can elect one.
#[test]
fn a_master_that_hears_no_peer_gives_way() {
    let _lab = LAB.exclusive();
    let (old, new) = fault_the_master_and_check(
        &["up", "--nodes", "3"],
        &["--mode", "partition", "--from", "peers", "--one-way"],
    );
    assert!(!holds_address(&format!("mh-{old}"), "10.77.0.100"));
    heal_and_check(&old, &new);
}

/// The Raft leader every node names, when they all name the same one.
fn agreed_leader(status: &Value) -> Option<String> {
    let nodes = status["nodes"].as_array()?;
    let leader = nodes.first()?["raft_leader"].as_str()?;
    nodes
        .iter()
        .all(|node| node["raft_leader"] == leader)
        .then(|| leader.to_string())
}

/// The master once every node says the Raft leader sits on it.
///
/// The master renews its lease through the Raft leader, and the leader
/// hands its leadership to a new master only once the master's renewals
/// flow steadily (ARCHITECTURE.md, "Leader on the master"): until then,
/// losing the backup that leads costs the master its role.
fn master_leading_raft() -> Option<String> {
    let status = status();
    let master = only_master(&status)?;
    (agreed_leader(&status)? == master).then_some(master)
}

/// Waits for the invariant checker, asserts it saw no two holders and the
/// address never move, and that `master` is still the only master;
/// `while_what` says what happened meanwhile, for the failure message.
fn assert_the_master_stayed(checker: Child, master: &str, while_what: &str) {
    let report = assert_never_two_holders(checker);
    assert_eq!(
        report["address_changes"].as_array().unwrap().len(),
        1,
        "the address moved {while_what}: {report}\n{}",
        diagnostics()
    );
    assert_eq!(only_master(&status()).as_deref(), Some(master));
}

/// A master that loses one peer of two keeps its majority and its role,
/// whichever peer it loses: with the Raft leader on the master, neither
/// backup is needed for a quorum.
#[test]
fn a_master_cut_off_from_one_peer_keeps_the_role() {
    let _lab = LAB.exclusive();
    lab_ok(&["up", "--nodes", "3"]);
    let master = wait_for(
        "one master, leading Raft in every node's view",
        FAILOVER_WAIT,
        master_leading_raft,
    );
    let peer = nodes_with_role(&status(), "backup")[0].clone();
    let checker = LAB.start_invariants(Duration::from_secs(5));
    lab_ok(&["fail", &master, "--mode", "partition", "--from", &peer]);
    assert_the_master_stayed(
        checker,
        &master,
        &format!("after {master} was cut off from {peer}"),
    );
    lab_ok(&["heal"]);
}

/// A master cut off from the backup that still leads Raft (before the
/// leader moved to it) keeps its role: renewals the leader does not answer
/// go through the other backup (`Consensus::propose_with_relays`).
#[test]
fn a_master_cut_off_from_the_leading_backup_keeps_the_role() {
    let _lab = LAB.exclusive();
    master_cut_off_from_the_leader_keeps_the_role(&["up", "--nodes", "3"]);
}

/// The same with two mail nodes and a witness: whichever of the two peers
/// leads, the renewals go through the other.
#[test]
fn two_nodes_and_a_witness_keep_a_master_cut_off_from_the_leader() {
    let _lab = LAB.exclusive();
    master_cut_off_from_the_leader_keeps_the_role(&["up", "--nodes", "2", "--witness", "1"]);
}

/// Brings the lab `up`, waits for a master while another node leads Raft,
/// cuts the master off from that leader, and checks that nothing moves.
fn master_cut_off_from_the_leader_keeps_the_role(up: &[&str]) {
    lab_ok(up);
    // The leader usually still sits on another node right after `up`; if
    // it has moved already, one switchover opens the same moment again.
    let deadline = Instant::now() + FAILOVER_WAIT;
    let mut switched = false;
    let (master, leader) = loop {
        assert!(
            Instant::now() < deadline,
            "never saw another node leading Raft next to a master\n{}",
            diagnostics()
        );
        let status = status();
        if let (Some(master), Some(leader)) = (only_master(&status), agreed_leader(&status)) {
            if master != leader {
                break (master, leader);
            }
            if !switched {
                let backup = nodes_with_role(&status, "backup")[0].clone();
                common::switchover(&status, &backup);
                switched = true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let checker = LAB.start_invariants(Duration::from_secs(5));
    lab_ok(&["fail", &master, "--mode", "partition", "--from", &leader]);
    assert_the_master_stayed(
        checker,
        &master,
        &format!("after {master} was cut off from the leader {leader}"),
    );
    let agent_log =
        std::fs::read_to_string(format!("{LAB_DIR}/{master}/agent.log")).unwrap_or_default();
    assert!(
        agent_log.contains("lease renewals go through other voters"),
        "the master never said its renewals were relayed\n{}",
        diagnostics()
    );
    lab_ok(&["heal"]);
}

/// Two mail nodes and a witness survive the loss of the master's link.
#[test]
fn two_nodes_and_a_witness_survive_a_partition_of_the_master() {
    let _lab = LAB.exclusive();
    let (old, new) = fault_the_master_and_check(
        &["up", "--nodes", "2", "--witness", "1"],
        &["--mode", "partition"],
    );
    wait_for(
        "the cut-off node to drop the floating IP",
        FAILOVER_WAIT,
        || (!holds_address(&format!("mh-{old}"), "10.77.0.100")).then_some(()),
    );
    heal_and_check(&old, &new);
}

/// 3 → 5 → 3 in the lab: two mail nodes join the settled cluster (its
/// Raft leader on the master) and leave again; the master never moves and
/// nothing is ever held twice.
#[test]
fn the_cluster_grows_to_five_and_shrinks_to_three_around_its_master() {
    let _lab = LAB.exclusive();
    lab_ok(&["up", "--nodes", "3"]);
    let master = wait_for(
        "one master, leading Raft in every node's view",
        FAILOVER_WAIT,
        master_leading_raft,
    );
    let checker = LAB.start_invariants(Duration::from_secs(25));
    lab_ok(&["add-node"]);
    lab_ok(&["add-node"]);
    let grown = wait_for("five members, two new backups", FAILOVER_WAIT, || {
        let status = status();
        let backups = nodes_with_role(&status, "backup");
        (backups.contains(&"n4".to_string()) && backups.contains(&"n5".to_string()))
            .then_some(status)
    });
    assert_eq!(grown["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(
        only_master(&grown).as_deref(),
        Some(master.as_str()),
        "{grown}\n{}",
        diagnostics()
    );
    // The master itself cannot be removed.
    let refusal = LAB.fails(&["remove-node", &master]);
    assert!(refusal.contains("switchover"), "{refusal}");
    lab_ok(&["remove-node", "n4"]);
    lab_ok(&["remove-node", "n5"]);
    let shrunk = status();
    assert_eq!(shrunk["nodes"].as_array().unwrap().len(), 3, "{shrunk}");
    assert!(!lab_namespaces().contains(&"mh-n4".to_string()));
    assert_the_master_stayed(checker, &master, "while members came and went");
}
