//! What an alert says: the [`Event`] the agent raises, and the [`Alert`]
//! the [`crate::Alerter`] makes of it (id, cluster, node, time).

use serde::{Deserialize, Serialize};

/// What happened. The set is closed so that counters and rules can key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    FailoverStarted,
    FailoverCompleted,
    FailoverFailed,
    BreakerOpened,
    LeaseLost,
    SplitBrain,
    NodeDown,
    NodeUp,
    CheckDegraded,
    MaintenanceOn,
    MaintenanceOff,
    /// The reconciler found the master lacking a resource and acquired it
    /// again.
    DriftRepaired,
}

impl AlertKind {
    pub const ALL: [AlertKind; 12] = [
        AlertKind::FailoverStarted,
        AlertKind::FailoverCompleted,
        AlertKind::FailoverFailed,
        AlertKind::BreakerOpened,
        AlertKind::LeaseLost,
        AlertKind::SplitBrain,
        AlertKind::NodeDown,
        AlertKind::NodeUp,
        AlertKind::CheckDegraded,
        AlertKind::MaintenanceOn,
        AlertKind::MaintenanceOff,
        AlertKind::DriftRepaired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::FailoverStarted => "failover_started",
            AlertKind::FailoverCompleted => "failover_completed",
            AlertKind::FailoverFailed => "failover_failed",
            AlertKind::BreakerOpened => "breaker_opened",
            AlertKind::LeaseLost => "lease_lost",
            AlertKind::SplitBrain => "split_brain",
            AlertKind::NodeDown => "node_down",
            AlertKind::NodeUp => "node_up",
            AlertKind::CheckDegraded => "check_degraded",
            AlertKind::MaintenanceOn => "maintenance_on",
            AlertKind::MaintenanceOff => "maintenance_off",
            AlertKind::DriftRepaired => "drift_repaired",
        }
    }

    /// Which end of a failover this is, if it is one: the once-per-epoch
    /// rule keys on it (completed and failed are the same end).
    pub fn failover_phase(self) -> Option<FailoverPhase> {
        match self {
            AlertKind::FailoverStarted => Some(FailoverPhase::Started),
            AlertKind::FailoverCompleted | AlertKind::FailoverFailed => Some(FailoverPhase::Ended),
            _ => None,
        }
    }
}

/// The two alerts every failover has exactly once per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailoverPhase {
    Started,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// How long one step of a promotion took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTiming {
    pub name: String,
    pub ms: u64,
    pub ok: bool,
}

/// The structured part of an alert; what does not apply stays empty and is
/// left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The node that held the role before (failovers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The node that takes the role (failovers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The node the alert is about when it is not the sender (node down/up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepTiming>,
    /// Why: an error, a failing check, a breaker's numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An event as the agent raises it; [`crate::Alerter::send`] stamps it into
/// an [`Alert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: AlertKind,
    pub severity: Severity,
    /// One line for a human.
    pub summary: String,
    pub fields: AlertFields,
}

