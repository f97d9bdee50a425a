//! Network namespaces: creating the lab's network and running code inside it.
//!
//! The topology is a bridge in [the switch namespace](crate::topology::switch_namespace)
//! and, for every other namespace, a veth pair whose switch side is a bridge
//! port and whose other side is `eth0` in that namespace. Both ends are
//! created directly in their namespaces, so nothing ever appears in the host
//! namespace, and deleting the namespaces removes every link.
//!
//! [`run_in`] runs a closure on a thread that entered a namespace: network
//! namespaces are per thread, so the rest of the process stays where it is.
//! `status` uses it to ask each agent from inside the agent's own namespace,
//! which reaches it even while the node is cut off from the bridge.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::host::ip;
use crate::topology::{name_prefix, switch_namespace, BRIDGE, NODE_INTERFACE, PREFIX_LEN};

/// `program` to run inside namespace `name` (`ip netns exec NAME PROGRAM`);
/// the caller adds its arguments and runs it.
pub fn command(name: &str, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut command = std::process::Command::new("ip");
    command.args(["netns", "exec", name]).arg(program);
    command
}

/// Where `ip netns add` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";

pub fn handle(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    handle(name).exists()
}

/// Every namespace whose name starts with the lab's prefix.
pub fn list_lab_namespaces() -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("cannot list {NETNS_DIR}")),
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with(&name_prefix()))
        .collect();
    names.sort();
    Ok(names)
}

/// Adds namespace `name` with its loopback up.
pub fn add(name: &str) -> Result<()> {
    ip(&["netns", "add", name]).with_context(|| format!("cannot create namespace {name}"))?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

pub fn delete(name: &str) -> Result<()> {
    ip(&["netns", "delete", name]).with_context(|| format!("cannot delete namespace {name}"))?;
    Ok(())
}

/// Creates the switch namespace and its bridge.
pub fn create_switch() -> Result<()> {
    add(&switch_namespace())?;
    ip(&[
        "-n",
        &switch_namespace(),
        "link",
        "add",
        BRIDGE,
        "type",
        "bridge",
    ])?;
    ip(&["-n", &switch_namespace(), "link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// Creates namespace `name`, wires it to the bridge through a veth pair
/// (`switch_veth` on the bridge, `eth0` inside), and gives it `address`.
pub fn create_attached(name: &str, switch_veth: &str, address: Ipv4Addr) -> Result<()> {
    add(name)?;
    ip(&[
        "link",
        "add",
        switch_veth,
        "netns",
        &switch_namespace(),
        "type",
        "veth",
        "peer",
        "name",
        NODE_INTERFACE,
        "netns",
        name,
    ])
    .with_context(|| format!("cannot create the veth pair of {name}"))?;
    ip(&[
        "-n",
        &switch_namespace(),
        "link",
        "set",
        switch_veth,
        "master",
        BRIDGE,
        "up",
    ])?;
    configure_interface(name, address)
}

/// Gives `eth0` in `name` exactly `address` (dropping anything else, such as
/// a floating IP a powered-off node still had) and brings it up.
pub fn configure_interface(name: &str, address: Ipv4Addr) -> Result<()> {
    ip(&["-n", name, "address", "flush", "dev", NODE_INTERFACE])?;
    ip(&[
        "-n",
        name,
        "address",
        "add",
        &format!("{address}/{PREFIX_LEN}"),
        "dev",
        NODE_INTERFACE,
    ])?;
    ip(&["-n", name, "link", "set", NODE_INTERFACE, "up"])?;
    Ok(())
}

/// Takes the node's link down on both ends and forgets its addresses, as a
/// power cut does.
pub fn unplug(name: &str, switch_veth: &str) -> Result<()> {
    ip(&[
        "-n",
        &switch_namespace(),
        "link",
        "set",
        switch_veth,
        "down",
    ])?;
    ip(&["-n", name, "link", "set", NODE_INTERFACE, "down"])?;
    ip(&["-n", name, "address", "flush", "dev", NODE_INTERFACE])?;
    Ok(())
}

/// Brings the switch side of a node's veth up again, as a bridge port unless
/// the node is partitioned.
pub fn plug(switch_veth: &str, partitioned: bool) -> Result<()> {
    if partitioned {
        detach_from_bridge(switch_veth)?;
    } else {
        attach_to_bridge(switch_veth)?;
    }
    ip(&["-n", &switch_namespace(), "link", "set", switch_veth, "up"])?;
    Ok(())
}

/// Cuts a node off every other namespace: its veth stays up but leaves the bridge.
pub fn detach_from_bridge(switch_veth: &str) -> Result<()> {
    ip(&[
        "-n",
        &switch_namespace(),
        "link",
        "set",
        switch_veth,
        "nomaster",
    ])?;
    Ok(())
}

pub fn attach_to_bridge(switch_veth: &str) -> Result<()> {
    ip(&[
        "-n",
        &switch_namespace(),
        "link",
        "set",
        switch_veth,
        "master",
        BRIDGE,
    ])?;
    Ok(())
}

/// Drops, inside namespace `name`, the packets exchanged with `peers`
/// (only those arriving from them with `one_way`). The lab owns the
/// namespace's firewall: nothing else puts rules there.
pub fn drop_traffic(name: &str, peers: &[String], one_way: bool) -> Result<()> {
    for peer in peers {
        iptables(name, &["-A", "INPUT", "-s", peer, "-j", "DROP"])?;
        if !one_way {
            iptables(name, &["-A", "OUTPUT", "-d", peer, "-j", "DROP"])?;
        }
    }
    Ok(())
}

/// Undoes [`drop_traffic`].
pub fn allow_all_traffic(name: &str) -> Result<()> {
    iptables(name, &["-F", "INPUT"])?;
    iptables(name, &["-F", "OUTPUT"])?;
    Ok(())
}

fn iptables(name: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["netns", "exec", name, "iptables", "-w"];
    all.extend_from_slice(args);
    crate::host::run("ip", &all)?;
    Ok(())
}

/// The IPv4 addresses on `eth0` inside namespace `name`.
pub fn interface_addresses(name: &str) -> Result<Vec<Ipv4Addr>> {
    let output = ip(&[
        "-n",
        name,
        "-4",
        "-o",
        "address",
        "show",
        "dev",
        NODE_INTERFACE,
    ])?;
    Ok(output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

/// The host PIDs of every process whose network namespace is `name`
/// (what `ip netns pids` prints).
pub fn pids(name: &str) -> Result<Vec<i32>> {
    let target = std::fs::metadata(handle(name))
        .with_context(|| format!("namespace {name} does not exist"))?;
    let own_pid = std::process::id() as i32;
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").context("cannot list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may exit while we look: skip it.
        let Ok(meta) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if meta.ino() == target.ino() && meta.dev() == target.dev() && pid != own_pid {
            found.insert(pid);
        }
    }
    Ok(found.into_iter().collect())
}

/// Moves the calling thread into namespace `name`. Only call this on a
/// thread dedicated to the namespace (see [`run_in`]).
pub fn enter_on_this_thread(name: &str) -> Result<()> {
    let file =
        File::open(handle(name)).with_context(|| format!("namespace {name} does not exist"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter network namespace {name}"))?;
    Ok(())
}

/// Runs `work` on a fresh thread inside network namespace `name`.
pub fn run_in<T: Send>(name: &str, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_on_this_thread(name)?;
                work()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "a thread working in namespace {name} panicked"
                ))
            })
    })
}
