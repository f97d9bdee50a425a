//! Shared by the lab's end-to-end tests: running `mailherd-lab` on a lab of
//! the test file's own (its own name prefix and directory), so test files
//! never touch each other's lab.

#![allow(dead_code)] // each test binary uses its own part of this

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One lab: the namespaces' name prefix and the lab directory.
pub struct LabEnv {
    pub prefix: &'static str,
    pub dir: &'static str,
    /// Serialises the tests of one file: they share this lab.
    pub lock: &'static Mutex<()>,
}

pub fn lab_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mailherd-lab"))
}

/// `MAILHERD_BIN` when set (to test another agent build), else the
/// `mailherd` built next to the lab.
pub fn agent_bin() -> PathBuf {
    let agent = match std::env::var_os("MAILHERD_BIN") {
        Some(path) => PathBuf::from(path),
        None => lab_bin()
            .parent()
            .expect("the lab binary has a directory")
            .join("mailherd"),
    };
    assert!(
        agent.exists(),
        "{} is missing: build it with `cargo build --bins` before the tests",
        agent.display()
    );
    agent
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl LabEnv {
    /// Exclusive use of this lab, clean at the start and (through the
    /// guard) at the end, also when the test fails.
    pub fn exclusive(&'static self) -> LabGuard {
        let exclusive = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        assert!(nix::unistd::geteuid().is_root(), "the lab tests need root");
        self.ok(&["down"]);
        LabGuard {
            env: self,
            _exclusive: exclusive,
        }
    }

    /// Runs `mailherd-lab ARGS` on this lab.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(lab_bin())
            .args(args)
            .env("MAILHERD_BIN", agent_bin())
            .env("MAILHERD_LAB_PREFIX", self.prefix)
            .env("MAILHERD_LAB_DIR", self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("mailherd-lab runs")
    }

    /// `mailherd-lab invariants --json` on this lab for `duration`, started
    /// now; its report is the child's stdout.
    pub fn start_invariants(&self, duration: Duration) -> std::process::Child {
        Command::new(lab_bin())
            .args(["invariants", "--json", "--duration-ms"])
            .arg(duration.as_millis().to_string())
            .env("MAILHERD_LAB_PREFIX", self.prefix)
            .env("MAILHERD_LAB_DIR", self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("invariants starts")
    }

    /// Runs the lab, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "`mailherd-lab {}` failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            output.status,
            text(&output.stdout),
            text(&output.stderr),
        );
        text(&output.stdout)
    }

    /// `status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status --json prints JSON")
    }

    /// The subjects in the lab mailbox, over IMAP on the floating IP.
    pub fn subjects(&self) -> Option<Vec<String>> {
        subjects_of(&self.run(&["mail", "list", "--json"]))
    }

    /// Polls `check` every 250 ms until it returns `Some`, for at most
    /// `timeout`; the panic names `what` and shows the lab's status.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() > deadline {
                let status = self.run(&["status", "--json"]);
                panic!(
                    "waited {timeout:?} for {what} in vain; status: {}",
                    text(&status.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// For a failed test: `status --json` and the last `lines` lines of
    /// each of `logs` (paths under a node's directory) of every node that
    /// has them.
    pub fn diagnostics(&self, logs: &[&str], lines: usize) -> String {
        let status = self.run(&["status", "--json"]);
        let mut report = format!("status: {}{}\n", text(&status.stdout), text(&status.stderr));
        let mut nodes: Vec<PathBuf> = std::fs::read_dir(self.dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .collect();
        nodes.sort();
        for node in nodes {
            for log in logs {
                let path = node.join(log);
                if path.exists() {
                    report.push_str(&tail(&path, lines));
                }
            }
        }
        report
    }

    /// Runs the lab, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "`mailherd-lab {}` should have failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stderr)
    }
}

/// The last `lines` lines of the file at `path`, under a header naming it.
pub fn tail(path: &Path, lines: usize) -> String {
    let content = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = content.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- {}:\n{tail}\n", path.display())
}

/// Holds a lab for one test; takes it down when dropped.
pub struct LabGuard {
    env: &'static LabEnv,
    _exclusive: MutexGuard<'static, ()>,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let output = self.env.run(&["down"]);
        if !output.status.success() && !std::thread::panicking() {
            panic!("down failed: {}", text(&output.stderr));
        }
    }
}

/// Polls `check` every 250 ms until it returns `Some`, for at most
/// `timeout`; then panics naming `what`, with the test file's own
/// `diagnostics` (status, logs).
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    diagnostics: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("waited {timeout:?} for {what} in vain\n{}", diagnostics());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The master when exactly one node of `status --json` says it is master.
pub fn only_master(status: &serde_json::Value) -> Option<String> {
    let masters: Vec<&str> = status["nodes"]
        .as_array()
        .expect("status has nodes")
        .iter()
        .filter(|node| node["role"] == "master")
        .filter_map(|node| node["name"].as_str())
        .collect();
    (masters.len() == 1).then(|| masters[0].to_string())
}

/// The subjects listed by a `mail list --json` run, `None` if it failed.
pub fn subjects_of(output: &Output) -> Option<Vec<String>> {
    if !output.status.success() {
        return None;
    }
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(
        listing["messages"]
            .as_array()?
            .iter()
            .filter_map(|message| message["subject"].as_str().map(str::to_string))
            .collect(),
    )
}

/// `ip netns exec NAMESPACE PROGRAM`, to be given arguments.
pub fn in_namespace(namespace: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace]).arg(program);
    command
}

/// `mailherd switchover --to TO`, from the lab's client namespace to the
/// master's API, with what `status --json` says about the lab; asserts it
/// was accepted.
pub fn switchover(status: &serde_json::Value, to: &str) {
    let master = only_master(status).expect("a master to switch from");
    let api = status["nodes"]
        .as_array()
        .expect("status has nodes")
        .iter()
        .find(|node| node["name"] == master.as_str())
        .and_then(|node| node["api"].as_str())
        .expect("the master has an API")
        .to_string();
    let output = in_namespace(
        status["client_namespace"]
            .as_str()
            .expect("a client namespace"),
        agent_bin(),
    )
    .args(["switchover", "--to", to, "--api", &api, "--token-file"])
    .arg(status["token_file"].as_str().expect("a token file"))
    .output()
    .expect("mailherd runs");
    assert!(
        output.status.success(),
        "switchover failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}
