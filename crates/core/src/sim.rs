//! A simulated cluster to check the one-holder invariant over thousands of
//! generated scenarios.
//!
//! The model: Raft is abstracted as one linearizable log that only a
//! connected leader appends to; every node applies the log after its own
//! delay; proposals and answers travel with random delays and are lost when
//! either side is cut off. Each node runs the real [`Holder`], the leader
//! runs the real [`decide`], and every node's clock runs at its own rate
//! (within ±3%, inside the drift margin). Faults: power loss (holds nothing
//! at once, restarts later with a fresh holder), agent restarts (what was
//! held stays held until the new process's urgent cleanup), partitions,
//! stack failure, leader changes, and now and then a slow answer. Renewals
//! are now and then applied a second time, late and unanswered, also when
//! the first copy was lost or its proposer has been cut off since: the
//! relayed copies of `Consensus::propose_with_relays`.
//! Resources count as held from the start of a promotion to the end of a
//! demotion, pessimistically. Like the agent, a node measures
//! the decider's wait from when a progress entry *arrived* in its log, and
//! applies nothing while there is no leader.
//!
//! Checked at every simulated millisecond step: at most one node holds.
//! Checked once every fault healed: the cluster is never without a master
//! for more than two seconds.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checks::Verdict;
use crate::decider::{decide, Candidate, DeciderView, Decision};
use crate::holder::{Holder, HolderAction, HolderEvent, Phase, RenewalOutcome};
use crate::lease::LeaseTiming;
use crate::state::{ClusterState, Command, NodeId, Rejection};
use crate::Millis;

/// Simulated time step, in real milliseconds.
const STEP: u64 = 2;

fn timing() -> LeaseTiming {
    crate::lease::test_timing()
}

struct Node {
    id: NodeId,
    holder: Holder,
    /// Local clock = offset + rate * real time.
    rate: f64,
    offset: f64,
    alive: bool,
    partitioned: bool,
    /// Index into the log up to which this node has applied.
    applied: usize,
    holding: bool,
    promotion_done_at: Option<(u64, u64)>,
    demotion_done_at: Option<(u64, u64)>,
    /// When this node last saw the epoch or renewal count change, on its
    /// own clock (what it uses as decider).
    last_progress_seen: Millis,
    seen: (u64, u64),
}

impl Node {
    fn local(&self, real: u64) -> Millis {
        Millis((self.offset + self.rate * real as f64) as u64)
    }
    fn connected(&self) -> bool {
        self.alive && !self.partitioned
    }
}

/// A message in flight: a proposal on its way to the log, or an answer.
enum Flight {
    Proposal {
        from: NodeId,
        command: Command,
        started: Millis,
        arrive: u64,
        /// A copy another voter proposes for `from`: applied whether or
        /// not `from` is still connected, and never answered (the proposer
        /// took the first answer of any copy).
        relayed: bool,
    },
    Answer {
        to: NodeId,
        command: Command,
        started: Millis,
        result: Result<(), Rejection>,
        arrive: u64,
    },
    /// A proposal that was lost: the proposer learns at its timeout.
    Timeout {
        to: NodeId,
        command: Command,
        started: Millis,
        at: u64,
    },
}

struct World {
    rng: StdRng,
    nodes: Vec<Node>,
    /// The committed log: (append time, command, state after it).
    log: Vec<(u64, ClusterState)>,
    leader: Option<NodeId>,
    leader_since: Millis,
    election_at: Option<u64>,
    flights: Vec<Flight>,
    violations: Vec<String>,
    apply_delay: Vec<u64>,
}

impl World {
    fn new(seed: u64, n: usize) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes = Vec::new();
        let mut apply_delay = Vec::new();
        for i in 0..n {
            let id = i as NodeId + 1;
            let (mut holder, _) = Holder::new(id, timing(), 1_000, None);
            holder.handle(Millis(0), HolderEvent::DemotionFinished { epoch: 0 });
            nodes.push(Node {
                id,
                holder,
                rate: rng.random_range(0.97..1.03),
                offset: rng.random_range(0.0..10_000.0),
                alive: true,
                partitioned: false,
                applied: 0,
                holding: false,
                promotion_done_at: None,
                demotion_done_at: None,
                last_progress_seen: Millis(0),
                seen: (0, 0),
            });
            apply_delay.push(rng.random_range(0..15));
        }
        World {
            rng,
            nodes,
            log: vec![(0, ClusterState::default())],
            leader: None,
            leader_since: Millis(0),
            election_at: Some(200),
            flights: Vec::new(),
            violations: Vec::new(),
            apply_delay,
        }
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn current(&self) -> &ClusterState {
        &self.log.last().expect("log has a genesis entry").1
    }

