//! `--manager keepalived|keepalived-tuned`: stock keepalived instead of the
//! mailherd agent on every mail node, for the benchmark's comparison.
//!
//! Each mail node's init runs Debian's `keepalived` in the node (its
//! network, mount and PID namespaces) with its own config and pid files.
//! keepalived holds the floating IP on `eth0` by VRRP multicast on the
//! lab's bridge and runs the banner stack through scripts, the way a
//! keepalived deployment does:
//!
//! - `keepalived-notify.sh MASTER|BACKUP|FAULT|STOP` (`notify_master` and
//!   friends): MASTER runs `stack.sh start`, anything else `stack.sh stop`
//!   (the same control script the agent runs), and writes the state to
//!   `run/keepalived.state`, which the track script and `status` read;
//! - `keepalived-check.sh`, the `vrrp_script`: it probes the local SMTP
//!   banner only while the state file says MASTER, so a backup, whose
//!   stack is stopped, is never put in FAULT; a master whose banner is gone
//!   goes to FAULT, its peers take over.
//!
//! Priorities fall with the node number (n1 100, n2 99, ...), every node
//! starts as BACKUP and `nopreempt` is set, like mailherd's default
//! (`preempt = false`): a node coming back does not take the address from a
//! healthy master, which would cost clients a second outage.
//!
//! Two timings ([`STOCK`], [`TUNED`]); the limits of keepalived 2.2.7
//! behind [`TUNED`] were found with `keepalived -t`.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::state::{LabState, NodeState};
use crate::topology::{NODE_INTERFACE, SMTP_PORT};

/// How keepalived is timed: VRRP adverts and the track script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timing {
    /// `stock` or `tuned`.
    pub name: &'static str,
    pub vrrp_version: u8,
    /// The VRRP advert interval: whole seconds with VRRPv2, a multiple of
    /// 10 ms with VRRPv3 (which counts in centiseconds).
    pub advert_int_ms: u32,
    /// `vrrp_script` interval in seconds.
    pub track_interval_s: u32,
    pub track_fall: u32,
    pub track_rise: u32,
}

/// keepalived's defaults, as the reference measured them ("track 1 s, fall
/// 2"): VRRPv2, one advert a second; a master is declared dead after three
/// missed adverts plus the skew ((256 - priority) / 256 s), ≈ 3.6 s.
pub const STOCK: Timing = Timing {
    name: "stock",
    vrrp_version: 2,
    advert_int_ms: 1000,
    track_interval_s: 1,
    track_fall: 2,
    track_rise: 2,
};

/// The fastest timing keepalived 2.2.7 accepts, within what stays stable.
///
/// Limits of keepalived 2.2.7 (checked with `keepalived -t`): `advert_int`
/// takes fractions only with VRRPv3, from 0.01 s ("number '0.001' outside
/// range [0.010000, 255.000000]"); the `vrrp_script` `interval` is a whole
/// number of seconds, at least 1 ("vrrp script interval '0.5' must be
/// between 1 and 4294"); `fall` and `rise` take 1.
///
/// The advert interval is 50 ms, not the 10 ms minimum: in this lab on a
/// two-core host at load 4 to 5, 10 ms adverts made backups take over from
/// a healthy master every few seconds (two holders, 8 ms in 60 s), while
/// 20 ms and 50 ms ran 200 s each without a single transition; 50 ms keeps
/// a margin over the first stable value. A backup declares the master
/// dead after three adverts plus the skew ((256 - priority) / 256 adverts
/// in VRRPv3): ≈ 0.18 s.
pub const TUNED: Timing = Timing {
    name: "tuned",
    vrrp_version: 3,
    advert_int_ms: 50,
    track_interval_s: 1,
    track_fall: 1,
    track_rise: 1,
};

impl Timing {
    /// `advert_int` as keepalived reads it: seconds, with a fraction only
    /// when there is one (`1`, `0.1`, `0.05`).
    pub fn advert_int(&self) -> String {
        let centis = self.advert_int_ms / 10;
        let (seconds, centis) = (centis / 100, centis % 100);
        match centis {
            0 => seconds.to_string(),
            _ if centis % 10 == 0 => format!("{seconds}.{}", centis / 10),
            _ => format!("{seconds}.{centis:02}"),
        }
    }
}

