//! Node lifecycle: boot, power cut, and `node-init`, the PID 1 of a node.
//!
//! A node is a network namespace plus its own mount and PID namespaces:
//! `ip netns exec mh-n1 unshare --mount --pid --fork --mount-proc
//! mailherd-lab node-init ...`, started detached. `node-init` makes the
//! node's private mounts, starts the agent (which must not be PID 1, so that
//! killing the agent alone leaves the node up) and reaps every child, since
//! daemons the agent starts get reparented to it. In a keepalived lab it
//! starts keepalived instead, and restarts it the same way.
//!
//! A power cut SIGKILLs the PID namespace's init: the kernel then kills every
//! other process of the node at once, and the node's mounts (the volume
//! included) go with its mount namespace.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::state::{LabState, Manager, NodeState, Stack};

/// How long `boot` waits for the node's init to appear.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a power cut waits for the node's processes to be gone.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Boots `node`: fresh link state, then node-init in new mount and PID namespaces.
pub fn boot(state: &LabState, node: &NodeState) -> Result<()> {
    crate::netns::configure_interface(&node.namespace, node.address)?;
    crate::netns::plug(&node.switch_veth, node.partitioned)?;
    std::fs::create_dir_all(node.run_dir())?;
    let log_path = node.node_log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut command = crate::netns::command(&node.namespace, "unshare");
    command
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
        ])
        .arg(&state.lab_bin)
        .args(["node-init", "--node", &node.name, "--dir"])
        .arg(&node.dir)
        .arg("--agent-bin")
        .arg(&state.agent_bin)
        .arg("--config")
        .arg(&node.config)
        .args(["--manager", state.manager.name()]);
    // Witnesses run no mail stack, so they get none of its private mounts.
    if node.is_mail() {
        command.args(["--stack", state.stack.name()]);
        if state.signup {
            command.arg("--signup");
        }
        if let Some(device) = &node.pool_device {
            command.arg("--pool-device").arg(device);
        }
        if state.mariadb.is_some() {
            command.arg("--mariadb");
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session: the node outlives this command and no terminal signal
    // (Ctrl-C in the shell that ran `up`) reaches it.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start node {}", node.name))?;
    wait_for_init(node, &mut child)?;
    // Reaped when the node powers off, or a long-running bench or nemesis
    // would collect one zombie per boot.
    std::thread::spawn(move || child.wait());
    Ok(())
}

fn wait_for_init(node: &NodeState, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        if init_pid(&node.namespace)?.is_some() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "node {} did not boot: its init exited ({status}); {} says:\n{}",
                node.name,
                node.node_log().display(),
                crate::host::tail(&node.node_log(), 10)
            );
        }
        if Instant::now() > deadline {
            bail!("node {} did not boot within {BOOT_TIMEOUT:?}", node.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The host PID of the node's PID-namespace init (the process that is PID 1
/// inside the node), if it runs.
pub fn init_pid(namespace: &str) -> Result<Option<i32>> {
    for pid in crate::netns::pids(namespace)? {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if is_namespace_init(&status) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// True when a `/proc/PID/status` text shows PID 1 of a nested PID namespace.
fn is_namespace_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .map(|pids| {
            let pids: Vec<&str> = pids.split_whitespace().collect();
            pids.len() >= 2 && pids.last() == Some(&"1")
        })
        .unwrap_or(false)
}

/// True when `mount_point` is mounted in the node's mount namespace (read
/// through its init's `/proc/PID/mountinfo`).
pub fn has_mount(namespace: &str, mount_point: &Path) -> Result<bool> {
    let Some(init) = init_pid(namespace)? else {
        return Ok(false);
    };
    let mountinfo = std::fs::read_to_string(format!("/proc/{init}/mountinfo"))?;
    let wanted = mount_point.to_string_lossy();
    Ok(mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_ref())))
}

/// Cuts the node's power: SIGKILL to every process of the node at once (the
/// init first, which makes the kernel kill the rest of its PID namespace),
/// then its link goes down. Returns how many processes were signalled.
pub fn power_off(node: &NodeState) -> Result<usize> {
    let init = init_pid(&node.namespace)?;
    let mut pids = crate::netns::pids(&node.namespace)?;
    if let Some(init) = init {
        pids.retain(|pid| *pid != init);
        pids.insert(0, init);
    }
    for pid in &pids {
        // The process may be gone already: ESRCH is fine.
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    wait_until_empty(&node.namespace, POWER_OFF_TIMEOUT)
        .with_context(|| format!("processes of node {} survive SIGKILL", node.name))?;
    crate::netns::unplug(&node.namespace, &node.switch_veth)?;
    Ok(pids.len())
}

/// SIGKILLs every process in namespace `name` until none is left.
pub fn kill_namespace_processes(name: &str) -> Result<()> {
    let deadline = Instant::now() + POWER_OFF_TIMEOUT;
    loop {
        let pids = crate::netns::pids(name)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} in namespace {name} survive SIGKILL");
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until_empty(name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = crate::netns::pids(name)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("still running: {pids:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILLs the mail stack's main processes on `node`; returns their PIDs.
pub fn kill_stack(state: &LabState, node: &NodeState) -> Result<Vec<i32>> {
    let mut killed = Vec::new();
    for pid in crate::netns::pids(&node.namespace)? {
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if crate::stack::is_main_process(state.stack, &exe, &argv) {
            kill(Pid::from_raw(pid), Signal::SIGKILL)
                .with_context(|| format!("cannot kill process {pid}"))?;
            killed.push(pid);
        }
    }
    Ok(killed)
}

/// What `node-init` is told on its command line.
pub struct NodeInit {
    pub node: String,
    pub dir: PathBuf,
    pub agent_bin: PathBuf,
    pub config: PathBuf,
    /// Whether `agent_bin` is the mailherd agent or keepalived.
    pub manager: Manager,
    /// The mail stack whose private mounts to make; `None` on a witness.
    pub stack: Option<Stack>,
    /// Pause before restarting an agent (or keepalived) that exited, like
    /// systemd's RestartSec.
    pub agent_restart_delay: Duration,
    /// Also run `mailherd signup` with the agent's config (`up --signup`),
    /// restarted like the agent. Inside the node it sees the volume when
    /// the node mounts it, which its dovecot backend needs.
    pub signup: bool,
    /// `--storage btrfs`: the node's own disk, mounted on `<dir>/pool-fs`.
    pub pool_device: Option<PathBuf>,
    /// Also run the node's mariadbd (`up --mariadb`), started before the
    /// agent and restarted like it; a process of the node, so a power cut
    /// or the watchdog kills it with the rest.
    pub mariadb: bool,
}

/// Runs as PID 1 of a node, forever.
pub fn node_init(init: NodeInit) -> Result<()> {
    if std::process::id() != 1 {
        bail!("node-init must be PID 1 of a fresh PID namespace (`mailherd-lab up` starts it)");
    }
    log(&init.node, "booting");
    make_private_mounts(&init)?;
    // Only mail nodes hold the role, so only they arm a watchdog; keepalived
    // knows no watchdog.
    if init.stack.is_some() && init.manager == Manager::Mailherd {
        crate::watchdog::start(&init.node, &init.dir)?;
    }
    let name = init.manager.process_name();
    // Like `After=mariadb.service`: a promotion right after boot needs the
    // server up.
    let mut mariadb = init.mariadb.then(|| spawn_mariadb(&init, true)).flatten();
    let mut agent = spawn_agent(&init);
    let mut signup = init.signup.then(|| spawn_signup(&init)).flatten();
    loop {
        if init.signup && signup.is_none() {
            signup = spawn_signup(&init);
        }
        if init.mariadb && mariadb.is_none() {
            mariadb = spawn_mariadb(&init, false);
        }
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _))
                if Some(pid) == mariadb =>
            {
                log(
                    &init.node,
                    &format!("mariadbd (pid {pid}) ended; restarting it"),
                );
                mariadb = None;
                std::thread::sleep(init.agent_restart_delay);
            }
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _))
                if Some(pid) == signup =>
            {
                log(
                    &init.node,
                    &format!("signup service (pid {pid}) ended; restarting it"),
                );
                signup = None;
                std::thread::sleep(init.agent_restart_delay);
            }
            Ok(WaitStatus::Exited(pid, code)) if Some(pid) == agent => {
                log(
                    &init.node,
                    &format!("{name} (pid {pid}) exited with status {code}"),
                );
                agent = None;
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if Some(pid) == agent => {
                log(
                    &init.node,
                    &format!("{name} (pid {pid}) was killed by {signal}"),
                );
                agent = None;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => std::thread::sleep(Duration::from_millis(100)),
            Err(nix::errno::Errno::EINTR) => {}
            Err(error) => log(&init.node, &format!("waitpid failed: {error}")),
        }
        if agent.is_none() {
            std::thread::sleep(init.agent_restart_delay);
            if init.manager.is_keepalived() {
                prepare_keepalived_restart(&init);
            }
            agent = spawn_agent(&init);
        }
    }
}

pub(crate) fn log(node: &str, message: &str) {
    eprintln!(
        "{} node-init[{node}]: {message}",
        crate::probe::wall_clock()
    );
}

fn make_private_mounts(init: &NodeInit) -> Result<()> {
    // Nothing the node mounts may leak to the host or other nodes.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make the node's mounts private")?;
    // Like /run: pid files and sockets vanish with the node.
    let run = init.dir.join("run");
    std::fs::create_dir_all(&run)?;
    mount(
        Some("tmpfs"),
        &run,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .with_context(|| format!("cannot mount a tmpfs on {}", run.display()))?;
    std::fs::create_dir_all(run.join("dovecot"))?;
    if let Some(stack) = init.stack {
        for (source, target) in crate::stack::node_mounts(stack, &init.dir) {
            bind(&source, &target)?;
        }
    }
    // The node's own disk, like a local disk in /etc/fstab: mounted at boot,
    // gone with the node's mount namespace at a power cut.
    if let Some(device) = &init.pool_device {
        let pool_fs = init.dir.join("pool-fs");
        std::fs::create_dir_all(&pool_fs)?;
        mount(
            Some(device.as_path()),
            &pool_fs,
            Some("btrfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| {
            format!(
                "cannot mount the node's btrfs disk {} on {}",
                device.display(),
                pool_fs.display()
            )
        })?;
    }
    Ok(())
}

fn bind(source: &Path, target: &Path) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "cannot bind-mount {} over {}",
            source.display(),
            target.display()
        )
    })
}

