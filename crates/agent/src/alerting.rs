//! What the control loop tells the [`Alerter`]: events built from the
//! cluster state (names, epochs, step timings) and the watchers that turn
//! repeated observations (maintenance, reachability, the verdict) into one
//! alert per change. The control loop only calls in at the points where
//! things happen; the rules against flooding are the alerter's.
//!
//! Who sends what, so that a cluster sends each alert once: the node
//! running a promotion sends its started/completed/failed; the decider
//! (Raft leader) sends breaker, maintenance and node down/up; a node sends
//! its own lease loss, split-brain risk and degraded checks.

use std::collections::BTreeMap;

use mailherd_alerts::{Alerter, Event, StepTiming};
use mailherd_config::Config;
use mailherd_core::state::{ClusterState, PromotionOutcome};
use mailherd_core::Verdict;

/// The name of node `id` as the cluster knows it.
fn name_of(config: &Config, state: &ClusterState, id: u64) -> String {
    config
        .effective_members(state)
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.name.clone())
        .unwrap_or_else(|| format!("#{id}"))
}

/// The previous holder and the kind of the assignment for `epoch`.
fn assignment_of(config: &Config, state: &ClusterState, epoch: u64) -> (Option<String>, String) {
    match state.history.iter().rev().find(|r| r.epoch == epoch) {
        Some(record) => (
            record.from.map(|from| name_of(config, state, from)),
            format!("{:?} ({})", record.kind, record.reason).to_lowercase(),
        ),
        None => (None, String::new()),
    }
}

/// The promotion of `epoch` on this node begins.
pub fn promotion_started(alerter: &Alerter, config: &Config, state: &ClusterState, epoch: u64) {
    let (from, why) = assignment_of(config, state, epoch);
    let mut event = Event::failover_started(epoch, from.as_deref(), &config.me().name);
    if !why.is_empty() {
        event = event.with_detail(why);
    }
    alerter.send(event);
}

/// The promotion of `epoch` on this node ended as `outcome` says.
pub fn promotion_finished(
    alerter: &Alerter,
    config: &Config,
    state: &ClusterState,
    epoch: u64,
    outcome: &PromotionOutcome,
) {
    let (from, _) = assignment_of(config, state, epoch);
    let steps: Vec<StepTiming> = outcome
        .steps
        .iter()
        .map(|s| StepTiming {
            name: s.name.clone(),
            ms: s.duration_ms,
            ok: s.ok,
        })
        .collect();
    let me = &config.me().name;
    let event = match &outcome.error {
        None => Event::failover_completed(epoch, from.as_deref(), me, outcome.total_ms, steps),
        Some(error) => {
            Event::failover_failed(epoch, from.as_deref(), me, error, outcome.total_ms, steps)
        }
    };
    alerter.send(event);
}

/// Turns observations made again and again into one alert per change.
#[derive(Debug, Default)]
pub struct Watchers {
    /// Maintenance as last seen (None before the first look).
    maintenance: Option<bool>,
    /// Reachability as the decider last saw it; empty while not deciding,
    /// so a new leader does not report what it merely has not heard yet.
    reachable: BTreeMap<u64, bool>,
    /// This master's last verdict (None while not master).
    verdict: Option<Verdict>,
}

impl Watchers {
    /// Maintenance mode as the replicated state says; alerted by the
    /// decider only (every node sees the change).
    pub fn maintenance(&mut self, alerter: &Alerter, on: bool, deciding: bool) {
        let before = self.maintenance.replace(on);
        if deciding && before.is_some_and(|before| before != on) {
            alerter.send(Event::maintenance(on));
        }
    }

    /// The decider's view of which members it heard from lately. A member
    /// is reported down only after it was seen up by this decider.
    pub fn reachability(
        &mut self,
        alerter: &Alerter,
        config: &Config,
        state: &ClusterState,
        reachable: BTreeMap<u64, bool>,
    ) {
        for (id, up) in reachable {
            match self.reachable.insert(id, up) {
                Some(true) if !up => alerter.send(Event::node_down(
                    &name_of(config, state, id),
                    "the decider has not heard from it",
                )),
                Some(false) if up => alerter.send(Event::node_up(&name_of(config, state, id))),
                // Not seen up by this decider yet: no news either way (a
                // new leader has not heard from anyone at first).
                None if !up => {
                    self.reachable.remove(&id);
                    continue;
                }
                _ => continue,
            };
        }
    }

    /// This node is not deciding (any more): forget what it saw.
    pub fn not_deciding(&mut self) {
        self.reachable.clear();
    }

    /// The master's verdict; degraded or down once per change.
    pub fn verdict(&mut self, alerter: &Alerter, verdict: Verdict, detail: &str) {
        let before = self.verdict.replace(verdict);
        if before != Some(verdict) && matches!(verdict, Verdict::Degraded | Verdict::Down) {
            alerter.send(Event::check_degraded(
                &format!("{:?}: {detail}", verdict).to_lowercase(),
            ));
        }
    }

    /// This node is not master (any more).
    pub fn not_master(&mut self) {
        self.verdict = None;
    }
}