/// The VRRP router id of every lab (each lab has its own bridge).
pub const VIRTUAL_ROUTER_ID: u8 = 77;
/// The name of the VRRP instance and of the track script.
const INSTANCE: &str = "mailherd_lab";
const TRACK_SCRIPT: &str = "banner_check";
/// How long the track script waits for the banner (the agent's SMTP check
/// waits as long).
const CHECK_TIMEOUT_MS: u64 = 500;

pub fn config_path(node_dir: &Path) -> PathBuf {
    node_dir.join("keepalived.conf")
}

fn notify_script(node: &NodeState) -> PathBuf {
    node.dir.join("keepalived-notify.sh")
}

fn check_script(node: &NodeState) -> PathBuf {
    node.dir.join("keepalived-check.sh")
}

/// The state the notify script writes, inside the node's `/run` tmpfs (so
/// a power cut forgets it).
pub fn state_file(node_dir: &Path) -> PathBuf {
    node_dir.join("run").join("keepalived.state")
}

/// keepalived's pid files: one per process, each node its own, or a second
/// instance on the host refuses to start ("daemon is already running").
pub fn pid_files(run_dir: &Path) -> [PathBuf; 3] {
    [
        run_dir.join("keepalived.pid"),
        run_dir.join("keepalived-vrrp.pid"),
        run_dir.join("keepalived-checkers.pid"),
    ]
}

/// The command line node-init runs: in the foreground, logging to its
/// output (the node's `agent.log`), not to the host's syslog.
pub fn daemon_args(config: &Path, run_dir: &Path) -> Vec<std::ffi::OsString> {
    let [pid, vrrp_pid, checkers_pid] = pid_files(run_dir);
    let mut args: Vec<std::ffi::OsString> = ["--dont-fork", "--log-console", "--no-syslog"]
        .iter()
        .map(Into::into)
        .collect();
    for (option, path) in [
        ("--use-file", config),
        ("--pid", pid.as_path()),
        ("--vrrp_pid", vrrp_pid.as_path()),
        ("--checkers_pid", checkers_pid.as_path()),
    ] {
        let mut arg = std::ffi::OsString::from(format!("{option}="));
        arg.push(path);
        args.push(arg);
    }
    args
}

/// VRRP priority of a mail node: 100 for n1, 99 for n2, ...
pub fn priority(node: &NodeState) -> u8 {
    (101 - node.id.min(100)) as u8
}

/// A path as one word of a keepalived script line.
fn script_word(path: &Path) -> Result<String> {
    let text = path.display().to_string();
    if text.is_empty()
        || text
            .chars()
            .any(|ch| ch.is_whitespace() || ch == '"' || ch == '\'')
    {
        bail!(
            "{text:?}: keepalived script paths must not contain spaces or quotes \
             (choose another {})",
            crate::topology::LAB_DIR_ENV
        );
    }
    Ok(text)
}

