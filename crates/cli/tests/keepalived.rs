//! `mailherd check`, `mailherd notify` and `mailherd render keepalived`,
//! run as the real binary on generated configs. The stack is a shell
//! script that records what it was asked to do; the checks probe TCP
//! listeners of the test on 127.0.0.1. No agent runs and nothing of the
//! host's network is changed (these configs have no floating IP, except
//! the rendered one, which is only rendered).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{mailherd, text, MEMBERS};

const MAILHERD: &str = env!("CARGO_BIN_EXE_mailherd");

const STACK: &str = r#"#!/bin/sh
# A pretend stack: `running` exists while it runs; every action is logged.
dir="$(dirname "$0")"
echo "$1" >> "$dir/log"
case "$1" in
    start) [ -f "$dir/fail-start" ] && { echo "cannot start: queue locked" >&2; exit 3; }
           touch "$dir/running" ;;
    stop|kill) rm -f "$dir/running" ;;
    status) [ -f "$dir/running" ] ;;
esac
"#;

/// A node's directory: the stack script, its log, the config, data_dir.
struct Node {
    directory: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join("stack.sh"), STACK).unwrap();
        Node { directory }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    /// Writes the config: the `[services]` of the stack script, then
    /// `extra` (checks, volumes); returns its path.
    fn config(&self, extra: &str) -> PathBuf {
        let script = self.path("stack.sh").display().to_string();
        let argv = |action: &str| format!("[\"/bin/sh\", \"{script}\", \"{action}\"]");
        let text = format!(
            "[node]\nname = \"n1\"\ndata_dir = \"{}\"\n\n[cluster]\nname = \"mail\"\n{MEMBERS}\n\
             [services]\ndriver = \"command\"\nstart = {}\nstop = {}\nstatus = {}\nkill = {}\n\
             start_timeout_ms = 5000\n{extra}",
            self.path("data").display(),
            argv("start"),
            argv("stop"),
            argv("status"),
            argv("kill"),
        );
        let path = self.path("mailherd.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn set_running(&self, running: bool) {
        if running {
            std::fs::write(self.path("running"), "").unwrap();
        } else {
            let _ = std::fs::remove_file(self.path("running"));
        }
    }

    /// The stack's actions so far, without the status queries.
    fn actions(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| *line != "status")
            .map(str::to_string)
            .collect()
    }

    fn data(&self, name: &str) -> String {
        std::fs::read_to_string(self.path("data").join(name)).unwrap_or_default()
    }
}

/// `mailherd check --json` with `extra` arguments: exit code and report.
fn check(config: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut arguments = vec!["check", "--json", "--config", config.to_str().unwrap()];
    arguments.extend_from_slice(extra);
    let output = mailherd(&arguments);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", text(&output)));
    (output.status.code().expect("an exit code"), report)
}

/// A `[[checks]]` entry of kind tcp.
fn tcp_check(name: &str, port: u16, critical: bool) -> String {
    format!(
        "\n[[checks]]\nname = \"{name}\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ncritical = {critical}\ntimeout_ms = 1000\n"
    )
}

/// A port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    common::free_port()
}

fn item<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no item {name} in {report:#}"))
}

