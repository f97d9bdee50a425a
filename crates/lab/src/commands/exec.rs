//! `exec NODE [-- COMMAND...]`: run a command inside a node, as if logged in.
//!
//! It enters the network, mount and PID namespaces of the node's init with
//! `nsenter`, so the command sees the node's addresses, its private mounts
//! (the volume, the node's /etc/postfix) and only the node's processes.

use anyhow::{bail, Context, Result};

use crate::state::LabState;

/// The name `exec` gives the mail gateway.
pub const GATEWAY: &str = "gw";

pub fn run(node_name: &str, command: &[String]) -> Result<()> {
    let state = LabState::load_current()?;
    let init = match (&state.gateway, node_name) {
        // The gateway has no init: its Postfix master holds the namespaces.
        (Some(gateway), GATEWAY) => crate::front::gateway_master_pid(gateway)?
            .context("the gateway's Postfix master is not running")?,
        _ => {
            let node = state.node(node_name)?;
            let Some(init) = crate::node::init_pid(&node.namespace)? else {
                bail!(
                    "{} is not running (powered off?); `mailherd-lab heal {}` boots it",
                    node.name,
                    node.name
                );
            };
            init
        }
    };
    let default_shell = ["/bin/sh".to_string()];
    let command = if command.is_empty() {
        &default_shell[..]
    } else {
        command
    };
    let status = std::process::Command::new("nsenter")
        .args([
            "--target",
            &init.to_string(),
            "--mount",
            "--pid",
            "--net",
            "--",
        ])
        .args(command)
        .status()
        .context("cannot run nsenter")?;
    // The command's own exit code is the answer.
    std::process::exit(status.code().unwrap_or(1));
}
