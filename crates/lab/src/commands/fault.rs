//! `fail NODE --mode ...` and `heal [NODE]`.
//!
//! - power: SIGKILL every process of the node at once, link down; `heal`
//!   brings the link up and boots the node again (new init, new agent).
//! - service: SIGKILL the mail stack's main processes (Postfix `master`,
//!   `dovecot`, or the banner server); the node stays up and its agent is
//!   expected to notice. Nothing to heal: the agent restarts the stack when
//!   the node becomes master again.
//! - agent-kill: SIGKILL the agent alone; the stack keeps running. The
//!   node's init restarts the agent after a second, as systemd would; a
//!   master's watchdog powers the node off before that.
//! - agent-freeze: SIGSTOP the agent; the stack keeps running. A master's
//!   watchdog powers the node off; `heal` continues (SIGCONT) an agent that
//!   is still there.
//! - partition: the node's switch-side veth leaves the bridge, so the node
//!   reaches no other namespace; `heal` puts it back. With `--from PEERS`
//!   only the traffic between the node and those peers is dropped (by
//!   iptables in the node's namespace; clients still reach it), and with
//!   `--one-way` only what arrives from them: a partial or an asymmetric
//!   partition.
//!
//! In a keepalived lab (`up --manager keepalived`) keepalived stands in for
//! the agent: agent-kill SIGKILLs keepalived's main process (its VRRP child
//! then shuts down on its parent's death, runs notify_stop and drops the
//! address; node-init starts keepalived again after a second), and
//! agent-freeze SIGSTOPs every keepalived process of the node, the VRRP
//! child included, which keeps the address and the stack; `heal`
//! continues them. There is no watchdog: a frozen keepalived master keeps
//! its address while a backup takes over.
//!
//! Faults are recorded in the state file so `status` shows them and `heal`
//! knows what to undo.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::state::{LabState, NodeState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    Power,
    Service,
    AgentKill,
    AgentFreeze,
    Partition,
}

/// Which traffic a partition cuts.
#[derive(Debug, Clone, Default)]
pub struct Cut {
    /// Peers (node names, or `peers` for every other node); empty: the
    /// node leaves the bridge.
    pub from: Vec<String>,
    pub one_way: bool,
}

/// Where `fail` and `heal` report what they did: stdout, or stderr when
/// stdout carries a report (the bench's JSON).
static REPORT_TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends what `fail` and `heal` report to stderr from now on.
pub fn report_to_stderr() {
    REPORT_TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn say(line: String) {
    if REPORT_TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

pub fn fail(node_name: &str, mode: FailMode, cut: Cut) -> Result<()> {
    let mut state = LabState::load_current()?;
    let node = state.node(node_name)?.clone();
    if mode != FailMode::Partition && (!cut.from.is_empty() || cut.one_way) {
        bail!("--from and --one-way go with --mode partition only");
    }
    if cut.one_way && cut.from.is_empty() {
        bail!("--one-way needs --from PEERS (the peers whose traffic the node stops receiving)");
    }
    let up = || -> Result<()> {
        if node.powered_off || crate::node::init_pid(&node.namespace)?.is_none() {
            bail!("{} is powered off", node.name);
        }
        Ok(())
    };
    match mode {
        FailMode::Power => {
            if node.powered_off {
                say(format!("{}: already powered off", node.name));
                return Ok(());
            }
            let killed = crate::node::power_off(&node)?;
            let entry = state.node_mut(node_name)?;
            entry.powered_off = true;
            entry.frozen_agent = None;
            state.save()?;
            say(format!(
                "{}: power cut ({killed} processes killed, link down)",
                node.name
            ));
        }
        FailMode::Service => {
            if !node.is_mail() {
                bail!("{} is a witness: it runs no mail stack", node.name);
            }
            up()?;
            let killed = crate::node::kill_stack(&state, &node)?;
            if killed.is_empty() {
                bail!(
                    "no {} stack process runs on {} (only the master runs the stack)",
                    state.stack.name(),
                    node.name
                );
            }
            say(format!(
                "{}: killed the {} stack's main processes {killed:?}",
                node.name,
                state.stack.name()
            ));
        }
        FailMode::AgentKill => {
            up()?;
            let name = state.manager.process_name();
            let pid = agent_pid(&state, &node)?;
            kill(Pid::from_raw(pid), Signal::SIGKILL)
                .with_context(|| format!("cannot kill {name} (pid {pid})"))?;
            let entry = state.node_mut(node_name)?;
            if entry.frozen_agent == Some(pid) {
                entry.frozen_agent = None;
                state.save()?;
            }
            if state.manager.is_keepalived() {
                say(format!(
                    "{}: keepalived (pid {pid}) killed; its VRRP child shuts down with it",
                    node.name
                ));
            } else {
                say(format!(
                    "{}: agent (pid {pid}) killed; its stack is left running",
                    node.name
                ));
            }
        }
        FailMode::AgentFreeze => {
            up()?;
            let name = state.manager.process_name();
            if let Some(pid) = node.frozen_agent.filter(|pid| is_stopped(*pid)) {
                say(format!("{}: {name} (pid {pid}) already frozen", node.name));
                return Ok(());
            }
            let pid = agent_pid(&state, &node)?;
            // keepalived's work is done by its VRRP child: freeze them all.
            let pids = if state.manager.is_keepalived() {
                crate::keepalived::processes(&state, &node)?
                    .iter()
                    .map(|process| process.pid)
                    .collect()
            } else {
                vec![pid]
            };
            for pid in &pids {
                kill(Pid::from_raw(*pid), Signal::SIGSTOP)
                    .with_context(|| format!("cannot stop {name} (pid {pid})"))?;
            }
            state.node_mut(node_name)?.frozen_agent = Some(pid);
            state.save()?;
            if state.manager.is_keepalived() {
                say(format!(
                    "{}: keepalived (pids {pids:?}) frozen; its address and stack are left as they are",
                    node.name
                ));
            } else {
                say(format!(
                    "{}: agent (pid {pid}) frozen; its stack is left running",
                    node.name
                ));
            }
        }
        FailMode::Partition if cut.from.is_empty() => {
            if node.partitioned {
                say(format!("{}: already partitioned", node.name));
                return Ok(());
            }
            crate::netns::detach_from_bridge(&node.switch_veth)?;
            state.node_mut(node_name)?.partitioned = true;
            state.save()?;
            say(format!("{}: cut off from the bridge", node.name));
        }
        FailMode::Partition => {
            let peers = resolve_peers(&state, &node, &cut.from)?;
            let addresses: Vec<String> = peers
                .iter()
                .map(|name| Ok(state.node(name)?.address.to_string()))
                .collect::<Result<_>>()?;
            crate::netns::drop_traffic(&node.namespace, &addresses, cut.one_way)?;
            let entry = state.node_mut(node_name)?;
            for peer in &peers {
                if !entry.cut_from.contains(peer) {
                    entry.cut_from.push(peer.clone());
                }
            }
            entry.cut_one_way = cut.one_way;
            state.save()?;
            say(format!(
                "{}: {} from {} (clients still reach it)",
                node.name,
                if cut.one_way {
                    "no longer receives traffic"
                } else {
                    "cut off"
                },
                peers.join(", ")
            ));
        }
    }
    Ok(())
}

/// The peer names `from` stands for, checked against the lab.
fn resolve_peers(state: &LabState, node: &NodeState, from: &[String]) -> Result<Vec<String>> {
    let mut peers = Vec::new();
    for name in from {
        if name == "peers" {
            peers.extend(
                state
                    .nodes
                    .iter()
                    .filter(|n| n.name != node.name)
                    .map(|n| n.name.clone()),
            );
        } else if name == &node.name {
            bail!("--from {name}: a node cannot be cut off from itself");
        } else {
            peers.push(state.node(name)?.name.clone());
        }
    }
    peers.sort();
    peers.dedup();
    Ok(peers)
}

/// The host PID of the node's agent (keepalived's main process in a
/// keepalived lab).
fn agent_pid(state: &LabState, node: &NodeState) -> Result<i32> {
    if state.manager.is_keepalived() {
        return crate::keepalived::processes(state, node)?
            .iter()
            .find(|process| process.main)
            .map(|process| process.pid)
            .with_context(|| {
                format!(
                    "keepalived does not run on {} right now (it may be restarting; see {})",
                    node.name,
                    node.node_log().display()
                )
            });
    }
    let agent_bin = std::fs::canonicalize(&state.agent_bin).unwrap_or(state.agent_bin.clone());
    for pid in crate::netns::pids(&node.namespace)? {
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let second = cmdline.split(|byte| *byte == 0).nth(1);
        if exe == agent_bin && second == Some(b"agent".as_slice()) {
            return Ok(pid);
        }
    }
    bail!(
        "no agent runs on {} right now (it may be restarting; see {})",
        node.name,
        node.node_log().display()
    )
}

/// Whether `pid` is stopped (state `T` in /proc/PID/stat).
fn is_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name.
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s == "T")
        })
        .unwrap_or(false)
}

