//! `mailherd-lab bench`: failover times as a client sees them, mailherd
//! against stock keepalived in the same lab, with the same service and the
//! same probing (design §7).
//!
//! For each manager the bench builds a lab of its own, then runs `rounds`
//! rounds of every failure mode: wait for a settled cluster, inject the
//! fault into the master, and take the time from just before the fault to
//! the first banner from another node on the floating IP (the client
//! probes every 20 ms). Then it heals and goes on. All along, the invariant
//! sampler watches for two holders and, with `--stack mail`, a load sends
//! mail whose every accepted message must be in the store at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench;
use crate::commands::fault::{self, FailMode};
use crate::state::{LabState, Manager, Stack};

/// The key of a manager's figures in the report.
fn key(manager: Manager) -> &'static str {
    match manager {
        Manager::Mailherd => "mailherd",
        Manager::Keepalived => "keepalived",
        Manager::KeepalivedTuned => "keepalived_tuned",
    }
}

pub struct BenchOptions {
    pub json: bool,
    pub stack: Stack,
    pub rounds: usize,
    pub nodes: usize,
    pub modes: Vec<FailMode>,
    pub managers: Vec<Manager>,
    /// How long the idle agent's CPU share is measured (0: not at all).
    pub footprint: Duration,
    /// Leave the last phase's lab up.
    pub keep_lab: bool,
}

/// How long a cluster may take to settle between two faults.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// How long a failover may take before the round counts as failed.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
/// How long accepted mail may take to show up in the store at the end.
pub const DELIVERY_LIMIT: Duration = Duration::from_secs(120);

/// What one manager's phase measured.
#[derive(Debug, Default)]
struct Phase {
    outages_ms: BTreeMap<&'static str, Vec<u64>>,
    /// Rounds in which no other node answered within [`FAILOVER_LIMIT`].
    failed: BTreeMap<&'static str, usize>,
    invariants: crate::invariants::Report,
    accepted: usize,
    attempts: u64,
    lost: Vec<String>,
    breaker_resets: usize,
    /// The idle master's agent, and a backup's measured over the same window.
    footprint: Option<(bench::Footprint, Option<bench::Footprint>)>,
}

pub fn run(options: BenchOptions) -> Result<()> {
    if options.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if options.modes.is_empty() || options.managers.is_empty() {
        bail!("--modes and --managers each need at least one value");
    }
    if !(2..=9).contains(&options.nodes) {
        bail!(
            "--nodes {} is out of range: the bench runs 2 to 9 mail nodes",
            options.nodes
        );
    }
    refuse_a_running_lab("bench")?;
    fault::report_to_stderr();
    let mut phases = BTreeMap::new();
    for manager in &options.managers {
        let phase = run_phase(*manager, &options)
            .with_context(|| format!("bench phase {}", manager.name()))?;
        phases.insert(*manager, phase);
    }
    let report = report(&options, &phases);
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&options, &phases);
    }
    Ok(())
}

/// The bench and the nemesis build their own lab: one must not be up.
pub fn refuse_a_running_lab(command: &str) -> Result<()> {
    if crate::topology::state_file().exists() {
        bail!(
            "a lab is up in {}: the {command} builds its own; run `mailherd-lab down` first, \
             or set MAILHERD_LAB_PREFIX and MAILHERD_LAB_DIR to run it beside that lab",
            crate::topology::lab_dir().display()
        );
    }
    Ok(())
}

/// Runs `down` when dropped, so a failed phase leaves no lab behind.
pub struct DownOnDrop {
    /// Leave the lab up (a post-mortem of the last phase).
    pub keep: bool,
}

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if self.keep {
            bench::progress("the lab is left up (--keep-lab): `mailherd-lab down` removes it");
            return;
        }
        if let Err(error) = bench::run_lab(&["down"]) {
            bench::progress(&format!("down failed: {error:#}"));
        }
    }
}