impl Event {
    pub fn new(kind: AlertKind, severity: Severity, summary: impl Into<String>) -> Event {
        Event {
            kind,
            severity,
            summary: summary.into(),
            fields: AlertFields::default(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Event {
        self.fields.detail = Some(detail.into());
        self
    }

    pub fn failover_started(epoch: u64, from: Option<&str>, to: &str) -> Event {
        let summary = match from {
            Some(from) => format!("failover started: {from} -> {to} (epoch {epoch})"),
            None => format!("failover started: {to} takes the master role (epoch {epoch})"),
        };
        let mut event = Event::new(AlertKind::FailoverStarted, Severity::Warning, summary);
        event.fields.epoch = Some(epoch);
        event.fields.from = from.map(str::to_string);
        event.fields.to = Some(to.to_string());
        event
    }

    pub fn failover_completed(
        epoch: u64,
        from: Option<&str>,
        to: &str,
        total_ms: u64,
        steps: Vec<StepTiming>,
    ) -> Event {
        let mut event = Event::new(
            AlertKind::FailoverCompleted,
            Severity::Info,
            format!("failover complete: {to} is master (epoch {epoch}, {total_ms} ms)"),
        );
        event.fields.epoch = Some(epoch);
        event.fields.from = from.map(str::to_string);
        event.fields.to = Some(to.to_string());
        event.fields.total_ms = Some(total_ms);
        event.fields.steps = steps;
        event
    }

    pub fn failover_failed(
        epoch: u64,
        from: Option<&str>,
        to: &str,
        error: &str,
        total_ms: u64,
        steps: Vec<StepTiming>,
    ) -> Event {
        let mut event = Event::new(
            AlertKind::FailoverFailed,
            Severity::Critical,
            format!("failover FAILED on {to} (epoch {epoch}): {error}; the role is released"),
        );
        event.fields.epoch = Some(epoch);
        event.fields.from = from.map(str::to_string);
        event.fields.to = Some(to.to_string());
        event.fields.total_ms = Some(total_ms);
        event.fields.steps = steps;
        event.fields.detail = Some(error.to_string());
        event
    }

    pub fn breaker_opened(failovers: usize, max_failovers: usize, window_s: u64) -> Event {
        Event::new(
            AlertKind::BreakerOpened,
            Severity::Critical,
            format!(
                "CIRCUIT BREAKER OPEN: {failovers} failovers in {window_s} s (at most \
                 {max_failovers}); no automatic failover until `mailherd breaker reset`"
            ),
        )
        .with_detail(format!(
            "failovers={failovers} max_failovers={max_failovers} window_s={window_s}"
        ))
    }

    pub fn lease_lost(epoch: u64, reason: &str) -> Event {
        let mut event = Event::new(
            AlertKind::LeaseLost,
            Severity::Critical,
            format!("lease lost for epoch {epoch}: fencing ({reason})"),
        );
        event.fields.epoch = Some(epoch);
        event.fields.detail = Some(reason.to_string());
        event
    }

    pub fn split_brain(epoch: Option<u64>, detail: &str) -> Event {
        let mut event = Event::new(
            AlertKind::SplitBrain,
            Severity::Critical,
            format!("SPLIT-BRAIN ALARM: {detail}"),
        );
        event.fields.epoch = epoch;
        event.fields.detail = Some(detail.to_string());
        event
    }

    /// The reconciler found the master of `epoch` lacking what `detail`
    /// names and acquired it again (or failed to, `ok` false).
    pub fn drift_repaired(epoch: u64, detail: &str, ok: bool) -> Event {
        let mut event = Event::new(
            AlertKind::DriftRepaired,
            if ok {
                Severity::Warning
            } else {
                Severity::Critical
            },
            if ok {
                format!("drift repaired on the master: {detail}")
            } else {
                format!("drift on the master NOT repaired: {detail}")
            },
        );
        event.fields.epoch = Some(epoch);
        event.fields.detail = Some(detail.to_string());
        event
    }

    pub fn node_down(node: &str, detail: &str) -> Event {
        let mut event = Event::new(
            AlertKind::NodeDown,
            Severity::Warning,
            format!("node {node} is down: {detail}"),
        );
        event.fields.subject = Some(node.to_string());
        event.fields.detail = Some(detail.to_string());
        event
    }

    pub fn node_up(node: &str) -> Event {
        let mut event = Event::new(
            AlertKind::NodeUp,
            Severity::Info,
            format!("node {node} is up"),
        );
        event.fields.subject = Some(node.to_string());
        event
    }

    pub fn check_degraded(detail: &str) -> Event {
        Event::new(
            AlertKind::CheckDegraded,
            Severity::Warning,
            format!("checks degraded: {detail}"),
        )
        .with_detail(detail)
    }

    pub fn maintenance(on: bool) -> Event {
        if on {
            Event::new(
                AlertKind::MaintenanceOn,
                Severity::Warning,
                "maintenance mode on: no automatic failover",
            )
        } else {
            Event::new(
                AlertKind::MaintenanceOff,
                Severity::Info,
                "maintenance mode off: automatic failover again",
            )
        }
    }
}

/// An event as it is delivered: the body of the webhook channel's POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique per alert (node, agent start, sequence): a receiver can drop
    /// a retried delivery it already has.
    pub id: String,
    pub kind: AlertKind,
    pub severity: Severity,
    pub cluster: String,
    /// The node that sent it.
    pub node: String,
    pub at_unix_ms: u64,
    /// `at_unix_ms` as RFC 3339 (UTC), for people reading the JSON.
    pub at: String,
    pub summary: String,
    pub fields: AlertFields,
}

impl Alert {
    /// The subject line of mails and the title of ntfy notifications.
    pub fn title(&self) -> String {
        format!(
            "[{}] {} {}: {}",
            self.cluster,
            self.severity.as_str().to_uppercase(),
            self.node,
            self.kind.as_str().replace('_', " ")
        )
    }

    /// The whole alert as plain text: summary, then one `key: value` line
    /// per field (ntfy, Slack, Telegram, mail bodies).
    pub fn text(&self) -> String {
        let mut text = format!("{}\n", self.summary);
        let mut line = |key: &str, value: String| text.push_str(&format!("{key}: {value}\n"));
        line("cluster", self.cluster.clone());
        line("node", self.node.clone());
        line("severity", self.severity.as_str().to_string());
        line("time", self.at.clone());
        if let Some(epoch) = self.fields.epoch {
            line("epoch", epoch.to_string());
        }
        if let Some(from) = &self.fields.from {
            line("from", from.clone());
        }
        if let Some(to) = &self.fields.to {
            line("to", to.clone());
        }
        if let Some(subject) = &self.fields.subject {
            line("about", subject.clone());
        }
        if let Some(total_ms) = self.fields.total_ms {
            line("total", format!("{total_ms} ms"));
        }
        for step in &self.fields.steps {
            line(
                "step",
                format!(
                    "{} {} ms{}",
                    step.name,
                    step.ms,
                    if step.ok { "" } else { " (failed)" }
                ),
            );
        }
        if let Some(detail) = &self.fields.detail {
            line("detail", detail.clone());
        }
        line("id", self.id.clone());
        text
    }

    /// What makes two alerts "identical" for the suppression window: all
    /// but the id and the time.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.kind.as_str(),
            self.node,
            self.summary,
            serde_json::to_string(&self.fields).unwrap_or_default()
        )
    }
}
