//! The reconciler's and the garbage collector's decisions (design
//! invariant 4: reconcile, don't assume), pure.
//!
//! The agent reads what the host really holds through its drivers
//! ([`Holdings`]) and asks [`reconcile`] what to do about it given the
//! holder's phase; the garbage collector asks [`collect_garbage`]. Neither
//! function touches the host or reads a clock, so every rule is a table
//! test.
//!
//! The rules, and why they cannot fight the pipelines:
//! - While a promotion or demotion pipeline runs, or the holder is
//!   acquiring, promoting or demoting, the reconciler does nothing: the
//!   pipeline owns the host then, and half-done holdings are its business.
//! - A node that must hold nothing (a backup, a node marked fault, a
//!   witness) and holds something releases it and raises the split-brain
//!   alarm: another node may hold the same resources under a valid lease.
//! - A master in phase master whose lease is still good (before the fence
//!   point) and that lacks its address or a volume acquires them again,
//!   through the same steps and the same epoch fence as a promotion. A
//!   stopped stack is not restarted: that is the monitor's verdict to act on
//!   (a failing stack moves the role, design §4).
//! - A reading that failed is reported, never acted on as if it said
//!   "absent": repairing or releasing on a guess is worse than waiting for
//!   the next round.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::holder::Phase;
use crate::pipeline::{Plan, Step};
use crate::state::{Epoch, FailoverRecord};
use crate::Millis;

/// What the host holds, as read from the drivers; a reading that failed
/// carries the driver's error as text. `None`: this node has no such
/// resource configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    pub address: Option<Result<bool, String>>,
    pub volumes: BTreeMap<String, Result<bool, String>>,
    pub services: Option<Result<bool, String>>,
    /// Whether the node's MariaDB is writable (read_only OFF; `[mariadb]`).
    #[serde(default)]
    pub database: Option<Result<bool, String>>,
}

impl Holdings {
    /// Whether anything is certainly held.
    pub fn holds_anything(&self) -> bool {
        !self.held().is_empty()
    }

    /// Every resource certainly held.
    pub fn held(&self) -> Vec<Resource> {
        self.matching(true)
    }

    /// Every configured resource certainly not held.
    pub fn missing(&self) -> Vec<Resource> {
        self.matching(false)
    }

    /// Every reading that failed, with its error.
    pub fn unreadable(&self) -> Vec<(Resource, String)> {
        self.readings()
            .filter_map(|(resource, reading)| match reading {
                Err(error) => Some((resource, error.clone())),
                Ok(_) => None,
            })
            .collect()
    }

    fn matching(&self, held: bool) -> Vec<Resource> {
        self.readings()
            .filter(|(_, reading)| **reading == Ok(held))
            .map(|(resource, _)| resource)
            .collect()
    }

    fn readings(&self) -> impl Iterator<Item = (Resource, &Result<bool, String>)> + '_ {
        self.address
            .iter()
            .map(|r| (Resource::Address, r))
            .chain(
                self.volumes
                    .iter()
                    .map(|(name, r)| (Resource::Volume(name.clone()), r)),
            )
            .chain(self.services.iter().map(|r| (Resource::Services, r)))
            .chain(self.database.iter().map(|r| (Resource::Database, r)))
    }
}

/// One thing a node can hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "resource", content = "name", rename_all = "snake_case")]
pub enum Resource {
    /// The floating IP.
    Address,
    /// A shared volume, mounted.
    Volume(String),
    /// The mail stack, running.
    Services,
    /// The node's MariaDB, writable.
    Database,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Address => f.write_str("floating address"),
            Resource::Volume(name) => write!(f, "volume {name} (mounted)"),
            Resource::Services => f.write_str("mail stack (running)"),
            Resource::Database => f.write_str("database (writable)"),
        }
    }
}

/// Names a list of resources for a log line or an alert.
pub fn describe(resources: &[Resource]) -> String {
    resources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the reconciler knows about this node when it decides.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileView<'a> {
    /// The holder's phase; a witness passes [`Phase::Backup`] (it holds
    /// nothing, ever).
    pub phase: &'a Phase,
    /// A promotion or demotion pipeline (or an earlier reconcile action)
    /// is running.
    pub pipeline_running: bool,
    pub now: Millis,
    /// The holder's fence point (`lease end - fence budget`): past it the
    /// holder fences, so nothing may be acquired any more.
    pub fence_at: Option<Millis>,
}

