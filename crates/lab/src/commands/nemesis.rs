//! `mailherd-lab nemesis`: a random, reproducible sequence of faults under
//! mail load, with the invariants checked all along (design §7).
//!
//! The seed fixes every choice (which fault, which node, how long to wait),
//! so a failing seed fails again the same way; the timing of the cluster
//! itself is not under the seed's control, so a rerun is the same attack,
//! not the same trace. At most a minority of the mail nodes is faulted at
//! once (the quorum the design promises to survive); when that many are,
//! the next step heals. A breaker that opens is counted and reset, as the
//! operator would: the nemesis checks safety (never two holders, no
//! accepted mail lost), the bench checks speed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::bench;
use crate::commands::bench::{DownOnDrop, DELIVERY_LIMIT, SETTLE_LIMIT};
use crate::commands::fault::{self, Cut, FailMode};
use crate::state::{LabState, Stack};

pub struct NemesisOptions {
    pub faults: usize,
    pub seed: u64,
    pub json: bool,
    pub stack: Stack,
    pub nodes: usize,
}

/// One step of the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Fail(FailMode),
    /// Stops the node hearing its peers (it still sends and serves).
    OneWayPartition,
    Heal,
    /// Power off and boot again at once.
    Restart,
}

impl Action {
    const ALL: [Action; 8] = [
        Action::Fail(FailMode::Power),
        Action::Fail(FailMode::Service),
        Action::Fail(FailMode::Partition),
        Action::OneWayPartition,
        Action::Fail(FailMode::AgentKill),
        Action::Fail(FailMode::AgentFreeze),
        Action::Heal,
        Action::Restart,
    ];

    fn name(self) -> &'static str {
        match self {
            Action::Fail(mode) => crate::commands::bench::mode_name(mode),
            Action::OneWayPartition => "one-way-partition",
            Action::Heal => "heal",
            Action::Restart => "restart",
        }
    }
}