    fn send(&mut self, now: u64, from: NodeId, command: Command, started: Millis) {
        let connected = self.node(from).connected();
        let lost = !connected || self.leader.is_none() || self.rng.random_bool(0.02);
        if connected && matches!(command, Command::Renew { .. }) && self.rng.random_bool(0.05) {
            let arrive = now + self.rng.random_range(20..timing().lease_ms);
            self.flights.push(Flight::Proposal {
                from,
                command: command.clone(),
                started,
                arrive,
                relayed: true,
            });
        }
        if lost {
            let lease = timing().lease_ms;
            self.flights.push(Flight::Timeout {
                to: from,
                command,
                started,
                at: now + lease,
            });
        } else {
            let arrive = now + self.rng.random_range(1..20);
            self.flights.push(Flight::Proposal {
                from,
                command,
                started,
                arrive,
                relayed: false,
            });
        }
    }

    fn execute(&mut self, now: u64, id: NodeId, actions: Vec<HolderAction>) {
        for action in actions {
            match action {
                HolderAction::ProposeRenewal { epoch, started } => {
                    self.send(now, id, Command::Renew { node: id, epoch }, started)
                }
                HolderAction::ProposeRelease { epoch, reason } => {
                    let started = self.node(id).local(now);
                    self.send(
                        now,
                        id,
                        Command::Release {
                            node: id,
                            epoch,
                            reason,
                            at_unix_ms: 0,
                        },
                        started,
                    )
                }
                HolderAction::StartPromotion { epoch } => {
                    let duration = self.rng.random_range(1..200);
                    let node = self.node(id);
                    node.holding = true;
                    node.promotion_done_at = Some((now + duration, epoch));
                }
                HolderAction::StartDemotion { epoch, urgent, .. } => {
                    // Urgent demotions must fit in the fence budget (on the
                    // node's own clock); graceful ones may take longer.
                    let limit = if urgent {
                        timing().fence_budget_ms * 6 / 10
                    } else {
                        300
                    };
                    let duration = self.rng.random_range(0..limit);
                    let node = self.node(id);
                    node.promotion_done_at = None;
                    let done = now + duration;
                    node.demotion_done_at = Some(match node.demotion_done_at {
                        Some((existing, e)) if existing < done => (existing, e.max(epoch)),
                        _ => (done, epoch),
                    });
                }
                HolderAction::DemotionIncomplete { .. } => {
                    unreachable!("the simulated demotion always completes")
                }
                HolderAction::LeaseEndedWhileHolding { epoch } => {
                    self.violations.push(format!(
                        "t={now}: node {id} lease for epoch {epoch} ended while holding"
                    ));
                }
            }
        }
    }

    fn step(&mut self, now: u64) {
        // Elections.
        if let Some(leader) = self.leader {
            if !self.node(leader).connected() {
                self.leader = None;
                self.election_at = Some(now + self.rng.random_range(150..300));
            }
        }
        if self.leader.is_none() && self.election_at.is_some_and(|at| now >= at) {
            let connected: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|n| n.connected())
                .map(|n| n.id)
                .collect();
            if connected.len() * 2 > self.nodes.len() {
                let pick = connected[self.rng.random_range(0..connected.len())];
                self.leader = Some(pick);
                self.leader_since = self.node(pick).local(now);
                self.election_at = None;
            } else {
                self.election_at = Some(now + 100);
            }
        }

