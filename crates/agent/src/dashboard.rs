//! The dashboard at `GET /`: one server-rendered HTML page (askama,
//! `templates/dashboard.html`) built from this node's status document. No
//! JavaScript: the page reloads itself every few seconds, and every text
//! in it is escaped by the template.
//!
//! [`Dashboard::from_status`] turns the document into what the page shows
//! (names, badges, durations and bar widths as display strings), so the
//! template only lays things out and this module can be tested without a
//! browser.

use askama::Template;
use mailherd_alerts::Counters;
use mailherd_core::state::PromotionOutcome;
use mailherd_core::CheckState;

use crate::metrics::{kind_name, verdict_name};
use crate::status::StatusDocument;

/// How often the page reloads itself.
const REFRESH_SECONDS: u32 = 5;

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct Dashboard {
    pub cluster: String,
    pub node: String,
    pub role: String,
    pub phase: String,
    pub epoch: u64,
    pub refresh_seconds: u32,
    /// When the status document was built, as UTC text.
    pub updated: String,
    /// "n2, epoch 3"; `None` while nobody holds the role.
    pub master: Option<String>,
    pub leader: Option<String>,
    /// How long this node's own lease still runs, while it holds one.
    pub lease: Option<String>,
    pub breaker: Option<BreakerView>,
    /// "on since ..." while maintenance mode is on.
    pub maintenance: Option<String>,
    pub switchover_pending: Option<String>,
    pub decider_blocked: Option<String>,
    pub members: Vec<MemberView>,
    /// This node's verdict with every check (mail nodes only).
    pub verdict: Option<VerdictView>,
    /// Newest first.
    pub history: Vec<HistoryView>,
    pub alert_channels: Vec<AlertChannelView>,
}

pub struct BreakerView {
    pub open: bool,
    /// "1 of 3 failovers in 3600 s".
    pub detail: String,
}

pub struct MemberView {
    pub name: String,
    /// master, backup, fault, witness, or down (not heard from lately by
    /// this node, when it is the Raft leader).
    pub role: String,
    pub is_me: bool,
    pub kind: String,
    pub priority: u32,
    pub ready: bool,
    /// "yes"/"no" from the Raft leader's view; "unknown" elsewhere.
    pub reachable: String,
    pub detail: String,
    pub api: String,
}

pub struct VerdictView {
    /// operational, degraded, down or pending.
    pub verdict: String,
    pub detail: String,
    pub checks: Vec<CheckView>,
}

pub struct CheckView {
    pub name: String,
    pub kind: String,
    pub address: String,
    pub critical: bool,
    /// up, down or unknown (after rise/fall).
    pub state: String,
    /// What the last probe said, with its latency.
    pub last: String,
}

pub struct HistoryView {
    pub epoch: u64,
    pub kind: String,
    /// "n1 → n2" or "→ n1" for the first master.
    pub transition: String,
    pub reason: String,
    pub at: String,
    /// ok, failed or running.
    pub outcome: String,
    /// "promoted in 412 ms" / the error / "promotion running or not recorded".
    pub outcome_detail: String,
    pub steps: Vec<StepView>,
}

pub struct StepView {
    pub name: String,
    pub ok: bool,
    pub duration: String,
    /// The step's share of the promotion, for the bar's width (1..=100).
    pub percent: u64,
    pub error: String,
}

pub struct AlertChannelView {
    pub name: String,
    pub kind: String,
    pub sent: u64,
    pub suppressed: u64,
    pub rate_limited: u64,
    pub failed: u64,
}