/// What the reconciler does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileDecision {
    /// The host matches the role.
    InOrder,
    /// Not this round: something else owns the host now (the reason says what).
    Skip { reason: String },
    /// Held where it must not be: release it all and raise the split-brain alarm.
    ReleaseStray { stray: Vec<Resource> },
    /// The master lacks these: acquire them again with `plan`, fenced by `epoch`.
    Repair {
        epoch: Epoch,
        missing: Vec<Resource>,
        plan: Plan,
    },
    /// Some readings failed and nothing certain is wrong: report, do nothing.
    Unreadable { errors: Vec<(Resource, String)> },
}

/// The reconciler's rule (see the module doc).
pub fn reconcile(view: &ReconcileView<'_>, holdings: &Holdings) -> ReconcileDecision {
    if view.pipeline_running {
        return ReconcileDecision::Skip {
            reason: "a pipeline runs".into(),
        };
    }
    match view.phase {
        Phase::Acquiring { .. } | Phase::Promoting { .. } | Phase::Demoting { .. } => {
            ReconcileDecision::Skip {
                reason: format!("phase {}: the pipeline owns the host", view.phase.name()),
            }
        }
        Phase::Backup => {
            let stray = holdings.held();
            if !stray.is_empty() {
                return ReconcileDecision::ReleaseStray { stray };
            }
            unreadable_or_in_order(holdings)
        }
        Phase::Master { epoch } => {
            if view.fence_at.is_none_or(|fence_at| view.now >= fence_at) {
                return ReconcileDecision::Skip {
                    reason: "the lease is not confirmed far enough ahead: fencing, not repairing"
                        .into(),
                };
            }
            // The stack is the monitor's to judge (see the module doc); a
            // database is made writable only by the promotion, once it has
            // applied what it received.
            let missing: Vec<Resource> = holdings
                .missing()
                .into_iter()
                .filter(|r| !matches!(r, Resource::Services | Resource::Database))
                .collect();
            if missing.is_empty() {
                return unreadable_or_in_order(holdings);
            }
            ReconcileDecision::Repair {
                epoch: *epoch,
                plan: repair_plan(&missing),
                missing,
            }
        }
    }
}

fn unreadable_or_in_order(holdings: &Holdings) -> ReconcileDecision {
    let errors = holdings.unreadable();
    if errors.is_empty() {
        ReconcileDecision::InOrder
    } else {
        ReconcileDecision::Unreadable { errors }
    }
}

/// The promotion's steps for what is missing, in the promotion's order:
/// address and device first (in parallel), then mount and the epoch claim,
/// which refuses a volume that carries a higher epoch (invariant 2).
pub fn repair_plan(missing: &[Resource]) -> Plan {
    let mut first = Vec::new();
    let mut mount = Vec::new();
    let mut claim = Vec::new();
    for resource in missing {
        match resource {
            Resource::Address => first.push(Step::AcquireAddress),
            Resource::Volume(volume) => {
                first.push(Step::AttachVolume {
                    volume: volume.clone(),
                });
                mount.push(Step::MountVolume {
                    volume: volume.clone(),
                });
                claim.push(Step::ClaimEpoch {
                    volume: volume.clone(),
                });
            }
            Resource::Services | Resource::Database => {}
        }
    }
    [first, mount, claim]
        .into_iter()
        .filter(|stage| !stage.is_empty())
        .collect()
}

/// Whether this node may have host resources collected: only a node that
/// is certainly not the master (and not on its way to or from it).
pub fn may_collect(phase: &Phase, pipeline_running: bool) -> bool {
    !pipeline_running && *phase == Phase::Backup
}

/// The oldest assignment time the history must keep: everything younger
/// than the retention, and never anything inside the breaker's window (the
/// breaker counts failovers from the history, invariant 5).
pub fn history_keep_since(now_unix_ms: u64, retention_ms: u64, breaker_window_ms: u64) -> u64 {
    now_unix_ms.saturating_sub(retention_ms.max(breaker_window_ms))
}

/// Which history entries a prune with this cutoff removes: those assigned
/// before `keep_since_unix_ms`, except the newest entry (the current or last
/// assignment, which the agent reads for its promotion record). Returns
/// their epochs, oldest first.
pub fn prunable_history<'a>(
    history: impl IntoIterator<Item = &'a FailoverRecord>,
    keep_since_unix_ms: u64,
) -> Vec<Epoch> {
    let history: Vec<&FailoverRecord> = history.into_iter().collect();
    let newest = history.iter().map(|r| r.epoch).max();
    history
        .iter()
        .filter(|r| r.assigned_at_unix_ms < keep_since_unix_ms && Some(r.epoch) != newest)
        .map(|r| r.epoch)
        .collect()
}

