//! The reconciler and the garbage collector in a lab of their own (prefix
//! `mr`, `/var/lib/mr`): real agents, a floating address on a bridge, a
//! shared loop-device volume and the banner stack, all touched by hand the
//! way an operator (or a bug) would:
//!
//! - the floating address added on a backup (`ip netns exec ... ip addr
//!   add`) is removed by that backup's reconciler, which raises the
//!   split-brain alarm (log and `/status`); the master keeps it;
//! - the volume mounted on a backup is unmounted by its reconciler;
//! - with a backup's agent frozen, the volume mounted and the stack started
//!   there by hand: `mailherd gc --dry-run` reports both, `mailherd gc`
//!   (agent down) still only reports, `mailherd gc --force` removes both;
//! - `mailherd gc` on the master refuses.
//!
//! Assertions are about behaviour: every wait is bounded generously and only
//! fails when the behaviour never shows.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{agent_bin, text, LabEnv};
use mailherd_agent::gc::{Garbage, GcReport};
use mailherd_config::Config;
use serde_json::Value;

static LAB: LabEnv = LabEnv {
    prefix: "mr",
    dir: "/var/lib/mr",
    lock: &LOCK,
};
static LOCK: Mutex<()> = Mutex::new(());

/// The reconciler runs every 3 s by default; this leaves room for a loaded
/// machine.
const RECONCILE_WAIT: Duration = Duration::from_secs(30);

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A node of the lab as the test uses it.
struct Node {
    name: String,
    namespace: String,
    api: String,
    config_path: String,
    config: Config,
}

impl Node {
    /// `mailherd-lab exec NODE -- ARGS`: (exit ok, stdout, stderr).
    fn exec(&self, args: &[&str]) -> (bool, String, String) {
        let mut all = vec!["exec", self.name.as_str(), "--"];
        all.extend_from_slice(args);
        let output = LAB.run(&all);
        (
            output.status.success(),
            text(&output.stdout),
            text(&output.stderr),
        )
    }

    /// `ip netns exec NAMESPACE ARGS` (network namespace only).
    fn netns(&self, args: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .args(args)
            .output()
            .expect("ip netns exec runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    fn addresses(&self) -> String {
        let interface = &self.config.floating_ip.as_ref().unwrap().interface;
        self.netns(&["ip", "-o", "-4", "addr", "show", "dev", interface])
    }

    /// The node's agent's `/status`, asked inside its namespace.
    fn status(&self) -> Option<Value> {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .arg(agent_bin())
            .args(["status", "--json", "--api", &self.api])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).ok())
            .flatten()
    }

    /// The reconciler's last action, from `/status`.
    fn reconciler_action(&self) -> String {
        self.status()
            .and_then(|status| {
                status["workers"]
                    .as_array()?
                    .iter()
                    .find(|w| w["name"] == "reconciler")?["last_action"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }

    fn volume(&self) -> (String, String) {
        let volume = &self.config.volumes[0];
        (
            volume.device.as_ref().unwrap().display().to_string(),
            volume.mount_point.display().to_string(),
        )
    }

    /// Whether the volume is mounted in the node's mount namespace.
    fn volume_mounted(&self) -> bool {
        let (_, mount_point) = self.volume();
        let (_, mountinfo, _) = self.exec(&["cat", "/proc/self/mountinfo"]);
        mountinfo
            .lines()
            .any(|line| line.split(' ').nth(4) == Some(mount_point.as_str()))
    }

    fn mount_volume_by_hand(&self) {
        let (device, mount_point) = self.volume();
        let (ok, _, err) = self.exec(&["mkdir", "-p", &mount_point]);
        assert!(ok, "{err}");
        let (ok, _, err) = self.exec(&["mount", "-t", "ext4", &device, &mount_point]);
        assert!(ok, "mounting {device} on {} by hand: {err}", self.name);
        assert!(self.volume_mounted());
    }

    /// The stack's control script with `action` (the services driver's argv).
    fn stack(&self, action: &str) -> bool {
        let services = self.config.services.as_ref().unwrap();
        let mut argv: Vec<String> = services.start.clone();
        *argv.last_mut().unwrap() = action.to_string();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.exec(&argv).0
    }

    /// `mailherd gc --config CONFIG ARGS` inside the node.
    fn gc(&self, args: &[&str]) -> (bool, String, String) {
        let bin = agent_bin().display().to_string();
        let mut all = vec![bin.as_str(), "gc", "--config", self.config_path.as_str()];
        all.extend_from_slice(args);
        self.exec(&all)
    }

    fn log(&self) -> String {
        let path = PathBuf::from(LAB.dir).join(&self.name).join("agent.log");
        std::fs::read_to_string(&path).unwrap_or_default()
    }
}

fn nodes(status: &Value) -> Vec<(String, Node)> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] != "witness")
        .map(|n| {
            let config_path = n["config"].as_str().unwrap().to_string();
            let node = Node {
                name: n["name"].as_str().unwrap().to_string(),
                namespace: n["namespace"].as_str().unwrap().to_string(),
                api: n["api"].as_str().unwrap().to_string(),
                config: Config::load(std::path::Path::new(&config_path))
                    .unwrap_or_else(|e| panic!("{config_path}: {e}")),
                config_path,
            };
            (n["role"].as_str().unwrap().to_string(), node)
        })
        .collect()
}

