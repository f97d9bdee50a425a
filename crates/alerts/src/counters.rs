//! What happened to the alerts, per channel and kind, as plain numbers for
//! `/status` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::event::AlertKind;

/// The fate of the alerts of one kind on one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCounters {
    /// Delivered (the receiver accepted it).
    pub sent: u64,
    /// Not delivered because of a rule: a repeated failover start/end or an
    /// identical alert within the window.
    pub suppressed: u64,
    /// Not delivered because the channel's rate limit was spent.
    pub rate_limited: u64,
    /// Not delivered because the channel's queue was full.
    pub dropped: u64,
    /// Given up on after every retry.
    pub failed: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
}

impl KindCounters {
    fn add(&mut self, other: &KindCounters) {
        self.sent += other.sent;
        self.suppressed += other.suppressed;
        self.rate_limited += other.rate_limited;
        self.dropped += other.dropped;
        self.failed += other.failed;
        self.retried += other.retried;
    }
}

/// One channel's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelCounters {
    pub kind: &'static str,
    /// Every kind together.
    pub total: KindCounters,
    /// Only the kinds that happened.
    pub by_kind: BTreeMap<&'static str, KindCounters>,
}

/// The whole snapshot, by channel name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub channels: BTreeMap<String, ChannelCounters>,
}

impl Counters {
    /// The counters of `channel` for `kind` (zero when nothing happened).
    pub fn get(&self, channel: &str, kind: AlertKind) -> KindCounters {
        self.channels
            .get(channel)
            .and_then(|c| c.by_kind.get(kind.as_str()))
            .copied()
            .unwrap_or_default()
    }

    /// Every kind of `channel` together.
    pub fn total(&self, channel: &str) -> KindCounters {
        self.channels
            .get(channel)
            .map(|c| c.total)
            .unwrap_or_default()
    }
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    Suppressed,
    RateLimited,
    Dropped,
    Failed,
    Retried,
}

/// The live counters of one channel. A std mutex: held for an increment,
/// never across an await, so `Alerter::send` cannot wait on it for long.
#[derive(Debug)]
pub(crate) struct Tally {
    channel_kind: &'static str,
    by_kind: Mutex<BTreeMap<AlertKind, KindCounters>>,
}

impl Tally {
    pub(crate) fn new(channel_kind: &'static str) -> Tally {
        Tally {
            channel_kind,
            by_kind: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn count(&self, kind: AlertKind, outcome: Outcome) {
        let mut by_kind = self.by_kind.lock().unwrap_or_else(|p| p.into_inner());
        let counters = by_kind.entry(kind).or_default();
        let counter = match outcome {
            Outcome::Sent => &mut counters.sent,
            Outcome::Suppressed => &mut counters.suppressed,
            Outcome::RateLimited => &mut counters.rate_limited,
            Outcome::Dropped => &mut counters.dropped,
            Outcome::Failed => &mut counters.failed,
            Outcome::Retried => &mut counters.retried,
        };
        *counter += 1;
    }

    pub(crate) fn snapshot(&self) -> ChannelCounters {
        let by_kind = self.by_kind.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = KindCounters::default();
        for counters in by_kind.values() {
            total.add(counters);
        }
        ChannelCounters {
            kind: self.channel_kind,
            total,
            by_kind: by_kind.iter().map(|(k, c)| (k.as_str(), *c)).collect(),
        }
    }
}
