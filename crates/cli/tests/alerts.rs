//! Alerts from real agents: three agents on loopback with a webhook
//! channel pointed at a local receiver; the master's agent is killed, and
//! the receiver gets exactly one "failover started" and one "failover
//! completed" for the new epoch, both from the new master.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

struct Node {
    name: String,
    config: PathBuf,
    api_port: u16,
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

    /// `GET /status` as JSON (the raw document, with `alerts`).
    fn status(&self) -> Option<Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.api_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The one master's index and the highest epoch any node reports.
fn masters(nodes: &[Node]) -> (Vec<usize>, u64) {
    let mut found = Vec::new();
    let mut epoch = 0;
    for (i, node) in nodes.iter().enumerate() {
        if let Some(status) = node.status() {
            if status["role"] == "master" {
                found.push(i);
            }
            epoch = epoch.max(status["epoch"].as_u64().unwrap_or(0));
        }
    }
    (found, epoch)
}

#[test]
fn a_failover_alerts_one_started_and_one_completed_for_the_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let (ports, members) = common::members(3);
    let alerts = format!(
        "[alerts]\nretry_backoff_ms = 100\n\n[[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"http://127.0.0.1:{}/hook\"\n",
        receiver.port
    );
    let mut nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, (peer, api))| {
            let name = format!("n{}", i + 1);
            let config = dir.path().join(format!("{name}.toml"));
            let text = format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n\n[cluster]\nname = \"test\"\n\n{members}[api]\nlisten = \"127.0.0.1:{api}\"\npeer_listen = \"127.0.0.1:{peer}\"\n\n{alerts}",
                dir.path().join(&name).display(),
            );
            std::fs::write(&config, text).unwrap();
            Node {
                name,
                config,
                api_port: *api,
                child: None,
            }
        })
        .collect();
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
