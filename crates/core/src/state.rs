//! The replicated cluster state and the commands that change it.
//!
//! This is the Raft state machine: [`ClusterState::apply`] is deterministic
//! and total (every command yields a [`CommandResult`], a rejected command
//! changes nothing). Wall-clock times inside commands are chosen by the
//! proposer and only ever displayed; no decision in `apply` reads a clock.
//!
//! The fencing rules live in `apply`, not in the proposers:
//! - `Assign` carries what the decider saw (`expected_epoch`,
//!   `expected_renewals`). If any renewal or assignment was applied after the
//!   decider looked, the assignment is rejected. That closes the window where
//!   a renewal is committed but not yet applied on the decider when it
//!   decides that the lease has expired.
//! - `Renew` and `Release` only apply for the current holder and epoch, so a
//!   stale master learns at once that it lost the role.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// A node's numeric id, the same as its Raft id.
pub type NodeId = u64;

/// A master assignment's number; strictly increasing over the cluster's life.
pub type Epoch = u64;

/// How many failover records the replicated state keeps.
pub const HISTORY_LIMIT: usize = 100;

/// Who may hold the master role, and under which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub node: NodeId,
    pub epoch: Epoch,
}

/// Why a master gave its role back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The mail stack failed its critical checks.
    ServiceFailed { detail: String },
    /// The promotion pipeline failed and was rolled back.
    PromotionFailed { detail: String },
    /// The agent shut down cleanly.
    Shutdown,
    /// The agent restarted and found itself assigned without holding anything.
    Restarted,
    /// An operator asked for a planned switchover (to `to`, or to the best
    /// candidate).
    Switchover { to: Option<NodeId> },
    /// Assigned, but no renewal was confirmed in time to promote; nothing
    /// was ever held. Not a fault of the node (usually a slow or loaded
    /// network), so it is not marked and not counted by the breaker.
    NotConfirmed { detail: String },
}

impl ReleaseReason {
    /// Whether the releasing node should be kept out of the next assignment
    /// until it reports itself ready again. A node shutting down is marked
    /// too, so that no decider picks it again in the moments before it
    /// exits; it reports itself ready when it starts again.
    pub fn marks_fault(&self) -> bool {
        matches!(
            self,
            ReleaseReason::ServiceFailed { .. }
                | ReleaseReason::PromotionFailed { .. }
                | ReleaseReason::Shutdown
        )
    }

    pub fn describe(&self) -> String {
        match self {
            ReleaseReason::ServiceFailed { detail } => format!("service failed: {detail}"),
            ReleaseReason::PromotionFailed { detail } => format!("promotion failed: {detail}"),
            ReleaseReason::Shutdown => "agent shut down".to_string(),
            ReleaseReason::Restarted => "agent restarted".to_string(),
            ReleaseReason::Switchover { to: Some(to) } => {
                format!("planned switchover to node {to}")
            }
            ReleaseReason::Switchover { to: None } => "planned switchover".to_string(),
            ReleaseReason::NotConfirmed { detail } => format!("lease not confirmed: {detail}"),
        }
    }
}

/// What a node says about its own readiness to hold the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// Eligible to be assigned the master role.
    pub ready: bool,
    /// Human-readable reason, shown in `status`.
    pub detail: String,
}

/// Why an assignment happened; only `Failover` counts against the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentKind {
    /// The first master of a cluster (or after every node was down).
    #[default]
    Initial,
    /// The master failed (its stack, its promotion, or it stopped renewing).
    Failover,
    /// An operator's planned switchover, or preemption by priority.
    Switchover,
    /// The previous holder gave the role back cleanly: it shut down, or it
    /// could not confirm a lease before holding anything.
    Handover,
}

/// A switchover asked for and not yet carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    /// The epoch whose holder is to hand over.
    pub epoch: Epoch,
    /// The node to hand over to; the best candidate if `None`.
    pub to: Option<NodeId>,
    pub requested_at_unix_ms: u64,
}

/// Maintenance mode: no automatic failover while it is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub since_unix_ms: u64,
}

/// One step of a promotion as recorded in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub ok: bool,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// How much of `duration_ms` the cloud API took (a Hetzner assign or
    /// detach-and-attach); absent for steps without a cloud API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_ms: Option<u64>,
}

/// How a promotion ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionOutcome {
    pub ok: bool,
    pub total_ms: u64,
    pub steps: Vec<StepRecord>,
    pub error: Option<String>,
}

