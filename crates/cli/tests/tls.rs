//! Mutual TLS between agents (design §2 invariant 7), with the real binary:
//! `mailherd tls init-ca` and `mailherd tls issue` make the files, three
//! agents on loopback run Raft over mTLS and elect a master, and a node's
//! peer endpoint serves a client holding a certificate of the cluster CA
//! while it refuses (and logs) a client without a certificate, one with a
//! certificate of another CA, and plain HTTP.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::{free_port, wait_for};
use serde_json::Value;

struct Node {
    name: String,
    log: PathBuf,
    api: String,
    peer: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
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

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn mailherd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailherd"))
        .args(args)
        .output()
        .expect("running mailherd")
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Makes the CA and node certificates with the CLI, then starts `n` agents
/// whose configs carry `[tls]`.
fn tls_cluster(dir: &Path, n: usize) -> Vec<Node> {
    let ca_dir = dir.join("ca");
    let certs_dir = dir.join("certs");
    let out = mailherd(&["tls", "init-ca", "--dir", path(&ca_dir)]);
    assert!(out.status.success(), "{out:?}");
    let (ports, members) = common::members(n);
    ports
        .iter()
        .enumerate()
        .map(|(i, (peer, api))| {
            let name = format!("n{}", i + 1);
            let out = mailherd(&[
                "tls",
                "issue",
                "--ca-dir",
                path(&ca_dir),
                "--name",
                &name,
                "--ip",
                "127.0.0.1",
                "--out-dir",
                path(&certs_dir),
            ]);
            assert!(out.status.success(), "{out:?}");
            let config = dir.join(format!("{name}.toml"));
            let text = format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{data}\"\n\n[cluster]\nname = \"test\"\n\n{members}[api]\nlisten = \"127.0.0.1:{api}\"\npeer_listen = \"127.0.0.1:{peer}\"\n\n[tls]\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n",
                data = dir.join(&name).display(),
                ca = ca_dir.join("ca.pem").display(),
                cert = certs_dir.join(format!("{name}.pem")).display(),
                key = certs_dir.join(format!("{name}.key")).display(),
            );
            std::fs::write(&config, text).unwrap();
            let log = dir.join(format!("{name}.log"));
            let child = common::start_agent(&config, &log);
            Node {
                name,
                log,
                api: format!("http://127.0.0.1:{api}"),
                peer: format!("127.0.0.1:{peer}"),
                child,
            }
        })
        .collect()
}

/// A peer request (a vote request without a body: the endpoint answers with
/// an HTTP error, which still shows the connection was served).
fn vote(client: &reqwest::Client, peer: &str) -> Result<reqwest::StatusCode, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        client
            .post(format!("{peer}/raft/vote"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .map(|response| response.status())
            .map_err(|error| format!("{error:?}"))
    })
}

