//! Promotion and demotion pipelines as data.
//!
//! The agent executes these plans step by step; this module decides which
//! steps exist, in which order and which run in parallel, and turns the
//! results into the record kept in the replicated history. Keeping the plan
//! here makes "what happens on promotion" testable without a host.

use serde::{Deserialize, Serialize};

use crate::state::{PromotionOutcome, StepRecord};

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    AcquireAddress,
    AttachVolume {
        volume: String,
    },
    MountVolume {
        volume: String,
    },
    ClaimEpoch {
        volume: String,
    },
    /// The new master's database: apply what it received, stop replicating,
    /// become writable (`crates/mariadb`).
    PromoteDatabase,
    StartServices,
    WaitChecks,
    StopServices,
    /// The database goes read-only.
    DemoteDatabase,
    UnmountVolume {
        volume: String,
    },
    ReleaseAddress,
}

impl Step {
    pub fn name(&self) -> String {
        match self {
            Step::AcquireAddress => "acquire_address".into(),
            Step::AttachVolume { volume } => format!("attach_volume:{volume}"),
            Step::MountVolume { volume } => format!("mount_volume:{volume}"),
            Step::ClaimEpoch { volume } => format!("claim_epoch:{volume}"),
            Step::PromoteDatabase => "promote_database".into(),
            Step::StartServices => "start_services".into(),
            Step::WaitChecks => "wait_checks".into(),
            Step::StopServices => "stop_services".into(),
            Step::DemoteDatabase => "demote_database".into(),
            Step::UnmountVolume { volume } => format!("unmount_volume:{volume}"),
            Step::ReleaseAddress => "release_address".into(),
        }
    }
}

/// The steps of a pipeline in stages; the steps of one stage run in
/// parallel, stages run in order, and a failed stage stops the pipeline.
pub type Plan = Vec<Vec<Step>>;

/// What a node has to promote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub address: bool,
    pub volumes: Vec<String>,
    pub services: bool,
    pub checks: bool,
    /// A replicated database whose writable side follows the master.
    pub database: bool,
}

/// Design §4: address and volume attachment in parallel, then mount and
/// claim each volume's epoch, then start the stack, then wait for checks.
/// The database's promotion (which may wait for its relay log) runs beside
/// the moves of the first stage; the stack starts only once it is writable.
pub fn promotion_plan(resources: &Resources) -> Plan {
    let mut plan: Plan = Vec::new();
    let mut first: Vec<Step> = Vec::new();
    if resources.address {
        first.push(Step::AcquireAddress);
    }
    if resources.database {
        first.push(Step::PromoteDatabase);
    }
    first.extend(
        resources
            .volumes
            .iter()
            .map(|v| Step::AttachVolume { volume: v.clone() }),
    );
    plan.push(first);
    plan.push(
        resources
            .volumes
            .iter()
            .map(|v| Step::MountVolume { volume: v.clone() })
            .collect(),
    );
    plan.push(
        resources
            .volumes
            .iter()
            .map(|v| Step::ClaimEpoch { volume: v.clone() })
            .collect(),
    );
    if resources.services {
        plan.push(vec![Step::StartServices]);
    }
    if resources.checks {
        plan.push(vec![Step::WaitChecks]);
    }
    plan.retain(|stage| !stage.is_empty());
    plan
}

/// Design §4: stop the stack, make the database read-only, unmount, then
/// drop the address. An urgent demotion (the lease is about to end) drops
/// the address and makes the database read-only first, so that clients go
/// elsewhere and nothing more is written here at once, then kills and
/// unmounts. Every step runs even when an earlier one failed: demotion is
/// best effort to the end.
pub fn demotion_plan(resources: &Resources, urgent: bool) -> Plan {
    let mut plan: Plan = Vec::new();
    let address = resources.address.then_some(Step::ReleaseAddress);
    let database = resources.database.then_some(Step::DemoteDatabase);
    if urgent {
        let first: Vec<Step> = address
            .clone()
            .into_iter()
            .chain(database.clone())
            .collect();
        if !first.is_empty() {
            plan.push(first);
        }
    }
    if resources.services {
        plan.push(vec![Step::StopServices]);
    }
    if !urgent {
        plan.extend(database.map(|s| vec![s]));
    }
    let unmounts: Vec<Step> = resources
        .volumes
        .iter()
        .map(|v| Step::UnmountVolume { volume: v.clone() })
        .collect();
    if !unmounts.is_empty() {
        plan.push(unmounts);
    }
    if !urgent {
        plan.extend(address.map(|s| vec![s]));
    }
    plan
}

