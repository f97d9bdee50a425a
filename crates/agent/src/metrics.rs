//! The agent's Prometheus metrics, served as `GET /metrics` in the
//! OpenMetrics text format (`prometheus-client`).
//!
//! Every number is fed where the thing it counts happens, never recomputed
//! for the scrape:
//! - the control loop counts renewals as their proposals end, assignments
//!   as their commands are applied here, and times promotions (and each of
//!   their steps) as the pipeline reports them;
//! - the check worker records each probe's result and latency as it ends;
//! - gauges that describe the present (role, epoch, breaker, maintenance,
//!   readiness, Raft leadership, the lease) are set from the same values the
//!   status document is built from, each time it is built (every 100 ms);
//! - the alert counters are the alerter's own (`mailherd_alerts::Counters`,
//!   bumped by `send` and the delivery tasks), read at the scrape by a
//!   collector: copying them into a second set of counters would only add a
//!   place for them to disagree.
//!
//! Cluster-wide events are seen by every node: `mailherd_failovers_total`
//! counts the assignments this agent saw committed since it started, the
//! same on every node, so dashboards take `max` across nodes, not `sum`.
//! The promotion histograms are observed only by the node that ran the
//! promotion.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use mailherd_core::state::PromotionOutcome;
use mailherd_core::{AssignmentKind, CheckState, Verdict};