/// The refusal warnings in `node`'s log, without colours.
fn refusals(node: &Node) -> Vec<String> {
    node.log_text()
        .lines()
        .filter(|line| line.contains("refused a peer connection"))
        .map(strip_ansi)
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip the escape sequence up to its final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Runs `refused` (a request the peer endpoint must refuse) and returns the
/// one warning it added to `node`'s log.
fn refused_and_logged(node: &Node, refused: impl FnOnce() -> String) -> String {
    let before = refusals(node).len();
    let error = refused();
    assert!(!error.is_empty());
    let added = wait_for("the refusal in the log", Duration::from_secs(10), || {
        let now = refusals(node);
        (now.len() > before).then(|| now[before..].to_vec())
    });
    // Give a second warning for the same handshake the chance to show up.
    std::thread::sleep(Duration::from_millis(300));
    let added_later = refusals(node).len() - before;
    assert_eq!(
        added_later, 1,
        "one warning per failed handshake: {added:#?}"
    );
    let warning = added[0].clone();
    assert!(warning.contains("peer=127.0.0.1:"), "{warning}");
    warning
}

fn client(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5));
    if let Some(ca) = ca {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        builder = builder.tls_certs_only([ca]);
    }
    if let Some((cert, key)) = identity {
        let pem = [std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()].concat();
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[test]
fn agents_run_raft_over_mutual_tls_and_refuse_strangers() {
    let dir = common::tempdir();
    let nodes = tls_cluster(dir.path(), 3);

    // Raft works over mTLS: the agents elect one master.
    let master = wait_for("a master over mTLS", Duration::from_secs(30), || {
        let masters: Vec<&Node> = nodes
            .iter()
            .filter(|node| node.status().is_some_and(|s| s["role"] == "master"))
            .collect();
        (masters.len() == 1).then(|| masters[0].name.clone())
    });
    for node in &nodes {
        assert!(
            !node.log_text().contains("unauthenticated"),
            "{} warned about a plain peer channel:\n{}",
            node.name,
            node.log_text()
        );
    }

    let ca = dir.path().join("ca/ca.pem");
    let target = &nodes[0];
    let https = format!("https://{}", target.peer);

    // A client with a certificate of the cluster CA is served.
    let member = client(
        Some(&ca),
        Some((
            &dir.path().join("certs/n2.pem"),
            &dir.path().join("certs/n2.key"),
        )),
    );
    let status = vote(&member, &https).expect("a CA-signed client is served");
    assert!(status.is_client_error(), "unexpected {status}");

    // A client without a certificate is refused, and the refusal is logged
    // once, with the client's address.
    let anonymous = client(Some(&ca), None);
    let refusal = refused_and_logged(target, || {
        vote(&anonymous, &https).expect_err("a client without certificate")
    });
    assert!(refusal.contains("no certificates"), "{refusal}");

    // A client with a certificate of another CA is refused.
    let other_ca = dir.path().join("other-ca");
    let out = mailherd(&["tls", "init-ca", "--dir", path(&other_ca)]);
    assert!(out.status.success(), "{out:?}");
    let out = mailherd(&[
        "tls",
        "issue",
        "--ca-dir",
        path(&other_ca),
        "--name",
        "n2",
        "--ip",
        "127.0.0.1",
        "--out-dir",
        path(&other_ca),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stranger = client(
        Some(&ca),
        Some((&other_ca.join("n2.pem"), &other_ca.join("n2.key"))),
    );
    let refusal = refused_and_logged(target, || {
        vote(&stranger, &https).expect_err("a client with a certificate of another CA")
    });
    assert!(refusal.contains("invalid peer certificate"), "{refusal}");

    // Plain HTTP gets no answer either.
    let plain = client(None, None);
    refused_and_logged(target, || {
        vote(&plain, &format!("http://{}", target.peer)).expect_err("plain HTTP")
    });

    // The cluster was not disturbed.
    let still = nodes
        .iter()
        .find(|node| node.name == master)
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(still["role"], "master", "{still}");
}

#[test]
fn tls_commands_refuse_to_overwrite_and_name_the_files() {
    let dir = common::tempdir();
    let ca_dir = dir.path().join("ca");
    assert!(mailherd(&["tls", "init-ca", "--dir", path(&ca_dir)])
        .status
        .success());
    let again = mailherd(&["tls", "init-ca", "--dir", path(&ca_dir)]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("refusing to overwrite") && stderr.contains("ca.pem"),
        "{stderr}"
    );

    let missing = mailherd(&[
        "tls",
        "issue",
        "--ca-dir",
        path(&dir.path().join("nowhere")),
        "--name",
        "n1",
        "--ip",
        "10.0.0.1",
        "--out-dir",
        path(dir.path()),
    ]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("nowhere/ca.pem"), "{stderr}");
}

#[test]
fn an_agent_without_tls_warns_once_that_peers_are_unauthenticated() {
    let dir = common::tempdir();
    let (peer, api) = (free_port(), free_port());
    let config = dir.path().join("n1.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"n1\"\ndata_dir = \"{}\"\n\n[cluster]\nname = \"test\"\n\n[[members]]\nname = \"n1\"\nid = 1\npeer = \"127.0.0.1:{peer}\"\napi = \"127.0.0.1:{api}\"\n\n[api]\nlisten = \"127.0.0.1:{api}\"\npeer_listen = \"127.0.0.1:{peer}\"\n",
            dir.path().join("n1").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("n1.log");
    let child = common::start_agent(&config, &log);
    let node = Node {
        name: "n1".to_string(),
        log,
        api: format!("http://127.0.0.1:{api}"),
        peer: format!("127.0.0.1:{peer}"),
        child,
    };
    wait_for("the agent to answer", Duration::from_secs(30), || {
        node.status()
    });
    let text = node.log_text();
    let warnings = text
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("unauthenticated"))
        .count();
    assert_eq!(warnings, 1, "{}: {text}", node.name);
    assert!(!node.peer.is_empty());
}