/// Collects step results into the record kept in history.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    steps: Vec<StepRecord>,
}

impl Recorder {
    pub fn record(&mut self, step: &Step, duration_ms: u64, result: &Result<(), String>) {
        self.record_with_api_ms(step, duration_ms, None, result);
    }

    /// [`Recorder::record`] for a step that moved a cloud resource, with
    /// the part of its time the cloud API took.
    pub fn record_with_api_ms(
        &mut self,
        step: &Step,
        duration_ms: u64,
        api_ms: Option<u64>,
        result: &Result<(), String>,
    ) {
        self.steps.push(StepRecord {
            name: step.name(),
            ok: result.is_ok(),
            duration_ms,
            error: result.as_ref().err().cloned(),
            api_ms,
        });
    }

    pub fn first_error(&self) -> Option<String> {
        self.steps
            .iter()
            .find(|s| !s.ok)
            .map(|s| format!("{}: {}", s.name, s.error.clone().unwrap_or_default()))
    }

    pub fn finish(self, total_ms: u64) -> PromotionOutcome {
        let error = self.first_error();
        PromotionOutcome {
            ok: error.is_none(),
            total_ms,
            steps: self.steps,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Resources {
        Resources {
            address: true,
            volumes: vec!["mail".into()],
            services: true,
            checks: true,
            database: false,
        }
    }

    fn names(plan: &Plan) -> Vec<Vec<String>> {
        plan.iter()
            .map(|s| s.iter().map(Step::name).collect())
            .collect()
    }

    #[test]
    fn promotion_moves_address_and_volumes_in_parallel_then_mounts_then_starts() {
        assert_eq!(
            names(&promotion_plan(&full())),
            vec![
                vec!["acquire_address", "attach_volume:mail"],
                vec!["mount_volume:mail"],
                vec!["claim_epoch:mail"],
                vec!["start_services"],
                vec!["wait_checks"],
            ]
        );
    }

    #[test]
    fn demotion_order_depends_on_urgency() {
        assert_eq!(
            names(&demotion_plan(&full(), false)),
            vec![
                vec!["stop_services"],
                vec!["unmount_volume:mail"],
                vec!["release_address"]
            ]
        );
        assert_eq!(
            names(&demotion_plan(&full(), true)),
            vec![
                vec!["release_address"],
                vec!["stop_services"],
                vec!["unmount_volume:mail"]
            ]
        );
    }

    #[test]
    fn the_database_is_promoted_beside_the_moves_and_demoted_after_the_stack() {
        let resources = Resources {
            database: true,
            ..full()
        };
        assert_eq!(
            names(&promotion_plan(&resources))[0],
            vec!["acquire_address", "promote_database", "attach_volume:mail"]
        );
        assert_eq!(
            names(&demotion_plan(&resources, false)),
            vec![
                vec!["stop_services"],
                vec!["demote_database"],
                vec!["unmount_volume:mail"],
                vec!["release_address"]
            ]
        );
        assert_eq!(
            names(&demotion_plan(&resources, true))[0],
            vec!["release_address", "demote_database"]
        );
    }

    #[test]
    fn a_node_without_volumes_has_no_empty_stages() {
        let resources = Resources {
            address: true,
            ..Resources::default()
        };
        assert_eq!(
            names(&promotion_plan(&resources)),
            vec![vec!["acquire_address"]]
        );
    }

    #[test]
    fn recorder_reports_the_first_failure() {
        let mut r = Recorder::default();
        r.record(&Step::AcquireAddress, 3, &Ok(()));
        r.record(&Step::StartServices, 40, &Err("exit 1".into()));
        let outcome = r.finish(50);
        assert!(!outcome.ok);
        assert_eq!(outcome.error.as_deref(), Some("start_services: exit 1"));
        assert_eq!(outcome.steps.len(), 2);
    }
}