#[test]
fn a_master_is_operational_degraded_or_down_by_its_checks() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let node = Node::new();
    // The stack runs: the node is judged as a master.
    node.set_running(true);

    let config = node.config(&tcp_check("smtp", open, true));
    let (code, report) = check(&config, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["role"], "master");
    assert_eq!(report["role_from"], "host");
    assert_eq!(report["verdict"], "operational");
    assert_eq!(item(&report, "smtp")["ok"], true);
    assert_eq!(item(&report, "services")["detail"], "the stack runs");

    let config = node.config(&format!(
        "{}{}",
        tcp_check("smtp", open, true),
        tcp_check("webmail", closed_port(), false)
    ));
    let (code, report) = check(&config, &[]);
    assert_eq!((code, report["verdict"].as_str()), (1, Some("degraded")));
    assert_eq!(item(&report, "webmail")["ok"], false);
    // keepalived faults an instance on any non-zero exit.
    let (code, _) = check(&config, &["--degraded-ok"]);
    assert_eq!(code, 0);

    let config = node.config(&format!(
        "{}{}",
        tcp_check("smtp", open, true),
        tcp_check("imap", closed_port(), true)
    ));
    let (code, report) = check(&config, &["--degraded-ok"]);
    assert_eq!((code, report["verdict"].as_str()), (2, Some("down")));

    // Told it is the master while its stack does not run: down.
    node.set_running(false);
    let config = node.config(&tcp_check("smtp", open, true));
    let (code, report) = check(&config, &["--role", "master"]);
    assert_eq!((code, report["verdict"].as_str()), (2, Some("down")));
    assert_eq!(report["role_from"], "argument");
    assert_eq!(item(&report, "services")["ok"], false);

    // The text form names each check.
    node.set_running(true);
    let output = mailherd(&["check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("node n1: master (from host), operational (exit 0)"),
        "{stdout}"
    );
    assert!(stdout.contains("  ok   smtp "), "{stdout}");
}

#[test]
fn a_backup_is_ready_when_nothing_is_held_and_its_tools_work() {
    let node = Node::new();
    node.set_running(false);
    // The stack's checks would fail (nothing listens): not probed.
    let config = node.config(&tcp_check("smtp", closed_port(), true));
    let (code, report) = check(&config, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["role"], "backup");
    assert_eq!(report["verdict"], "ready");
    assert_eq!(
        item(&report, "services")["detail"],
        "the stack is stopped, ready to start"
    );
    assert!(item(&report, "smtp")["detail"]
        .as_str()
        .unwrap()
        .starts_with("not probed"));

    // A local volume whose device is not there: this node could not
    // take over.
    let volume = "\n[[volumes]]\nname = \"mail\"\ndriver = \"local\"\ndevice = \"/dev/mailherd-test-no-such-device\"\nmount_point = \"/srv/mailherd-test-mail\"\n";
    let config = node.config(volume);
    let (code, report) = check(&config, &[]);
    assert_eq!((code, report["verdict"].as_str()), (2, Some("not_ready")));
    assert!(
        item(&report, "volume mail")["detail"]
            .as_str()
            .unwrap()
            .contains("/dev/mailherd-test-no-such-device is missing"),
        "{report:#}"
    );
}

#[test]
fn a_backup_whose_stack_cannot_be_read_is_not_ready() {
    let node = Node::new();
    let config = node.config("");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "status = [\"/bin/sh\"",
        "status = [\"/nonexistent/sh\"",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let (code, report) = check(&config, &["--role", "backup"]);
    assert_eq!((code, report["verdict"].as_str()), (2, Some("not_ready")));
    assert!(item(&report, "services")["detail"]
        .as_str()
        .unwrap()
        .contains("cannot read the stack's state"));
}

#[test]
fn a_check_that_cannot_be_made_exits_2() {
    let output = mailherd(&["check", "--config", "/nonexistent/mailherd.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("/nonexistent/mailherd.toml"),
        "{}",
        text(&output)
    );
}

fn notify(config: &Path, state: &str) -> Output {
    mailherd(&[
        "notify",
        "--config",
        config.to_str().unwrap(),
        "INSTANCE",
        "mailherd_mail",
        state,
        "100",
    ])
}

#[test]
fn notify_promotes_and_demotes_with_an_epoch_from_the_local_counter() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let node = Node::new();
    let config = node.config(&tcp_check("smtp", open, true));

    let output = notify(&config, "MASTER");
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(node.actions(), ["start"]);
    assert_eq!(node.data("keepalived-epoch").trim(), "1");
    let state: serde_json::Value =
        serde_json::from_str(&node.data("keepalived-notify.json")).unwrap();
    assert_eq!(
        (state["phase"].as_str(), state["epoch"].as_u64()),
        (Some("master"), Some(1))
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("n1: master, epoch 1, promoted in "),
        "{}",
        text(&output)
    );
    let (code, report) = check(&config, &[]);
    assert_eq!((code, report["role"].as_str()), (0, Some("master")));

    let output = notify(&config, "BACKUP");
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(node.actions(), ["start", "stop"]);
    let (code, report) = check(&config, &[]);
    assert_eq!((code, report["verdict"].as_str()), (0, Some("ready")));

    // Each promotion takes the next epoch; a fault kills the stack.
    let output = notify(&config, "master");
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(node.data("keepalived-epoch").trim(), "2");
    let output = notify(&config, "FAULT");
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(node.actions(), ["start", "stop", "start", "kill"]);
    let state: serde_json::Value =
        serde_json::from_str(&node.data("keepalived-notify.json")).unwrap();
    assert_eq!(state["phase"], "fault");

    let output = notify(&config, "STOP");
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(node.actions().last().unwrap(), "stop");
}

