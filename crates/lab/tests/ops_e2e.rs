//! The agents' HTTP API as an operator and HAProxy reach it: from the lab's
//! client namespace, with curl, on a lab of its own (prefix `mo`,
//! `/var/lib/mo`).
//!
//! - exactly one node answers 200 on `/master`, and it is the master that
//!   `status --json` names; again after the master loses power;
//! - `/metrics` passes the reference parsers (`scripts/parse-metrics.py`)
//!   and says the master is master; `/status` is JSON; `/` is the
//!   dashboard naming every node;
//! - the control endpoints answer 401 without the token or with a wrong one.
//!
//! Needs root and `cargo build --bins` first, like the other lab tests.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{text, LabEnv};
use serde_json::Value;

static LAB: LabEnv = LabEnv {
    prefix: "mo",
    dir: "/var/lib/mo",
    lock: &LOCK,
};
static LOCK: Mutex<()> = Mutex::new(());

/// An HTTP answer as curl saw it; code 0 when nothing answered.
struct Answer {
    code: u16,
    body: String,
}

/// `curl ARGS URL` from the client namespace (where clients and HAProxy
/// are), with a short timeout: a node without power does not answer.
fn curl(args: &[&str], url: &str) -> Answer {
    let output = Command::new("ip")
        .args(["netns", "exec", &format!("{}-client", LAB.prefix)])
        .args(["curl", "-sS", "--max-time", "3", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("ip netns exec curl runs");
    let out = text(&output.stdout);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    Answer {
        code: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

/// Each node's name and API URL from `status --json`.
fn apis(status: &Value) -> Vec<(String, String)> {
    status["nodes"]
        .as_array()
        .expect("status has nodes")
        .iter()
        .filter_map(|node| {
            Some((
                node["name"].as_str()?.to_string(),
                node["api"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The master when exactly one node says it is master in `status --json`
/// and exactly that node answers 200 on `/master`.
fn the_one_master() -> Option<String> {
    let status = LAB.status();
    let masters: Vec<&str> = status["nodes"]
        .as_array()?
        .iter()
        .filter(|node| node["role"] == "master")
        .filter_map(|node| node["name"].as_str())
        .collect();
    let answering_200: Vec<String> = apis(&status)
        .into_iter()
        .filter(|(_, api)| curl(&[], &format!("{api}/master")).code == 200)
        .map(|(name, _)| name)
        .collect();
    (masters.len() == 1 && answering_200 == [masters[0]]).then(|| masters[0].to_string())
}

/// `/metrics` of `api` through the reference parsers; the families as JSON.
fn parsed_metrics(api: &str) -> Value {
    let parser = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/parse-metrics.py"
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; ip netns exec {}-client curl -sS --fail --max-time 3 {api}/metrics | /usr/bin/python3 {parser}",
            LAB.prefix
        ))
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "{api}/metrics did not parse: {}",
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the parser prints JSON")
}

/// The value of `mailherd_role{role="master"}` in a parsed exposition.
fn master_gauge(parsed: &Value) -> Option<f64> {
    parsed["families"]["mailherd_role"]["samples"]
        .as_array()?
        .iter()
        .find(|s| s["labels"]["role"] == "master")?["value"]
        .as_f64()
}

#[test]
fn one_master_answers_metrics_parse_and_control_needs_the_token() {
    let _lab = LAB.exclusive();
    LAB.ok(&["up", "--nodes", "3"]);
    let master = LAB.wait_for(
        "one master, the only one answering /master",
        Duration::from_secs(30),
        the_one_master,
    );
    let status = LAB.status();

    for (name, api) in apis(&status) {
        let parsed = parsed_metrics(&api);
        let expected = if name == master { 1.0 } else { 0.0 };
        assert_eq!(
            master_gauge(&parsed),
            Some(expected),
            "{name}'s mailherd_role{{role=\"master\"}}"
        );
        for family in [
            "mailherd_epoch",
            "mailherd_failovers",
            "mailherd_lease_renewals",
            "mailherd_check_up",
        ] {
            assert!(
                parsed["families"].get(family).is_some(),
                "{name} has no {family}"
            );
        }
        if name == master {
            // It ran a promotion: the histogram has a series.
            assert!(parsed["families"]
                .get("mailherd_failover_duration_seconds")
                .is_some());
        }

        let answer = curl(&[], &format!("{api}/status"));
        assert_eq!(answer.code, 200);
        let document: Value = serde_json::from_str(&answer.body).unwrap_or_else(|error| {
            panic!("{name}'s /status is not JSON ({error}): {}", answer.body)
        });
        assert_eq!(document["node"], name.as_str());

        let page = curl(&[], &format!("{api}/"));
        assert_eq!(page.code, 200);
        for (other, _) in apis(&status) {
            assert!(
                page.body.contains(&format!("data-node=\"{other}\"")),
                "{name}'s dashboard lacks {other}"
            );
        }

        for path in ["/v1/switchover", "/v1/maintenance", "/v1/breaker/reset"] {
            for token in [None, Some("Authorization: Bearer not-the-token")] {
                let mut args = vec![
                    "-X",
                    "POST",
                    "-H",
                    "content-type: application/json",
                    "-d",
                    "{\"on\": true}",
                ];
                if let Some(header) = token {
                    args.extend(["-H", header]);
                }
                let answer = curl(&args, &format!("{api}{path}"));
                assert_eq!(
                    answer.code, 401,
                    "{name} {path} with {token:?}: {}",
                    answer.body
                );
            }
        }
    }
    // Nothing was switched or put in maintenance by the refused requests.
    assert_eq!(the_one_master().as_deref(), Some(master.as_str()));
    let (_, api) = apis(&status)
        .into_iter()
        .find(|(name, _)| *name == master)
        .unwrap();
    let document: Value = serde_json::from_str(&curl(&[], &format!("{api}/status")).body).unwrap();
    assert!(
        document["maintenance_since_unix_ms"].is_null(),
        "{document:#}"
    );
    assert!(document["switchover_pending"].is_null(), "{document:#}");

    LAB.ok(&["fail", &master, "--mode", "power"]);
    let second = LAB.wait_for(
        "a new master, the only one answering /master",
        Duration::from_secs(30),
        || the_one_master().filter(|name| *name != master),
    );
    let api = apis(&LAB.status())
        .into_iter()
        .find(|(name, _)| *name == second)
        .map(|(_, api)| api)
        .unwrap();
    assert_eq!(master_gauge(&parsed_metrics(&api)), Some(1.0));
}