fn run_phase(manager: Manager, options: &BenchOptions) -> Result<Phase> {
    let nodes = options.nodes.to_string();
    let mut up = vec!["up", "--nodes", &nodes, "--stack", options.stack.name()];
    if manager != Manager::Mailherd {
        up.extend(["--manager", manager.name()]);
    }
    bench::progress(&format!(
        "{}: mailherd-lab {}",
        manager.name(),
        up.join(" ")
    ));
    let _down = DownOnDrop {
        keep: options.keep_lab && Some(&manager) == options.managers.last(),
    };
    bench::run_lab(&up)?;
    let state = LabState::load_current()?;
    let (prober, sampler, load) =
        bench::start_watching(&state, &format!("bench-{}", manager.name()))?;
    let mut phase = Phase::default();
    for round in 1..=options.rounds {
        for mode in &options.modes {
            let mode_name = mode_name(*mode);
            let (master, reset) = bench::settle(&state, &prober, SETTLE_LIMIT)?;
            phase.breaker_resets += usize::from(reset);
            let fault_at = Instant::now();
            fault::fail(&master, *mode, fault::Cut::default())
                .with_context(|| format!("injecting {mode_name} into {master}"))?;
            let outage = prober.first_banner_after(fault_at, &master, FAILOVER_LIMIT);
            match outage {
                Some(at) => {
                    let ms = (at - fault_at).as_millis() as u64;
                    bench::progress(&format!(
                        "{} round {round} {mode_name}: {master} failed, served again after {ms} ms",
                        manager.name()
                    ));
                    phase.outages_ms.entry(mode_name).or_default().push(ms);
                }
                None => {
                    bench::progress(&format!(
                        "{} round {round} {mode_name}: no other node served within {} s",
                        manager.name(),
                        FAILOVER_LIMIT.as_secs()
                    ));
                    *phase.failed.entry(mode_name).or_default() += 1;
                }
            }
            fault::heal(None).context("healing after the fault")?;
        }
    }
    let (master, _) = bench::settle(&state, &prober, SETTLE_LIMIT)?;
    if let Some(load) = load {
        let (accepted, attempts) = load.finish()?;
        bench::progress(&format!(
            "{}: {} of {attempts} messages accepted; checking the store",
            manager.name(),
            accepted.len()
        ));
        phase.lost = bench::missing_mail(&state, &accepted, DELIVERY_LIMIT)?;
        phase.accepted = accepted.len();
        phase.attempts = attempts;
    }
    if manager == Manager::Mailherd && !options.footprint.is_zero() {
        bench::progress(&format!(
            "measuring the idle master's agent for {} s",
            options.footprint.as_secs()
        ));
        let backup = state
            .nodes
            .iter()
            .find(|n| n.name != master && n.kind == crate::topology::NodeKind::Mail);
        phase.footprint = Some(std::thread::scope(|scope| -> Result<_> {
            let backup = backup.map(|node| {
                scope.spawn(|| bench::agent_footprint(&state, node, options.footprint))
            });
            let master = bench::agent_footprint(&state, state.node(&master)?, options.footprint)?;
            let backup = match backup {
                Some(handle) => Some(
                    handle
                        .join()
                        .map_err(|_| anyhow::anyhow!("measuring the backup's agent panicked"))??,
                ),
                None => None,
            };
            Ok((master, backup))
        })?);
    }
    phase.invariants = sampler.finish()?;
    prober.stop()?;
    Ok(phase)
}

pub fn mode_name(mode: FailMode) -> &'static str {
    match mode {
        FailMode::Power => "power",
        FailMode::Service => "service",
        FailMode::AgentKill => "agent-kill",
        FailMode::AgentFreeze => "agent-freeze",
        FailMode::Partition => "partition",
    }
}

fn figures(phase: &Phase) -> Value {
    let mut modes = serde_json::Map::new();
    let names: std::collections::BTreeSet<&str> = phase
        .outages_ms
        .keys()
        .chain(phase.failed.keys())
        .copied()
        .collect();
    for mode in names {
        let outages = phase.outages_ms.get(mode).cloned().unwrap_or_default();
        let (median, max) = bench::median_and_max(&outages);
        modes.insert(
            mode.to_string(),
            json!({
                "runs": outages.len(),
                "median_ms": median,
                "max_ms": max,
                "failed": phase.failed.get(mode).copied().unwrap_or(0),
                "outages_ms": outages,
            }),
        );
    }
    Value::Object(modes)
}

fn ratios(of: &Phase, to: &Phase) -> Value {
    let mut ratios = serde_json::Map::new();
    for (mode, outages) in &of.outages_ms {
        let Some(ours) = to.outages_ms.get(mode) else {
            continue;
        };
        let (theirs, _) = bench::median_and_max(outages);
        let (ours, _) = bench::median_and_max(ours);
        if ours > 0 {
            let ratio = theirs as f64 / ours as f64;
            ratios.insert(mode.to_string(), json!((ratio * 100.0).round() / 100.0));
        }
    }
    Value::Object(ratios)
}

