//! Storage replication in the lab (`up --stack mail --storage btrfs`): every
//! mail node has its own btrfs disk, the master ships a snapshot every 2 s
//! over the agents' mutual-TLS peer channel, and a promoted backup starts
//! from its newest complete snapshot and reports how old that data was
//! (the failover's RPO). Mail delivered before the last shipped snapshot
//! survives the master's power failure; the old master, healed, becomes a
//! backup that receives the new master's snapshots; never two holders.
//!
//! Needs root, btrfs-progs and the binaries (`cargo build --bins`); runs
//! on a lab of its own (prefix `mb`, `/var/lib/mb`).

mod common;

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{only_master, LabEnv};
use serde_json::Value;

static LOCK: Mutex<()> = Mutex::new(());
static LAB: LabEnv = LabEnv {
    prefix: "mb",
    dir: "/var/lib/mb",
    lock: &LOCK,
};

const WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|node| node["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {status}"))
}

/// The node's replication report of the one volume.
fn replication(status: &Value, name: &str) -> Value {
    node(status, name)["replication"][0].clone()
}

/// (epoch, unix ms) of a snapshot name `e<epoch>-<ms>-<node>`.
fn parse_snapshot(name: &str) -> (u64, u64) {
    let mut parts = name.trim_start_matches('e').splitn(3, '-');
    let epoch = parts.next().unwrap().parse().unwrap();
    let taken = parts.next().unwrap().parse().unwrap();
    (epoch, taken)
}