#[test]
fn backups_lose_what_they_hold_by_hand_and_gc_reports_then_removes() {
    let _lab = LAB.exclusive();
    LAB.ok(&["up", "--nodes", "3", "--stack", "banner"]);
    let status = json(&LAB.ok(&["status", "--json"]));
    let floating_ip = status["floating_ip"].as_str().unwrap().to_string();
    let nodes = nodes(&status);
    let master = &nodes.iter().find(|(role, _)| role == "master").unwrap().1;
    let backup = &nodes.iter().find(|(role, _)| role == "backup").unwrap().1;
    let holds = |node: &Node| node.addresses().contains(&format!("inet {floating_ip}/"));
    assert!(holds(master) && !holds(backup));

    // 1. The floating address, added on a backup by hand.
    backup.netns(&[
        "ip",
        "addr",
        "add",
        &format!("{floating_ip}/32"),
        "dev",
        &backup.config.floating_ip.as_ref().unwrap().interface,
    ]);
    assert!(holds(backup));
    wait_until(
        "the backup's reconciler to remove the address",
        RECONCILE_WAIT,
        || !holds(backup),
    );
    assert!(holds(master), "the master keeps its address");
    wait_until("the alarm in the backup's status", RECONCILE_WAIT, || {
        backup
            .reconciler_action()
            .contains("released floating address")
    });
    let log = backup.log();
    assert!(
        log.contains("SPLIT-BRAIN ALARM") && log.contains("floating address"),
        "{}'s log lacks the alarm:\n{log}",
        backup.name
    );

    // 2. The volume, mounted on a backup by hand.
    backup.mount_volume_by_hand();
    wait_until(
        "the backup's reconciler to unmount the volume",
        RECONCILE_WAIT,
        || !backup.volume_mounted(),
    );
    wait_until("the release in the backup's status", RECONCILE_WAIT, || {
        backup.reconciler_action().contains("released volume")
    });
    assert!(master.volume_mounted(), "the master keeps its volume");

    // 3. The backup's agent frozen: nothing reconciles there. The volume
    // and the stack, by hand; gc reports them and removes them only with
    // --force.
    LAB.ok(&["fail", &backup.name, "--mode", "agent-freeze"]);
    backup.mount_volume_by_hand();
    assert!(backup.stack("start"), "starting the stack by hand");
    assert!(backup.stack("status"));
    let expected = |action| {
        vec![
            (
                Garbage::StaleMount {
                    volume: "mail".into(),
                },
                action,
            ),
            (Garbage::StackOnBackup, action),
        ]
    };
    for args in [&["--dry-run", "--json"][..], &["--json"][..]] {
        let (ok, out, err) = backup.gc(args);
        assert!(ok, "gc {args:?}: {err}");
        assert!(err.contains("does not answer"), "{err}");
        let report: GcReport = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(report.agent, "down", "{report:?}");
        assert_eq!(report.findings(), expected("would remove"));
    }
    assert!(backup.volume_mounted() && backup.stack("status"));
    let (ok, out, err) = backup.gc(&["--force"]);
    assert!(ok, "gc --force: {out}\n{err}");
    assert!(
        out.contains("volume mail mounted on a node that is not the master: removed"),
        "{out}"
    );
    assert!(
        out.contains("mail stack running on a node that is not the master: removed"),
        "{out}"
    );
    assert!(!backup.volume_mounted(), "gc --force unmounted the volume");
    assert!(!backup.stack("status"), "gc --force stopped the stack");
    LAB.ok(&["heal", &backup.name]);

    // 4. The master: gc touches nothing there.
    let (ok, out, err) = master.gc(&[]);
    assert!(!ok, "gc on the master must refuse: {out}");
    assert!(err.contains("is the master"), "{err}");
    assert!(holds(master) && master.volume_mounted() && master.stack("status"));
    // Never two holders through all of it.
    let status = json(&LAB.ok(&["status", "--json"]));
    let masters: Vec<&Value> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "master")
        .collect();
    assert_eq!(masters.len(), 1, "{status:#}");
    assert_eq!(masters[0]["name"], master.name.as_str());
}