use crate::status::StatusDocument;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every role a node can report; exactly one of them is 1.
const ROLES: [&str; 4] = ["master", "backup", "witness", "fault"];
/// Every stack verdict; exactly one of them is 1 on a mail node.
const VERDICTS: [Verdict; 4] = [
    Verdict::Operational,
    Verdict::Degraded,
    Verdict::Down,
    Verdict::Pending,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PromotionLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckResultLabels {
    check: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume: String,
}

type SecondsFamily<L> = Family<L, Gauge<f64, std::sync::atomic::AtomicU64>>;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Promotions take from milliseconds (a banner stack) to tens of seconds
/// (a cloud volume's detach and attach): 5 ms to 41 s.
fn promotion_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Probes answer in well under a millisecond on loopback and time out after
/// seconds: 0.5 ms to 4 s.
fn probe_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// The agent's metrics. Cheap to clone: every clone updates the same values.
#[derive(Clone)]
pub struct Metrics {
    /// Only read by [`Metrics::encode`]; every metric registered in it is
    /// also held below, where the agent updates it.
    registry: Arc<Registry>,
    role: Family<RoleLabels, Gauge>,
    epoch: Gauge,
    raft_leader: Gauge,
    raft_term: Gauge,
    lease_remaining_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    failovers: Family<KindLabels, Counter>,
    failover_duration: HistogramFamily<PromotionLabels>,
    promotion_step_duration: HistogramFamily<StepLabels>,
    lease_renewals: Family<ResultLabels, Counter>,
    lease_renewal_duration: HistogramFamily<ResultLabels>,
    lease_renewals_relayed: Counter,
    check_up: Family<CheckLabels, Gauge>,
    check_latency: HistogramFamily<CheckLabels>,
    check_probes: Family<CheckResultLabels, Counter>,
    verdict: Family<VerdictLabels, Gauge>,
    member_ready: Family<MemberLabels, Gauge>,
    replication_snapshot_age: SecondsFamily<VolumeLabels>,
    replication_promotion_data_age: SecondsFamily<VolumeLabels>,
    replication_retired_copies: Family<VolumeLabels, Gauge>,
    breaker_open: Gauge,
    breaker_failovers_in_window: Gauge,
    maintenance: Gauge,
}

impl Metrics {
    /// Registers every metric; `alerter`'s counters are read at each scrape.
    pub fn new(cluster: &str, node: &str, alerter: mailherd_alerts::Alerter) -> Metrics {
        let mut registry = Registry::with_prefix("mailherd");
        registry.register(
            "node",
            "This agent: its cluster and node name",
            Info::new(vec![
                ("cluster".to_string(), cluster.to_string()),
                ("node".to_string(), node.to_string()),
            ]),
        );
        // The registry is put in once everything is registered in it.
        let metrics = Metrics {
            registry: Arc::default(),
            role: Family::default(),
            epoch: Gauge::default(),
            raft_leader: Gauge::default(),
            raft_term: Gauge::default(),
            lease_remaining_seconds: Gauge::default(),
            failovers: Family::default(),
            failover_duration: Family::new_with_constructor(promotion_histogram),
            promotion_step_duration: Family::new_with_constructor(promotion_histogram),
            lease_renewals: Family::default(),
            lease_renewal_duration: Family::new_with_constructor(promotion_histogram),
            lease_renewals_relayed: Counter::default(),
            check_up: Family::default(),
            check_latency: Family::new_with_constructor(probe_histogram),
            check_probes: Family::default(),
            verdict: Family::default(),
            member_ready: Family::default(),
            replication_snapshot_age: Family::default(),
            replication_promotion_data_age: Family::default(),
            replication_retired_copies: Family::default(),
            breaker_open: Gauge::default(),
            breaker_failovers_in_window: Gauge::default(),
            maintenance: Gauge::default(),
        };
        registry.register(
            "role",
            "This node's role: 1 for the one it has (master, backup, witness or fault), 0 for the others",
            metrics.role.clone(),
        );
        registry.register(
            "epoch",
            "The highest epoch assigned in the cluster, as this node has applied it",
            metrics.epoch.clone(),
        );
        registry.register(
            "raft_leader",
            "1 while this node is the Raft leader (and so runs the decider)",
            metrics.raft_leader.clone(),
        );
        registry.register(
            "raft_term",
            "The Raft term of the leader this node knows",
            metrics.raft_term.clone(),
        );
        registry.register_with_unit(
            "lease_remaining",
            "How long this node's lease on the master role still runs; 0 while it holds none",
            Unit::Seconds,
            metrics.lease_remaining_seconds.clone(),
        );
        registry.register(
            "failovers",
            "Assignments of the master role this agent saw committed since it started, by kind \
             (initial, failover, switchover, handover); every node counts the same ones",
            metrics.failovers.clone(),
        );
        registry.register_with_unit(
            "failover_duration",
            "How long the promotions this node ran took, from their start to the stack serving, \
             by kind of assignment and result",
            Unit::Seconds,
            metrics.failover_duration.clone(),
        );
        registry.register_with_unit(
            "promotion_step_duration",
            "How long each step of the promotions this node ran took, by step and result",
            Unit::Seconds,
            metrics.promotion_step_duration.clone(),
        );
        registry.register(
            "lease_renewals",
            "This node's lease renewals as their proposals ended: confirmed, rejected or failed",
            metrics.lease_renewals.clone(),
        );
        registry.register_with_unit(
            "lease_renewal_duration",
            "How long this node's lease renewal proposals took to end, by result; a renewal \
             slower than the fence budget costs the master its role",
            Unit::Seconds,
            metrics.lease_renewal_duration.clone(),
        );
        registry.register(
            "lease_renewals_relayed",
            "This node's lease renewals that another voter got applied because the Raft leader \
             did not confirm them directly in time (a link to the leader is down or slow)",
            metrics.lease_renewals_relayed.clone(),
        );
        registry.register(
            "check_up",
            "1 while the check is up after rise/fall, 0 while down or not yet known",
            metrics.check_up.clone(),
        );
        registry.register_with_unit(
            "check_latency",
            "How long each probe of the check took",
            Unit::Seconds,
            metrics.check_latency.clone(),
        );
        registry.register(
            "check_probes",
            "Probes of the check by result (ok, failed)",
            metrics.check_probes.clone(),
        );
        registry.register(
            "stack_verdict",
            "This node's stack verdict from its checks: 1 for the current one",
            metrics.verdict.clone(),
        );
        registry.register(
            "member_ready",
            "Whether each member is ready to be assigned the role, from the replicated health reports",
            metrics.member_ready.clone(),
        );
        registry.register_with_unit(
            "replication_snapshot_age",
            "Age of the newest complete snapshot of a replicated volume on this node",
            Unit::Seconds,
            metrics.replication_snapshot_age.clone(),
        );
        registry.register_with_unit(
            "replication_promotion_data_age",
            "How old the data was that this node's last promotion started from (the failover's RPO)",
            Unit::Seconds,
            metrics.replication_promotion_data_age.clone(),
        );
        registry.register(
            "replication_retired_copies",
            "Live copies of a replicated volume set aside on this node (btrfs POOL/retired/): \
             they may hold writes no snapshot has; the operator checks and deletes them",
            metrics.replication_retired_copies.clone(),
        );
        registry.register(
            "breaker_open",
            "1 while the circuit breaker stops automatic failover",
            metrics.breaker_open.clone(),
        );
        registry.register(
            "breaker_failovers_in_window",
            "Failovers within the breaker's window",
            metrics.breaker_failovers_in_window.clone(),
        );
        registry.register(
            "maintenance",
            "1 while maintenance mode is on (no automatic failover)",
            metrics.maintenance.clone(),
        );
        registry.register_collector(Box::new(AlertCollector { alerter }));
        // Counters whose labels are known up front start at 0, so that
        // `rate()` and `increase()` see their first event.
        for kind in [
            AssignmentKind::Initial,
            AssignmentKind::Failover,
            AssignmentKind::Switchover,
            AssignmentKind::Handover,
        ] {
            drop(metrics.failovers.get_or_create(&KindLabels {
                kind: kind_name(kind),
            }));
        }
        for result in ["confirmed", "rejected", "failed"] {
            drop(
                metrics
                    .lease_renewals
                    .get_or_create(&ResultLabels { result }),
            );
        }
        Metrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// The whole exposition, as served under [`CONTENT_TYPE`].
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// The gauges that describe the present, from the document the control
    /// loop just built.
    pub fn observe_status(&self, doc: &StatusDocument, raft_leader: bool) {
        for role in ROLES {
            self.role
                .get_or_create(&RoleLabels { role })
                .set(i64::from(doc.role == role));
        }
        self.epoch.set(saturating_i64(doc.epoch));
        self.raft_leader.set(i64::from(raft_leader));
        self.raft_term
            .set(saturating_i64(doc.leader.as_ref().map_or(0, |l| l.term)));
        self.lease_remaining_seconds
            .set(doc.lease_remaining_ms.unwrap_or(0) as f64 / 1_000.0);
        for member in &doc.members {
            self.member_ready
                .get_or_create(&MemberLabels {
                    member: member.name.clone(),
                })
                .set(i64::from(member.ready));
        }
        if let Some(breaker) = &doc.breaker {
            self.breaker_open.set(i64::from(breaker.open));
            self.breaker_failovers_in_window
                .set(saturating_i64(breaker.failovers_in_window as u64));
        }
        self.maintenance
            .set(i64::from(doc.maintenance_since_unix_ms.is_some()));
        for volume in &doc.replication {
            let labels = VolumeLabels {
                volume: volume.volume.clone(),
            };
            if let Some(age_ms) = volume.newest_age_ms {
                self.replication_snapshot_age
                    .get_or_create(&labels)
                    .set(age_ms as f64 / 1_000.0);
            }
            if let Some(age_ms) = volume.opened_data_age_ms {
                self.replication_promotion_data_age
                    .get_or_create(&labels)
                    .set(age_ms as f64 / 1_000.0);
            }
            self.replication_retired_copies
                .get_or_create(&labels)
                .set(saturating_i64(volume.retired.len() as u64));
        }
        if let Some(report) = &doc.verdict {
            for verdict in VERDICTS {
                self.verdict
                    .get_or_create(&VerdictLabels {
                        verdict: verdict_name(verdict),
                    })
                    .set(i64::from(report.verdict == verdict));
            }
        }
    }

    /// One assignment committed and applied here.
    pub fn failover_seen(&self, kind: AssignmentKind) {
        self.failovers
            .get_or_create(&KindLabels {
                kind: kind_name(kind),
            })
            .inc();
    }

    /// A promotion pipeline this node ran ended: its total and each step.
    pub fn promotion_finished(&self, kind: AssignmentKind, outcome: &PromotionOutcome) {
        self.failover_duration
            .get_or_create(&PromotionLabels {
                kind: kind_name(kind),
                result: ok_or_failed(outcome.ok),
            })
            .observe(outcome.total_ms as f64 / 1_000.0);
        for step in &outcome.steps {
            self.promotion_step_duration
                .get_or_create(&StepLabels {
                    step: step.name.clone(),
                    result: ok_or_failed(step.ok),
                })
                .observe(step.duration_ms as f64 / 1_000.0);
        }
    }

    /// One lease renewal proposal ended after `took`.
    pub fn renewal_finished(&self, outcome: mailherd_core::RenewalOutcome, took: Duration) {
        let result = match outcome {
            mailherd_core::RenewalOutcome::Confirmed => "confirmed",
            mailherd_core::RenewalOutcome::Rejected => "rejected",
            mailherd_core::RenewalOutcome::Failed => "failed",
        };
        let labels = ResultLabels { result };
        self.lease_renewals.get_or_create(&labels).inc();
        self.lease_renewal_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A renewal was applied through a relay, not by the leader directly.
    pub fn renewal_relayed(&self) {
        self.lease_renewals_relayed.inc();
    }

    /// A check is configured: its series exist (down, nothing probed)
    /// before its first probe ends.
    pub fn check_configured(&self, check: &str) {
        let labels = CheckLabels {
            check: check.to_string(),
        };
        self.check_up.get_or_create(&labels).set(0);
        drop(self.check_latency.get_or_create(&labels));
    }

    /// One probe of `check` ended; `state` is the check's state after it.
    pub fn probe_finished(&self, check: &str, ok: bool, latency_ms: u64, state: CheckState) {
        self.check_state(check, state);
        self.check_latency
            .get_or_create(&CheckLabels {
                check: check.to_string(),
            })
            .observe(latency_ms as f64 / 1_000.0);
        self.check_probes
            .get_or_create(&CheckResultLabels {
                check: check.to_string(),
                result: ok_or_failed(ok),
            })
            .inc();
    }

    /// The check's rise/fall state changed without a probe (a reset).
    pub fn check_state(&self, check: &str, state: CheckState) {
        self.check_up
            .get_or_create(&CheckLabels {
                check: check.to_string(),
            })
            .set(i64::from(state == CheckState::Up));
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn ok_or_failed(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "failed"
    }
}

/// The assignment kind as the status document spells it.
pub fn kind_name(kind: AssignmentKind) -> &'static str {
    match kind {
        AssignmentKind::Initial => "initial",
        AssignmentKind::Failover => "failover",
        AssignmentKind::Switchover => "switchover",
        AssignmentKind::Handover => "handover",
    }
}

/// The verdict as the status document spells it.
pub fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Operational => "operational",
        Verdict::Degraded => "degraded",
        Verdict::Down => "down",
        Verdict::Pending => "pending",
    }
}

/// Serves the alerter's counters at each scrape, one family per fate.
#[derive(Clone)]
struct AlertCollector {
    alerter: mailherd_alerts::Alerter,
}

impl std::fmt::Debug for AlertCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertCollector").finish_non_exhaustive()
    }
}