/// The keepalived.conf of mail node `node`.
pub fn render_config(state: &LabState, node: &NodeState, timing: &Timing) -> Result<String> {
    if !node.is_mail() {
        bail!(
            "{} is a witness: keepalived runs on mail nodes only",
            node.name
        );
    }
    let notify = script_word(&notify_script(node))?;
    let check = script_word(&check_script(node))?;
    let mut out = String::new();
    let w = &mut out;
    writeln!(
        w,
        "# Generated by mailherd-lab at `up`: keepalived on node {} ({} timing).",
        node.name, timing.name
    )?;
    writeln!(
        w,
        "# keepalived holds {} on {NODE_INTERFACE}; its scripts run the banner stack.",
        state.floating_ip
    )?;
    writeln!(w)?;
    writeln!(w, "global_defs {{")?;
    writeln!(w, "    router_id {}", node.name)?;
    writeln!(w, "    script_user root")?;
    writeln!(w, "    enable_script_security")?;
    writeln!(w, "    vrrp_version {}", timing.vrrp_version)?;
    writeln!(w, "}}")?;
    writeln!(w)?;
    writeln!(
        w,
        "# Probes the local banner while this node is master; succeeds on a backup."
    )?;
    writeln!(w, "vrrp_script {TRACK_SCRIPT} {{")?;
    writeln!(w, "    script \"{check}\"")?;
    writeln!(w, "    interval {}", timing.track_interval_s)?;
    writeln!(w, "    fall {}", timing.track_fall)?;
    writeln!(w, "    rise {}", timing.track_rise)?;
    writeln!(w, "}}")?;
    writeln!(w)?;
    writeln!(w, "vrrp_instance {INSTANCE} {{")?;
    writeln!(w, "    state BACKUP")?;
    writeln!(w, "    interface {NODE_INTERFACE}")?;
    writeln!(w, "    virtual_router_id {VIRTUAL_ROUTER_ID}")?;
    writeln!(w, "    priority {}", priority(node))?;
    writeln!(w, "    advert_int {}", timing.advert_int())?;
    writeln!(w, "    nopreempt")?;
    writeln!(w, "    virtual_ipaddress {{")?;
    writeln!(
        w,
        "        {}/{} dev {NODE_INTERFACE}",
        state.floating_ip, state.prefix_len
    )?;
    writeln!(w, "    }}")?;
    writeln!(w, "    track_script {{")?;
    writeln!(w, "        {TRACK_SCRIPT}")?;
    writeln!(w, "    }}")?;
    for (hook, state_name) in [
        ("notify_master", "MASTER"),
        ("notify_backup", "BACKUP"),
        ("notify_fault", "FAULT"),
        ("notify_stop", "STOP"),
    ] {
        writeln!(w, "    {hook} \"{notify} {state_name}\"")?;
    }
    writeln!(w, "}}")?;
    Ok(out)
}

/// Single-quotes `text` for sh.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn script_header(node: &NodeState, what: &str, usage: &str) -> String {
    let dir = node.dir.display().to_string();
    format!(
        "#!/bin/sh\n\
         # Generated by mailherd-lab at `up`: keepalived's {what} on node {name}.\n\
         # Usage: {usage}\n\
         set -u\n\
         PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         DIR={dir}\n\
         STATE={state}\n",
        name = node.name,
        dir = sh_quote(&dir),
        state = sh_quote(&state_file(&node.dir).display().to_string()),
    )
}

/// `notify_*`: start or stop the stack, record the state. keepalived runs
/// notify scripts without waiting for them, so two can overlap (a MASTER
/// quickly followed by a FAULT); the lock keeps their stack commands from
/// interleaving.
fn notify_script_text(node: &NodeState) -> String {
    let mut script = script_header(
        node,
        "notify script",
        "keepalived-notify.sh MASTER|BACKUP|FAULT|STOP (keepalived's notify_master, ...)",
    );
    script.push_str(
        r#"LOG="$DIR/keepalived-notify.log"

case "${1:-}" in
MASTER|BACKUP|FAULT|STOP) ;;
*)
    echo "usage: $0 MASTER|BACKUP|FAULT|STOP" >&2
    exit 2
    ;;
esac
exec 9>"$DIR/run/keepalived-notify.lock"
flock 9
echo "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ) $1" >>"$LOG"
if [ "$1" = MASTER ]; then
    # The state is written after the start, so the track script does not
    # probe a banner that is still starting.
    # 9>&-: the banner daemon must not inherit the lock, or it would hold
    # it for as long as it runs.
    /bin/sh "$DIR/stack.sh" start 9>&- >>"$LOG" 2>&1 || echo "stack.sh start failed" >>"$LOG"
    echo MASTER >"$STATE"
else
    # The state is written before the stop, so the track script stops
    # probing a banner that is going away.
    echo "$1" >"$STATE"
    /bin/sh "$DIR/stack.sh" stop 9>&- >>"$LOG" 2>&1 || echo "stack.sh stop failed" >>"$LOG"
fi
"#,
    );
    script
}