/// One agent file in `data_dir` (a pid file, a lock file) as the garbage
/// collector sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFile {
    pub path: String,
    /// Whether a live process holds its lock.
    pub locked: bool,
}

/// Everything the garbage collector looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcView<'a> {
    /// `None` when this node's agent is not running (the CLI asked and got
    /// no answer): the host parts are then judged from the config alone.
    pub phase: Option<&'a Phase>,
    pub pipeline_running: bool,
    pub holdings: &'a Holdings,
    pub files: &'a [AgentFile],
    /// History entries this node's retention would remove (empty when the
    /// history is not known, as when the agent is down).
    pub prunable_epochs: &'a [Epoch],
}

/// One thing the garbage collector found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Garbage {
    /// A volume mounted on a node that is not the master.
    StaleMount { volume: String },
    /// The floating address on a node that is not the master.
    StrayAddress,
    /// The mail stack running on a node that is not the master.
    StackOnBackup,
    /// A writable database on a node that is not the master.
    WritableDatabase,
    /// An agent pid or lock file that no live process holds.
    StaleFile { path: String },
    /// Failover history older than the retention (and the breaker window).
    OldHistory { epochs: Vec<Epoch> },
}

impl std::fmt::Display for Garbage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Garbage::StaleMount { volume } => {
                write!(
                    f,
                    "volume {volume} mounted on a node that is not the master"
                )
            }
            Garbage::StrayAddress => {
                f.write_str("floating address on a node that is not the master")
            }
            Garbage::StackOnBackup => {
                f.write_str("mail stack running on a node that is not the master")
            }
            Garbage::WritableDatabase => {
                f.write_str("writable database on a node that is not the master")
            }
            Garbage::StaleFile { path } => write!(f, "stale agent file {path}"),
            Garbage::OldHistory { epochs } => write!(
                f,
                "{} failover history entr{} older than the retention (epochs {})",
                epochs.len(),
                if epochs.len() == 1 { "y" } else { "ies" },
                epochs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What the garbage collector found; `host_refused` says why host
/// resources were left alone even though found, if they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcFindings {
    pub garbage: Vec<Garbage>,
    pub host_refused: Option<String>,
}