#[test]
fn a_failed_promotion_is_undone_and_exits_1() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let node = Node::new();
    let config = node.config(&tcp_check("smtp", open, true));
    std::fs::write(node.path("fail-start"), "").unwrap();
    let output = notify(&config, "MASTER");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot start: queue locked"),
        "{}",
        text(&output)
    );
    assert_eq!(
        node.actions(),
        ["start", "stop"],
        "demoted after the failure"
    );
    let state: serde_json::Value =
        serde_json::from_str(&node.data("keepalived-notify.json")).unwrap();
    assert_eq!(state["phase"], "promotion_failed");
    // The stack's checks fail: a promotion whose checks never pass fails too.
    std::fs::remove_file(node.path("fail-start")).unwrap();
    let config = node.config(&tcp_check("smtp", closed_port(), true));
    let output = notify(&config, "MASTER");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(node.data("keepalived-epoch").trim(), "2");
}

#[test]
fn notify_refuses_what_keepalived_never_sends() {
    let node = Node::new();
    let config = node.config("");
    let output = notify(&config, "SLAVE");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown state \"SLAVE\""));
    let output = mailherd(&[
        "notify",
        "--config",
        config.to_str().unwrap(),
        "ROUTER",
        "x",
        "MASTER",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(node.actions().is_empty(), "nothing ran");
}

#[test]
fn the_rendered_keepalived_conf_passes_keepalived_t() {
    let node = Node::new();
    let config = node.config(
        "\n[floating_ip]\ndriver = \"local\"\naddress = \"192.0.2.100/24\"\ninterface = \"eth0\"\n",
    );
    let output_path = node.path("keepalived.conf");
    let output = mailherd(&[
        "render",
        "keepalived",
        "--config",
        config.to_str().unwrap(),
        "--output",
        output_path.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let rendered = std::fs::read_to_string(&output_path).unwrap();
    for needle in [
        "vrrp_instance mailherd_mail {",
        "    state BACKUP\n",
        "    interface eth0\n",
        "    priority 100\n",
        "    nopreempt\n",
        "    unicast_src_ip 192.0.2.11\n",
        "        192.0.2.12\n",
        "        192.0.2.100/24 dev eth0\n",
        "        mailherd_check\n",
        &format!(
            "    script \"{MAILHERD} check --config {} --degraded-ok\"\n",
            config.display()
        ),
        &format!(
            "    notify \"{MAILHERD} notify --config {}\"\n",
            config.display()
        ),
    ] {
        assert!(
            rendered.contains(needle),
            "{needle:?} missing from:\n{rendered}"
        );
    }
    // The witness is not a VRRP peer.
    assert!(!rendered.contains("192.0.2.13"), "{rendered}");

    assert!(
        Path::new("/usr/sbin/keepalived").exists(),
        "keepalived is missing: run scripts/install-deps.sh"
    );
    let tested = Command::new("/usr/sbin/keepalived")
        .args(["-t", "-f"])
        .arg(&output_path)
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "keepalived -t refused the rendered file: {}\n{rendered}",
        text(&tested)
    );

    // Every node derives the same router id from the cluster name.
    let id = |text: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix("virtual_router_id "))
            .map(str::to_string)
    };
    let n2_config = std::fs::read_to_string(&config).unwrap().replacen(
        "name = \"n1\"\ndata_dir",
        "name = \"n2\"\ndata_dir",
        1,
    );
    let n2_path = node.path("n2.toml");
    std::fs::write(&n2_path, n2_config).unwrap();
    let n2 = mailherd(&[
        "render",
        "keepalived",
        "--config",
        n2_path.to_str().unwrap(),
    ]);
    let n2_rendered = String::from_utf8_lossy(&n2.stdout).into_owned();
    assert_eq!(id(&n2_rendered), id(&rendered));
    assert!(n2_rendered.contains("    priority 90\n"), "{n2_rendered}");
    assert!(n2_rendered.contains("    unicast_src_ip 192.0.2.12\n"));
}