        // Proposals reaching the log and answers reaching proposers.
        let flights = std::mem::take(&mut self.flights);
        for flight in flights {
            match flight {
                Flight::Proposal {
                    relayed: true,
                    command,
                    arrive,
                    ..
                } if arrive <= now => {
                    if self.leader.is_some() {
                        let mut state = self.current().clone();
                        // Unanswered: the proposer took another copy's answer.
                        let _ = state.apply(&command);
                        self.log.push((now, state));
                    }
                }
                Flight::Proposal {
                    from,
                    command,
                    started,
                    arrive,
                    relayed: false,
                } if arrive <= now => {
                    if self.leader.is_some() && self.node(from).connected() {
                        let mut state = self.current().clone();
                        let result = state.apply(&command);
                        self.log.push((now, state));
                        // Now and then an answer is slow (a loaded node, a
                        // long GC-like pause): confirmations that arrive too
                        // late to promote on, or to keep the lease.
                        let back = if self.rng.random_bool(0.03) {
                            now + self.rng.random_range(100..600)
                        } else {
                            now + self.rng.random_range(1..20)
                        };
                        self.flights.push(Flight::Answer {
                            to: from,
                            command,
                            started,
                            result,
                            arrive: back,
                        });
                    } else {
                        let at = now + timing().lease_ms;
                        self.flights.push(Flight::Timeout {
                            to: from,
                            command,
                            started,
                            at,
                        });
                    }
                }
                Flight::Answer {
                    to,
                    command,
                    started,
                    result,
                    arrive,
                } if arrive <= now => {
                    let outcome = if !self.node(to).connected() {
                        RenewalOutcome::Failed
                    } else if result.is_ok() {
                        RenewalOutcome::Confirmed
                    } else {
                        RenewalOutcome::Rejected
                    };
                    self.deliver(now, to, command, started, outcome);
                }
                Flight::Timeout {
                    to,
                    command,
                    started,
                    at,
                } if at <= now => {
                    self.deliver(now, to, command, started, RenewalOutcome::Failed);
                }
                other => self.flights.push(other),
            }
        }