/// One assignment of the master role and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    pub epoch: Epoch,
    pub from: Option<NodeId>,
    pub to: NodeId,
    /// Why the previous holder lost the role (or "initial").
    pub reason: String,
    #[serde(default)]
    pub kind: AssignmentKind,
    pub assigned_at_unix_ms: u64,
    pub outcome: Option<PromotionOutcome>,
}

/// A change to the cluster state, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// The decider gives the role to `node` for `epoch`, provided the state
    /// is still what the decider based its decision on.
    Assign {
        node: NodeId,
        epoch: Epoch,
        expected_epoch: Epoch,
        expected_renewals: u64,
        reason: String,
        kind: AssignmentKind,
        at_unix_ms: u64,
    },
    /// The holder confirms its lease for `epoch`.
    Renew { node: NodeId, epoch: Epoch },
    /// The holder has let go of everything and gives the role back.
    Release {
        node: NodeId,
        epoch: Epoch,
        reason: ReleaseReason,
        at_unix_ms: u64,
    },
    /// A node reports whether it is ready to be assigned the role.
    Health { node: NodeId, health: NodeHealth },
    /// The holder records how its promotion for `epoch` went.
    RecordPromotion {
        node: NodeId,
        epoch: Epoch,
        outcome: PromotionOutcome,
    },
    /// An operator (or the decider, for preemption) asks the holder of
    /// `epoch` to hand over.
    RequestSwitchover {
        epoch: Epoch,
        to: Option<NodeId>,
        at_unix_ms: u64,
    },
    /// Maintenance mode on or off.
    SetMaintenance { on: bool, at_unix_ms: u64 },
    /// Closes the circuit breaker: failovers before now no longer count.
    ResetBreaker { at_unix_ms: u64 },
    /// Adds (or updates) a member in the directory: a node added to the
    /// running cluster, whose name and addresses the others' configs lack.
    SetMember { member: MemberInfo },
    /// Takes a member out of the directory; refused while it holds the role.
    RemoveMember { node: NodeId },
    /// The garbage collector drops history entries assigned before
    /// `before_unix_ms`. `apply` never drops an entry inside
    /// `breaker_window_ms` of `at_unix_ms` (the breaker counts them) nor the
    /// newest entry, whatever the proposer computed.
    PruneHistory {
        before_unix_ms: u64,
        breaker_window_ms: u64,
        at_unix_ms: u64,
    },
}

/// A member as the replicated directory knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub name: String,
    /// May it hold the role (`false`: a witness, which only votes).
    pub mail: bool,
    pub priority: u32,
    pub peer: std::net::SocketAddr,
    pub api: std::net::SocketAddr,
}

impl Command {
    /// Whether applying it (successfully) is progress of the role that the
    /// decider's lease wait restarts from: an assignment or a renewal.
    pub fn moves_the_role(&self) -> bool {
        matches!(self, Command::Assign { .. } | Command::Renew { .. })
    }
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rejection {
    #[error("state moved on since the decider looked (epoch {epoch}, renewals {renewals})")]
    StateMoved { epoch: Epoch, renewals: u64 },
    #[error("epoch {proposed} is not the next epoch after {current}")]
    EpochNotNext { proposed: Epoch, current: Epoch },
    #[error("node {node} does not hold epoch {epoch} (holder: {holder:?})")]
    NotHolder {
        node: NodeId,
        epoch: Epoch,
        holder: Option<Assignment>,
    },
    #[error("no failover record for epoch {epoch}")]
    UnknownEpoch { epoch: Epoch },
    #[error("node {node} already holds the role")]
    SwitchoverToHolder { node: NodeId },
    #[error("node {node} holds the master role (epoch {epoch}): switch over first")]
    RemoveHolder { node: NodeId, epoch: Epoch },
}

/// What applying a command did.
pub type CommandResult = Result<(), Rejection>;

/// The state every voter replicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The highest epoch ever assigned.
    pub epoch: Epoch,
    /// Who may hold the role now; `None` after a release or before the first
    /// assignment.
    pub assignment: Option<Assignment>,
    /// How many renewals were accepted, over the cluster's life. The decider
    /// compares it to detect progress it has not yet accounted for.
    pub renewals: u64,
    /// Readiness as reported by each node.
    pub health: BTreeMap<NodeId, NodeHealth>,
    /// The most recent assignments, oldest first, at most [`HISTORY_LIMIT`].
    pub history: VecDeque<FailoverRecord>,
    /// Why the last holder let go, until the next assignment.
    #[serde(default)]
    pub last_release: Option<ReleaseReason>,
    #[serde(default)]
    pub switchover: Option<SwitchoverRequest>,
    #[serde(default)]
    pub maintenance: Option<Maintenance>,
    /// Failovers assigned before this wall-clock time do not count against
    /// the circuit breaker.
    #[serde(default)]
    pub breaker_reset_at_unix_ms: u64,
    /// Members added to the running cluster (`SetMember`); the configs'
    /// `[[members]]` describe the rest.
    #[serde(default)]
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// Members taken out (`RemoveMember`), which configs may still list.
    #[serde(default)]
    pub removed_members: std::collections::BTreeSet<NodeId>,
}