/// Design §7's bench JSON, plus the detail behind each figure.
fn report(options: &BenchOptions, phases: &BTreeMap<Manager, Phase>) -> Value {
    let mut report = json!({
        "stack": options.stack.name(),
        "nodes": options.nodes,
        "rounds": options.rounds,
        "probe_interval_ms": bench::PROBE_INTERVAL.as_millis() as u64,
        "machine": machine(),
    });
    for (manager, phase) in phases {
        report[key(*manager)] = figures(phase);
        report[format!("{}_dual_holder_ms", key(*manager))] =
            json!(phase.invariants.dual_holder_ms);
    }
    if let Some(mailherd) = phases.get(&Manager::Mailherd) {
        report["dual_holder_ms"] = json!(mailherd.invariants.dual_holder_ms);
        report["invariants"] = serde_json::to_value(&mailherd.invariants).unwrap_or_default();
        report["accepted_messages"] = json!(mailherd.accepted);
        report["lost_messages"] = json!(mailherd.lost.len());
        report["lost_subjects"] = json!(mailherd.lost);
        report["send_attempts"] = json!(mailherd.attempts);
        report["breaker_resets"] = json!(mailherd.breaker_resets);
        if let Some((master, backup)) = mailherd.footprint {
            report["agent_rss_kib"] = json!(master.rss_kib);
            report["agent_rss_anon_kib"] = json!(master.rss_anon_kib);
            report["agent_rss_file_kib"] = json!(master.rss_file_kib);
            report["agent_cpu_percent"] = json!(master.cpu_percent);
            if let Some(backup) = backup {
                report["backup_agent_rss_kib"] = json!(backup.rss_kib);
                report["backup_agent_cpu_percent"] = json!(backup.cpu_percent);
            }
            report["footprint_secs"] = json!(options.footprint.as_secs());
        }
        if let Some(keepalived) = phases.get(&Manager::Keepalived) {
            report["ratio"] = ratios(keepalived, mailherd);
        }
        if let Some(tuned) = phases.get(&Manager::KeepalivedTuned) {
            report["ratio_tuned"] = ratios(tuned, mailherd);
        }
    }
    report
}

pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    // Read at the end of a run: the 5- and 15-minute figures tell how busy
    // the host was while it ran (other work on the host skews timings).
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "kernel": kernel,
        "loadavg": loadavg,
    })
}

fn print_table(options: &BenchOptions, phases: &BTreeMap<Manager, Phase>) {
    println!(
        "{} nodes, --stack {}, {} rounds; outage = fault to first banner from another node (ms)",
        options.nodes,
        options.stack.name(),
        options.rounds
    );
    println!(
        "{:<18} {:<13} {:>5} {:>9} {:>7} {:>7}",
        "manager", "mode", "runs", "median", "max", "failed"
    );
    for (manager, phase) in phases {
        for mode in &options.modes {
            let name = mode_name(*mode);
            let outages = phase.outages_ms.get(name).cloned().unwrap_or_default();
            let (median, max) = bench::median_and_max(&outages);
            println!(
                "{:<18} {:<13} {:>5} {:>9} {:>7} {:>7}",
                manager.name(),
                name,
                outages.len(),
                median,
                max,
                phase.failed.get(name).copied().unwrap_or(0)
            );
        }
        println!(
            "{:<18} dual holders {} ms; mail accepted {}, lost {}",
            manager.name(),
            phase.invariants.dual_holder_ms,
            phase.accepted,
            phase.lost.len()
        );
        if let Some((master, backup)) = phase.footprint {
            println!(
                "{:<18} idle master's agent: RSS {} KiB ({} anonymous, {} file), CPU {} % of a core over {} s",
                manager.name(),
                master.rss_kib,
                master.rss_anon_kib,
                master.rss_file_kib,
                master.cpu_percent,
                options.footprint.as_secs()
            );
            if let Some(backup) = backup {
                println!(
                    "{:<18} a backup's agent: RSS {} KiB, CPU {} % of a core",
                    manager.name(),
                    backup.rss_kib,
                    backup.cpu_percent
                );
            }
        }
    }
}