        // Nodes apply the log, finish pipelines and tick.
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            if !self.nodes[i].alive {
                continue;
            }
            let local = self.nodes[i].local(now);
            // Followers learn the commit index from a leader: while there is
            // none, entries sit in their logs unapplied (the window the
            // arrival-time rule is about).
            if !self.nodes[i].partitioned && self.leader.is_some() {
                let delay = self.apply_delay[i];
                let mut target = self.nodes[i].applied;
                while target + 1 < self.log.len() && self.log[target + 1].0 + delay <= now {
                    target += 1;
                }
                if target != self.nodes[i].applied {
                    self.nodes[i].applied = target;
                    let state = &self.log[target].1;
                    let assignment = state.assignment;
                    let progress = (state.epoch, state.renewals);
                    if progress != self.nodes[i].seen {
                        self.nodes[i].seen = progress;
                        // Like the agent: measured from when the entry that
                        // made this progress arrived here (its append plus
                        // a delivery delay), not from the apply.
                        let mut first = target;
                        while first > 0 && {
                            let before = &self.log[first - 1].1;
                            (before.epoch, before.renewals) == progress
                        } {
                            first -= 1;
                        }
                        let arrived = self.log[first].0 + delay / 2;
                        self.nodes[i].last_progress_seen = self.nodes[i].local(arrived).min(local);
                    }
                    let actions = self.nodes[i]
                        .holder
                        .handle(local, HolderEvent::Applied { assignment });
                    self.execute(now, id, actions);
                }
            }
            if let Some((at, epoch)) = self.nodes[i].promotion_done_at {
                if at <= now {
                    self.nodes[i].promotion_done_at = None;
                    let actions = self.nodes[i].holder.handle(
                        local,
                        HolderEvent::PromotionFinished {
                            epoch,
                            result: Ok(()),
                        },
                    );
                    self.execute(now, id, actions);
                }
            }
            if let Some((at, epoch)) = self.nodes[i].demotion_done_at {
                if at <= now {
                    self.nodes[i].demotion_done_at = None;
                    self.nodes[i].holding = false;
                    let actions = self.nodes[i]
                        .holder
                        .handle(local, HolderEvent::DemotionFinished { epoch });
                    self.execute(now, id, actions);
                }
            }
            let actions = self.nodes[i].holder.handle(local, HolderEvent::Tick);
            self.execute(now, id, actions);
        }

        // The decider.
        if let Some(leader) = self.leader {
            let local = self.node(leader).local(now);
            let applied = self.node(leader).applied;
            let state = self.log[applied].1.clone();
            let candidates: Vec<Candidate> = self
                .nodes
                .iter()
                .map(|n| Candidate {
                    node: n.id,
                    priority: 100,
                    reachable: n.connected(),
                })
                .collect();
            let view = DeciderView {
                now: local,
                last_progress_seen: self.node(leader).last_progress_seen,
                candidates: &candidates,
                timing: timing(),
                now_unix_ms: now,
                // The simulation checks safety across many failovers; the
                // breaker would stop them.
                breaker: crate::decider::BreakerPolicy {
                    max_failovers: usize::MAX,
                    window_ms: 0,
                },
                preempt: false,
            };
            if let Decision::Assign(command) = decide(&state, &view) {
                let has_assign_in_flight = self.flights.iter().any(|f| {
                    matches!(
                        f,
                        Flight::Proposal {
                            command: Command::Assign { .. },
                            ..
                        }
                    )
                });
                if !has_assign_in_flight {
                    let arrive = now + self.rng.random_range(1..10);
                    self.flights.push(Flight::Proposal {
                        from: leader,
                        command,
                        started: local,
                        arrive,
                        relayed: false,
                    });
                }
            }
        }

        // The invariant.
        let holders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.alive && n.holding)
            .map(|n| n.id)
            .collect();
        if holders.len() > 1 {
            self.violations
                .push(format!("t={now}: nodes {holders:?} hold at once"));
        }
    }

    fn deliver(
        &mut self,
        now: u64,
        to: NodeId,
        command: Command,
        started: Millis,
        outcome: RenewalOutcome,
    ) {
        if !self.node(to).alive {
            return;
        }
        if let Command::Renew { epoch, .. } = command {
            let local = self.node(to).local(now);
            let actions = self.node(to).holder.handle(
                local,
                HolderEvent::RenewalFinished {
                    epoch,
                    started,
                    outcome,
                },
            );
            self.execute(now, to, actions);
        }
    }

    fn power_off(&mut self, id: NodeId) {
        let node = self.node(id);
        node.alive = false;
        node.holding = false;
        node.promotion_done_at = None;
        node.demotion_done_at = None;
        self.flights.retain(
            |f| !matches!(f, Flight::Answer { to, .. } | Flight::Timeout { to, .. } if *to == id),
        );
    }

    fn power_on(&mut self, now: u64, id: NodeId) {
        let applied = self.node(id).applied;
        let stored = self.log[applied].1.assignment;
        let (holder, actions) = Holder::new(id, timing(), 1_000, stored);
        let seen = {
            let state = &self.log[applied].1;
            (state.epoch, state.renewals)
        };
        let node = self.node(id);
        node.holder = holder;
        node.alive = true;
        // Like the agent: a fresh process counts progress from its start.
        node.last_progress_seen = node.local(now);
        node.seen = seen;
        self.execute(now, id, actions);
    }

    /// The agent process dies and is restarted at once (systemd); unlike
    /// a power loss, whatever it held stays held until the new process's
    /// startup cleanup (urgent) has run.
    fn restart_agent(&mut self, now: u64, id: NodeId) {
        if !self.node(id).alive {
            return;
        }
        self.flights.retain(
            |f| !matches!(f, Flight::Answer { to, .. } | Flight::Timeout { to, .. } if *to == id),
        );
        let node = self.node(id);
        node.promotion_done_at = None;
        node.demotion_done_at = None;
        let holding = node.holding;
        self.power_on(now, id);
        // `power_on` ran the startup cleanup; what was held is released
        // only when that cleanup finishes.
        self.node(id).holding = holding;
    }
}