/// The `vrrp_script`: fails only on a master whose banner does not answer.
fn check_script_text(state: &LabState, node: &NodeState) -> String {
    let mut script = script_header(
        node,
        "track script",
        "keepalived-check.sh (keepalived's vrrp_script)",
    );
    script.push_str(&format!(
        "LAB_BIN={lab_bin}\n\
         # A backup's stack is stopped on purpose: nothing to check.\n\
         [ \"$(cat \"$STATE\" 2>/dev/null)\" = MASTER ] || exit 0\n\
         exec \"$LAB_BIN\" check-banner --address 127.0.0.1:{SMTP_PORT} --timeout-ms {CHECK_TIMEOUT_MS}\n",
        lab_bin = sh_quote(&state.lab_bin.display().to_string()),
    ));
    script
}

/// Writes the keepalived files of a mail node (its `stack.sh` is written
/// by [`crate::stack::write_node_files`]).
pub fn write_node_files(state: &LabState, node: &NodeState, timing: &Timing) -> Result<()> {
    let config = render_config(state, node, timing)?;
    std::fs::write(&node.config, config)
        .with_context(|| format!("cannot write {}", node.config.display()))?;
    for (path, text) in [
        (notify_script(node), notify_script_text(node)),
        (check_script(node), check_script_text(state, node)),
    ] {
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        // enable_script_security: root's, written by nobody else.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Has keepalived itself read the node's config (`keepalived -t`), so a
/// config it would ignore in part fails `up` with keepalived's words.
pub fn check_config(keepalived: &Path, node: &NodeState) -> Result<()> {
    let output = std::process::Command::new(keepalived)
        .arg("--config-test")
        .arg("--use-file")
        .arg(&node.config)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} --config-test", keepalived.display()))?;
    if !output.status.success() {
        bail!(
            "keepalived refuses {} ({}): {}",
            node.config.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// One keepalived process of a node, by host PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    /// The main process (node-init's child), not a VRRP or checker child.
    pub main: bool,
}

/// Every keepalived process of `node` (zombies excluded: their executable
/// is gone), the main one first.
pub fn processes(state: &LabState, node: &NodeState) -> Result<Vec<Process>> {
    let keepalived = std::fs::canonicalize(&state.agent_bin).unwrap_or(state.agent_bin.clone());
    let init = crate::node::init_pid(&node.namespace)?;
    let mut found = Vec::new();
    for pid in crate::netns::pids(&node.namespace)? {
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        if exe != keepalived {
            continue;
        }
        let parent = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| parent_pid(&status));
        found.push(Process {
            pid,
            main: init.is_some() && parent == init,
        });
    }
    found.sort_by_key(|process| !process.main);
    Ok(found)
}

/// The `PPid:` of a `/proc/PID/status` text.
fn parent_pid(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// What the notify script last wrote on `node` (MASTER, BACKUP, FAULT,
/// STOP), read through its init's root, since `run/` is a tmpfs mounted in
/// the node's own mount namespace.
pub fn read_state(node: &NodeState) -> Option<String> {
    let init = crate::node::init_pid(&node.namespace).ok()??;
    let path = state_file(&node.dir);
    let inside = Path::new(&format!("/proc/{init}/root")).join(path.strip_prefix("/").ok()?);
    let text = std::fs::read_to_string(inside).ok()?;
    let state = text.trim();
    (!state.is_empty()).then(|| state.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Stack;

    fn lab() -> LabState {
        let mut state = crate::state::tests::sample(Path::new("/var/lib/mailherd-lab-k"));
        state.stack = Stack::Banner;
        state.manager = crate::state::Manager::Keepalived;
        state.mail = None;
        state
    }

    #[test]
    fn stock_config_holds_the_floating_ip_with_keepalived_defaults() {
        let state = lab();
        let text = render_config(&state, &state.nodes[0], &STOCK).unwrap();
        let expected = "\
# Generated by mailherd-lab at `up`: keepalived on node n1 (stock timing).
# keepalived holds 10.77.0.100 on eth0; its scripts run the banner stack.

global_defs {
    router_id n1
    script_user root
    enable_script_security
    vrrp_version 2
}

# Probes the local banner while this node is master; succeeds on a backup.
vrrp_script banner_check {
    script \"/var/lib/mailherd-lab-k/n1/keepalived-check.sh\"
    interval 1
    fall 2
    rise 2
}

vrrp_instance mailherd_lab {
    state BACKUP
    interface eth0
    virtual_router_id 77
    priority 100
    advert_int 1
    nopreempt
    virtual_ipaddress {
        10.77.0.100/24 dev eth0
    }
    track_script {
        banner_check
    }
    notify_master \"/var/lib/mailherd-lab-k/n1/keepalived-notify.sh MASTER\"
    notify_backup \"/var/lib/mailherd-lab-k/n1/keepalived-notify.sh BACKUP\"
    notify_fault \"/var/lib/mailherd-lab-k/n1/keepalived-notify.sh FAULT\"
    notify_stop \"/var/lib/mailherd-lab-k/n1/keepalived-notify.sh STOP\"
}
";
        assert_eq!(text, expected);
    }

    #[test]
    fn tuned_config_uses_vrrp3_fractional_adverts_and_a_quick_track_script() {
        let state = lab();
        let text = render_config(&state, &state.nodes[1], &TUNED).unwrap();
        for needle in [
            "(tuned timing)",
            "    vrrp_version 3\n",
            "    advert_int 0.05\n",
            "    interval 1\n    fall 1\n    rise 1\n",
            "    priority 99\n",
            "/var/lib/mailherd-lab-k/n2/keepalived-check.sh",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn advert_intervals_read_as_keepalived_expects() {
        let with = |advert_int_ms| Timing {
            advert_int_ms,
            ..STOCK
        };
        assert_eq!(with(1000).advert_int(), "1");
        assert_eq!(with(100).advert_int(), "0.1");
        assert_eq!(with(50).advert_int(), "0.05");
        assert_eq!(with(10).advert_int(), "0.01");
        assert_eq!(with(1500).advert_int(), "1.5");
    }

    #[test]
    fn witnesses_and_unquotable_paths_are_refused() {
        let mut state = lab();
        let witness = state.nodes[2].clone();
        let error = render_config(&state, &witness, &STOCK).unwrap_err();
        assert!(error.to_string().contains("w1 is a witness"), "{error}");
        state.nodes[0].dir = PathBuf::from("/var/lib/my lab/n1");
        let error = render_config(&state, &state.nodes[0].clone(), &STOCK).unwrap_err();
        assert!(
            error.to_string().contains("must not contain spaces"),
            "{error}"
        );
    }

    #[test]
    fn the_track_script_checks_only_on_a_master() {
        let state = lab();
        let script = check_script_text(&state, &state.nodes[0]);
        assert!(
            script.contains(
                "[ \"$(cat \"$STATE\" 2>/dev/null)\" = MASTER ] || exit 0\n\
                 exec \"$LAB_BIN\" check-banner --address 127.0.0.1:25 --timeout-ms 500\n"
            ),
            "{script}"
        );
        assert!(script.contains("STATE='/var/lib/mailherd-lab-k/n1/run/keepalived.state'"));
    }

    #[test]
    fn daemon_runs_in_the_foreground_with_its_own_pid_files() {
        let args = daemon_args(Path::new("/l/n1/keepalived.conf"), Path::new("/l/n1/run"));
        let args: Vec<String> = args
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--dont-fork",
                "--log-console",
                "--no-syslog",
                "--use-file=/l/n1/keepalived.conf",
                "--pid=/l/n1/run/keepalived.pid",
                "--vrrp_pid=/l/n1/run/keepalived-vrrp.pid",
                "--checkers_pid=/l/n1/run/keepalived-checkers.pid",
            ]
        );
    }

    #[test]
    fn reads_the_parent_pid() {
        assert_eq!(
            parent_pid("Name:\tkeepalived\nPid:\t7\nPPid:\t4242\n"),
            Some(4242)
        );
        assert_eq!(parent_pid("Name:\tx\n"), None);
    }
}