impl Collector for AlertCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Pick = fn(&mailherd_alerts::KindCounters) -> u64;
        let fates: [(&str, &str, Pick); 6] = [
            ("alerts_sent", "Alerts the channel's receiver accepted", |c| c.sent),
            (
                "alerts_suppressed",
                "Alerts not sent by a rule: a repeated failover start/end or an identical alert within the window",
                |c| c.suppressed,
            ),
            (
                "alerts_rate_limited",
                "Alerts not sent because the channel's rate limit was spent",
                |c| c.rate_limited,
            ),
            (
                "alerts_dropped",
                "Alerts not sent because the channel's queue was full",
                |c| c.dropped,
            ),
            (
                "alerts_failed",
                "Alerts given up on after every retry",
                |c| c.failed,
            ),
            (
                "alerts_retried",
                "Delivery attempts that failed and were tried again",
                |c| c.retried,
            ),
        ];
        let counters = self.alerter.counters();
        for (name, help, pick) in fates {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (channel, channel_counters) in &counters.channels {
                for (event, by_kind) in &channel_counters.by_kind {
                    let labels = [
                        ("channel", channel.as_str()),
                        ("channel_kind", channel_counters.kind),
                        ("event", event),
                    ];
                    ConstCounter::new(pick(by_kind)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotions_and_checks_show_in_the_exposition() {
        let metrics = Metrics::new("c", "n1", mailherd_alerts::Alerter::disabled("c", "n1"));
        metrics.check_configured("smtp");
        metrics.probe_finished("smtp", true, 3, CheckState::Up);
        metrics.failover_seen(AssignmentKind::Failover);
        metrics.promotion_finished(
            AssignmentKind::Failover,
            &PromotionOutcome {
                ok: true,
                total_ms: 250,
                steps: vec![mailherd_core::state::StepRecord {
                    name: "mount".into(),
                    ok: true,
                    duration_ms: 40,
                    error: None,
                    api_ms: None,
                }],
                error: None,
            },
        );
        let text = metrics.encode().unwrap();
        for line in [
            "mailherd_node_info{cluster=\"c\",node=\"n1\"} 1",
            "mailherd_check_up{check=\"smtp\"} 1",
            "mailherd_check_probes_total{check=\"smtp\",result=\"ok\"} 1",
            "mailherd_failovers_total{kind=\"failover\"} 1",
            "mailherd_failover_duration_seconds_sum{kind=\"failover\",result=\"ok\"} 0.25",
            "mailherd_failover_duration_seconds_count{kind=\"failover\",result=\"ok\"} 1",
            "mailherd_promotion_step_duration_seconds_count{step=\"mount\",result=\"ok\"} 1",
            "# TYPE mailherd_alerts_sent counter",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
