//! Alerts from real agents: three agents on loopback with a webhook
//! channel pointed at a local receiver; the master's agent is killed, and
//! the receiver gets exactly one "failover started" and one "failover
//! completed" for the new epoch, both from the new master.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{loopback_cluster, masters};
use common::wait_for;
use serde_json::Value;

/// A webhook receiver on 127.0.0.1: one thread, answers 200 to every POST
/// and keeps the JSON bodies.
struct Receiver {
    port: u16,
    alerts: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let kept = alerts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Receiver { port, alerts }
    }

    fn alerts(&self) -> Vec<Value> {
        self.alerts.lock().unwrap().clone()
    }

    /// The alerts of `kind` for `epoch`.
    fn of(&self, kind: &str, epoch: u64) -> Vec<Value> {
        self.alerts()
            .into_iter()
            .filter(|a| a["kind"] == kind && a["fields"]["epoch"] == epoch)
            .collect()
    }
}

/// Serves requests on one (keep-alive) connection until it closes.
fn serve(stream: TcpStream, kept: &Mutex<Vec<Value>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(value) = serde_json::from_slice(&body) {
            kept.lock().unwrap().push(value);
        }
        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn a_failover_alerts_one_started_and_one_completed_for_the_new_epoch() {
    let dir = common::tempdir();
    let receiver = Receiver::start();
    let alerts = format!(
        "\n[alerts]\nretry_backoff_ms = 100\n\n[[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"http://127.0.0.1:{}/hook\"\n",
        receiver.port
    );
    let mut nodes = loopback_cluster(dir.path(), 3, "", &alerts);
    for node in nodes.iter_mut() {
        node.start(dir.path());
    }
    let (first, first_epoch) = wait_for("a first master", Duration::from_secs(30), || {
        let (found, epoch) = masters(&nodes);
        (found.len() == 1).then(|| (found[0], epoch))
    });
    // The first master's promotion is alerted too (an initial assignment).
    wait_for(
        "the first promotion's alerts",
        Duration::from_secs(30),
        || (!receiver.of("failover_completed", first_epoch).is_empty()).then_some(()),
    );

    nodes[first].kill();
    let (second, epoch) = wait_for("a new master", Duration::from_secs(30), || {
        let (found, epoch) = masters(&nodes);
        (found.len() == 1 && found[0] != first && epoch > first_epoch).then(|| (found[0], epoch))
    });
    wait_for(
        "the new master's completed alert",
        Duration::from_secs(30),
        || (!receiver.of("failover_completed", epoch).is_empty()).then_some(()),
    );
    // Anything sent twice would arrive within this pause (deliveries take
    // milliseconds on loopback).
    std::thread::sleep(Duration::from_secs(2));

    let started = receiver.of("failover_started", epoch);
    let completed = receiver.of("failover_completed", epoch);
    let failed = receiver.of("failover_failed", epoch);
    let everything = receiver.alerts();
    assert_eq!(started.len(), 1, "{everything:#?}");
    assert_eq!(completed.len(), 1, "{everything:#?}");
    assert!(failed.is_empty(), "{everything:#?}");
    let new_master = nodes[second].name.clone();
    for alert in [&started[0], &completed[0]] {
        assert_eq!(alert["node"], new_master.as_str());
        assert_eq!(alert["cluster"], "test");
        assert_eq!(alert["fields"]["to"], new_master.as_str());
        assert_eq!(alert["fields"]["from"], nodes[first].name.as_str());
    }
    assert_ne!(started[0]["id"], completed[0]["id"]);
    assert!(completed[0]["fields"]["total_ms"].is_u64());

    // The counters are in the new master's /status.
    let status = nodes[second].status().expect("the new master answers");
    let hook = &status["alerts"]["channels"]["hook"];
    assert_eq!(hook["by_kind"]["failover_started"]["sent"], 1, "{status:#}");
    assert_eq!(
        hook["by_kind"]["failover_completed"]["sent"], 1,
        "{status:#}"
    );
    assert_eq!(hook["total"]["failed"], 0, "{status:#}");
}
