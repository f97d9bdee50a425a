//! `add-node [--witness]` and `remove-node NAME`: the running cluster grows
//! and shrinks with `mailherd members add|remove`, asked from the client
//! namespace like an operator would.
//!
//! A new node gets the next name and address of its kind, the next free
//! Raft id, its own certificate from the lab's CA and a config listing
//! every member with `join = true`; the other nodes' configs stay as they
//! are (the replicated member directory names the newcomer). Whatever fails
//! half-way is undone, so the lab is as before.

use anyhow::{bail, Context, Result};

use crate::state::{LabState, NodeState};
use crate::topology::{self, NodeKind};

pub fn add_node(witness: bool) -> Result<()> {
    let mut state = LabState::load_current()?;
    refuse_keepalived(&state, "add-node")?;
    if state.mariadb.is_some() {
        bail!(
            "add-node does not work with --mariadb: the other nodes' [mariadb] sections list \
             the servers of the lab as it was built"
        );
    }
    if state.hetzner_sim.is_some() {
        bail!("add-node does not work with --cloud hetzner-sim: the simulator's world has a fixed set of servers");
    }
    if !witness && state.storage == crate::state::Storage::Btrfs {
        bail!(
            "add-node of a mail node does not work with --storage btrfs: the lab seeds the \
             nodes' btrfs disks at `up` only (a witness can still be added with --witness)"
        );
    }
    let kind = if witness {
        NodeKind::Witness
    } else {
        NodeKind::Mail
    };
    let count = |kind| state.nodes.iter().filter(|n| n.kind == kind).count();
    let (mail, witnesses) = match kind {
        NodeKind::Mail => (count(NodeKind::Mail) + 1, count(NodeKind::Witness)),
        NodeKind::Witness => (count(NodeKind::Mail), count(NodeKind::Witness) + 1),
    };
    if !topology::MAIL_NODES.contains(&mail) || !topology::WITNESSES.contains(&witnesses) {
        bail!(
            "the lab has room for {} to {} mail nodes and at most {} witnesses",
            topology::MAIL_NODES.start(),
            topology::MAIL_NODES.end(),
            topology::WITNESSES.end()
        );
    }
    let plan = topology::plan_nodes(mail, witnesses)
        .into_iter()
        .find(|plan| plan.kind == kind && state.node(&plan.name).is_err())
        .context("no free name for the new node")?;
    let mut node = NodeState::from_plan(&plan, &state.lab_dir);
    // Positions decide the planned ids; a grown lab takes the next free one.
    node.id = state.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
    node.joined = true;
    let contact = contact(&state, None)?;

    state.nodes.push(node.clone());
    state.save()?;
    let added = build_and_add(&state, &node, &contact);
    if let Err(error) = added {
        // Undo: nothing of the new node stays.
        let _ = crate::node::power_off(&node);
        let _ = crate::netns::delete(&node.namespace);
        let _ = std::fs::remove_dir_all(&node.dir);
        state.nodes.retain(|n| n.name != node.name);
        state.save()?;
        return Err(error.context(format!("{} was not added; the lab is as before", node.name)));
    }
    println!(
        "{}: added to the running cluster (id {}, {})",
        node.name, node.id, node.address
    );
    Ok(())
}

fn build_and_add(state: &LabState, node: &NodeState, contact: &str) -> Result<()> {
    crate::netns::create_attached(&node.namespace, &node.switch_veth, node.address)?;
    let tls = topology::tls_dir(&state.lab_dir);
    mailherd_agent::tls::issue(&tls, &node.name, &[node.peer.ip()], &tls)
        .with_context(|| format!("cannot issue the certificate of node {}", node.name))?;
    crate::commands::up::write_node_files(state, node)?;
    crate::node::boot(state, node)?;
    let role = match node.kind {
        NodeKind::Mail => "mail",
        NodeKind::Witness => "witness",
    };
    members(
        state,
        contact,
        &[
            "add",
            "--name",
            &node.name,
            "--id",
            &node.id.to_string(),
            "--role",
            role,
            "--peer",
            &node.peer.to_string(),
            "--member-api",
            &node.api.to_string(),
        ],
    )
}

pub fn remove_node(name: &str) -> Result<()> {
    let mut state = LabState::load_current()?;
    refuse_keepalived(&state, "remove-node")?;
    if state.mariadb.is_some() {
        bail!(
            "remove-node does not work with --mariadb: the other nodes' [mariadb] sections list \
             the servers of the lab as it was built"
        );
    }
    let node = state.node(name)?.clone();
    let mail_left = state
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Mail && n.name != node.name)
        .count();
    if node.kind == NodeKind::Mail && mail_left < *topology::MAIL_NODES.start() {
        bail!("{name} is one of the last two mail nodes; the lab keeps at least two");
    }
    // The agent refuses to remove the master and says why.
    let contact = contact(&state, Some(&node.name))?;
    members(&state, &contact, &["remove", &node.name])?;
    crate::node::power_off(&node)?;
    crate::netns::delete(&node.namespace)?;
    std::fs::remove_dir_all(&node.dir)
        .with_context(|| format!("cannot remove {}", node.dir.display()))?;
    state.nodes.retain(|n| n.name != node.name);
    state.save()?;
    println!("{name}: removed from the cluster and the lab");
    Ok(())
}

/// Membership changes are mailherd's: keepalived's peers are fixed in
/// every node's keepalived.conf.
fn refuse_keepalived(state: &LabState, command: &str) -> Result<()> {
    if state.manager.is_keepalived() {
        bail!(
            "{command} works on mailherd labs only; this lab runs --manager {}, \
             whose nodes are fixed at `up`",
            state.manager.name()
        );
    }
    Ok(())
}

/// The API of a running node other than `except`, to send the request to
/// (a node that is not the leader points the CLI at it).
fn contact(state: &LabState, except: Option<&str>) -> Result<String> {
    state
        .nodes
        .iter()
        .filter(|n| Some(n.name.as_str()) != except && !n.powered_off)
        .find(|n| crate::node::init_pid(&n.namespace).ok().flatten().is_some())
        .map(|n| format!("http://{}", n.api))
        .context("no running node to ask")
}

/// Runs `mailherd members ARGS` from the client namespace with the lab's token.
fn members(state: &LabState, api: &str, args: &[&str]) -> Result<()> {
    let token = topology::token_file(&state.lab_dir);
    let output = crate::netns::command(&state.client.namespace, &state.agent_bin)
        .arg("members")
        .args(args)
        .args(["--api", api, "--token-file"])
        .arg(&token)
        .output()
        .context("cannot run mailherd members")?;
    if !output.status.success() {
        bail!(
            "mailherd members {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