#[test]
fn render_refuses_a_node_without_floating_ip() {
    let node = Node::new();
    let config = node.config("");
    let output = mailherd(&["render", "keepalived", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no [floating_ip]"));
}

/// A backup's readiness names what its copy of a replicated volume would
/// start from: refused without a usable pool or without any snapshot
/// (promoted, it would start empty), ready with the newest snapshot's name.
/// The btrfs disk is a loop device mounted in a private mount namespace of
/// a shell that runs the real `mailherd check`.
#[test]
fn check_on_a_backup_names_the_snapshot_its_replicated_copy_would_start_from() {
    let node = Node::new();
    let pool_fs = node.path("pool-fs");
    std::fs::create_dir_all(&pool_fs).unwrap();
    let volume = |pool: &Path| {
        format!(
            "[[volumes]]\nname = \"mail\"\ndriver = \"btrfs\"\nmount_point = \"{}\"\n\
             [volumes.replication]\npool = \"{}\"\n",
            node.path("vmail").display(),
            pool.display()
        )
    };

    // A pool that is not on btrfs (the temp dir) is named.
    let config = node.config(&volume(&node.path("not-btrfs")));
    std::fs::create_dir_all(node.path("not-btrfs")).unwrap();
    let (code, report) = check(&config, &["--role", "backup"]);
    assert_eq!(code, 2, "{report}");
    let item = &report["items"][0];
    assert_eq!(item["ok"], false, "{report}");
    let detail = item["detail"].as_str().unwrap();
    assert!(detail.contains("not on a btrfs file system"), "{detail}");

    let image = node.path("disk.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(256 * 1024 * 1024))
        .unwrap();
    let status = Command::new("mkfs.btrfs")
        .args(["-q", "-f"])
        .arg(&image)
        .status()
        .unwrap();
    assert!(status.success());
    let device = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&image)
        .output()
        .unwrap();
    let device = String::from_utf8(device.stdout).unwrap().trim().to_string();
    let config = node.config(&volume(&pool_fs.join("pool")));
    // Both cases in one private mount namespace: the empty pool, then the
    // pool with a complete (read-only) snapshot.
    let script = format!(
        "set -e\nmount -t btrfs {device} {fs}\nmkdir -p {fs}/pool/snapshots\n\
         {bin} check --json --role backup --config {config} > {out}/empty.json || true\n\
         btrfs -q subvolume create {fs}/seed\n\
         btrfs -q subvolume snapshot -r {fs}/seed {fs}/pool/snapshots/e0000000000-1700000000000-seed\n\
         {bin} check --json --role backup --config {config} > {out}/seeded.json || true\n",
        fs = pool_fs.display(),
        bin = MAILHERD,
        config = config.display(),
        out = node.directory.path().display(),
    );
    let run = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = Command::new("losetup").args(["-d", &device]).status();
    assert!(run.status.success(), "{}", text(&run));
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(node.path(name)).unwrap()).unwrap()
    };
    let empty = read("empty.json");
    assert_eq!(empty["verdict"], "not_ready", "{empty}");
    let detail = empty["items"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("would start with an empty copy"),
        "{detail}"
    );
    let seeded = read("seeded.json");
    assert_eq!(seeded["verdict"], "ready", "{seeded}");
    let detail = seeded["items"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("newest snapshot e0000000000-1700000000000-seed"),
        "{detail}"
    );
}