fn mail_nodes(status: &Value) -> Vec<String> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["kind"] == "mail")
        .map(|node| node["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn btrfs_copies_follow_the_master_and_a_failover_loses_only_the_unshipped_tail() {
    let _lab = LAB.exclusive();
    LAB.ok(&["up", "--stack", "mail", "--storage", "btrfs"]);
    let status = LAB.status();
    assert_eq!(status["storage"], "btrfs");
    let master = only_master(&status).expect("one master after up");
    let nodes = mail_nodes(&status);
    // The first master started from the seed snapshot every node got at `up`.
    let opened = replication(&status, &master);
    assert!(
        opened["opened_from"]
            .as_str()
            .is_some_and(|s| s.ends_with("-seed")),
        "the first master did not start from the seed: {opened}"
    );

    // The peer endpoint (mutual TLS, a node's certificate) lists a
    // backup's snapshots and fences what it receives: a stream under an
    // older epoch, or from a node that does not hold the role, is refused
    // before anything is written, and so is any stream to the master.
    let backup = nodes.iter().find(|n| **n != master).unwrap().clone();
    let (code, listing) = peer(&status, &master, &backup, "GET", "snapshots", &[]);
    assert_eq!(code, 200, "{listing}");
    assert!(listing.contains("-seed"), "{listing}");
    let name = "name=e0000000000-1700000000000-n9";
    let cases = [
        (
            &backup,
            vec!["x-mailherd-from: 1", "x-mailherd-epoch: 0"],
            "stale master",
        ),
        (
            &backup,
            vec!["x-mailherd-from: 9", "x-mailherd-epoch: 1"],
            "does not hold the role",
        ),
        (
            &master,
            vec!["x-mailherd-from: 9", "x-mailherd-epoch: 99"],
            "holds the volume itself",
        ),
    ];
    for (to, headers, needle) in cases {
        let (code, body) = peer(
            &status,
            &master,
            to,
            "POST",
            &format!("receive?{name}"),
            &headers,
        );
        assert_eq!(code, 409, "to {to} with {headers:?}: {body}");
        assert!(body.contains(needle), "to {to} with {headers:?}: {body}");
    }

    LAB.ok(&["mail", "send", "--subject", "before-failover"]);
    LAB.wait_for("the mail in the mailbox", WAIT, || {
        LAB.subjects()
            .filter(|s| s.iter().any(|s| s == "before-failover"))
    });
    let delivered_at = now_ms();

    // Every backup holds a snapshot taken after the delivery: the mail is
    // in the cluster's copies, not only on the master.
    let backups: Vec<&String> = nodes.iter().filter(|n| **n != master).collect();
    LAB.wait_for(
        "a snapshot newer than the delivery on every backup",
        WAIT,
        || {
            let status = LAB.status();
            backups
                .iter()
                .all(|name| {
                    replication(&status, name)["newest_snapshot"]
                        .as_str()
                        .is_some_and(|s| parse_snapshot(s).1 > delivered_at)
                })
                .then_some(())
        },
    );
    // The master reports its transfers: incremental after the first.
    let status = LAB.status();
    let peers = replication(&status, &master)["peers"].clone();
    assert_eq!(
        peers.as_array().map(Vec::len),
        Some(backups.len()),
        "{peers}"
    );
    for peer in peers.as_array().unwrap() {
        assert!(peer["error"].is_null(), "a transfer failed: {peer}");
        assert!(peer["parent"].is_string(), "not incremental: {peer}");
    }
    // In steady state no node reports a replication error.
    for name in &nodes {
        let report = replication(&status, name);
        assert!(
            report["listing_error"].is_null() && report["last_error"].is_null(),
            "{name} reports a replication error: {report}"
        );
    }

    LAB.ok(&["fail", &master, "--mode", "power"]);
    // A node is "master" from its assignment on; its copy is opened by the
    // promotion's mount step, so wait for that too.
    let (new_master, status) = LAB.wait_for("a new master with its copy opened", WAIT, || {
        let status = LAB.status();
        let new_master = only_master(&status).filter(|m| *m != master)?;
        replication(&status, &new_master)["opened_from"]
            .is_string()
            .then_some((new_master, status))
    });
    let opened = replication(&status, &new_master);
    let from = opened["opened_from"]
        .as_str()
        .expect("opened from a snapshot");
    let (_, taken) = parse_snapshot(from);
    assert!(
        taken > delivered_at,
        "started from {from}, older than the delivery"
    );
    let rpo_ms = opened["opened_data_age_ms"]
        .as_u64()
        .expect("data age reported");
    eprintln!("failover to {new_master}: started from {from}, data age (RPO) {rpo_ms} ms");
    // The same figure for Prometheus, on the new master's /metrics.
    let api = node(&status, &new_master)["api"]
        .as_str()
        .expect("api")
        .to_string();
    let metrics = common::in_namespace(status["client_namespace"].as_str().unwrap(), "curl")
        .args(["-sS", "--max-time", "3"])
        .arg(format!("{api}/metrics"))
        .output()
        .expect("curl runs");
    let metrics = common::text(&metrics.stdout);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("mailherd_replication_promotion_data_age_seconds{volume=\"mail\"}"))
        .unwrap_or_else(|| panic!("no data age in /metrics:\n{metrics}"));
    let seconds: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!((seconds * 1000.0).round() as u64, rpo_ms, "{line}");
    // A backup that is promoted had no live copy to set aside.
    assert!(
        metrics
            .lines()
            .any(|l| l == "mailherd_replication_retired_copies{volume=\"mail\"} 0"),
        "no retired-copies gauge at 0 in /metrics:\n{metrics}"
    );
    LAB.wait_for("the mail on the new master", WAIT, || {
        LAB.subjects()
            .filter(|s| s.iter().any(|s| s == "before-failover"))
    });

    // The new master takes mail and ships its own snapshots.
    LAB.ok(&["mail", "send", "--subject", "after-failover"]);
    LAB.wait_for("the new mail", WAIT, || {
        LAB.subjects()
            .filter(|s| s.iter().any(|s| s == "after-failover"))
    });
    let new_epoch = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == new_master.as_str())
        .and_then(|n| n["epoch"].as_u64())
        .expect("the new master's epoch");

    // The old master comes back as a backup: its live copy was set aside,
    // and it receives the new master's snapshots (incrementally, from a
    // snapshot the old master took itself).
    LAB.ok(&["heal", &master]);
    LAB.wait_for(
        "the old master receiving the new master's snapshots",
        WAIT,
        || {
            let status = LAB.status();
            let report = replication(&status, &master);
            let newest = report["newest_snapshot"].as_str()?;
            (node(&status, &master)["role"] == "backup"
                && parse_snapshot(newest).0 >= new_epoch
                && report["last_received"]["error"].is_null())
            .then_some(())
        },
    );
    // Its set-aside copy (with whatever it wrote after its last shipped
    // snapshot) is reported for the operator to check and delete (the
    // listing is refreshed every interval).
    let retired = LAB.wait_for("the old master's set-aside copy reported", WAIT, || {
        let retired = replication(&LAB.status(), &master)["retired"].clone();
        (!retired.as_array()?.is_empty()).then_some(retired)
    });
    assert_eq!(retired.as_array().map(Vec::len), Some(1), "{retired}");
    assert!(
        retired[0]
            .as_str()
            .is_some_and(|p| p.contains("/retired/live-")),
        "{retired}"
    );

    // A planned switchover loses nothing: the demoting master stops its
    // stack, ships one last snapshot, and only then unmounts. The mail is
    // sent and the switchover asked at once, without waiting for a tick.
    LAB.ok(&["mail", "send", "--subject", "before-switchover"]);
    LAB.wait_for("the mail before the switchover", WAIT, || {
        LAB.subjects()
            .filter(|s| s.iter().any(|s| s == "before-switchover"))
    });
    common::switchover(&LAB.status(), &master);
    LAB.wait_for("the old master back as master", WAIT, || {
        (only_master(&LAB.status()).as_deref() == Some(master.as_str())).then_some(())
    });
    let subjects = LAB.wait_for("the mailbox after the switchover", WAIT, || LAB.subjects());
    for subject in ["before-failover", "after-failover", "before-switchover"] {
        assert!(
            subjects.iter().any(|s| s == subject),
            "{subject} lost in the switchover: {subjects:?}"
        );
    }
    // The demoted master shipped that last snapshot itself.
    let log = std::fs::read_to_string(format!("{}/{new_master}/agent.log", LAB.dir))
        .expect("the demoted master's agent log");
    assert!(
        log.contains("last snapshot shipped before the unmount"),
        "{new_master} did not ship a last snapshot; its log ends:\n{}",
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    let status = LAB.status();
    let opened = replication(&status, &master);
    eprintln!(
        "switchover to {master}: started from {}, data age {} ms",
        opened["opened_from"], opened["opened_data_age_ms"]
    );

    // One holder of the volume at any time we look.
    let status = LAB.status();
    let holders: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["volume_mounted"] == true)
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(holders, vec![master.as_str()], "{status}");
}