/// The garbage collector's rule: host resources count as garbage only on a
/// node that is certainly not the master; agent files only when no live
/// process holds them; history as [`prunable_history`] says.
pub fn collect_garbage(view: &GcView<'_>) -> GcFindings {
    let mut garbage = Vec::new();
    let mut host_refused = None;
    let held = view.holdings.held();
    match view.phase {
        Some(phase) if !may_collect(phase, view.pipeline_running) => {
            if !held.is_empty() {
                host_refused = Some(format!(
                    "this node is {} (a pipeline {}): what it holds is its role's",
                    phase.name(),
                    if view.pipeline_running {
                        "runs"
                    } else {
                        "does not run"
                    }
                ));
            }
        }
        _ => {
            for resource in held {
                garbage.push(match resource {
                    Resource::Address => Garbage::StrayAddress,
                    Resource::Volume(volume) => Garbage::StaleMount { volume },
                    Resource::Services => Garbage::StackOnBackup,
                    Resource::Database => Garbage::WritableDatabase,
                });
            }
        }
    }
    for file in view.files.iter().filter(|f| !f.locked) {
        garbage.push(Garbage::StaleFile {
            path: file.path.clone(),
        });
    }
    if !view.prunable_epochs.is_empty() {
        garbage.push(Garbage::OldHistory {
            epochs: view.prunable_epochs.to_vec(),
        });
    }
    GcFindings {
        garbage,
        host_refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AssignmentKind;

    fn holdings(
        address: Option<Result<bool, String>>,
        mail: Option<Result<bool, String>>,
        stack: Option<Result<bool, String>>,
    ) -> Holdings {
        Holdings {
            address,
            volumes: mail.into_iter().map(|r| ("mail".to_string(), r)).collect(),
            services: stack,
            database: None,
        }
    }

    #[test]
    fn a_writable_database_is_released_on_a_backup_and_left_to_the_promotion_on_a_master() {
        let mut on_backup = held(false, false, false);
        on_backup.database = Some(Ok(true));
        let view = ReconcileView {
            phase: &Phase::Backup,
            pipeline_running: false,
            now: Millis(1_000),
            fence_at: None,
        };
        assert_eq!(
            reconcile(&view, &on_backup),
            ReconcileDecision::ReleaseStray {
                stray: vec![Resource::Database]
            }
        );
        let mut on_master = held(true, true, true);
        on_master.database = Some(Ok(false));
        let master = Phase::Master { epoch: 3 };
        let view = ReconcileView {
            phase: &master,
            pipeline_running: false,
            now: Millis(1_000),
            fence_at: Some(Millis(2_000)),
        };
        assert_eq!(reconcile(&view, &on_master), ReconcileDecision::InOrder);
    }

    fn held(address: bool, mail: bool, stack: bool) -> Holdings {
        holdings(Some(Ok(address)), Some(Ok(mail)), Some(Ok(stack)))
    }

    /// One scenario: the phase, whether a pipeline runs, how far the fence
    /// point is (None: no lease), what is held; the expected decision.
    fn check(
        phase: Phase,
        pipeline_running: bool,
        fence_in_ms: Option<u64>,
        holdings: Holdings,
        expected: ReconcileDecision,
    ) {
        let now = Millis(10_000);
        let view = ReconcileView {
            phase: &phase,
            pipeline_running,
            now,
            fence_at: fence_in_ms.map(|ms| now.plus(ms)),
        };
        assert_eq!(
            reconcile(&view, &holdings),
            expected,
            "{phase:?} running={pipeline_running} fence_in={fence_in_ms:?} {holdings:?}"
        );
    }

    fn skip(reason: &str) -> ReconcileDecision {
        ReconcileDecision::Skip {
            reason: reason.into(),
        }
    }

    #[test]
    fn a_backup_holding_anything_releases_it_all() {
        check(
            Phase::Backup,
            false,
            None,
            held(false, false, false),
            ReconcileDecision::InOrder,
        );
        check(
            Phase::Backup,
            false,
            None,
            held(true, false, false),
            ReconcileDecision::ReleaseStray {
                stray: vec![Resource::Address],
            },
        );
        check(
            Phase::Backup,
            false,
            None,
            held(true, true, true),
            ReconcileDecision::ReleaseStray {
                stray: vec![
                    Resource::Address,
                    Resource::Volume("mail".into()),
                    Resource::Services,
                ],
            },
        );
        // A failed reading does not hide what is certainly held.
        check(
            Phase::Backup,
            false,
            None,
            holdings(Some(Err("netlink".into())), Some(Ok(true)), None),
            ReconcileDecision::ReleaseStray {
                stray: vec![Resource::Volume("mail".into())],
            },
        );
        check(
            Phase::Backup,
            false,
            None,
            holdings(Some(Err("netlink: EPERM".into())), Some(Ok(false)), None),
            ReconcileDecision::Unreadable {
                errors: vec![(Resource::Address, "netlink: EPERM".into())],
            },
        );
    }

    #[test]
    fn nothing_is_done_while_a_pipeline_owns_the_host() {
        for phase in [
            Phase::Acquiring { epoch: 3 },
            Phase::Promoting { epoch: 3 },
            Phase::Demoting {
                epoch: 3,
                urgent: false,
                then_release: None,
            },
            // The start-up cleanup.
            Phase::Demoting {
                epoch: 0,
                urgent: true,
                then_release: None,
            },
        ] {
            let name = phase.name();
            check(
                phase.clone(),
                false,
                Some(400),
                held(true, false, true),
                skip(&format!("phase {name}: the pipeline owns the host")),
            );
            check(
                phase,
                false,
                Some(400),
                held(false, true, false),
                skip(&format!("phase {name}: the pipeline owns the host")),
            );
        }
        // A backup or master whose pipeline (or last reconcile action)
        // still runs: the phase alone is not enough.
        check(
            Phase::Backup,
            true,
            None,
            held(true, true, true),
            skip("a pipeline runs"),
        );
        check(
            Phase::Master { epoch: 3 },
            true,
            Some(400),
            held(false, false, false),
            skip("a pipeline runs"),
        );
    }

    #[test]
    fn a_master_with_a_good_lease_reacquires_what_is_missing() {
        check(
            Phase::Master { epoch: 4 },
            false,
            Some(300),
            held(true, true, true),
            ReconcileDecision::InOrder,
        );
        check(
            Phase::Master { epoch: 4 },
            false,
            Some(300),
            held(false, true, true),
            ReconcileDecision::Repair {
                epoch: 4,
                missing: vec![Resource::Address],
                plan: vec![vec![Step::AcquireAddress]],
            },
        );
        check(
            Phase::Master { epoch: 4 },
            false,
            Some(300),
            held(false, false, true),
            ReconcileDecision::Repair {
                epoch: 4,
                missing: vec![Resource::Address, Resource::Volume("mail".into())],
                plan: vec![
                    vec![
                        Step::AcquireAddress,
                        Step::AttachVolume {
                            volume: "mail".into(),
                        },
                    ],
                    vec![Step::MountVolume {
                        volume: "mail".into(),
                    }],
                    vec![Step::ClaimEpoch {
                        volume: "mail".into(),
                    }],
                ],
            },
        );
        // A stopped stack is the monitor's to judge, not the reconciler's.
        check(
            Phase::Master { epoch: 4 },
            false,
            Some(300),
            held(true, true, false),
            ReconcileDecision::InOrder,
        );
        // No repair on a guess.
        check(
            Phase::Master { epoch: 4 },
            false,
            Some(300),
            holdings(Some(Err("timeout".into())), Some(Ok(true)), Some(Ok(true))),
            ReconcileDecision::Unreadable {
                errors: vec![(Resource::Address, "timeout".into())],
            },
        );
    }

    #[test]
    fn a_master_past_its_fence_point_repairs_nothing() {
        let fencing = "the lease is not confirmed far enough ahead: fencing, not repairing";
        check(
            Phase::Master { epoch: 4 },
            false,
            Some(0),
            held(false, false, true),
            skip(fencing),
        );
        check(
            Phase::Master { epoch: 4 },
            false,
            None,
            held(false, false, true),
            skip(fencing),
        );
    }

    fn record(epoch: Epoch, at: u64) -> FailoverRecord {
        FailoverRecord {
            epoch,
            from: None,
            to: 1,
            reason: "test".into(),
            kind: AssignmentKind::Failover,
            assigned_at_unix_ms: at,
            outcome: None,
        }
    }

    #[test]
    fn history_keeps_the_breaker_window_and_the_newest_entry() {
        const DAY: u64 = 86_400_000;
        let now = 100 * DAY;
        // The retention shorter than the breaker window: the window wins.
        assert_eq!(history_keep_since(now, DAY / 24, 2 * DAY), now - 2 * DAY);
        assert_eq!(history_keep_since(now, 30 * DAY, DAY / 24), now - 30 * DAY);
        assert_eq!(history_keep_since(DAY, 30 * DAY, DAY), 0);
        let history = [
            record(1, DAY),
            record(2, 50 * DAY),
            record(3, 90 * DAY),
            record(4, 99 * DAY),
        ];
        assert_eq!(prunable_history(&history, now - 30 * DAY), vec![1, 2]);
        assert_eq!(prunable_history(&history, now), vec![1, 2, 3]);
        assert_eq!(prunable_history(&history, 0), Vec::<Epoch>::new());
        assert_eq!(prunable_history(&[record(7, 0)], now), Vec::<Epoch>::new());
    }

    #[test]
    fn garbage_on_hosts_only_where_certainly_not_master() {
        let everything = held(true, true, true);
        let files = [
            AgentFile {
                path: "/var/lib/mailherd/agent.pid".into(),
                locked: true,
            },
            AgentFile {
                path: "/var/lib/mailherd/keepalived-notify.lock".into(),
                locked: false,
            },
        ];
        let host = vec![
            Garbage::StrayAddress,
            Garbage::StaleMount {
                volume: "mail".into(),
            },
            Garbage::StackOnBackup,
        ];
        let stale_file = Garbage::StaleFile {
            path: "/var/lib/mailherd/keepalived-notify.lock".into(),
        };
        // A backup, and a node whose agent is down.
        for phase in [Some(&Phase::Backup), None] {
            let found = collect_garbage(&GcView {
                phase,
                pipeline_running: false,
                holdings: &everything,
                files: &files,
                prunable_epochs: &[1, 2],
            });
            let mut expected = host.clone();
            expected.push(stale_file.clone());
            expected.push(Garbage::OldHistory { epochs: vec![1, 2] });
            assert_eq!(found.garbage, expected);
            assert_eq!(found.host_refused, None);
        }
        // A master, a node on its way, a backup whose pipeline runs: the
        // host is left alone, files and history are not.
        for (phase, running) in [
            (Phase::Master { epoch: 2 }, false),
            (Phase::Promoting { epoch: 2 }, false),
            (Phase::Acquiring { epoch: 2 }, false),
            (Phase::Backup, true),
        ] {
            let found = collect_garbage(&GcView {
                phase: Some(&phase),
                pipeline_running: running,
                holdings: &everything,
                files: &files,
                prunable_epochs: &[],
            });
            assert_eq!(found.garbage, vec![stale_file.clone()], "{phase:?}");
            assert!(found.host_refused.is_some(), "{phase:?}");
        }
    }
}
