//! The invariant checker of design §8: it samples, every few milliseconds,
//! which nodes hold the floating IP, the mounted volume and the running
//! stack, and measures how long two nodes held one of them at once.
//!
//! Sampling must cost little, or it would disturb what it measures:
//! - the address: a UDP socket made inside the node's network namespace
//!   can `bind` to the floating IP only if the address is on one of the
//!   node's interfaces (no `ip` process per sample);
//! - the mount: the node init's `/proc/PID/mountinfo`;
//! - the stack: the node init's direct children (the stack's daemons are
//!   reparented to it), their executable and command line.
//!
//! The sampler moves one thread between network namespaces with `setns`,
//! and back to its own, for every sample.

use std::fs::File;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use serde::Serialize;

use crate::state::{LabState, NodeState, Stack};

/// What one node held at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holds {
    pub address: bool,
    pub mount: bool,
    pub stack: bool,
}

/// The report `invariants --json` prints.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    pub samples: u64,
    pub interval_ms: u64,
    pub duration_ms: u64,
    /// Time during which two or more nodes held the address, the mounted
    /// volume or the running stack (any of them).
    pub dual_holder_ms: u64,
    pub dual_address_ms: u64,
    pub dual_mount_ms: u64,
    pub dual_stack_ms: u64,
    pub max_address_holders: usize,
    pub max_mount_holders: usize,
    pub max_stack_holders: usize,
    /// Every change of who holds the address: `(ms since start, names)`.
    pub address_changes: Vec<(u64, Vec<String>)>,
}

/// Accumulates samples into a [`Report`].
#[derive(Debug, Default)]
pub struct Tally {
    report: Report,
    last: Option<(Duration, Vec<Holds>)>,
}

impl Tally {
    /// Adds the sample taken `at` (since the start); `names[i]` held `holds[i]`.
    pub fn add(&mut self, at: Duration, names: &[String], holds: Vec<Holds>) {
        let count = |f: fn(&Holds) -> bool, holds: &[Holds]| holds.iter().filter(|h| f(h)).count();
        let report = &mut self.report;
        report.samples += 1;
        report.max_address_holders = report.max_address_holders.max(count(|h| h.address, &holds));
        report.max_mount_holders = report.max_mount_holders.max(count(|h| h.mount, &holds));
        report.max_stack_holders = report.max_stack_holders.max(count(|h| h.stack, &holds));
        if let Some((previous_at, previous)) = &self.last {
            // The time since the previous sample counts as dual when both
            // samples show it: a blip seen once is at most one interval.
            let span = (at - *previous_at).as_millis() as u64;
            let dual_in = |f: fn(&Holds) -> bool| count(f, previous) >= 2 && count(f, &holds) >= 2;
            let address = dual_in(|h| h.address);
            let mount = dual_in(|h| h.mount);
            let stack = dual_in(|h| h.stack);
            report.dual_address_ms += if address { span } else { 0 };
            report.dual_mount_ms += if mount { span } else { 0 };
            report.dual_stack_ms += if stack { span } else { 0 };
            report.dual_holder_ms += if address || mount || stack { span } else { 0 };
        }
        let holders: Vec<String> = names
            .iter()
            .zip(&holds)
            .filter(|(_, h)| h.address)
            .map(|(name, _)| name.clone())
            .collect();
        if report.address_changes.last().map(|(_, names)| names) != Some(&holders) {
            report
                .address_changes
                .push((at.as_millis() as u64, holders));
        }
        report.duration_ms = at.as_millis() as u64;
        self.last = Some((at, holds));
    }

    pub fn finish(self, interval: Duration) -> Report {
        Report {
            interval_ms: interval.as_millis() as u64,
            ..self.report
        }
    }
}

/// One mail node as the sampler sees it.
struct Watched {
    name: String,
    namespace: File,
    node: NodeState,
    /// The node init's host PID, refreshed when it reboots.
    init: Option<i32>,
}

/// Samples the lab every `interval` for `duration`.
pub fn sample(state: &LabState, interval: Duration, duration: Duration) -> Result<Report> {
    sample_while(state, interval, |elapsed| elapsed <= duration)
}