impl ClusterState {
    /// Applies one command. Deterministic: the same state and command give
    /// the same result on every node.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::Assign {
                node,
                epoch,
                expected_epoch,
                expected_renewals,
                reason,
                kind,
                at_unix_ms,
            } => {
                if *expected_epoch != self.epoch || *expected_renewals != self.renewals {
                    return Err(Rejection::StateMoved {
                        epoch: self.epoch,
                        renewals: self.renewals,
                    });
                }
                if *epoch != self.epoch + 1 {
                    return Err(Rejection::EpochNotNext {
                        proposed: *epoch,
                        current: self.epoch,
                    });
                }
                let from = self
                    .assignment
                    .map(|a| a.node)
                    .or_else(|| self.history.back().map(|record| record.to));
                self.epoch = *epoch;
                self.assignment = Some(Assignment {
                    node: *node,
                    epoch: *epoch,
                });
                self.push_history(FailoverRecord {
                    epoch: *epoch,
                    from,
                    to: *node,
                    reason: reason.clone(),
                    kind: *kind,
                    assigned_at_unix_ms: *at_unix_ms,
                    outcome: None,
                });
                self.last_release = None;
                self.switchover = None;
                Ok(())
            }
            Command::Renew { node, epoch } => {
                self.check_holder(*node, *epoch)?;
                self.renewals += 1;
                Ok(())
            }
            Command::Release {
                node,
                epoch,
                reason,
                at_unix_ms: _,
            } => {
                self.check_holder(*node, *epoch)?;
                self.assignment = None;
                self.last_release = Some(reason.clone());
                if reason.marks_fault() {
                    self.health.insert(
                        *node,
                        NodeHealth {
                            ready: false,
                            detail: reason.describe(),
                        },
                    );
                }
                if let Some(record) = self.history.iter_mut().rev().find(|r| r.epoch == *epoch) {
                    if record.outcome.is_none() {
                        // A release before any recorded outcome means the
                        // promotion never completed.
                        record.outcome = Some(PromotionOutcome {
                            ok: false,
                            total_ms: 0,
                            steps: Vec::new(),
                            error: Some(reason.describe()),
                        });
                    }
                }
                Ok(())
            }
            Command::Health { node, health } => {
                self.health.insert(*node, health.clone());
                Ok(())
            }
            Command::RecordPromotion {
                node: _,
                epoch,
                outcome,
            } => {
                let record = self
                    .history
                    .iter_mut()
                    .rev()
                    .find(|r| r.epoch == *epoch)
                    .ok_or(Rejection::UnknownEpoch { epoch: *epoch })?;
                record.outcome = Some(outcome.clone());
                Ok(())
            }
            Command::RequestSwitchover {
                epoch,
                to,
                at_unix_ms,
            } => {
                let holder = match self.assignment {
                    Some(a) if a.epoch == *epoch => a,
                    holder => {
                        return Err(Rejection::NotHolder {
                            node: to.unwrap_or(0),
                            epoch: *epoch,
                            holder,
                        })
                    }
                };
                if *to == Some(holder.node) {
                    return Err(Rejection::SwitchoverToHolder { node: holder.node });
                }
                self.switchover = Some(SwitchoverRequest {
                    epoch: *epoch,
                    to: *to,
                    requested_at_unix_ms: *at_unix_ms,
                });
                Ok(())
            }
            Command::SetMaintenance { on, at_unix_ms } => {
                self.maintenance = on.then(|| Maintenance {
                    since_unix_ms: self
                        .maintenance
                        .as_ref()
                        .map_or(*at_unix_ms, |m| m.since_unix_ms),
                });
                Ok(())
            }
            Command::ResetBreaker { at_unix_ms } => {
                self.breaker_reset_at_unix_ms = self.breaker_reset_at_unix_ms.max(*at_unix_ms);
                Ok(())
            }
            Command::SetMember { member } => {
                self.removed_members.remove(&member.id);
                self.members.insert(member.id, member.clone());
                Ok(())
            }
            Command::RemoveMember { node } => {
                if let Some(assignment) = self.assignment.filter(|a| a.node == *node) {
                    return Err(Rejection::RemoveHolder {
                        node: *node,
                        epoch: assignment.epoch,
                    });
                }
                self.members.remove(node);
                self.removed_members.insert(*node);
                self.health.remove(node);
                Ok(())
            }
            Command::PruneHistory {
                before_unix_ms,
                breaker_window_ms,
                at_unix_ms,
            } => {
                let keep_since =
                    (*before_unix_ms).min(at_unix_ms.saturating_sub(*breaker_window_ms));
                let prune = crate::reconcile::prunable_history(&self.history, keep_since);
                self.history.retain(|r| !prune.contains(&r.epoch));
                Ok(())
            }
        }
    }

    /// Failovers (not switchovers, handovers or the initial assignment)
    /// assigned at or after `since_unix_ms` and after the last breaker reset.
    pub fn failovers_since(&self, since_unix_ms: u64) -> usize {
        let since = since_unix_ms.max(self.breaker_reset_at_unix_ms);
        self.history
            .iter()
            .filter(|r| r.kind == AssignmentKind::Failover && r.assigned_at_unix_ms >= since)
            .count()
    }

    fn check_holder(&self, node: NodeId, epoch: Epoch) -> Result<(), Rejection> {
        match self.assignment {
            Some(a) if a.node == node && a.epoch == epoch => Ok(()),
            holder => Err(Rejection::NotHolder {
                node,
                epoch,
                holder,
            }),
        }
    }

    fn push_history(&mut self, record: FailoverRecord) {
        self.history.push_back(record);
        while self.history.len() > HISTORY_LIMIT {
            self.history.pop_front();
        }
    }

    /// Whether `node` has said it is ready (nodes that never reported are
    /// ready: a fresh cluster must be able to elect).
    pub fn is_ready(&self, node: NodeId) -> bool {
        self.health.get(&node).map(|h| h.ready).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(
        node: NodeId,
        epoch: Epoch,
        expected_epoch: Epoch,
        expected_renewals: u64,
    ) -> Command {
        Command::Assign {
            node,
            epoch,
            expected_epoch,
            expected_renewals,
            reason: "test".into(),
            kind: AssignmentKind::Failover,
            at_unix_ms: 0,
        }
    }

    #[test]
    fn first_assignment_needs_epoch_one() {
        let mut state = ClusterState::default();
        assert_eq!(
            state.apply(&assign(1, 2, 0, 0)),
            Err(Rejection::EpochNotNext {
                proposed: 2,
                current: 0
            })
        );
        assert_eq!(state.apply(&assign(1, 1, 0, 0)), Ok(()));
        assert_eq!(state.assignment, Some(Assignment { node: 1, epoch: 1 }));
        assert_eq!(state.history.len(), 1);
    }

    #[test]
    fn renewal_after_decider_looked_rejects_the_assignment() {
        let mut state = ClusterState::default();
        state.apply(&assign(1, 1, 0, 0)).unwrap();
        // The decider looked at renewals = 0 ...
        state.apply(&Command::Renew { node: 1, epoch: 1 }).unwrap();
        // ... but a renewal got in first: the reassignment must not apply.
        assert_eq!(
            state.apply(&assign(2, 2, 1, 0)),
            Err(Rejection::StateMoved {
                epoch: 1,
                renewals: 1
            })
        );
        assert_eq!(state.assignment, Some(Assignment { node: 1, epoch: 1 }));
    }

    #[test]
    fn stale_holder_cannot_renew_or_release() {
        let mut state = ClusterState::default();
        state.apply(&assign(1, 1, 0, 0)).unwrap();
        state.apply(&assign(2, 2, 1, 0)).unwrap();
        assert!(matches!(
            state.apply(&Command::Renew { node: 1, epoch: 1 }),
            Err(Rejection::NotHolder { .. })
        ));
        let release = Command::Release {
            node: 1,
            epoch: 1,
            reason: ReleaseReason::Shutdown,
            at_unix_ms: 0,
        };
        assert!(state.apply(&release).is_err());
        assert_eq!(state.assignment, Some(Assignment { node: 2, epoch: 2 }));
    }

    #[test]
    fn release_for_service_failure_marks_the_node_not_ready() {
        let mut state = ClusterState::default();
        state.apply(&assign(1, 1, 0, 0)).unwrap();
        state
            .apply(&Command::Release {
                node: 1,
                epoch: 1,
                reason: ReleaseReason::ServiceFailed {
                    detail: "smtp down".into(),
                },
                at_unix_ms: 5,
            })
            .unwrap();
        assert_eq!(state.assignment, None);
        assert!(!state.is_ready(1));
        assert!(state.is_ready(2));
        assert_eq!(state.history[0].outcome.as_ref().map(|o| o.ok), Some(false));
    }

    #[test]
    fn history_is_capped() {
        let mut state = ClusterState::default();
        for epoch in 1..=(HISTORY_LIMIT as u64 + 10) {
            state
                .apply(&assign(epoch % 3, epoch, epoch - 1, 0))
                .unwrap();
        }
        assert_eq!(state.history.len(), HISTORY_LIMIT);
        assert_eq!(state.history.front().unwrap().epoch, 11);
    }

    /// Assignments at the given wall-clock times, epochs 1, 2, ...
    fn history_at(times: &[u64]) -> ClusterState {
        let mut state = ClusterState::default();
        for (i, at) in times.iter().enumerate() {
            let epoch = i as u64 + 1;
            let mut command = assign(1, epoch, epoch - 1, 0);
            if let Command::Assign { at_unix_ms, .. } = &mut command {
                *at_unix_ms = *at;
            }
            state.apply(&command).unwrap();
        }
        state
    }

    fn epochs(state: &ClusterState) -> Vec<Epoch> {
        state.history.iter().map(|r| r.epoch).collect()
    }

    #[test]
    fn pruning_history_spares_the_breaker_window_and_the_newest_entry() {
        let hour = 3_600_000;
        let mut state = history_at(&[hour, 2 * hour, 10 * hour, 11 * hour]);
        // A proposer that asks for everything before 12 h to go, with a
        // 3 h breaker window: 10 h and 11 h are inside the window and stay.
        let prune = Command::PruneHistory {
            before_unix_ms: 12 * hour,
            breaker_window_ms: 3 * hour,
            at_unix_ms: 12 * hour,
        };
        assert_eq!(state.apply(&prune), Ok(()));
        assert_eq!(epochs(&state), vec![3, 4]);
        assert_eq!(state.failovers_since(9 * hour), 2);
        // Everything is old: the newest entry stays all the same.
        let mut state = history_at(&[hour, 2 * hour]);
        let prune = Command::PruneHistory {
            before_unix_ms: 100 * hour,
            breaker_window_ms: hour,
            at_unix_ms: 100 * hour,
        };
        assert_eq!(state.apply(&prune), Ok(()));
        assert_eq!(epochs(&state), vec![2]);
    }

    #[test]
    fn commands_round_trip_through_json() {
        let command = Command::Release {
            node: 3,
            epoch: 9,
            reason: ReleaseReason::ServiceFailed {
                detail: "imap".into(),
            },
            at_unix_ms: 42,
        };
        let text = serde_json::to_string(&command).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), command);
    }

    #[test]
    fn members_join_and_leave_the_directory_but_the_holder_stays() {
        let mut state = ClusterState::default();
        let member = MemberInfo {
            id: 4,
            name: "n4".into(),
            mail: true,
            priority: 100,
            peer: "10.0.0.4:7400".parse().unwrap(),
            api: "10.0.0.4:7401".parse().unwrap(),
        };
        assert_eq!(
            state.apply(&Command::SetMember {
                member: member.clone()
            }),
            Ok(())
        );
        assert_eq!(state.members.get(&4), Some(&member));
        assert_eq!(state.apply(&assign(4, 1, 0, 0)), Ok(()));
        assert_eq!(
            state.apply(&Command::RemoveMember { node: 4 }),
            Err(Rejection::RemoveHolder { node: 4, epoch: 1 })
        );
        assert!(
            state.members.contains_key(&4),
            "a refused removal changes nothing"
        );
        assert_eq!(state.apply(&Command::RemoveMember { node: 2 }), Ok(()));
        assert!(state.removed_members.contains(&2));
        // Added again later: no longer removed.
        let again = MemberInfo {
            id: 2,
            name: "n2".into(),
            ..member
        };
        assert_eq!(state.apply(&Command::SetMember { member: again }), Ok(()));
        assert!(!state.removed_members.contains(&2));
    }
}
