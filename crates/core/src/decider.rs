//! The decider: what the Raft leader does about the master role.
//!
//! [`decide`] looks at the replicated state and the leader's own view of time
//! and liveness and returns at most one `Assign` command. It never reassigns a
//! held role before `lease + drift_margin` has passed since the last change
//! of (epoch, renewal count) this node saw applied. Each `Assign` carries the
//! epoch and renewal count it was based on, and the state machine rejects it
//! if either moved, so a renewal that slipped in meanwhile always wins.
//!
//! Design §3 also waits a full lease from the moment a node became leader.
//! The compare-and-set makes that wait unnecessary: by Raft's leader
//! completeness a new leader's log holds every committed renewal, and an
//! `Assign` it appends lands after them; if it decided on a state that had
//! not applied one of them yet, the `Assign` is rejected, and once applied,
//! that renewal restarts the wait at the moment it was seen here — never
//! earlier than the renewal's start on the holder. Dropping the extra wait
//! saves up to a lease on every failover where the master was also the Raft
//! leader. `sim.rs` checks this across generated scenarios.

use serde::{Deserialize, Serialize};

use crate::lease::LeaseTiming;
use crate::state::{AssignmentKind, ClusterState, Command, NodeId, ReleaseReason};
use crate::Millis;

/// A mail node the decider may give the role to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub node: NodeId,
    pub priority: u32,
    /// The leader heard from it recently (always true for the leader itself).
    pub reachable: bool,
}

/// The circuit breaker's limit: at most `max_failovers` automatic failovers
/// within `window_ms` (design §4: 2 in an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerPolicy {
    pub max_failovers: usize,
    pub window_ms: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            max_failovers: 2,
            window_ms: 3_600_000,
        }
    }
}

/// The leader's local view, on its own monotonic clock.
#[derive(Debug, Clone)]
pub struct DeciderView<'a> {
    pub now: Millis,
    /// When the entry behind the last change of the epoch or the renewal
    /// count arrived here (on this node's clock; at agent start, the start
    /// time).
    pub last_progress_seen: Millis,
    /// Mail nodes only; witnesses are never candidates.
    pub candidates: &'a [Candidate],
    pub timing: LeaseTiming,
    /// Wall-clock time, for the breaker window and the history record.
    pub now_unix_ms: u64,
    pub breaker: BreakerPolicy,
    /// Hand the role to a reachable, ready node of higher priority than the
    /// master's (by a planned switchover). Off by default.
    pub preempt: bool,
}