/// Samples the lab every `interval` as long as `go_on(time since the
/// start)` says so (the bench and the nemesis stop it when they are done).
pub fn sample_while(
    state: &LabState,
    interval: Duration,
    mut go_on: impl FnMut(Duration) -> bool,
) -> Result<Report> {
    let own = File::open("/proc/thread-self/ns/net")
        .context("cannot open this thread's network namespace")?;
    // A node in the state whose namespace does not exist, or is not one
    // yet (`ip netns add` makes the file before it mounts the namespace on
    // it), is being added (`add-node` records it first) or removed: it
    // holds nothing to watch.
    let is_namespace = |namespace: &File| {
        let entered = setns(namespace.as_fd(), CloneFlags::CLONE_NEWNET).is_ok();
        entered && setns(own.as_fd(), CloneFlags::CLONE_NEWNET).is_ok()
    };
    let mut nodes: Vec<Watched> = state
        .nodes
        .iter()
        .filter(|node| node.is_mail())
        .filter_map(|node| {
            let handle = crate::netns::handle(&node.namespace);
            match File::open(&handle) {
                Ok(namespace) if !is_namespace(&namespace) => None,
                Ok(namespace) => Some(Ok(Watched {
                    name: node.name.clone(),
                    namespace,
                    node: node.clone(),
                    init: None,
                })),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => Some(Err(anyhow::Error::new(error)
                    .context(format!("cannot open namespace {}", node.namespace)))),
            }
        })
        .collect::<Result<_>>()?;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut next = started;
    while go_on(started.elapsed()) {
        let mut holds = Vec::with_capacity(nodes.len());
        for node in &mut nodes {
            holds.push(node_holds(state, node, &own)?);
        }
        tally.add(started.elapsed(), &names, holds);
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(tally.finish(interval))
}

fn node_holds(state: &LabState, node: &mut Watched, own: &File) -> Result<Holds> {
    setns(node.namespace.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter the namespace of {}", node.name))?;
    let address = UdpSocket::bind(SocketAddrV4::new(state.floating_ip, 0)).is_ok();
    setns(own.as_fd(), CloneFlags::CLONE_NEWNET)
        .context("cannot return to the sampler's namespace")?;

    let alive = |pid: i32| Path::new(&format!("/proc/{pid}")).exists();
    if !node.init.is_some_and(alive) {
        // A namespace `remove-node` deleted meanwhile has no init any more.
        node.init = if crate::netns::handle(&node.node.namespace).exists() {
            crate::node::init_pid(&node.node.namespace)?
        } else {
            None
        };
    }
    let Some(init) = node.init else {
        // Powered off: holds nothing but what the kernel keeps (the address
        // of a namespace whose link was not flushed).
        return Ok(Holds {
            address,
            ..Holds::default()
        });
    };
    Ok(Holds {
        address,
        mount: mounted(init, &state.volume.mount_point),
        stack: stack_runs(init, state.stack),
    })
}

fn mounted(init: i32, mount_point: &Path) -> bool {
    let wanted = mount_point.to_string_lossy();
    std::fs::read_to_string(format!("/proc/{init}/mountinfo"))
        .map(|info| {
            info.lines()
                .any(|line| line.split(' ').nth(4) == Some(wanted.as_ref()))
        })
        .unwrap_or(false)
}

fn stack_runs(init: i32, stack: Stack) -> bool {
    let Ok(children) = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")) else {
        return false;
    };
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<i32>().ok())
        .any(|pid| {
            let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
                return false;
            };
            let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|byte| *byte == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            // A zombie's exe is gone; a stopped one still runs the stack.
            crate::stack::is_main_process(stack, &exe, &argv)
        })
}

/// `mailherd-lab invariants`.
pub fn run(interval: Duration, duration: Duration, json: bool) -> Result<()> {
    let state = LabState::load_current()?;
    let report = sample(&state, interval, duration)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for (at, holders) in &report.address_changes {
            println!("+{at}ms floating IP held by [{}]", holders.join(", "));
        }
        println!(
            "{} samples every {} ms: dual holders {} ms (address {}, mount {}, stack {}); \
             at most {} address, {} mount, {} stack holders at once",
            report.samples,
            report.interval_ms,
            report.dual_holder_ms,
            report.dual_address_ms,
            report.dual_mount_ms,
            report.dual_stack_ms,
            report.max_address_holders,
            report.max_mount_holders,
            report.max_stack_holders
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// An address no interface here has (TEST-NET-1).
    const TEST_NET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn holds(address: bool, mount: bool, stack: bool) -> Holds {
        Holds {
            address,
            mount,
            stack,
        }
    }

    #[test]
    fn counts_only_time_seen_dual_at_both_ends() {
        let names = vec!["n1".to_string(), "n2".to_string()];
        let mut tally = Tally::default();
        let ms = Duration::from_millis;
        tally.add(
            ms(0),
            &names,
            vec![holds(true, true, true), holds(false, false, false)],
        );
        // A blip: dual in one sample only.
        tally.add(
            ms(10),
            &names,
            vec![holds(true, true, true), holds(true, false, false)],
        );
        tally.add(
            ms(20),
            &names,
            vec![holds(false, true, true), holds(true, false, false)],
        );
        // Two stacks for two samples: 10 ms.
        tally.add(
            ms(30),
            &names,
            vec![holds(false, false, true), holds(true, true, true)],
        );
        tally.add(
            ms(40),
            &names,
            vec![holds(false, false, true), holds(true, true, true)],
        );
        tally.add(
            ms(50),
            &names,
            vec![holds(false, false, false), holds(true, true, true)],
        );
        let report = tally.finish(ms(10));
        assert_eq!(report.samples, 6);
        assert_eq!(report.dual_address_ms, 0);
        assert_eq!(report.dual_stack_ms, 10);
        assert_eq!(report.dual_holder_ms, 10);
        assert_eq!(report.max_address_holders, 2);
        assert_eq!(report.max_stack_holders, 2);
        let changes: Vec<&Vec<String>> = report.address_changes.iter().map(|(_, n)| n).collect();
        assert_eq!(
            changes,
            vec![&vec!["n1".to_string()], &names, &vec!["n2".to_string()]]
        );
    }

    #[test]
    fn binding_tells_whether_an_address_is_local() {
        assert!(UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).is_ok());
        assert!(UdpSocket::bind(SocketAddrV4::new(TEST_NET, 0)).is_err());
    }
}