/// How the lab runs agents: above normal CPU priority, as the packaged
/// systemd unit should (`Nice=-10`). The agent's lease arithmetic runs on
/// 10 ms ticks and 50 ms heartbeats; on a busy two-core host (a build, the
/// test harness, Postfix) a normal-priority agent can be starved long
/// enough to miss its renewals, which then looks like a failed node.
/// keepalived runs at the same priority in a keepalived lab, so that the
/// benchmark compares the two on equal terms.
const AGENT_NICE: i32 = -10;

trait PriorityExt {
    fn pre_exec_priority(&mut self) -> &mut Self;
}

impl PriorityExt for Command {
    fn pre_exec_priority(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: setpriority is async-signal-safe; nothing else runs
        // between fork and exec here.
        unsafe {
            self.pre_exec(|| {
                if libc::setpriority(libc::PRIO_PROCESS, 0, AGENT_NICE) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

/// Before keepalived starts again: its children outlive a killed main
/// process for a moment (they shut down on their parent's death, running
/// notify_stop), and its pid files would name processes that are gone or,
/// worse, PIDs reused by others, which makes keepalived refuse to start
/// ("daemon is already running"). Runs in the node, as its PID 1.
fn prepare_keepalived_restart(init: &NodeInit) {
    let deadline = Instant::now() + POWER_OFF_TIMEOUT;
    loop {
        let left = own_processes_running(&init.agent_bin);
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            log(
                &init.node,
                &format!("keepalived processes {left:?} outlived their parent; killing them"),
            );
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            break;
        }
        // They are this init's children now: reap them as they exit.
        while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
            waitpid(None::<Pid>, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {}
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid_file in crate::keepalived::pid_files(&init.dir.join("run")) {
        let _ = std::fs::remove_file(pid_file);
    }
}

/// PIDs (in this node's PID namespace) of processes running `program`;
/// zombies have no executable and are left out.
fn own_processes_running(program: &Path) -> Vec<i32> {
    let program = std::fs::canonicalize(program).unwrap_or(program.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == program)
        })
        .collect()
}

/// The agent's (or keepalived's) command line.
fn manager_command(init: &NodeInit) -> Command {
    let mut command = Command::new(&init.agent_bin);
    match init.manager {
        Manager::Mailherd => {
            command
                .arg("agent")
                .arg("--config")
                .arg(&init.config)
                .env(
                    "RUST_LOG",
                    std::env::var("MAILHERD_LAB_AGENT_LOG")
                        .unwrap_or_else(|_| "info,openraft=error".into()),
                )
                // The log is a file: no terminal colour codes in it.
                .env("NO_COLOR", "1");
        }
        Manager::Keepalived | Manager::KeepalivedTuned => {
            command.args(crate::keepalived::daemon_args(
                &init.config,
                &init.dir.join("run"),
            ));
        }
    }
    command
}

/// Starts the node's mariadbd; with `wait`, also waits (at most
/// [`crate::mariadb::START_TIMEOUT`]) until it takes connections.
fn spawn_mariadb(init: &NodeInit, wait: bool) -> Option<Pid> {
    let spawned = crate::mariadb::server_command(&init.dir)
        .and_then(|mut command| Ok(command.current_dir(&init.dir).spawn()?));
    match spawned {
        Ok(child) => {
            let pid = child.id();
            if wait && !crate::mariadb::wait_ready(&init.dir, crate::mariadb::START_TIMEOUT) {
                log(
                    &init.node,
                    &format!(
                        "mariadbd (pid {pid}) takes no connections after {:?}; starting the agent anyway",
                        crate::mariadb::START_TIMEOUT
                    ),
                );
            } else {
                log(&init.node, &format!("mariadbd started (pid {pid})"));
            }
            Some(Pid::from_raw(pid as i32))
        }
        Err(error) => {
            log(&init.node, &format!("cannot start mariadbd: {error:#}"));
            None
        }
    }
}

/// Starts `mailherd signup --config CONFIG` with its output appended to
/// `<node>/signup.log`.
fn spawn_signup(init: &NodeInit) -> Option<Pid> {
    let log_path = init.dir.join("signup.log");
    let spawned = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .and_then(|log| {
            Command::new(&init.agent_bin)
                .arg("signup")
                .arg("--config")
                .arg(&init.config)
                .env("NO_COLOR", "1")
                .current_dir(&init.dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
        });
    match spawned {
        Ok(child) => {
            log(
                &init.node,
                &format!("signup service started (pid {})", child.id()),
            );
            Some(Pid::from_raw(child.id() as i32))
        }
        Err(error) => {
            log(
                &init.node,
                &format!("cannot start the signup service: {error}"),
            );
            None
        }
    }
}

/// Starts the agent (or keepalived) with its output appended to
/// `<node>/agent.log`; a failure is logged and retried after the restart
/// delay.
fn spawn_agent(init: &NodeInit) -> Option<Pid> {
    let log_path = init.dir.join("agent.log");
    let name = init.manager.process_name();
    let spawned = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .and_then(|log| {
            manager_command(init)
                .current_dir(&init.dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .pre_exec_priority()
                .spawn()
        });
    match spawned {
        Ok(child) => {
            log(&init.node, &format!("{name} started (pid {})", child.id()));
            Some(Pid::from_raw(child.id() as i32))
        }
        Err(error) => {
            log(
                &init.node,
                &format!("cannot start {name} {}: {error}", init.agent_bin.display()),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_init_of_a_nested_pid_namespace() {
        assert!(is_namespace_init("Name:\tmailherd-lab\nNSpid:\t4242\t1\n"));
        assert!(!is_namespace_init("Name:\tmailherd\nNSpid:\t4243\t2\n"));
        // The host's own init is not a node.
        assert!(!is_namespace_init("Name:\tsystemd\nNSpid:\t1\n"));
        assert!(!is_namespace_init("Name:\tx\n"));
    }
}
