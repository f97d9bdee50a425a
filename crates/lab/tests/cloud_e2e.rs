//! End-to-end test of `--cloud hetzner-sim`: the real `mailherd-lab` with
//! the Hetzner Cloud API simulator and its router, driving real `mailherd`
//! agents with the `hetzner` drivers.
//!
//! It needs root and the `mailherd` binary next to `mailherd-lab` (`cargo
//! build --bins` before `cargo test`), or another build named by
//! `MAILHERD_BIN`. It runs its own lab beside the default one: every
//! command gets `MAILHERD_LAB_PREFIX=mhc` and
//! `MAILHERD_LAB_DIR=/var/lib/mailherd-lab-c`, so it never touches the lab
//! of `lab_e2e.rs` (namespaces `mh-*`, `/var/lib/mailherd-lab`).
//!
//! Assertions are about behaviour, not speed: every wait is bounded
//! generously and only fails when the behaviour never shows.

mod common;

use common::{only_master, text, LabEnv};

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// This file's lab, beside the default one; its tests share it, one at a
/// time.
static LAB: LabEnv = LabEnv {
    prefix: LAB_PREFIX,
    dir: LAB_DIR,
    lock: &LAB_LOCK,
};
static LAB_LOCK: Mutex<()> = Mutex::new(());

const LAB_PREFIX: &str = "mhc";
const LAB_DIR: &str = "/var/lib/mailherd-lab-c";
const FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// Runs `mailherd-lab` on this file's lab (never the default one).
fn lab(args: &[&str]) -> Output {
    LAB.run(args)
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

/// The world as the simulator's API shows it (written after every change).
fn world() -> Value {
    let path = Path::new(LAB_DIR).join("cloud").join("world.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text).expect("the world is JSON")
}

/// `(floating IP's server, volume's server)` in the simulator's world.
fn cloud_assignment() -> (Option<u64>, Option<u64>) {
    let world = world();
    (
        world["floating_ips"][0]["server"].as_u64(),
        world["volumes"][0]["server"].as_u64(),
    )
}

fn server_of(status: &Value, node: &str) -> u64 {
    status["cloud"]["servers"][node]
        .as_u64()
        .unwrap_or_else(|| panic!("no server id for {node} in {}", status["cloud"]))
}

/// The mail nodes whose mount namespace shows the volume's device.
fn nodes_seeing_the_device(status: &Value) -> Vec<String> {
    let device = Path::new(LAB_DIR).join("cloud").join("dev").join(format!(
        "scsi-0HC_Volume_{}",
        status["cloud"]["volume_ids"][0]
    ));
    status["nodes"]
        .as_array()
        .expect("status has nodes")
        .iter()
        .filter(|node| node["kind"] == "mail" && node["role"] != "down")
        .filter_map(|node| node["name"].as_str())
        .filter(|name| {
            let device = device.display().to_string();
            lab(&["exec", name, "--", "test", "-b", &device])
                .status
                .success()
        })
        .map(str::to_string)
        .collect()
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

/// The lab's status, the simulator's log and world, and every agent log's end.
fn diagnostics() -> String {
    let mut report = LAB.diagnostics(&["agent.log"], 20);
    let cloud = Path::new(LAB_DIR).join("cloud");
    for file in ["world.json", "hcloud-sim.log"] {
        report.push_str(&common::tail(&cloud.join(file), 30));
    }
    report
}

#[test]
fn hetzner_sim_moves_the_floating_ip_and_the_volume_to_the_new_master_after_a_power_failure() {
    let _lab = LAB.exclusive();
    lab_ok(&["up", "--cloud", "hetzner-sim", "--wait-secs", "60"]);

    // Design §7's cloud object, exactly.
    let first = status();
    let cloud = &first["cloud"];
    let mut keys: Vec<&str> = cloud
        .as_object()
        .expect("status --json has a cloud object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["api", "floating_ip_id", "servers", "token", "volume_ids"]
    );
    assert!(
        cloud["api"].as_str().unwrap().starts_with("http://"),
        "{cloud}"
    );
    assert!(!cloud["token"].as_str().unwrap().is_empty());
    assert!(cloud["floating_ip_id"].as_u64().is_some());
    assert_eq!(cloud["volume_ids"].as_array().unwrap().len(), 1);
    assert_eq!(cloud["servers"].as_object().unwrap().len(), 3);
    let namespaces = text(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        namespaces.contains(&format!("{LAB_PREFIX}-router")),
        "{namespaces}"
    );

    // The first master holds both, per the simulator, and only it sees
    // the device.
    let old_master = only_master(&first).expect("one master after up");
    let old_server = server_of(&first, &old_master);
    assert_eq!(
        cloud_assignment(),
        (Some(old_server), Some(old_server)),
        "{}",
        diagnostics()
    );
    assert_eq!(
        nodes_seeing_the_device(&first),
        std::slice::from_ref(&old_master)
    );
    let banner = probe().expect("the floating IP answers through the router");
    assert!(banner.contains(&old_master), "{banner}");

    lab_ok(&["fail", &old_master, "--mode", "power"]);

    let new_master = wait_for("a new master", FAILOVER_WAIT, || {
        only_master(&status()).filter(|master| *master != old_master)
    });
    let after = status();
    let new_server = server_of(&after, &new_master);
    wait_for(
        "the simulator to route the floating IP and attach the volume to the new master",
        FAILOVER_WAIT,
        || (cloud_assignment() == (Some(new_server), Some(new_server))).then_some(()),
    );
    let banner = wait_for(
        "the new master's banner on the floating IP, from the client",
        FAILOVER_WAIT,
        || probe().filter(|banner| banner.contains(&new_master)),
    );
    assert!(banner.starts_with("220 "), "{banner}");
    // The volume is the new master's only: the device is visible there
    // alone (the old master is off) and mounted there alone.
    let after = status();
    assert_eq!(
        nodes_seeing_the_device(&after),
        std::slice::from_ref(&new_master)
    );
    let mounted: Vec<&str> = after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["volume_mounted"] == true)
        .filter_map(|node| node["name"].as_str())
        .collect();
    assert_eq!(mounted, [new_master.as_str()]);
}

/// `curl` from the lab's client namespace (the only place that reaches the
/// simulator and the agents' APIs).
fn client_curl(args: &[&str]) -> String {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{LAB_PREFIX}-client"),
            "curl",
            "-sS",
            "--max-time",
            "5",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The simulator's root (`http://10.77.0.1:8080`), for its `/_sim` paths.
fn simulator(status: &Value) -> String {
    status["cloud"]["api"]
        .as_str()
        .expect("status --json names the cloud's api")
        .trim_end_matches("/v1")
        .to_string()
}

/// Queues `fault` (the JSON of `POST /_sim/faults`) in the simulator.
fn inject_fault(sim: &str, fault: &str) {
    let answer: Value = serde_json::from_str(&client_curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        fault,
        &format!("{sim}/_sim/faults"),
    ]))
    .unwrap_or_else(|error| panic!("the simulator refused {fault}: {error}"));
    assert!(answer["fault"].is_object(), "{fault}: {answer}");
}

/// The injected faults not yet used up.
fn pending_faults(sim: &str) -> Vec<Value> {
    let answer: Value =
        serde_json::from_str(&client_curl(&[&format!("{sim}/_sim/faults")])).unwrap();
    answer["faults"]
        .as_array()
        .expect("a list of faults")
        .clone()
}

/// The agent's own `/status` document (through the client namespace).
fn agent_status(status: &Value, node: &str) -> Value {
    let api = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["name"] == node)
        .and_then(|entry| entry["api"].as_str())
        .unwrap_or_else(|| panic!("no api for {node} in {status}"))
        .to_string();
    serde_json::from_str(&client_curl(&[&format!("{api}/status")])).unwrap()
}

