//! The check worker: every configured check probed on its own interval,
//! counted with rise/fall, combined into the stack verdict.
//!
//! Checks run on every mail node all the time (a backup's checks fail, its
//! stack is stopped; nobody acts on a backup's verdict). The control loop
//! resets the counters when a promotion starts so that failures from before
//! the stack ran do not count against the new master.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailherd_config::CheckSection;
use mailherd_core::{CheckCounter, CheckState, Verdict};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The latest result of one check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub name: String,
    pub kind: String,
    pub address: String,
    pub critical: bool,
    pub state: CheckState,
    pub last_ok: Option<bool>,
    pub last_detail: String,
    pub last_latency_ms: u64,
}

/// The verdict with every check behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorReport {
    pub verdict: Verdict,
    /// Why the verdict is what it is (the failing checks), for logs and alerts.
    pub detail: String,
    pub checks: Vec<CheckReport>,
    /// When a probe last finished (wall clock), for the workers' states.
    #[serde(default)]
    pub last_probe_unix_ms: Option<u64>,
}

struct CheckSlot {
    config: CheckSection,
    counter: CheckCounter,
    report: CheckReport,
}

#[derive(Clone)]
pub struct Monitor {
    /// Counters and last results; a std mutex, held only for bookkeeping.
    slots: Arc<Mutex<Vec<CheckSlot>>>,
    /// Where each probe's result and latency are counted as it ends (the
    /// agent's `/metrics`); `None` for a one-off use such as `notify`.
    metrics: Option<Metrics>,
    report_tx: Arc<watch::Sender<MonitorReport>>,
    report_rx: watch::Receiver<MonitorReport>,
}

impl Monitor {
    /// Starts one probing task per check.
    pub fn start(checks: &[CheckSection], metrics: Option<Metrics>) -> Monitor {
        let slots: Vec<CheckSlot> = checks
            .iter()
            .map(|c| CheckSlot {
                config: c.clone(),
                counter: CheckCounter::new(c.rise, c.fall),
                report: CheckReport {
                    name: c.name.clone(),
                    kind: format!("{:?}", c.kind).to_lowercase(),
                    address: c.address.map(|a| a.to_string()).unwrap_or_default(),
                    critical: c.critical,
                    state: CheckState::Unknown,
                    last_ok: None,
                    last_detail: "not probed yet".into(),
                    last_latency_ms: 0,
                },
            })
            .collect();
        let initial = summarize(&slots);
        let (report_tx, report_rx) = watch::channel(initial);
        if let Some(metrics) = &metrics {
            for check in checks {
                metrics.check_configured(&check.name);
            }
        }
        let monitor = Monitor {
            slots: Arc::new(Mutex::new(slots)),
            metrics,
            report_tx: Arc::new(report_tx),
            report_rx,
        };
        for (index, check) in checks.iter().enumerate() {
            let monitor = monitor.clone();
            let check = check.clone();
            tokio::spawn(async move {
                let mut interval =
                    tokio::time::interval(Duration::from_millis(check.interval_ms.max(10)));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let result = mailherd_probes::probe(&check).await;
                    monitor.record(index, result.ok, result.detail, result.latency_ms);
                }
            });
        }
        monitor
    }

    fn record(&self, index: usize, ok: bool, detail: String, latency_ms: u64) {
        let summary = {
            let mut slots = self.slots.lock().expect("monitor lock");
            let slot = &mut slots[index];
            if let Some(state) = slot.counter.record(ok) {
                tracing::info!(check = %slot.config.name, ?state, %detail, "check changed state");
            }
            slot.report.state = slot.counter.state;
            slot.report.last_ok = Some(ok);
            slot.report.last_detail = detail;
            slot.report.last_latency_ms = latency_ms;
            if let Some(metrics) = &self.metrics {
                metrics.probe_finished(&slot.config.name, ok, latency_ms, slot.counter.state);
            }
            let mut summary = summarize(&slots);
            summary.last_probe_unix_ms = Some(crate::clock::Clock::new().unix_ms());
            summary
        };
        self.report_tx.send_replace(summary);
    }

    pub fn report(&self) -> MonitorReport {
        self.report_rx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<MonitorReport> {
        self.report_rx.clone()
    }

    /// Forgets every counter (the stack is being started).
    pub fn reset(&self) {
        let summary = {
            let mut slots = self.slots.lock().expect("monitor lock");
            for slot in slots.iter_mut() {
                slot.counter.reset();
                slot.report.state = CheckState::Unknown;
                if let Some(metrics) = &self.metrics {
                    metrics.check_state(&slot.config.name, CheckState::Unknown);
                }
            }
            let mut summary = summarize(&slots);
            summary.last_probe_unix_ms = self.report_rx.borrow().last_probe_unix_ms;
            summary
        };
        self.report_tx.send_replace(summary);
    }

    /// Probes every critical check quickly until each has passed `rise`
    /// times in a row, or `timeout` ends. Used by the promotion's last step.
    pub async fn wait_critical_up(&self, timeout: Duration) -> Result<(), String> {
        let critical: Vec<(usize, CheckSection)> = {
            let slots = self.slots.lock().expect("monitor lock");
            slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.config.critical)
                .map(|(i, s)| (i, s.config.clone()))
                .collect()
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_failure = String::new();
        loop {
            let mut all_up = true;
            for (index, check) in &critical {
                let up = {
                    let slots = self.slots.lock().expect("monitor lock");
                    slots[*index].counter.state == CheckState::Up
                };
                if up {
                    continue;
                }
                let result = mailherd_probes::probe(check).await;
                if !result.ok {
                    last_failure = format!("{}: {}", check.name, result.detail);
                }
                self.record(*index, result.ok, result.detail, result.latency_ms);
                let up = {
                    let slots = self.slots.lock().expect("monitor lock");
                    slots[*index].counter.state == CheckState::Up
                };
                all_up &= up;
            }
            if all_up {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "critical checks not up after {} ms (last failure: {last_failure})",
                    timeout.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn summarize(slots: &[CheckSlot]) -> MonitorReport {
    let verdict = Verdict::from_checks(slots.iter().map(|s| (s.config.critical, s.counter.state)));
    let failing: Vec<String> = slots
        .iter()
        .filter(|s| s.counter.state == CheckState::Down)
        .map(|s| format!("{}: {}", s.config.name, s.report.last_detail))
        .collect();
    MonitorReport {
        verdict,
        detail: if failing.is_empty() {
            format!("{verdict:?}").to_lowercase()
        } else {
            failing.join("; ")
        },
        checks: slots.iter().map(|s| s.report.clone()).collect(),
        last_probe_unix_ms: None,
    }
}