pub fn run(options: NemesisOptions) -> Result<()> {
    if !(3..=9).contains(&options.nodes) {
        bail!(
            "--nodes {} is out of range: the nemesis needs 3 to 9 mail nodes (a quorum must survive one fault)",
            options.nodes
        );
    }
    crate::commands::bench::refuse_a_running_lab("nemesis")?;
    fault::report_to_stderr();
    let nodes = options.nodes.to_string();
    let up = ["up", "--nodes", &nodes, "--stack", options.stack.name()];
    bench::progress(&format!(
        "nemesis seed {}: mailherd-lab {}",
        options.seed,
        up.join(" ")
    ));
    let _down = DownOnDrop { keep: false };
    bench::run_lab(&up)?;
    let state = LabState::load_current()?;
    let (prober, sampler, load) =
        bench::start_watching(&state, &format!("nemesis-{}", options.seed))?;
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mail_nodes: Vec<String> = state
        .nodes
        .iter()
        .filter(|n| n.is_mail())
        .map(|n| n.name.clone())
        .collect();
    let max_faulted = (mail_nodes.len() - 1) / 2;
    let mut faulted: BTreeSet<String> = BTreeSet::new();
    let mut steps: Vec<Value> = Vec::new();
    let mut breaker_trips = 0usize;

    for step in 1..=options.faults {
        let mut action = Action::ALL[rng.random_range(0..Action::ALL.len())];
        if action != Action::Heal && faulted.len() >= max_faulted {
            action = Action::Heal;
        }
        // Drawn whatever happens next, so the sequence depends on the seed only.
        let aim_at_master = rng.random_bool(0.6);
        let pick = rng.random_range(0..mail_nodes.len());
        let pause = Duration::from_millis(rng.random_range(300..2500));

        let target = match action {
            Action::Heal => faulted.iter().nth(pick % faulted.len().max(1)).cloned(),
            _ => {
                let healthy: Vec<&String> = mail_nodes
                    .iter()
                    .filter(|n| !faulted.contains(*n))
                    .collect();
                let master = if aim_at_master {
                    current_master(&state).filter(|m| !faulted.contains(m))
                } else {
                    None
                };
                master.or_else(|| healthy.get(pick % healthy.len()).map(|n| n.to_string()))
            }
        };
        let at_ms = started.elapsed().as_millis() as u64;
        let outcome = apply(action, target.as_deref(), &mut faulted);
        bench::progress(&format!(
            "step {step}/{}: {} {} {}",
            options.faults,
            action.name(),
            target.as_deref().unwrap_or("(nothing to heal)"),
            match &outcome {
                Ok(()) => "ok".to_string(),
                Err(error) => format!("refused: {error:#}"),
            }
        ));
        steps.push(json!({
            "step": step,
            "at_ms": at_ms,
            "action": action.name(),
            "node": target,
            "error": outcome.err().map(|e| format!("{e:#}")),
        }));
        std::thread::sleep(pause);
        if bench::reset_breaker_if_open(&state)? {
            breaker_trips += 1;
            bench::progress("the breaker was open: reset");
        }
    }

    fault::heal(None).context("healing after the last fault")?;
    bench::settle(&state, &prober, SETTLE_LIMIT)?;
    let (accepted, lost) = match load {
        Some(load) => {
            let (accepted, _) = load.finish()?;
            let lost = bench::missing_mail(&state, &accepted, DELIVERY_LIMIT)?;
            (accepted.len(), lost)
        }
        None => (0, Vec::new()),
    };
    let invariants = sampler.finish()?;
    let longest_outage = prober.longest_gap(started);
    prober.stop()?;

    let report = json!({
        "faults": options.faults,
        "seed": options.seed,
        "dual_holder_ms": invariants.dual_holder_ms,
        "lost_messages": lost.len(),
        "accepted_messages": accepted,
        "longest_outage_ms": longest_outage.as_millis() as u64,
        "breaker_trips": breaker_trips,
        "stack": options.stack.name(),
        "nodes": options.nodes,
        "lost_subjects": lost,
        "invariants": invariants,
        "steps": steps,
        "machine": crate::commands::bench::machine(),
    });
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "nemesis seed {}: {} faults; dual holders {} ms; mail accepted {}, lost {}; \
             longest outage {} ms; breaker trips {}",
            options.seed,
            options.faults,
            report["dual_holder_ms"],
            accepted,
            report["lost_messages"],
            report["longest_outage_ms"],
            breaker_trips
        );
    }
    if invariants.dual_holder_ms > 0 || !lost.is_empty() {
        bail!(
            "seed {} broke an invariant: dual holders {} ms, {} accepted messages lost \
             (rerun: mailherd-lab nemesis --faults {} --seed {})",
            options.seed,
            invariants.dual_holder_ms,
            lost.len(),
            options.faults,
            options.seed
        );
    }
    Ok(())
}

/// The node whose agent says it is master, if exactly one does.
fn current_master(state: &LabState) -> Option<String> {
    let answers = crate::commands::status::query_all(state);
    let masters: Vec<String> = state
        .nodes
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.role == "master")
        .map(|(node, _)| node.name.clone())
        .collect();
    (masters.len() == 1).then(|| masters[0].clone())
}

fn apply(action: Action, target: Option<&str>, faulted: &mut BTreeSet<String>) -> Result<()> {
    let Some(node) = target else {
        return Ok(());
    };
    match action {
        Action::Fail(mode) => {
            fault::fail(node, mode, Cut::default())?;
            faulted.insert(node.to_string());
        }
        Action::OneWayPartition => {
            fault::fail(
                node,
                FailMode::Partition,
                Cut {
                    from: vec!["peers".to_string()],
                    one_way: true,
                },
            )?;
            faulted.insert(node.to_string());
        }
        Action::Heal => {
            fault::heal(Some(node))?;
            faulted.remove(node);
        }
        Action::Restart => {
            fault::fail(node, FailMode::Power, Cut::default())?;
            fault::heal(Some(node))?;
        }
    }
    Ok(())
}
