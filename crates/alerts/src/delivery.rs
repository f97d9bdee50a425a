//! The delivery task of one channel: takes alerts off the channel's queue
//! one at a time, each attempt bounded by a timeout, failures retried with
//! a doubling pause a bounded number of times, everything counted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::channel::{Channel, DeliveryError};
use crate::counters::{Outcome, Tally};
use crate::Alert;

/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How hard one alert is tried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// The pause before the first retry, doubled for each further one.
    pub backoff: Duration,
    /// One attempt's limit (a receiver that accepts and never answers).
    pub attempt_timeout: Duration,
}

pub(crate) async fn run<C: Channel>(
    name: String,
    channel: C,
    mut queue: mpsc::Receiver<Alert>,
    tally: Arc<Tally>,
    policy: RetryPolicy,
) {
    // Ends when the alerter (every sender) is gone and the queue is empty.
    while let Some(alert) = queue.recv().await {
        let mut pause = policy.backoff;
        for attempt in 0..=policy.retries {
            let result =
                match tokio::time::timeout(policy.attempt_timeout, channel.deliver(&alert)).await {
                    Ok(result) => result,
                    Err(_) => Err(DeliveryError::Timeout(policy.attempt_timeout)),
                };
            match result {
                Ok(()) => {
                    tally.count(alert.kind, Outcome::Sent);
                    tracing::debug!(channel = %name, id = %alert.id, kind = alert.kind.as_str(), "alert delivered");
                    break;
                }
                Err(error) if attempt == policy.retries => {
                    tally.count(alert.kind, Outcome::Failed);
                    tracing::warn!(
                        channel = %name,
                        id = %alert.id,
                        kind = alert.kind.as_str(),
                        attempts = attempt + 1,
                        %error,
                        "alert not delivered: giving up"
                    );
                }
                Err(error) => {
                    tally.count(alert.kind, Outcome::Retried);
                    tracing::debug!(channel = %name, id = %alert.id, attempt = attempt + 1, %error, "alert delivery failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
