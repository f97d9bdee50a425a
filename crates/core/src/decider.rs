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
use crate::state::{ClusterState, Command, NodeId};
use crate::Millis;

/// A mail node the decider may give the role to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub node: NodeId,
    pub priority: u32,
    /// The leader heard from it recently (always true for the leader itself).
    pub reachable: bool,
}

/// The leader's local view, on its own monotonic clock.
#[derive(Debug, Clone)]
pub struct DeciderView<'a> {
    pub now: Millis,
    /// When this node last saw the epoch or the renewal count change (on
    /// its own clock; at agent start, the start time).
    pub last_progress_seen: Millis,
    /// Mail nodes only; witnesses are never candidates.
    pub candidates: &'a [Candidate],
    pub timing: LeaseTiming,
    /// Wall-clock time for the history record only.
    pub now_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do (the role is held and renewed, or nobody can take it).
    Nothing,
    /// The role is held but not renewed; look again at this time.
    WaitUntil(Millis),
    /// Propose this command.
    Assign(Command),
}

/// Decides whether to assign the master role now.
pub fn decide(state: &ClusterState, view: &DeciderView<'_>) -> Decision {
    match state.assignment {
        Some(current) => {
            let reassign_at = view.timing.reassign_at(view.last_progress_seen);
            if view.now < reassign_at {
                return Decision::WaitUntil(reassign_at);
            }
            match best_candidate(state, view.candidates, Some(current.node)) {
                Some(node) => Decision::Assign(assign(
                    state,
                    node,
                    format!(
                        "master {} (epoch {}) stopped renewing its lease",
                        current.node, current.epoch
                    ),
                    view.now_unix_ms,
                )),
                None => Decision::Nothing,
            }
        }
        None => {
            let reason = match state.history.back() {
                None => "initial assignment".to_string(),
                Some(last) => format!("master {} released epoch {}", last.to, last.epoch),
            };
            match best_candidate(state, view.candidates, None) {
                Some(node) => Decision::Assign(assign(state, node, reason, view.now_unix_ms)),
                None => Decision::Nothing,
            }
        }
    }
}

fn assign(state: &ClusterState, node: NodeId, reason: String, now_unix_ms: u64) -> Command {
    Command::Assign {
        node,
        epoch: state.epoch + 1,
        expected_epoch: state.epoch,
        expected_renewals: state.renewals,
        reason,
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
}