/// curl on `to`'s peer endpoint (`/storage/mail/WHAT`), with `as_node`'s
/// certificate, from inside `as_node`'s namespace: status code and body.
fn peer(
    status: &Value,
    as_node: &str,
    to: &str,
    method: &str,
    what: &str,
    headers: &[&str],
) -> (u16, String) {
    let tls = format!("{}/tls", LAB.dir);
    let address = node(status, to)["address"].as_str().unwrap().to_string();
    let mut command =
        common::in_namespace(node(status, as_node)["namespace"].as_str().unwrap(), "curl");
    command
        .args([
            "-sS",
            "--max-time",
            "5",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .args(["--cacert", &format!("{tls}/ca.pem")])
        .args(["--cert", &format!("{tls}/{as_node}.pem")])
        .args(["--key", &format!("{tls}/{as_node}.key")]);
    for header in headers {
        command.args(["-H", header]);
    }
    if method == "POST" {
        command.args(["--data-binary", "not a btrfs stream"]);
    }
    let output = command
        .arg(format!("https://{address}:7400/storage/mail/{what}"))
        .output()
        .expect("curl runs");
    let out = common::text(&output.stdout);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn btrfs_storage_is_refused_where_it_cannot_work() {
    let _lab = LAB.exclusive();
    let error = LAB.fails(&["up", "--storage", "btrfs", "--cloud", "hetzner-sim"]);
    assert!(
        error.contains("--storage btrfs does not go with --cloud hetzner-sim"),
        "{error}"
    );
    let error = LAB.fails(&["up", "--storage", "btrfs", "--manager", "keepalived"]);
    assert!(
        error.contains("keepalived does not replicate storage"),
        "{error}"
    );
}