impl Dashboard {
    /// What the page shows for `doc`, with the alerter's `alerts`.
    pub fn from_status(doc: &StatusDocument, alerts: &Counters) -> Dashboard {
        let master_id = doc.assignment.as_ref().map(|a| a.id);
        let members = doc
            .members
            .iter()
            .map(|m| {
                let role = if m.id == doc.id {
                    doc.role.clone()
                } else if Some(m.id) == master_id {
                    "master".to_string()
                } else if m.reachable == Some(false) {
                    // Only the Raft leader knows; elsewhere this stays None.
                    "down".to_string()
                } else if m.kind == "witness" {
                    "witness".to_string()
                } else if m.ready {
                    "backup".to_string()
                } else {
                    "fault".to_string()
                };
                MemberView {
                    name: m.name.clone(),
                    role,
                    is_me: m.id == doc.id,
                    kind: m.kind.clone(),
                    priority: m.priority,
                    ready: m.ready,
                    reachable: match m.reachable {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "unknown here",
                    }
                    .to_string(),
                    detail: m.detail.clone(),
                    api: m.api.clone(),
                }
            })
            .collect();
        let verdict = doc.verdict.as_ref().map(|report| VerdictView {
            verdict: verdict_name(report.verdict).to_string(),
            detail: report.detail.clone(),
            checks: report
                .checks
                .iter()
                .map(|c| CheckView {
                    name: c.name.clone(),
                    kind: c.kind.clone(),
                    address: c.address.clone(),
                    critical: c.critical,
                    state: match c.state {
                        CheckState::Up => "up",
                        CheckState::Down => "down",
                        CheckState::Unknown => "unknown",
                    }
                    .to_string(),
                    last: match c.last_ok {
                        None => c.last_detail.clone(),
                        Some(ok) => format!(
                            "{} in {} ms: {}",
                            if ok { "ok" } else { "failed" },
                            c.last_latency_ms,
                            c.last_detail
                        ),
                    },
                })
                .collect(),
        });
        let history = doc
            .history
            .iter()
            .rev()
            .map(|entry| {
                let (outcome, outcome_detail) = describe_outcome(entry.outcome.as_ref());
                HistoryView {
                    epoch: entry.epoch,
                    kind: kind_name(entry.kind).to_string(),
                    transition: match &entry.from {
                        Some(from) => format!("{from} → {}", entry.to),
                        None => format!("→ {}", entry.to),
                    },
                    reason: entry.reason.clone(),
                    at: utc(entry.assigned_at_unix_ms),
                    outcome: outcome.to_string(),
                    outcome_detail,
                    steps: entry.outcome.as_ref().map(steps).unwrap_or_default(),
                }
            })
            .collect();
        Dashboard {
            cluster: doc.cluster.clone(),
            node: doc.node.clone(),
            role: doc.role.clone(),
            phase: doc.phase.clone(),
            epoch: doc.epoch,
            refresh_seconds: REFRESH_SECONDS,
            updated: utc(doc.updated_unix_ms),
            master: doc
                .assignment
                .as_ref()
                .map(|a| format!("{}, epoch {}", a.node, a.epoch)),
            leader: doc
                .leader
                .as_ref()
                .map(|l| format!("{}, term {}", l.name, l.term)),
            lease: doc
                .lease_remaining_ms
                .map(|ms| format!("{ms} ms left on this node's lease")),
            breaker: doc.breaker.as_ref().map(|b| BreakerView {
                open: b.open,
                detail: format!(
                    "{} of {} failovers in {} s",
                    b.failovers_in_window, b.max_failovers, b.window_s
                ),
            }),
            maintenance: doc
                .maintenance_since_unix_ms
                .map(|since| format!("on since {}", utc(since))),
            switchover_pending: doc.switchover_pending.clone(),
            decider_blocked: doc.decider_blocked.clone(),
            members,
            verdict,
            history,
            alert_channels: alerts
                .channels
                .iter()
                .map(|(name, channel)| AlertChannelView {
                    name: name.clone(),
                    kind: channel.kind.to_string(),
                    sent: channel.total.sent,
                    suppressed: channel.total.suppressed,
                    rate_limited: channel.total.rate_limited,
                    failed: channel.total.failed,
                })
                .collect(),
        }
    }
}

fn describe_outcome(outcome: Option<&PromotionOutcome>) -> (&'static str, String) {
    match outcome {
        None => (
            "running",
            "promotion running or not recorded yet".to_string(),
        ),
        Some(outcome) if outcome.ok => ("ok", format!("promoted in {} ms", outcome.total_ms)),
        Some(outcome) => (
            "failed",
            format!(
                "failed after {} ms: {}",
                outcome.total_ms,
                outcome.error.as_deref().unwrap_or("no reason recorded")
            ),
        ),
    }
}