/// Why the decider will not assign although the role is free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "blocked", rename_all = "snake_case")]
pub enum Blocked {
    /// Maintenance mode is on: no automatic failover.
    Maintenance,
    /// Too many automatic failovers in the window; `mailherd breaker reset`.
    BreakerOpen {
        failovers: usize,
        max_failovers: usize,
        window_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do (the role is held and renewed, or nobody can take it).
    Nothing,
    /// The role is held but not renewed; look again at this time.
    WaitUntil(Millis),
    /// Propose this `Assign`.
    Assign(Command),
    /// Propose this other command (a preemptive switchover request).
    Propose(Command),
    /// The role needs a new master but policy forbids an automatic one.
    Blocked(Blocked),
}

/// Decides whether to assign the master role now.
pub fn decide(state: &ClusterState, view: &DeciderView<'_>) -> Decision {
    match state.assignment {
        Some(current) => {
            let reassign_at = view.timing.reassign_at(view.last_progress_seen);
            if view.now < reassign_at {
                return match preemption(state, view, current.node, current.epoch) {
                    Some(command) => Decision::Propose(command),
                    None => Decision::WaitUntil(reassign_at),
                };
            }
            if let Some(blocked) = blocked(state, view, AssignmentKind::Failover) {
                return Decision::Blocked(blocked);
            }
            match best_candidate(state, view.candidates, Some(current.node)) {
                Some(node) => Decision::Assign(assign(
                    state,
                    node,
                    format!(
                        "master {} (epoch {}) stopped renewing its lease",
                        current.node, current.epoch
                    ),
                    AssignmentKind::Failover,
                    view.now_unix_ms,
                )),
                None => Decision::Nothing,
            }
        }
        None => {
            let (kind, preferred) = match &state.last_release {
                None => (AssignmentKind::Initial, None),
                Some(ReleaseReason::Switchover { to }) => (AssignmentKind::Switchover, *to),
                Some(ReleaseReason::Shutdown | ReleaseReason::NotConfirmed { .. }) => {
                    (AssignmentKind::Handover, None)
                }
                Some(
                    ReleaseReason::ServiceFailed { .. }
                    | ReleaseReason::PromotionFailed { .. }
                    | ReleaseReason::Restarted,
                ) => (AssignmentKind::Failover, None),
            };
            if let Some(blocked) = blocked(state, view, kind) {
                return Decision::Blocked(blocked);
            }
            let reason = match (&state.last_release, state.history.back()) {
                (Some(released), Some(last)) => {
                    format!(
                        "master {} released epoch {}: {}",
                        last.to,
                        last.epoch,
                        released.describe()
                    )
                }
                _ => "initial assignment".to_string(),
            };
            let eligible = |node: NodeId| {
                view.candidates
                    .iter()
                    .any(|c| c.node == node && c.reachable && state.is_ready(node))
            };
            let node = preferred
                .filter(|node| eligible(*node))
                .or_else(|| best_candidate(state, view.candidates, None));
            match node {
                Some(node) => Decision::Assign(assign(state, node, reason, kind, view.now_unix_ms)),
                None => Decision::Nothing,
            }
        }
    }
}

/// Maintenance blocks everything but a requested switchover; the breaker
/// blocks failovers only.
fn blocked(state: &ClusterState, view: &DeciderView<'_>, kind: AssignmentKind) -> Option<Blocked> {
    if state.maintenance.is_some() && kind != AssignmentKind::Switchover {
        return Some(Blocked::Maintenance);
    }
    if kind == AssignmentKind::Failover {
        let failovers =
            state.failovers_since(view.now_unix_ms.saturating_sub(view.breaker.window_ms));
        if failovers >= view.breaker.max_failovers {
            return Some(Blocked::BreakerOpen {
                failovers,
                max_failovers: view.breaker.max_failovers,
                window_ms: view.breaker.window_ms,
            });
        }
    }
    None
}

/// With preemption on: a switchover request to a reachable, ready node of
/// higher priority than the master, once the master's promotion completed
/// and nothing else is going on.
fn preemption(
    state: &ClusterState,
    view: &DeciderView<'_>,
    holder: NodeId,
    epoch: u64,
) -> Option<Command> {
    if !view.preempt || state.maintenance.is_some() || state.switchover.is_some() {
        return None;
    }
    let promoted = state
        .history
        .iter()
        .rev()
        .find(|r| r.epoch == epoch)
        .and_then(|r| r.outcome.as_ref())
        .is_some_and(|o| o.ok);
    if !promoted {
        return None;
    }
    let holder_priority = view.candidates.iter().find(|c| c.node == holder)?.priority;
    let best = best_candidate(state, view.candidates, Some(holder))?;
    let best_priority = view.candidates.iter().find(|c| c.node == best)?.priority;
    (best_priority > holder_priority).then_some(Command::RequestSwitchover {
        epoch,
        to: Some(best),
        at_unix_ms: view.now_unix_ms,
    })
}

fn assign(
    state: &ClusterState,
    node: NodeId,
    reason: String,
    kind: AssignmentKind,
    now_unix_ms: u64,
) -> Command {
    Command::Assign {
        node,
        epoch: state.epoch + 1,
        expected_epoch: state.epoch,
        expected_renewals: state.renewals,
        reason,
        kind,
        at_unix_ms: now_unix_ms,
    }
}

/// The reachable, ready candidate with the highest priority (lowest id on a
/// tie). `avoid` (a holder that stopped renewing) is only chosen when no one
/// else can be.
pub fn best_candidate(
    state: &ClusterState,
    candidates: &[Candidate],
    avoid: Option<NodeId>,
) -> Option<NodeId> {
    let mut eligible: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.reachable && state.is_ready(c.node))
        .collect();
    eligible.sort_by(|a, b| {
        let a_avoided = Some(a.node) == avoid;
        let b_avoided = Some(b.node) == avoid;
        a_avoided
            .cmp(&b_avoided)
            .then(b.priority.cmp(&a.priority))
            .then(a.node.cmp(&b.node))
    });
    eligible.first().map(|c| c.node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Assignment, NodeHealth};

