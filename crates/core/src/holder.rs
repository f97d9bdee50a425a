//! The holder: what a mail node does about its own master role.
//!
//! [`Holder::handle`] takes one event and the current time and returns the
//! actions the agent must carry out. It never touches the host; the agent
//! runs the pipelines and reports back with events.
//!
//! The rules that keep the one-holder invariant:
//! - A node starts promoting only after a renewal for its epoch, started at
//!   `t`, was confirmed applied; it then holds the role until `t + lease`
//!   (the start of the last confirmed renewal plus the lease).
//! - While it holds anything (promoting, master or demoting) it keeps
//!   renewing; when `fence_budget` before the lease end arrives without a
//!   newer confirmation it fences itself urgently (kill, lazy unmount, drop
//!   the address) so that it holds nothing when the lease ends.
//! - A renewal rejected by the state machine, or an assignment that moved
//!   elsewhere, means the role is gone: fence at once.
//! - A release is proposed only after the demotion finished, so the decider's
//!   fast path (assign at once after a release) never overlaps.
//! - A node that gave up an epoch never takes the same epoch back; after an
//!   agent restart the epoch it may have held is given back, never resumed.

use serde::{Deserialize, Serialize};

use crate::checks::Verdict;
use crate::lease::LeaseTiming;
use crate::state::{Assignment, Epoch, NodeId, ReleaseReason};
use crate::Millis;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Holds nothing.
    Backup,
    /// Assigned `epoch`; the first renewal is in flight; holds nothing yet.
    Acquiring { epoch: Epoch },
    /// The promotion pipeline runs; may hold some resources.
    Promoting { epoch: Epoch },
    /// Holds the address, the volumes and the running stack.
    Master { epoch: Epoch },
    /// The demotion pipeline runs; may still hold resources.
    Demoting {
        epoch: Epoch,
        urgent: bool,
        then_release: Option<ReleaseReason>,
    },
}