/// Runs one scenario; returns violations and whether it ended with exactly
/// one master.
fn run_scenario(seed: u64, trace: bool) -> (Vec<String>, Option<String>) {
    let mut world = World::new(seed, if seed.is_multiple_of(3) { 5 } else { 3 });
    let n = world.nodes.len() as u64;
    let total: u64 = 10_000;
    let quiet_from: u64 = 5_000;
    // A schedule of faults in the first part of the run.
    let mut faults: Vec<(u64, u64, NodeId, u8)> = Vec::new();
    for _ in 0..world.rng.random_range(1..5) {
        let start = world.rng.random_range(500..quiet_from - 1_000);
        let end = world.rng.random_range(start + 50..quiet_from);
        let node = world.rng.random_range(1..=n);
        let kind = world.rng.random_range(0..5u8);
        faults.push((start, end, node, kind));
    }
    // Liveness after every fault healed: slow answers go on, so a master
    // may still fence itself now and then, but the role must be back within
    // a bound (fence + lease + drift + promotion, with room to spare).
    let settled_from = quiet_from + 2_000;
    const LONGEST_GAP_MS: u64 = 2_000;
    let mut last_master_at = 0;
    let mut longest_gap = 0;
    let mut now = 0;
    while now < total {
        for &(start, end, node, kind) in &faults {
            if now == start - start % STEP {
                match kind {
                    0 => world.power_off(node),
                    1 => world.node(node).partitioned = true,
                    2 => {
                        if world.node(node).alive {
                            let local = world.node(node).local(now);
                            let actions = world.node(node).holder.handle(
                                local,
                                HolderEvent::Verdict {
                                    verdict: Verdict::Down,
                                    detail: "stack down".into(),
                                },
                            );
                            world.execute(now, node, actions);
                        }
                    }
                    4 => world.restart_agent(now, node),
                    _ => {
                        // Leader change: the leader steps down.
                        if world.leader.is_some() {
                            world.leader = None;
                            world.election_at = Some(now + 150);
                        }
                    }
                }
            }
            if now == end - end % STEP {
                match kind {
                    0 if !world.node(node).alive => world.power_on(now, node),
                    1 => world.node(node).partitioned = false,
                    _ => {}
                }
            }
        }
        world.step(now);
        let has_master = world
            .nodes
            .iter()
            .any(|n| n.alive && matches!(n.holder.phase(), Phase::Master { .. }));
        if has_master || now < settled_from {
            last_master_at = now;
        }
        longest_gap = longest_gap.max(now - last_master_at);
        if trace {
            eprintln!(
                "t={now} leader {:?} assign {:?} renewals {} phases {:?}",
                world.leader,
                world.current().assignment,
                world.current().renewals,
                world
                    .nodes
                    .iter()
                    .map(|n| (
                        n.holder.phase().name(),
                        n.alive,
                        n.partitioned,
                        n.holder.lease_end()
                    ))
                    .collect::<Vec<_>>()
            );
        }
        now += STEP;
    }
    let ready = world.nodes.iter().any(|n| world.current().is_ready(n.id));
    let liveness = (ready && longest_gap > LONGEST_GAP_MS).then(|| {
        format!(
            "seed {seed}: no master for {longest_gap} ms after every fault healed; assignment {:?}; faults {faults:?}",
            world.current().assignment
        )
    });
    (world.violations, liveness)
}

#[test]
fn never_two_holders_across_generated_scenarios() {
    let scenarios: u64 = std::env::var("MAILHERD_SIM_SCENARIOS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let mut liveness_failures = Vec::new();
    for seed in 0..scenarios {
        let (violations, liveness) = run_scenario(seed, false);
        assert!(
            violations.is_empty(),
            "seed {seed}: {}",
            violations.join("\n")
        );
        liveness_failures.extend(liveness);
    }
    assert!(
        liveness_failures.is_empty(),
        "{}",
        liveness_failures.join("\n")
    );
}

/// Guards the checker itself: with a decider that ignores the lease (no
/// drift margin and no lease wait), the simulation must find dual holders.
#[test]
fn the_checker_catches_a_decider_that_does_not_wait() {
    let mut found = false;
    for seed in 0..200 {
        let mut world = World::new(seed, 3);
        let mut now = 0;
        while now < 3_000 {
            if now == 1_000 {
                // Cut the master off; then let a reckless decider reassign at once.
                if let Some(master) = world.current().assignment.map(|a| a.node) {
                    world.node(master).partitioned = true;
                    world.leader = None;
                    world.election_at = Some(now);
                }
            }
            world.step(now);
            if now > 1_000 {
                for node in world.nodes.iter_mut() {
                    node.last_progress_seen = Millis(0);
                }
                world.leader_since = Millis(0);
            }
            now += STEP;
        }
        if !world.violations.is_empty() {
            found = true;
            break;
        }
    }
    assert!(
        found,
        "a decider that does not wait must produce a violation"
    );
}

/// Prints a trace of one scenario: `SEED=n cargo test -p mailherd-core trace_one_seed -- --nocapture`.
#[test]
fn trace_one_seed() {
    if let Some(seed) = std::env::var("SEED").ok().and_then(|s| s.parse().ok()) {
        let (violations, liveness) = run_scenario(seed, true);
        eprintln!("violations: {violations:?}\nliveness: {liveness:?}");
    }
}