    fn timing() -> LeaseTiming {
        crate::lease::test_timing()
    }

    fn c(node: NodeId, priority: u32, reachable: bool) -> Candidate {
        Candidate {
            node,
            priority,
            reachable,
        }
    }

    fn view(now: u64, progress: u64, candidates: &[Candidate]) -> DeciderView<'_> {
        DeciderView {
            now: Millis(now),
            last_progress_seen: Millis(progress),
            candidates,
            timing: timing(),
            now_unix_ms: 0,
            breaker: BreakerPolicy::default(),
            preempt: false,
        }
    }

    fn held(node: NodeId, epoch: u64) -> ClusterState {
        ClusterState {
            epoch,
            assignment: Some(Assignment { node, epoch }),
            ..ClusterState::default()
        }
    }

    fn assigned_to(command: Decision) -> Option<NodeId> {
        match command {
            Decision::Assign(Command::Assign { node, .. }) => Some(node),
            _ => None,
        }
    }

    #[test]
    fn a_fresh_cluster_assigns_at_once_to_the_highest_priority() {
        let state = ClusterState::default();
        let candidates = [c(1, 100, true), c(2, 150, true), c(3, 150, true)];
        assert_eq!(
            assigned_to(decide(&state, &view(0, 0, &candidates))),
            Some(2)
        );
    }

    #[test]
    fn a_held_role_is_not_reassigned_before_lease_plus_drift() {
        let state = held(1, 4);
        let candidates = [c(1, 100, false), c(2, 100, true)];
        // Last progress at 1000: the earliest reassignment is 1600.
        assert_eq!(
            decide(&state, &view(1_599, 1_000, &candidates)),
            Decision::WaitUntil(Millis(1_600))
        );
        assert_eq!(
            assigned_to(decide(&state, &view(1_600, 1_000, &candidates))),
            Some(2)
        );
    }

    #[test]
    fn progress_seen_recently_restarts_the_wait() {
        let state = held(1, 1);
        let candidates = [c(2, 100, true)];
        assert_eq!(
            decide(&state, &view(5_000, 4_900, &candidates)),
            Decision::WaitUntil(Millis(5_500))
        );
    }

    #[test]
    fn released_role_is_reassigned_at_once_skipping_faulty_nodes() {
        let mut state = ClusterState {
            epoch: 2,
            ..ClusterState::default()
        };
        state.health.insert(
            1,
            NodeHealth {
                ready: false,
                detail: "smtp down".into(),
            },
        );
        let candidates = [c(1, 200, true), c(2, 100, true), c(3, 100, true)];
        match decide(&state, &view(10, 10, &candidates)) {
            Decision::Assign(Command::Assign {
                node,
                epoch,
                expected_epoch,
                expected_renewals,
                ..
            }) => {
                assert_eq!(
                    (node, epoch, expected_epoch, expected_renewals),
                    (2, 3, 2, 0)
                );
            }
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    #[test]
    fn the_silent_holder_is_chosen_only_as_a_last_resort() {
        let state = held(1, 1);
        let only_holder = [c(1, 100, true)];
        assert_eq!(
            assigned_to(decide(&state, &view(10_000, 0, &only_holder))),
            Some(1)
        );
        let others = [c(1, 300, true), c(2, 100, true)];
        assert_eq!(
            assigned_to(decide(&state, &view(10_000, 0, &others))),
            Some(2)
        );
    }

    #[test]
    fn nobody_reachable_means_nothing() {
        let state = ClusterState::default();
        let candidates = [c(1, 100, false)];
        assert_eq!(decide(&state, &view(0, 0, &candidates)), Decision::Nothing);
    }

    fn failed_over(state: &mut ClusterState, to: NodeId, at_unix_ms: u64) {
        let command = Command::Assign {
            node: to,
            epoch: state.epoch + 1,
            expected_epoch: state.epoch,
            expected_renewals: state.renewals,
            reason: "test".into(),
            kind: AssignmentKind::Failover,
            at_unix_ms,
        };
        state.apply(&command).unwrap();
    }

    fn at(now_unix_ms: u64, candidates: &[Candidate]) -> DeciderView<'_> {
        DeciderView {
            now_unix_ms,
            ..view(10_000, 0, candidates)
        }
    }

    #[test]
    fn the_breaker_allows_two_failovers_an_hour_then_blocks() {
        let candidates = [c(1, 100, true), c(2, 100, true), c(3, 100, true)];
        let mut state = held(1, 1); // the initial assignment does not count
        let hour = 3_600_000;
        failed_over(&mut state, 2, hour);
        failed_over(&mut state, 3, hour + 1_000);
        // n3 stops renewing: a third failover within the hour is refused.
        assert_eq!(
            decide(&state, &at(hour + 2_000, &candidates)),
            Decision::Blocked(Blocked::BreakerOpen {
                failovers: 2,
                max_failovers: 2,
                window_ms: hour
            })
        );
        // An hour after the first failover, one has left the window.
        assert!(matches!(
            decide(&state, &at(2 * hour + 1, &candidates)),
            Decision::Assign(_)
        ));
        // Or an operator resets the breaker.
        state
            .apply(&Command::ResetBreaker {
                at_unix_ms: hour + 5_000,
            })
            .unwrap();
        assert!(matches!(
            decide(&state, &at(hour + 6_000, &candidates)),
            Decision::Assign(_)
        ));
    }

    #[test]
    fn maintenance_blocks_failover_but_not_a_requested_switchover() {
        let candidates = [c(1, 100, true), c(2, 100, true), c(3, 100, true)];
        let mut state = held(1, 1);
        state
            .apply(&Command::SetMaintenance {
                on: true,
                at_unix_ms: 5,
            })
            .unwrap();
        assert_eq!(
            decide(&state, &view(10_000, 0, &candidates)),
            Decision::Blocked(Blocked::Maintenance)
        );
        state
            .apply(&Command::RequestSwitchover {
                epoch: 1,
                to: Some(3),
                at_unix_ms: 6,
            })
            .unwrap();
        let release = Command::Release {
            node: 1,
            epoch: 1,
            reason: ReleaseReason::Switchover { to: Some(3) },
            at_unix_ms: 7,
        };
        state.apply(&release).unwrap();
        match decide(&state, &view(10_000, 0, &candidates)) {
            Decision::Assign(Command::Assign { node, kind, .. }) => {
                assert_eq!((node, kind), (3, AssignmentKind::Switchover));
            }
            other => panic!("expected the switchover target, got {other:?}"),
        }
    }

    #[test]
    fn switchovers_and_handovers_do_not_count_against_the_breaker() {
        let candidates = [c(1, 100, true), c(2, 100, true)];
        let mut state = held(1, 1);
        for (epoch, reason) in [
            (1, ReleaseReason::Switchover { to: None }),
            (2, ReleaseReason::Shutdown),
            (3, ReleaseReason::Switchover { to: None }),
        ] {
            let holder = state.assignment.unwrap().node;
            state
                .apply(&Command::Release {
                    node: holder,
                    epoch,
                    reason,
                    at_unix_ms: 0,
                })
                .unwrap();
            state.health.clear();
            let Decision::Assign(command) = decide(&state, &at(1_000, &candidates)) else {
                panic!("a planned handover must be assigned");
            };
            state.apply(&command).unwrap();
        }
        assert_eq!(state.failovers_since(0), 0);
    }

    #[test]
    fn preemption_asks_the_master_to_hand_over_to_a_higher_priority_node() {
        let candidates = [c(1, 100, true), c(2, 200, true)];
        let mut state = held(1, 1);
        state.history.push_back(crate::state::FailoverRecord {
            epoch: 1,
            from: None,
            to: 1,
            reason: "initial assignment".into(),
            kind: AssignmentKind::Initial,
            assigned_at_unix_ms: 0,
            outcome: Some(crate::state::PromotionOutcome {
                ok: true,
                total_ms: 10,
                steps: Vec::new(),
                error: None,
            }),
        });
        // Off by default.
        assert!(matches!(
            decide(&state, &view(100, 100, &candidates)),
            Decision::WaitUntil(_)
        ));
        let preempting = DeciderView {
            preempt: true,
            ..view(100, 100, &candidates)
        };
        assert_eq!(
            decide(&state, &preempting),
            Decision::Propose(Command::RequestSwitchover {
                epoch: 1,
                to: Some(2),
                at_unix_ms: 0
            })
        );
    }
}