pub fn heal(node_name: Option<&str>) -> Result<()> {
    let mut state = LabState::load_current()?;
    let names: Vec<String> = match node_name {
        Some(name) => vec![state.node(name)?.name.clone()],
        None => state.nodes.iter().map(|node| node.name.clone()).collect(),
    };
    for name in names {
        let mut done = Vec::new();
        if state.node(&name)?.partitioned {
            crate::netns::attach_to_bridge(&state.node(&name)?.switch_veth)?;
            state.node_mut(&name)?.partitioned = false;
            state.save()?;
            done.push("reattached to the bridge");
        }
        if !state.node(&name)?.cut_from.is_empty() {
            crate::netns::allow_all_traffic(&state.node(&name)?.namespace)?;
            let entry = state.node_mut(&name)?;
            entry.cut_from.clear();
            entry.cut_one_way = false;
            state.save()?;
            done.push("traffic with every peer restored");
        }
        if let Some(pid) = state.node(&name)?.frozen_agent {
            // Gone if the watchdog powered the node off, or after a boot.
            if is_stopped(pid) && kill(Pid::from_raw(pid), Signal::SIGCONT).is_ok() {
                done.push(if state.manager.is_keepalived() {
                    "keepalived continued"
                } else {
                    "agent continued"
                });
            }
            if state.manager.is_keepalived() {
                // The VRRP child was frozen with it.
                for process in crate::keepalived::processes(&state, state.node(&name)?)? {
                    if is_stopped(process.pid) {
                        let _ = kill(Pid::from_raw(process.pid), Signal::SIGCONT);
                    }
                }
            }
            state.node_mut(&name)?.frozen_agent = None;
            state.save()?;
        }
        // A node whose init is gone (power cut, watchdog, or a crash) boots again.
        let node = state.node(&name)?.clone();
        if node.powered_off || crate::node::init_pid(&node.namespace)?.is_none() {
            crate::node::boot(&state, &node)?;
            state.node_mut(&name)?.powered_off = false;
            state.save()?;
            done.push("booted");
        }
        if done.is_empty() {
            say(format!("{name}: nothing to heal"));
        } else {
            say(format!("{name}: {}", done.join(", ")));
        }
    }
    Ok(())
}
