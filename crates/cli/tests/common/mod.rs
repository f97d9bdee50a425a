//! Shared by the integration tests that start real agents on loopback.

#![allow(dead_code)] // each test binary uses its own part of this

pub mod cluster;
pub mod mariadb;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released), below Linux's
/// ephemeral range (32768 and up): an agent binds it later, or again after
/// a restart, and meanwhile an outgoing connection of the running agents
/// must not be able to take it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Each test binary walks 20000..32000 from a start that differs per
    // process, never handing out the same port twice.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % 120 * 100;
    for _ in 0..12_000 {
        let step = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + ((offset + step) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Starts `mailherd agent --config CONFIG` with its log appended to `log`
/// (a restarted agent keeps what the one before it wrote). The level is
/// `info`, or `MAILHERD_TEST_LOG` (an `EnvFilter` such as
/// `info,mailherd_consensus=debug,openraft=debug`) when chasing a failure.
pub fn start_agent(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    use std::process::{Command, Stdio};
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("opening the agent's log");
    let level = std::env::var("MAILHERD_TEST_LOG").unwrap_or_else(|_| "info".to_string());
    Command::new(env!("CARGO_BIN_EXE_mailherd"))
        .args(["agent", "--config"])
        .arg(config)
        .env("RUST_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting the agent")
}

/// Waits up to `limit` for `child` to exit; false if it is still running.
pub fn wait_exit(child: &mut std::process::Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Polls until `f` returns Some, or panics after `limit` naming `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(peer, api)` port pairs for `n` nodes and the `[[members]]` TOML
/// naming them `n1..nN` on 127.0.0.1.
pub fn members(n: usize) -> (Vec<(u16, u16)>, String) {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let mut toml = String::new();
    for (i, (peer, api)) in ports.iter().enumerate() {
        toml.push_str(&format!(
            "[[members]]\nname = \"n{n}\"\nid = {n}\npeer = \"127.0.0.1:{peer}\"\napi = \"127.0.0.1:{api}\"\n\n",
            n = i + 1
        ));
    }
    (ports, toml)
}

/// Two mail nodes (n2 with priority 90) and a witness on 192.0.2.11..13,
/// and this node's `[api]`: the `[[members]]` of the configs that are only
/// rendered or checked, never run as a cluster.
pub const MEMBERS: &str = r#"
[[members]]
name = "n1"
id = 1
peer = "192.0.2.11:7400"
api = "192.0.2.11:7401"

[[members]]
name = "n2"
id = 2
priority = 90
peer = "192.0.2.12:7400"
api = "192.0.2.12:7401"

[[members]]
name = "w1"
id = 3
role = "witness"
peer = "192.0.2.13:7400"
api = "192.0.2.13:7401"

[api]
listen = "127.0.0.1:7401"
peer_listen = "127.0.0.1:7400"
"#;

/// Runs `mailherd ARGUMENTS` to completion.
pub fn mailherd(arguments: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mailherd"))
        .args(arguments)
        .output()
        .expect("run mailherd")
}

/// Exit status, stdout and stderr, for assertion messages.
pub fn text(output: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Prints the tail of each agent log when the test that holds it panics,
/// so that a failure on CI shows what the agents saw (the logs themselves
/// go with the test's temporary directory). With `MAILHERD_TEST_LOG_DIR`
/// set, the whole logs are also copied there.
pub struct LogsOnFailure(pub Vec<std::path::PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let keep = std::env::var_os("MAILHERD_TEST_LOG_DIR").map(std::path::PathBuf::from);
        for log in &self.0 {
            if let (Some(keep), Some(name)) = (&keep, log.file_name()) {
                let _ = std::fs::create_dir_all(keep);
                let _ = std::fs::copy(log, keep.join(name));
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {} (last 80 lines) ---", log.display());
            for line in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// A temporary directory for a cluster of agents: their Raft data and logs.
/// On tmpfs (`/dev/shm`) when there is one, as in the lab: every Raft
/// write waits for an fsync, and on a disk that is busy flushing another
/// program's writes (cargo's, just before the tests run) one fsync can take
/// longer than the 500 ms lease. These tests check what the agents do, not
/// the disk; `mailherd_lease_renewal_duration_seconds` and the agent's
/// "raft storage is slow" warning show a disk's effect in production.
pub fn tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("mailherd-test-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().expect("creating a temporary directory")
}
