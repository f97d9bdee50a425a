//! `fail NODE --mode power|service|partition` and `heal [NODE]`.
//!
//! - power: SIGKILL every process of the node at once, link down; `heal`
//!   brings the link up and boots the node again (new init, new agent).
//! - service: SIGKILL the mail stack's main processes (Postfix `master`,
//!   `dovecot`, or the banner server); the node stays up and its agent is
//!   expected to notice. Nothing to heal: the agent restarts the stack when
//!   the node becomes master again.
//! - partition: the node's switch-side veth leaves the bridge, so the node
//!   reaches no other namespace; `heal` puts it back.
//!
//! Faults are recorded in the state file so `status` shows them and `heal`
//! knows what to undo.

use anyhow::{bail, Result};

use crate::state::LabState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    Power,
    Service,
    Partition,
}

pub fn fail(node_name: &str, mode: FailMode) -> Result<()> {
    let mut state = LabState::load_current()?;
    let node = state.node(node_name)?.clone();
    match mode {
        FailMode::Power => {
            if node.powered_off {
                println!("{}: already powered off", node.name);
                return Ok(());
            }
            let killed = crate::node::power_off(&node)?;
            state.node_mut(node_name)?.powered_off = true;
            state.save()?;
            println!(
                "{}: power cut ({killed} processes killed, link down)",
                node.name
            );
        }
        FailMode::Service => {
            if !node.is_mail() {
                bail!("{} is a witness: it runs no mail stack", node.name);
            }
            if node.powered_off {
                bail!(
                    "{} is powered off: its mail stack is not running",
                    node.name
                );
            }
            let killed = crate::node::kill_stack(&state, &node)?;
            if killed.is_empty() {
                bail!(
                    "no {} stack process runs on {} (only the master runs the stack)",
                    state.stack.name(),
                    node.name
                );
            }
            println!(
                "{}: killed the {} stack's main processes {killed:?}",
                node.name,
                state.stack.name()
            );
        }
        FailMode::Partition => {
            if node.partitioned {
                println!("{}: already partitioned", node.name);
                return Ok(());
            }
            crate::netns::detach_from_bridge(&node.switch_veth)?;
            state.node_mut(node_name)?.partitioned = true;
            state.save()?;
            println!("{}: cut off from the bridge", node.name);
        }
    }
    Ok(())
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
        // A node whose init is gone (power cut, or a crash) boots again.
        let node = state.node(&name)?.clone();
        if node.powered_off || crate::node::init_pid(&node.namespace)?.is_none() {
            crate::node::boot(&state, &node)?;
            state.node_mut(&name)?.powered_off = false;
            state.save()?;
            done.push("booted");
        }
        if done.is_empty() {
            println!("{name}: nothing to heal");
        } else {
            println!("{name}: {}", done.join(", "));
        }
    }
    Ok(())
}
