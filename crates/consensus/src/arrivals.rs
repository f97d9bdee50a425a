//! When log entries arrived on this node, and when the last entry that
//! moved the role forward (an accepted `Assign` or `Renew`) arrived.
//!
//! The decider waits `lease + drift_margin` from the last such progress it
//! knows of. Measuring from the entry's *arrival* in this node's log instead
//! of its *apply* is still safe — an entry cannot arrive anywhere before its
//! proposer started it, and the holder's lease runs from that start — and it
//! matters after a leader dies: followers hold the last renewals in their
//! logs but apply them only once a new leader has been elected, up to an
//! election later. Entries without an arrival time (replayed after a
//! restart) count as arriving when they are applied: later, so safe.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Default)]
pub(crate) struct Arrivals {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Log index → when `append` was called for it on this node.
    by_index: BTreeMap<u64, Instant>,
    last_progress: Option<Instant>,
}

impl Arrivals {
    /// Records that the entries at `indexes` arrived now. A truncated and
    /// re-appended index gets the new entry's time.
    pub(crate) fn arrived(&self, indexes: impl IntoIterator<Item = u64>) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for index in indexes {
            inner.by_index.insert(index, now);
        }
    }

    /// The entry at `index` was applied and moved the role forward.
    pub(crate) fn progressed_at(&self, index: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let at = inner
            .by_index
            .get(&index)
            .copied()
            .unwrap_or_else(Instant::now);
        inner.last_progress = Some(inner.last_progress.map_or(at, |last| last.max(at)));
    }

    /// Progress is known only from a snapshot: count it as arriving now.
    pub(crate) fn progressed_now(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.last_progress = Some(Instant::now());
    }

    /// Forgets arrival times of entries up to `index` (they are applied).
    pub(crate) fn forget_up_to(&self, index: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_index = inner.by_index.split_off(&(index + 1));
    }

    pub(crate) fn last_progress(&self) -> Option<Instant> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_takes_the_arrival_time_and_never_goes_back() {
        let arrivals = Arrivals::default();
        arrivals.arrived([1, 2]);
        let arrived = arrivals.inner.lock().unwrap().by_index[&2];
        std::thread::sleep(std::time::Duration::from_millis(5));
        arrivals.progressed_at(2);
        assert_eq!(arrivals.last_progress(), Some(arrived));
        // An older entry applied later does not move progress back.
        arrivals.progressed_at(1);
        assert_eq!(arrivals.last_progress(), Some(arrived));
        arrivals.forget_up_to(2);
        assert!(arrivals.inner.lock().unwrap().by_index.is_empty());
        // Unknown arrival (replayed after restart): counts as now, later.
        arrivals.progressed_at(3);
        assert!(arrivals.last_progress().unwrap() > arrived);
    }
}