fn steps(outcome: &PromotionOutcome) -> Vec<StepView> {
    let longest_or_total = outcome
        .total_ms
        .max(
            outcome
                .steps
                .iter()
                .map(|s| s.duration_ms)
                .max()
                .unwrap_or(0),
        )
        .max(1);
    outcome
        .steps
        .iter()
        .map(|step| StepView {
            name: step.name.clone(),
            ok: step.ok,
            duration: match step.api_ms {
                Some(api_ms) => format!("{} ms ({api_ms} ms cloud API)", step.duration_ms),
                None => format!("{} ms", step.duration_ms),
            },
            percent: (step.duration_ms * 100 / longest_or_total).clamp(1, 100),
            error: step.error.clone().unwrap_or_default(),
        })
        .collect()
}

/// `2026-11-23 18:30:12 UTC`; empty for 0 (never).
fn utc(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return String::new();
    }
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .map(|t| format!("{t} UTC"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{HistoryEntry, MemberStatus};
    use mailherd_core::state::StepRecord;
    use mailherd_core::AssignmentKind;

    fn member(id: u64, name: &str, kind: &str, ready: bool) -> MemberStatus {
        MemberStatus {
            id,
            name: name.into(),
            kind: kind.into(),
            priority: 100,
            ready,
            detail: String::new(),
            reachable: None,
            api: format!("127.0.0.1:{}", 7400 + id),
        }
    }

    fn document() -> StatusDocument {
        let mut doc = StatusDocument {
            cluster: "c".into(),
            node: "n1".into(),
            id: 1,
            role: "backup".into(),
            phase: "backup".into(),
            epoch: 2,
            assignment: None,
            renewals: 0,
            leader: None,
            lease_remaining_ms: None,
            verdict: None,
            members: Vec::new(),
            history: Vec::new(),
            maintenance_since_unix_ms: None,
            breaker: None,
            switchover_pending: None,
            decider_blocked: None,
            watchdog: None,
            workers: Vec::new(),
            replication: Vec::new(),
            updated_unix_ms: 1_700_000_100_000,
        };
        doc.members = vec![
            member(1, "n1", "mail", true),
            member(2, "n2", "mail", true),
            member(3, "n3", "mail", false),
            member(4, "w1", "witness", true),
        ];
        doc.assignment = Some(crate::status::AssignmentStatus {
            node: "n2".into(),
            id: 2,
            epoch: 2,
        });
        doc.history = vec![
            HistoryEntry {
                epoch: 1,
                from: None,
                to: "n1".into(),
                reason: "initial".into(),
                kind: AssignmentKind::Initial,
                assigned_at_unix_ms: 1_700_000_000_000,
                outcome: None,
            },
            HistoryEntry {
                epoch: 2,
                from: Some("n1".into()),
                to: "n2".into(),
                reason: "<script>alert(1)</script>".into(),
                kind: AssignmentKind::Failover,
                assigned_at_unix_ms: 1_700_000_060_000,
                outcome: Some(PromotionOutcome {
                    ok: true,
                    total_ms: 200,
                    steps: vec![StepRecord {
                        name: "mount".into(),
                        ok: true,
                        duration_ms: 50,
                        error: None,
                        api_ms: None,
                    }],
                    error: None,
                }),
            },
        ];
        doc
    }

    #[test]
    fn members_get_their_roles_and_history_is_newest_first() {
        let page = Dashboard::from_status(&document(), &Counters::default());
        let roles: Vec<(&str, &str)> = page
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.role.as_str()))
            .collect();
        // n1 is this node and says so itself (backup while starting).
        assert_eq!(
            roles,
            [
                ("n1", "backup"),
                ("n2", "master"),
                ("n3", "fault"),
                ("w1", "witness")
            ]
        );
        assert_eq!(page.history[0].epoch, 2);
        assert_eq!(page.history[0].transition, "n1 → n2");
        assert_eq!(page.history[0].steps[0].percent, 25);
        assert_eq!(page.history[1].outcome, "running");
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        let html = Dashboard::from_status(&document(), &Counters::default())
            .render()
            .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
        assert!(html.contains("name=\"viewport\""));
    }
}
