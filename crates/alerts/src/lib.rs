//! Alerts without flooding, and Uptime Kuma heartbeats.
//!
//! The agent owns one [`Alerter`] and calls [`Alerter::send`] where things
//! happen (a failover starts, the breaker opens, the lease is lost). `send`
//! never waits: it stamps the event into an [`Alert`] (id, cluster, node,
//! time), lets each channel's rules decide, and puts it on that channel's
//! bounded queue (full: dropped and counted). One task per channel
//! delivers, retrying failures a bounded number of times. A failover
//! therefore never waits for a slow webhook, and a dead receiver costs
//! nothing but a counter.
//!
//! # Layout
//! - [`event`]: the events, their kinds and severities, the alert's text.
//! - [`rules`]: once per failover epoch, the identical-alert window, the
//!   token bucket; pure, time as an argument.
//! - [`channel`]: webhook, ntfy, Slack, Telegram, e-mail; one file each
//!   behind the [`channel::Channel`] trait.
//! - `delivery`: the per-channel task: timeouts, retries with backoff.
//! - [`counters`]: sent/suppressed/rate-limited/dropped/failed per channel
//!   and kind, for `/status` and `/metrics`.
//! - [`kuma`]: the Uptime Kuma push worker.

pub mod channel;
pub mod counters;
mod delivery;
pub mod event;
pub mod kuma;
pub mod rules;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailherd_config::AlertsSection;
use tokio::sync::mpsc;

pub use counters::{ChannelCounters, Counters, KindCounters};
pub use delivery::RetryPolicy;
pub use event::{Alert, AlertFields, AlertKind, Event, Severity, StepTiming};
pub use kuma::{KumaPush, KumaState, KumaStatus};

use counters::{Outcome, Tally};
use rules::{Limits, Rules, Verdict};

/// Why the alerts could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("alert channel {channel}: cannot read the secret file {path}: {source}")]
    Secret {
        channel: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("alert channel {channel}: {message}")]
    Channel { channel: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("uptime_kuma.push_url is not a URL: {0}")]
    KumaUrl(String),
}

/// Sends alerts to every configured channel. Cheap to clone; the delivery
/// tasks end once every clone is dropped and their queues are empty.
#[derive(Clone)]
pub struct Alerter {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: String,
    node: String,
    /// Makes ids unique across restarts of the same node.
    run_id: String,
    /// Numbers the alerts of this run.
    sequence: AtomicU64,
    /// The rules' clock: tokio's, so tests can pause it.
    started: tokio::time::Instant,
    channels: Vec<Slot>,
}

/// One channel as `send` sees it.
struct Slot {
    name: String,
    /// The channel's memory (epochs, fingerprints, tokens). A std mutex:
    /// held for a lookup, never across an await.
    rules: Mutex<Rules>,
    /// The delivery task's queue; `try_send` only, so `send` never waits.
    queue: mpsc::Sender<Alert>,
    tally: Arc<Tally>,
}

impl Alerter {
    /// An alerter without channels: `send` does nothing (no `[alerts]`).
    pub fn disabled(cluster: &str, node: &str) -> Alerter {
        Alerter::with_channels(cluster, node, Vec::new())
    }

    /// Builds every channel of `section` (reading its secret files) and
    /// starts their delivery tasks. Must run inside a tokio runtime.
    pub fn start(
        cluster: &str,
        node: &str,
        section: &AlertsSection,
    ) -> Result<Alerter, AlertsError> {
        let policy = RetryPolicy {
            retries: section.retries,
            backoff: Duration::from_millis(section.retry_backoff_ms),
            attempt_timeout: Duration::from_millis(section.timeout_ms),
        };
        let mut slots = Vec::new();
        for channel_section in &section.channels {
            let channel = channel::build(channel_section, policy.attempt_timeout)?;
            let limits = Limits {
                window_ms: section.window_s.saturating_mul(1_000),
                rate_per_minute: channel_section
                    .rate_per_minute
                    .unwrap_or(section.rate_per_minute),
                burst: channel_section.burst.unwrap_or(section.burst),
            };
            let (queue_tx, queue_rx) = mpsc::channel(section.queue.max(1));
            let tally = Arc::new(Tally::new(channel_section.kind.as_str()));
            tokio::spawn(delivery::run(
                channel_section.name.clone(),
                channel,
                queue_rx,
                tally.clone(),
                policy,
            ));
            slots.push(Slot {
                name: channel_section.name.clone(),
                rules: Mutex::new(Rules::new(limits)),
                queue: queue_tx,
                tally,
            });
        }
        Ok(Alerter::with_channels(cluster, node, slots))
    }

    fn with_channels(cluster: &str, node: &str, channels: Vec<Slot>) -> Alerter {
        Alerter {
            inner: Arc::new(Inner {
                cluster: cluster.to_string(),
                node: node.to_string(),
                run_id: format!("{:08x}", rand::random::<u32>()),
                sequence: AtomicU64::new(1),
                started: tokio::time::Instant::now(),
                channels,
            }),
        }
    }

    /// Queues `event` on every channel whose rules let it through, and
    /// returns at once: it never waits for a receiver, a queue or a lock
    /// held across I/O. Returns the alert as it was stamped.
    pub fn send(&self, event: Event) -> Alert {
        let inner = &self.inner;
        let at_unix_ms = unix_ms();
        let alert = Alert {
            id: format!(
                "{}-{}-{}",
                inner.node,
                inner.run_id,
                inner.sequence.fetch_add(1, Ordering::Relaxed)
            ),
            kind: event.kind,
            severity: event.severity,
            cluster: inner.cluster.clone(),
            node: inner.node.clone(),
            at_unix_ms,
            at: rfc3339(at_unix_ms),
            summary: event.summary,
            fields: event.fields,
        };
        let now_ms = inner.started.elapsed().as_millis() as u64;
        for slot in &inner.channels {
            let verdict = slot
                .rules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(&alert, now_ms);
            let outcome = match verdict {
                Verdict::Send => match slot.queue.try_send(alert.clone()) {
                    Ok(()) => None,
                    Err(_) => {
                        tracing::warn!(channel = %slot.name, id = %alert.id, "alert queue full: alert dropped");
                        Some(Outcome::Dropped)
                    }
                },
                Verdict::RepeatedFailover | Verdict::Duplicate => Some(Outcome::Suppressed),
                Verdict::RateLimited => Some(Outcome::RateLimited),
            };
            if let Some(outcome) = outcome {
                tracing::debug!(channel = %slot.name, id = %alert.id, ?outcome, "alert not queued");
                slot.tally.count(alert.kind, outcome);
            }
        }
        alert
    }

    /// Every channel's counters now.
    pub fn counters(&self) -> Counters {
        Counters {
            channels: self
                .inner
                .channels
                .iter()
                .map(|slot| (slot.name.clone(), slot.tally.snapshot()))
                .collect(),
        }
    }

    /// Whether any channel is configured.
    pub fn is_enabled(&self) -> bool {
        !self.inner.channels.is_empty()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rfc3339(unix_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
