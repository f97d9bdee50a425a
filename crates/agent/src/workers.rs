//! The agent's workers and what each last did, for `/status` (issue #7:
//! "workers' states") and `mailherd status`.
//!
//! Every long-running loop of the agent reports here when a round starts
//! and ends: the control loop, the reconciler and the garbage collector
//! directly; the check monitor, alert delivery and the Uptime Kuma push are
//! read from their own state when the status is built
//! ([`crate::status`]), so those crates need not know about this registry.
//! A std mutex: held for an assignment, never across an await.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// A round is in progress (or, for a loop that never rests, it runs).
    Running,
    /// Waiting for its next round; the last one succeeded.
    Idle,
    /// Waiting for its next round; the last one failed (see `last_error`).
    Failed,
}

/// One worker as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    /// When the last round started (wall clock), if one did.
    pub last_run_unix_ms: Option<u64>,
    /// What the last round found or did.
    pub last_result: Option<String>,
    /// Why the last round failed; cleared by a round that succeeds.
    pub last_error: Option<String>,
    /// The last time the worker changed something (the reconciler's last
    /// release or repair, the collector's last removal), kept while later
    /// rounds find nothing to do.
    #[serde(default)]
    pub last_action: Option<String>,
    #[serde(default)]
    pub last_action_unix_ms: Option<u64>,
    /// Rounds finished since the agent started.
    pub runs: u64,
}

impl WorkerStatus {
    pub fn new(name: &str) -> WorkerStatus {
        WorkerStatus {
            name: name.to_string(),
            state: WorkerState::Idle,
            last_run_unix_ms: None,
            last_result: None,
            last_error: None,
            last_action: None,
            last_action_unix_ms: None,
            runs: 0,
        }
    }
}

/// Reads the state of workers that keep their own (see [`Workers::derive`]).
type Deriver = Box<dyn Fn() -> Vec<WorkerStatus> + Send + Sync>;

/// The registry the agent's workers report to; clones share it.
#[derive(Clone, Default)]
pub struct Workers {
    by_name: Arc<Mutex<BTreeMap<String, WorkerStatus>>>,
    /// Workers whose state lives elsewhere, read at each snapshot.
    derived: Arc<Mutex<Vec<Deriver>>>,
}

impl Workers {
    fn update(&self, name: &str, change: impl FnOnce(&mut WorkerStatus)) {
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        change(
            by_name
                .entry(name.to_string())
                .or_insert_with(|| WorkerStatus::new(name)),
        );
    }

    /// Lists `name` before its first round (so `/status` shows every worker).
    pub fn register(&self, name: &str) {
        self.update(name, |_| {});
    }

    /// A round of `name` begins now.
    pub fn started(&self, name: &str, now_unix_ms: u64) {
        self.update(name, |w| {
            w.state = WorkerState::Running;
            w.last_run_unix_ms = Some(now_unix_ms);
        });
    }

    /// A round of `name` ended: `Ok(what it found or did)` or `Err(why it failed)`.
    pub fn finished(&self, name: &str, result: Result<String, String>) {
        self.update(name, |w| {
            w.runs += 1;
            match result {
                Ok(summary) => {
                    w.state = WorkerState::Idle;
                    w.last_result = Some(summary);
                    w.last_error = None;
                }
                Err(error) => {
                    w.state = WorkerState::Failed;
                    w.last_result = None;
                    w.last_error = Some(error);
                }
            }
        });
    }

    /// `name` changed something at `now_unix_ms`: `what` (success or not).
    pub fn acted(&self, name: &str, now_unix_ms: u64, what: &str) {
        self.update(name, |w| {
            w.last_action = Some(what.to_string());
            w.last_action_unix_ms = Some(now_unix_ms);
        });
    }

    /// For a loop that never rests (the control loop): running, last seen
    /// at `now_unix_ms`, with `summary` as its current result.
    pub fn alive(&self, name: &str, now_unix_ms: u64, summary: String) {
        self.update(name, |w| {
            w.state = WorkerState::Running;
            w.last_run_unix_ms = Some(now_unix_ms);
            w.last_result = Some(summary);
            w.last_error = None;
        });
    }

    /// Adds workers whose state `read` builds from their own bookkeeping
    /// (the check monitor, alert delivery, the Kuma push).
    pub fn derive(&self, read: impl Fn() -> Vec<WorkerStatus> + Send + Sync + 'static) {
        self.derived
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(read));
    }

    /// Every worker, by name.
    pub fn snapshot(&self) -> Vec<WorkerStatus> {
        let mut all: BTreeMap<String, WorkerStatus> = self
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let derived = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        for read in derived.iter() {
            for status in read() {
                all.insert(status.name.clone(), status);
            }
        }
        all.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_runs_then_idles_or_fails_and_success_clears_the_error() {
        let workers = Workers::default();
        workers.register("gc");
        assert_eq!(workers.snapshot(), vec![WorkerStatus::new("gc")]);
        workers.started("gc", 1_000);
        assert_eq!(workers.snapshot()[0].state, WorkerState::Running);
        workers.finished("gc", Err("mount table unreadable".into()));
        let gc = &workers.snapshot()[0];
        assert_eq!(
            (gc.state, gc.last_error.as_deref(), gc.runs),
            (WorkerState::Failed, Some("mount table unreadable"), 1)
        );
        workers.started("gc", 2_000);
        workers.finished("gc", Ok("nothing found".into()));
        let gc = &workers.snapshot()[0];
        assert_eq!(gc.state, WorkerState::Idle);
        assert_eq!(gc.last_error, None);
        assert_eq!(gc.last_result.as_deref(), Some("nothing found"));
        assert_eq!((gc.last_run_unix_ms, gc.runs), (Some(2_000), 2));
    }
}