impl Phase {
    /// The epoch of the role this node may hold resources for.
    pub fn holding_epoch(&self) -> Option<Epoch> {
        match self {
            Phase::Promoting { epoch }
            | Phase::Master { epoch }
            | Phase::Demoting { epoch, .. } => Some(*epoch),
            Phase::Backup | Phase::Acquiring { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Phase::Backup => "backup",
            Phase::Acquiring { .. } => "acquiring",
            Phase::Promoting { .. } => "promoting",
            Phase::Master { .. } => "master",
            Phase::Demoting { .. } => "demoting",
        }
    }
}

/// How a renewal proposal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalOutcome {
    /// Committed and applied: the lease runs from the renewal's start.
    Confirmed,
    /// Applied but rejected: this node does not hold the epoch any more.
    Rejected,
    /// Unknown (timeout, no leader, transport error). Not a confirmation.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderEvent {
    /// The replicated assignment as applied on this node.
    Applied {
        assignment: Option<Assignment>,
    },
    RenewalFinished {
        epoch: Epoch,
        started: Millis,
        outcome: RenewalOutcome,
    },
    PromotionFinished {
        epoch: Epoch,
        result: Result<(), String>,
    },
    DemotionFinished {
        epoch: Epoch,
    },
    /// The demotion ran but the host still holds something (a stack that
    /// would not die, a mount that would not go). The role is not released.
    DemotionIncomplete {
        epoch: Epoch,
        detail: String,
    },
    /// The replicated state asks the holder of `epoch` to hand over.
    SwitchoverRequested {
        epoch: Epoch,
        to: Option<NodeId>,
    },
    /// Maintenance mode as replicated: while on, a failing stack does not
    /// move the role (the operator is working on it).
    Maintenance {
        on: bool,
    },
    /// The stack's verdict changed (or was re-evaluated).
    Verdict {
        verdict: Verdict,
        detail: String,
    },
    Tick,
    /// The agent is shutting down cleanly.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderAction {
    /// Propose `Renew{me, epoch}`; report `RenewalFinished` with `started`.
    ProposeRenewal { epoch: Epoch, started: Millis },
    /// Run the promotion pipeline for `epoch`; report `PromotionFinished`.
    StartPromotion { epoch: Epoch },
    /// Run the demotion pipeline (abandoning a promotion still running);
    /// `urgent` means the lease is about to end: kill, do not wait.
    /// Report `DemotionFinished`.
    StartDemotion {
        epoch: Epoch,
        urgent: bool,
        reason: String,
    },
    /// Propose `Release{me, epoch, reason}` (after the demotion finished).
    ProposeRelease { epoch: Epoch, reason: ReleaseReason },
    /// The lease ended while this node still held resources: the invariant
    /// may be broken; raise the alarm.
    LeaseEndedWhileHolding { epoch: Epoch },
    /// A demotion left something held; it is retried urgently and the role
    /// is kept (renewed) rather than released meanwhile.
    DemotionIncomplete { epoch: Epoch, detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    me: NodeId,
    timing: LeaseTiming,
    grace_ms: u64,
    phase: Phase,
    /// End of the lease for the epoch being held, from the last confirmed
    /// renewal's start.
    lease_end: Option<Millis>,
    /// Start of the last renewal proposed, to pace renewals.
    last_renewal_started: Option<Millis>,
    /// When the node became master, for the grace period.
    master_since: Option<Millis>,
    /// Epochs up to this one were given up and are never taken again.
    given_up_epoch: Epoch,
    /// An epoch found assigned to us at startup, to be given back once the
    /// startup cleanup is done.
    release_on_startup: Option<Epoch>,
    lease_alarm_raised: bool,
    /// The assignment as last applied, re-examined when a demotion ends (an
    /// assignment that arrived meanwhile must not wait for the next change).
    last_assignment: Option<Assignment>,
    /// Set by `Shutdown`, never cleared: a leaving node takes no role.
    leaving: bool,
    /// Maintenance mode: Down verdicts are not acted on.
    maintenance: bool,
    /// When the current `Acquiring` began; a node that cannot get a
    /// renewal confirmed in time gives the epoch back instead of blocking it.
    acquiring_since: Option<Millis>,
}

/// How long a node may stay `Acquiring`, in leases, before it gives the
/// epoch back. Renewals confirmed too late to promote on still count as
/// progress for the decider, so without this limit a node whose renewals are
/// slow would keep the role unassigned forever.
const ACQUIRE_LIMIT_LEASES: u64 = 2;

impl Holder {
    /// A holder for a freshly started agent. It begins by demoting (a
    /// cleanup: whatever a previous run left on the host is released) and,
    /// if the stored state says this node was assigned, gives that epoch back.
    pub fn new(
        me: NodeId,
        timing: LeaseTiming,
        grace_ms: u64,
        stored_assignment: Option<Assignment>,
    ) -> (Holder, Vec<HolderAction>) {
        let release_on_startup = stored_assignment.filter(|a| a.node == me).map(|a| a.epoch);
        let holder = Holder {
            me,
            timing,
            grace_ms,
            phase: Phase::Demoting {
                epoch: 0,
                urgent: true,
                then_release: None,
            },
            lease_end: None,
            last_renewal_started: None,
            master_since: None,
            given_up_epoch: release_on_startup.unwrap_or(0),
            release_on_startup,
            lease_alarm_raised: false,
            last_assignment: stored_assignment,
            leaving: false,
            maintenance: false,
            acquiring_since: None,
        };
        // Urgent: a node that starts holds no lease, so whatever a previous
        // run left behind (a stack still running after an agent crash) must
        // go at once, not after a graceful stop that could outlast the lease
        // the previous run had.
        let actions = vec![HolderAction::StartDemotion {
            epoch: 0,
            urgent: true,
            reason: "agent start: release anything a previous run left behind".into(),
        }];
        (holder, actions)
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn lease_end(&self) -> Option<Millis> {
        self.lease_end
    }

    pub fn is_master(&self) -> bool {
        matches!(self.phase, Phase::Master { .. })
    }

    pub fn master_since(&self) -> Option<Millis> {
        self.master_since
    }

    pub fn handle(&mut self, now: Millis, event: HolderEvent) -> Vec<HolderAction> {
        let mut actions = Vec::new();
        match event {
            HolderEvent::Applied { assignment } => self.on_applied(now, assignment, &mut actions),
            HolderEvent::RenewalFinished {
                epoch,
                started,
                outcome,
            } => self.on_renewal(now, epoch, started, outcome, &mut actions),
            HolderEvent::PromotionFinished { epoch, result } => {
                if self.phase == (Phase::Promoting { epoch }) {
                    match result {
                        Ok(()) => {
                            self.phase = Phase::Master { epoch };
                            self.master_since = Some(now);
                        }
                        Err(detail) => self.demote(
                            epoch,
                            false,
                            Some(ReleaseReason::PromotionFailed {
                                detail: detail.clone(),
                            }),
                            format!("promotion failed: {detail}"),
                            &mut actions,
                        ),
                    }
                }
            }
            HolderEvent::DemotionFinished { epoch } => {
                if let Phase::Demoting {
                    epoch: demoting,
                    then_release,
                    ..
                } = &self.phase
                {
                    if *demoting == epoch {
                        let then_release = then_release.clone();
                        self.given_up_epoch = self.given_up_epoch.max(epoch);
                        self.phase = Phase::Backup;
                        self.lease_end = None;
                        self.master_since = None;
                        self.lease_alarm_raised = false;
                        if let Some(reason) = then_release {
                            actions.push(HolderAction::ProposeRelease { epoch, reason });
                        }
                        if let Some(stale) = self.release_on_startup.take() {
                            actions.push(HolderAction::ProposeRelease {
                                epoch: stale,
                                reason: ReleaseReason::Restarted,
                            });
                        }
                        self.on_applied(now, self.last_assignment, &mut actions);
                    }
                }
            }
            HolderEvent::DemotionIncomplete { epoch, detail } => {
                if let Phase::Demoting {
                    epoch: demoting,
                    then_release,
                    ..
                } = &self.phase
                {
                    if *demoting == epoch {
                        // Keep the role (and keep renewing it) until the
                        // host really holds nothing: releasing now would let
                        // the next master in while this one still holds.
                        self.phase = Phase::Demoting {
                            epoch,
                            urgent: true,
                            then_release: then_release.clone(),
                        };
                        actions.push(HolderAction::DemotionIncomplete {
                            epoch,
                            detail: detail.clone(),
                        });
                        actions.push(HolderAction::StartDemotion {
                            epoch,
                            urgent: true,
                            reason: format!("retrying an incomplete demotion: {detail}"),
                        });
                    }
                }
            }
            HolderEvent::SwitchoverRequested { epoch, to } => {
                // Only a finished master hands over; one still promoting
                // sees the request again once it is master.
                if self.phase == (Phase::Master { epoch }) {
                    self.demote(
                        epoch,
                        false,
                        Some(ReleaseReason::Switchover { to }),
                        "planned switchover".into(),
                        &mut actions,
                    );
                }
            }
            HolderEvent::Maintenance { on } => self.maintenance = on,
            HolderEvent::Verdict { verdict, detail } => {
                if self.maintenance {
                    return actions;
                }
                if let Phase::Master { epoch } = self.phase {
                    let in_grace = self
                        .master_since
                        .is_some_and(|since| now.since(since) < self.grace_ms);
                    if verdict == Verdict::Down && !in_grace {
                        self.demote(
                            epoch,
                            false,
                            Some(ReleaseReason::ServiceFailed {
                                detail: detail.clone(),
                            }),
                            format!("mail stack down: {detail}"),
                            &mut actions,
                        );
                    }
                }
            }
            HolderEvent::Tick => self.on_tick(now, &mut actions),
            HolderEvent::Shutdown => {
                self.leaving = true;
                match self.phase.clone() {
                    Phase::Promoting { epoch } | Phase::Master { epoch } => self.demote(
                        epoch,
                        false,
                        Some(ReleaseReason::Shutdown),
                        "agent shutting down".into(),
                        &mut actions,
                    ),
                    Phase::Acquiring { .. } => self.phase = Phase::Backup,
                    Phase::Backup | Phase::Demoting { .. } => {}
                }
            }
        }
        actions
    }

    fn on_applied(
        &mut self,
        now: Millis,
        assignment: Option<Assignment>,
        actions: &mut Vec<HolderAction>,
    ) {
        self.last_assignment = assignment;
        let ours = assignment.filter(|a| a.node == self.me).map(|a| a.epoch);
        match self.phase.clone() {
            Phase::Backup => {
                if self.leaving {
                    return;
                }
                if let Some(epoch) = ours.filter(|e| *e > self.given_up_epoch) {
                    self.phase = Phase::Acquiring { epoch };
                    self.acquiring_since = Some(now);
                    self.propose_renewal(now, epoch, actions);
                }
            }
            Phase::Acquiring { epoch } => {
                if ours != Some(epoch) {
                    self.phase = Phase::Backup;
                }
            }
            Phase::Promoting { epoch } | Phase::Master { epoch } => {
                if ours != Some(epoch) {
                    self.demote(
                        epoch,
                        true,
                        None,
                        format!("the role moved away from epoch {epoch}: {assignment:?}"),
                        actions,
                    );
                }
            }
            Phase::Demoting { epoch, urgent, .. } => {
                if ours != Some(epoch) && !urgent && epoch != 0 {
                    self.demote(
                        epoch,
                        true,
                        None,
                        format!("the role moved away from epoch {epoch}"),
                        actions,
                    );
                }
            }
        }
    }

    fn on_renewal(
        &mut self,
        now: Millis,
        epoch: Epoch,
        started: Millis,
        outcome: RenewalOutcome,
        actions: &mut Vec<HolderAction>,
    ) {
        let current = match &self.phase {
            Phase::Acquiring { epoch } => Some(*epoch),
            phase => phase.holding_epoch(),
        };
        if current != Some(epoch) {
            return;
        }
        match outcome {
            RenewalOutcome::Confirmed => {
                let end = self.timing.lease_end(started);
                self.lease_end = Some(self.lease_end.map_or(end, |e| e.max(end)));
                if self.phase == (Phase::Acquiring { epoch }) {
                    if now >= self.timing.fence_at(end) {
                        // Confirmed too late to be of use; try again.
                        return;
                    }
                    self.phase = Phase::Promoting { epoch };
                    actions.push(HolderAction::StartPromotion { epoch });
                }
            }
            RenewalOutcome::Rejected => match self.phase {
                Phase::Acquiring { .. } => {
                    self.phase = Phase::Backup;
                    self.given_up_epoch = self.given_up_epoch.max(epoch);
                }
                _ => self.demote(
                    epoch,
                    true,
                    None,
                    format!("renewal for epoch {epoch} rejected: the role is gone"),
                    actions,
                ),
            },
            RenewalOutcome::Failed => {}
        }
    }

    fn on_tick(&mut self, now: Millis, actions: &mut Vec<HolderAction>) {
        match self.phase.clone() {
            Phase::Backup => {}
            Phase::Acquiring { epoch } => {
                let limit = self.timing.lease_ms * ACQUIRE_LIMIT_LEASES;
                if self
                    .acquiring_since
                    .is_some_and(|since| now.since(since) >= limit)
                {
                    // Nothing is held yet, so the epoch can go back at once.
                    self.phase = Phase::Backup;
                    self.acquiring_since = None;
                    self.given_up_epoch = self.given_up_epoch.max(epoch);
                    actions.push(HolderAction::ProposeRelease {
                        epoch,
                        reason: ReleaseReason::NotConfirmed {
                            detail: format!("no renewal confirmed in time within {limit} ms"),
                        },
                    });
                } else {
                    self.propose_renewal_if_due(now, epoch, actions);
                }
            }
            Phase::Promoting { epoch }
            | Phase::Master { epoch }
            | Phase::Demoting { epoch, .. } => {
                if epoch == 0 {
                    return; // the startup cleanup holds no lease
                }
                let Some(lease_end) = self.lease_end else {
                    return;
                };
                let urgent_now = matches!(self.phase, Phase::Demoting { urgent: true, .. });
                if now >= lease_end {
                    if !self.lease_alarm_raised {
                        self.lease_alarm_raised = true;
                        actions.push(HolderAction::LeaseEndedWhileHolding { epoch });
                    }
                } else if now >= self.timing.fence_at(lease_end) && !urgent_now {
                    self.demote(
                        epoch,
                        true,
                        None,
                        format!(
                            "lease for epoch {epoch} could not be renewed; fencing {} ms before it ends",
                            lease_end.since(now)
                        ),
                        actions,
                    );
                    return;
                }
                self.propose_renewal_if_due(now, epoch, actions);
            }
        }
    }

    /// Renewals are paced by their start times only, not by answers: a lost
    /// renewal must not hold back the next one until its timeout, or one lost
    /// message could cost the lease.
    fn propose_renewal_if_due(
        &mut self,
        now: Millis,
        epoch: Epoch,
        actions: &mut Vec<HolderAction>,
    ) {
        let due = self
            .last_renewal_started
            .is_none_or(|last| now.since(last) >= self.timing.renew_interval_ms);
        if due {
            self.propose_renewal(now, epoch, actions);
        }
    }

    fn propose_renewal(&mut self, now: Millis, epoch: Epoch, actions: &mut Vec<HolderAction>) {
        self.last_renewal_started = Some(now);
        actions.push(HolderAction::ProposeRenewal {
            epoch,
            started: now,
        });
    }

    /// Enters (or escalates) demotion. A non-urgent demotion that already
    /// runs keeps its release reason when it is escalated.
    fn demote(
        &mut self,
        epoch: Epoch,
        urgent: bool,
        then_release: Option<ReleaseReason>,
        reason: String,
        actions: &mut Vec<HolderAction>,
    ) {
        let then_release = match &self.phase {
            Phase::Demoting {
                then_release: existing,
                ..
            } => existing.clone().or(then_release),
            _ => then_release,
        };
        // A release only makes sense while the role is still ours: after an
        // urgent fence the state machine would reject it anyway.
        let then_release = if urgent { None } else { then_release };
        self.phase = Phase::Demoting {
            epoch,
            urgent,
            then_release,
        };
        self.master_since = None;
        actions.push(HolderAction::StartDemotion {
            epoch,
            urgent,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = 1;

    fn timing() -> LeaseTiming {
        crate::lease::test_timing()
    }

    /// A holder past its startup cleanup, as a backup.
    fn backup() -> Holder {
        let (mut h, actions) = Holder::new(ME, timing(), 1_000, None);
        assert!(matches!(
            actions[..],
            [HolderAction::StartDemotion { epoch: 0, .. }]
        ));
        assert!(h
            .handle(Millis(0), HolderEvent::DemotionFinished { epoch: 0 })
            .is_empty());
        assert_eq!(h.phase(), &Phase::Backup);
        h
    }

    fn ours(epoch: Epoch) -> HolderEvent {
        HolderEvent::Applied {
            assignment: Some(Assignment { node: ME, epoch }),
        }
    }

    fn renewal(epoch: Epoch, started: u64, outcome: RenewalOutcome) -> HolderEvent {
        HolderEvent::RenewalFinished {
            epoch,
            started: Millis(started),
            outcome,
        }
    }

    fn confirmed(epoch: Epoch, started: u64) -> HolderEvent {
        renewal(epoch, started, RenewalOutcome::Confirmed)
    }

    /// Drives a backup to master of `epoch` with the first renewal at 0.
    fn master(epoch: Epoch) -> Holder {
        let mut h = backup();
        assert_eq!(
            h.handle(Millis(0), ours(epoch)),
            vec![HolderAction::ProposeRenewal {
                epoch,
                started: Millis(0)
            }]
        );
        assert_eq!(
            h.handle(Millis(5), confirmed(epoch, 0)),
            vec![HolderAction::StartPromotion { epoch }]
        );
        let done = HolderEvent::PromotionFinished {
            epoch,
            result: Ok(()),
        };
        assert!(h.handle(Millis(10), done).is_empty());
        assert!(h.is_master());
        h
    }

    #[test]
    fn promotes_only_after_a_confirmed_renewal() {
        let mut h = backup();
        h.handle(Millis(0), ours(3));
        assert_eq!(h.phase(), &Phase::Acquiring { epoch: 3 });
        // A failed renewal is retried on the next due tick, not promoted on.
        h.handle(Millis(50), renewal(3, 0, RenewalOutcome::Failed));
        assert!(h.handle(Millis(60), HolderEvent::Tick).is_empty());
        assert_eq!(
            h.handle(Millis(100), HolderEvent::Tick),
            vec![HolderAction::ProposeRenewal {
                epoch: 3,
                started: Millis(100)
            }]
        );
        assert_eq!(
            h.handle(Millis(120), confirmed(3, 100)),
            vec![HolderAction::StartPromotion { epoch: 3 }]
        );
        assert_eq!(h.lease_end(), Some(Millis(600)));
    }

    #[test]
    fn renewals_are_paced_by_start_time_not_by_answers() {
        let mut h = master(1);
        // The renewal started at 100 is never answered: the next one still
        // goes out at 200 (a lost message must not stall renewing).
        assert!(matches!(
            h.handle(Millis(100), HolderEvent::Tick)[..],
            [HolderAction::ProposeRenewal { .. }]
        ));
        assert!(h.handle(Millis(150), HolderEvent::Tick).is_empty());
        assert_eq!(
            h.handle(Millis(200), HolderEvent::Tick),
            vec![HolderAction::ProposeRenewal {
                epoch: 1,
                started: Millis(200)
            }]
        );
    }

    #[test]
    fn fences_itself_before_the_lease_ends_when_renewals_fail() {
        let mut h = master(1);
        // Renewals at 100, 200, ... all fail: the lease from 0 ends at 500,
        // fencing must start at 350.
        let mut fenced_at = None;
        for t in (20..600).step_by(10) {
            for action in h.handle(Millis(t), HolderEvent::Tick) {
                match action {
                    HolderAction::ProposeRenewal { epoch, started } => {
                        h.handle(Millis(t), renewal(epoch, started.0, RenewalOutcome::Failed));
                    }
                    HolderAction::StartDemotion { urgent, .. } => {
                        assert!(urgent);
                        fenced_at.get_or_insert(t);
                        h.handle(Millis(t + 20), HolderEvent::DemotionFinished { epoch: 1 });
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(fenced_at, Some(350));
        assert_eq!(h.phase(), &Phase::Backup);
        // The same epoch is never taken back.
        assert!(h.handle(Millis(700), ours(1)).is_empty());
    }

    #[test]
    fn a_demotion_outliving_the_lease_raises_the_alarm() {
        let mut h = master(1);
        let mut actions = Vec::new();
        for t in (20..=520).step_by(10) {
            actions.extend(h.handle(Millis(t), HolderEvent::Tick));
        }
        assert!(actions.contains(&HolderAction::LeaseEndedWhileHolding { epoch: 1 }));
    }

    #[test]
    fn confirmed_renewals_extend_the_lease_from_their_start() {
        let mut h = master(1);
        h.handle(Millis(100), HolderEvent::Tick);
        h.handle(Millis(180), confirmed(1, 100));
        assert_eq!(h.lease_end(), Some(Millis(600)));
        // An older confirmation arriving late never shortens it.
        h.handle(Millis(190), confirmed(1, 50));
        assert_eq!(h.lease_end(), Some(Millis(600)));
    }

    #[test]
    fn a_rejected_renewal_fences_at_once_without_release() {
        let mut h = master(2);
        h.handle(Millis(100), HolderEvent::Tick);
        let actions = h.handle(Millis(110), renewal(2, 100, RenewalOutcome::Rejected));
        assert!(matches!(
            actions[..],
            [HolderAction::StartDemotion {
                epoch: 2,
                urgent: true,
                ..
            }]
        ));
        assert!(h
            .handle(Millis(120), HolderEvent::DemotionFinished { epoch: 2 })
            .is_empty());
    }

    #[test]
    fn a_dead_stack_demotes_then_releases_after_grace() {
        let mut h = master(1);
        let down = HolderEvent::Verdict {
            verdict: Verdict::Down,
            detail: "smtp: connection refused".into(),
        };
        // Within the grace period (1 s after becoming master at 10) nothing happens.
        assert!(h.handle(Millis(500), down.clone()).is_empty());
        let actions = h.handle(Millis(1_010), down);
        assert!(matches!(
            actions[..],
            [HolderAction::StartDemotion {
                epoch: 1,
                urgent: false,
                ..
            }]
        ));
        let actions = h.handle(Millis(1_100), HolderEvent::DemotionFinished { epoch: 1 });
        assert!(matches!(
            &actions[..],
            [HolderAction::ProposeRelease {
                epoch: 1,
                reason: ReleaseReason::ServiceFailed { .. }
            }]
        ));
    }

    #[test]
    fn keeps_renewing_while_demoting_gracefully() {
        let mut h = master(1);
        h.handle(Millis(20), HolderEvent::Shutdown);
        assert!(matches!(h.phase(), Phase::Demoting { urgent: false, .. }));
        let actions = h.handle(Millis(100), HolderEvent::Tick);
        assert_eq!(
            actions,
            vec![HolderAction::ProposeRenewal {
                epoch: 1,
                started: Millis(100)
            }]
        );
    }

    #[test]
    fn failed_promotion_rolls_back_and_releases() {
        let mut h = backup();
        h.handle(Millis(0), ours(4));
        h.handle(Millis(5), confirmed(4, 0));
        let failed = HolderEvent::PromotionFinished {
            epoch: 4,
            result: Err("mount: no such device".into()),
        };
        assert!(matches!(
            h.handle(Millis(50), failed)[..],
            [HolderAction::StartDemotion {
                epoch: 4,
                urgent: false,
                ..
            }]
        ));
        let actions = h.handle(Millis(60), HolderEvent::DemotionFinished { epoch: 4 });
        assert!(matches!(
            &actions[..],
            [HolderAction::ProposeRelease {
                epoch: 4,
                reason: ReleaseReason::PromotionFailed { .. }
            }]
        ));
    }

    #[test]
    fn assignment_moving_away_fences_the_master() {
        let mut h = master(1);
        let moved = HolderEvent::Applied {
            assignment: Some(Assignment { node: 2, epoch: 2 }),
        };
        assert!(matches!(
            h.handle(Millis(30), moved)[..],
            [HolderAction::StartDemotion {
                epoch: 1,
                urgent: true,
                ..
            }]
        ));
    }

    #[test]
    fn restarted_former_master_gives_its_epoch_back() {
        let stored = Some(Assignment { node: ME, epoch: 7 });
        let (mut h, _) = Holder::new(ME, timing(), 0, stored);
        assert!(h.handle(Millis(0), ours(7)).is_empty(), "still cleaning up");
        let actions = h.handle(Millis(10), HolderEvent::DemotionFinished { epoch: 0 });
        assert_eq!(
            actions,
            vec![HolderAction::ProposeRelease {
                epoch: 7,
                reason: ReleaseReason::Restarted
            }]
        );
        assert!(
            h.handle(Millis(20), ours(7)).is_empty(),
            "never resumes epoch 7"
        );
        // A fresh assignment by the decider is taken normally.
        assert!(matches!(
            h.handle(Millis(30), ours(8))[..],
            [HolderAction::ProposeRenewal { epoch: 8, .. }]
        ));
    }

    #[test]
    fn an_assignment_that_arrives_during_cleanup_is_taken_after_it() {
        let (mut h, _) = Holder::new(ME, timing(), 0, None);
        assert!(h.handle(Millis(0), ours(2)).is_empty());
        assert_eq!(
            h.handle(Millis(40), HolderEvent::DemotionFinished { epoch: 0 }),
            vec![HolderAction::ProposeRenewal {
                epoch: 2,
                started: Millis(40)
            }]
        );
    }

    #[test]
    fn a_late_confirmation_does_not_start_a_promotion() {
        let mut h = backup();
        h.handle(Millis(0), ours(1));
        // Confirmed at 400 for a renewal started at 0: fence time (350) has passed.
        assert!(h.handle(Millis(400), confirmed(1, 0)).is_empty());
        assert_eq!(h.phase(), &Phase::Acquiring { epoch: 1 });
    }

    #[test]
    fn a_leaving_node_takes_no_new_role() {
        let mut h = backup();
        h.handle(Millis(0), HolderEvent::Shutdown);
        assert!(
            h.handle(Millis(10), ours(3)).is_empty(),
            "shutting down: no acquisition"
        );
        assert_eq!(h.phase(), &Phase::Backup);
    }

    #[test]
    fn a_node_that_cannot_confirm_a_lease_gives_the_epoch_back() {
        let mut h = backup();
        h.handle(Millis(0), ours(5));
        // Every confirmation arrives too late to promote on.
        let mut released = None;
        for t in (10..=1_100).step_by(10) {
            for action in h.handle(Millis(t), HolderEvent::Tick) {
                match action {
                    HolderAction::ProposeRenewal { epoch, started } => {
                        h.handle(Millis(t + 400), confirmed(epoch, started.0));
                    }
                    HolderAction::ProposeRelease { epoch, reason } => {
                        assert!(matches!(reason, ReleaseReason::NotConfirmed { .. }));
                        released.get_or_insert((t, epoch));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(released, Some((1_000, 5)), "gives up after two leases");
        assert_eq!(h.phase(), &Phase::Backup);
        assert!(
            h.handle(Millis(1_200), ours(5)).is_empty(),
            "and never takes it again"
        );
    }

    #[test]
    fn an_incomplete_demotion_keeps_the_role_and_retries_urgently() {
        let mut h = master(1);
        h.handle(Millis(1_990), confirmed(1, 1_990));
        let down = HolderEvent::Verdict {
            verdict: Verdict::Down,
            detail: "imap down".into(),
        };
        h.handle(Millis(2_000), down);
        let actions = h.handle(
            Millis(2_100),
            HolderEvent::DemotionIncomplete {
                epoch: 1,
                detail: "stack still running".into(),
            },
        );
        assert!(matches!(
            &actions[..],
            [
                HolderAction::DemotionIncomplete { epoch: 1, .. },
                HolderAction::StartDemotion {
                    epoch: 1,
                    urgent: true,
                    ..
                }
            ]
        ));
        // Still renewing: the role is kept while something is held.
        assert!(matches!(
            h.handle(Millis(2_200), HolderEvent::Tick)[..],
            [HolderAction::ProposeRenewal { epoch: 1, .. }]
        ));
        // Once clean, the release for the stack failure still goes out.
        let actions = h.handle(Millis(2_300), HolderEvent::DemotionFinished { epoch: 1 });
        assert!(matches!(
            &actions[..],
            [HolderAction::ProposeRelease {
                epoch: 1,
                reason: ReleaseReason::ServiceFailed { .. }
            }]
        ));
    }

    #[test]
    fn startup_cleanup_is_urgent() {
        let (_, actions) = Holder::new(ME, timing(), 0, None);
        assert!(matches!(
            actions[..],
            [HolderAction::StartDemotion {
                epoch: 0,
                urgent: true,
                ..
            }]
        ));
    }

    #[test]
    fn a_switchover_request_demotes_gracefully_then_releases_for_the_target() {
        let mut h = master(1);
        let request = HolderEvent::SwitchoverRequested {
            epoch: 1,
            to: Some(3),
        };
        assert!(matches!(
            h.handle(Millis(20), request)[..],
            [HolderAction::StartDemotion {
                epoch: 1,
                urgent: false,
                ..
            }]
        ));
        let actions = h.handle(Millis(40), HolderEvent::DemotionFinished { epoch: 1 });
        assert_eq!(
            actions,
            vec![HolderAction::ProposeRelease {
                epoch: 1,
                reason: ReleaseReason::Switchover { to: Some(3) }
            }]
        );
    }

    #[test]
    fn a_switchover_request_for_another_epoch_is_ignored() {
        let mut h = master(2);
        let stale = HolderEvent::SwitchoverRequested { epoch: 1, to: None };
        assert!(h.handle(Millis(20), stale).is_empty());
        assert!(h.is_master());
    }

    #[test]
    fn in_maintenance_a_failing_stack_keeps_the_role() {
        let mut h = master(1);
        h.handle(Millis(20), HolderEvent::Maintenance { on: true });
        let down = HolderEvent::Verdict {
            verdict: Verdict::Down,
            detail: "postfix stopped by the operator".into(),
        };
        assert!(h.handle(Millis(5_000), down.clone()).is_empty());
        assert!(h.is_master());
        h.handle(Millis(5_010), HolderEvent::Maintenance { on: false });
        assert!(matches!(
            h.handle(Millis(5_020), down)[..],
            [HolderAction::StartDemotion { epoch: 1, .. }]
        ));
    }
}