/// A cloud fault in the middle of a failover: the first attach of the
/// volume ends in an error. The node that got the role rolls its promotion
/// back and releases the role; another node takes over. At no sample did
/// two nodes hold the address, the mount or the stack, and the failed
/// attempt is in the replicated history.
#[test]
fn a_failed_attach_rolls_the_promotion_back_and_another_node_takes_over() {
    let _lab = LAB.exclusive();
    lab_ok(&["up", "--cloud", "hetzner-sim", "--wait-secs", "60"]);
    let first = status();
    let old_master = only_master(&first).expect("one master after up");
    let sim = simulator(&first);
    inject_fault(
        &sim,
        r#"{"kind": "action_error", "command": "attach_volume", "code": "server_error", "count": 1}"#,
    );

    let checker = LAB.start_invariants(Duration::from_secs(20));
    lab_ok(&["fail", &old_master, "--mode", "power"]);

    // The node first assigned says "master" while it promotes; the master
    // that counts is the one the simulator agrees with.
    let (new_master, after) = wait_for(
        "a master holding the address and the volume after the failed attempt",
        Duration::from_secs(60),
        || {
            let now = status();
            let master = only_master(&now).filter(|master| *master != old_master)?;
            let server = server_of(&now, &master);
            (cloud_assignment() == (Some(server), Some(server))).then_some((master, now))
        },
    );
    wait_for("the new master's banner", FAILOVER_WAIT, || {
        probe().filter(|banner| banner.contains(&new_master))
    });

    // The injected error was met, and answered by a rollback.
    let agent = agent_status(&after, &new_master);
    let failed: Vec<&Value> = agent["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|record| record["outcome"]["ok"] == false)
        .collect();
    assert!(
        failed.iter().any(|record| record["outcome"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("server_error"))),
        "a failed promotion with the injected error is in the history: {}",
        agent["history"]
    );

    let output = checker.wait_with_output().expect("invariants runs");
    let report: Value = serde_json::from_slice(&output.stdout).expect("invariants prints JSON");
    assert_eq!(report["dual_holder_ms"], 0, "{report}\n{}", diagnostics());
    assert!(report["max_mount_holders"].as_u64() <= Some(1), "{report}");
}

/// Design §5's transient API failures in the middle of a failover: the
/// failover's first action requests answer 429 `rate_limit_exceeded`
/// twice, then 502 `bad_gateway` once, and the volume's attach answers 423
/// `locked` once. The client's retries absorb all of it: the first node
/// assigned completes its promotion, the simulator routes the floating IP
/// and attaches the volume to its server, the client gets its banner, and
/// at no sample did two nodes hold the address, the mount or the stack.
#[test]
fn a_failover_completes_through_rate_limits_bad_gateways_and_a_locked_attach() {
    let _lab = LAB.exclusive();
    lab_ok(&["up", "--cloud", "hetzner-sim", "--wait-secs", "60"]);
    let first = status();
    let old_master = only_master(&first).expect("one master after up");
    let old_epoch = agent_status(&first, &old_master)["assignment"]["epoch"]
        .as_u64()
        .expect("the master's status names its epoch");
    let sim = simulator(&first);
    let attach_path = format!(
        "/v1/volumes/{}/actions/attach",
        first["cloud"]["volume_ids"][0]
    );
    // Only action requests (POST) get the burst: the master's periodic
    // reads of the floating IP and the backups' reads of the volume would
    // use up faults on GET before the failover begins.
    for fault in [
        r#"{"method": "POST", "path_contains": "/actions/", "status": 429, "code": "rate_limit_exceeded", "count": 2}"#.to_string(),
        r#"{"method": "POST", "path_contains": "/actions/", "status": 502, "code": "bad_gateway", "count": 1}"#.to_string(),
        format!(r#"{{"method": "POST", "path_contains": "{attach_path}", "status": 423, "code": "locked", "count": 1}}"#),
    ] {
        inject_fault(&sim, &fault);
    }
    assert_eq!(
        pending_faults(&sim).len(),
        3,
        "nothing used the faults before the failover"
    );

    client_curl(&["-X", "DELETE", &format!("{sim}/_sim/requests")]);

    let checker = LAB.start_invariants(Duration::from_secs(20));
    lab_ok(&["fail", &old_master, "--mode", "power"]);

    let (new_master, after) = wait_for(
        "one new master holding the floating IP and the volume per the simulator",
        Duration::from_secs(60),
        || {
            let now = status();
            let master = only_master(&now).filter(|master| *master != old_master)?;
            let server = server_of(&now, &master);
            (cloud_assignment() == (Some(server), Some(server))).then_some((master, now))
        },
    );
    let banner = wait_for("the new master's banner", FAILOVER_WAIT, || {
        probe().filter(|banner| banner.contains(&new_master))
    });
    assert!(banner.starts_with("220 "), "{banner}");

    // Every injected answer was met by the failover's requests.
    assert_eq!(pending_faults(&sim), Vec::<Value>::new());
    let requests: Value =
        serde_json::from_str(&client_curl(&[&format!("{sim}/_sim/requests")])).unwrap();
    let attaches = requests["requests"][format!("POST {attach_path}")]
        .as_u64()
        .unwrap_or(0);
    assert!(
        attaches >= 2,
        "the attach was sent again after `locked`: {requests}"
    );

    // The retries absorbed the burst: no promotion after the power failure
    // failed, and the new master's promotion is recorded as a success with
    // the cloud API's share of its moves.
    let agent = agent_status(&after, &new_master);
    let history = agent["history"].as_array().expect("a history");
    let since_failure: Vec<&Value> = history
        .iter()
        .filter(|record| record["epoch"].as_u64() > Some(old_epoch))
        .collect();
    assert!(
        since_failure
            .iter()
            .all(|record| record["outcome"]["ok"] != false),
        "a promotion failed despite the retries: {}",
        agent["history"]
    );
    let promotion = wait_for("the new master's promotion record", FAILOVER_WAIT, || {
        let agent = agent_status(&status(), &new_master);
        agent["history"]
            .as_array()?
            .iter()
            .rev()
            .find(|record| record["to"] == new_master.as_str())
            .filter(|record| !record["outcome"].is_null())
            .cloned()
    });
    assert_eq!(promotion["outcome"]["ok"], true, "{promotion}");
    for step in ["acquire_address", "attach_volume:mail"] {
        let record = promotion["outcome"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|record| record["name"] == step)
            .unwrap_or_else(|| panic!("no {step} in {promotion}"));
        assert!(
            record["ok"] == true && record["api_ms"].as_u64().is_some(),
            "{record}"
        );
    }

    // The volume is the new master's only.
    let now = status();
    assert_eq!(
        nodes_seeing_the_device(&now),
        std::slice::from_ref(&new_master)
    );
    let output = checker.wait_with_output().expect("invariants runs");
    let report: Value = serde_json::from_slice(&output.stdout).expect("invariants prints JSON");
    assert_eq!(report["dual_holder_ms"], 0, "{report}\n{}", diagnostics());
    assert!(report["max_mount_holders"].as_u64() <= Some(1), "{report}");
    assert!(
        report["max_address_holders"].as_u64() <= Some(1),
        "{report}"
    );
}
