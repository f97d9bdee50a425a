//! The garbage collector: one pass finds (and unless it is a dry run,
//! removes) what nobody should hold any more — mounts of the cluster's
//! volumes, the floating address and a running stack on a node that is not
//! the master, agent pid/lock files no live process holds, and failover
//! history older than `[gc] history_retention_days` (never inside the
//! breaker's window). The rules are the core's
//! (`mailherd_core::reconcile::collect_garbage`); this module reads the
//! host and the files and carries the decisions out.
//!
//! In the agent a pass runs inside the control loop's serialisation (like
//! a reconcile action: only while the node is a backup with no pipeline
//! running, aborted if a pipeline starts), periodically (`[gc]
//! interval_s`) and on `POST /v1/gc`. `mailherd gc` asks the agent; only
//! when the agent is down does the CLI run a pass itself, reporting only
//! unless `--force`.

use std::path::{Path, PathBuf};

use mailherd_config::Config;
use mailherd_consensus::Consensus;
pub use mailherd_core::reconcile::Garbage;
use mailherd_core::reconcile::{
    collect_garbage, history_keep_since, prunable_history, AgentFile, GcView,
};
use mailherd_core::state::Command;
use mailherd_core::Phase;
use serde::{Deserialize, Serialize};

use crate::pipelines::{self, Drivers};

/// The worker name in `/status`.
pub const GC_WORKER: &str = "gc";
/// The running agent's pid file in `data_dir`, locked while it runs.
pub const AGENT_PID_FILE: &str = "agent.pid";
/// The agent files a pass looks at in `data_dir`: the agent's pid file and
/// the keepalived-mode notify lock (`mailherd notify`).
pub const AGENT_FILES: [&str; 2] = [AGENT_PID_FILE, "keepalived-notify.lock"];

/// One thing a pass found and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    #[serde(flatten)]
    pub garbage: Garbage,
    /// The finding in words.
    pub what: String,
    /// `would remove` (dry run), `removed`, `left: why` or `failed: why`.
    pub action: String,
}

/// What one pass found and did, as `mailherd gc` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub node: String,
    pub dry_run: bool,
    /// `running` when the agent ran the pass, `down` when the CLI did.
    pub agent: String,
    /// The holder's phase, when the agent ran the pass.
    pub phase: Option<String>,
    pub found: Vec<Found>,
    /// Why what this node holds was left alone (it is the master, or on its
    /// way to or from it).
    pub host_refused: Option<String>,
    /// Readings that failed.
    pub errors: Vec<String>,
}

impl GcReport {
    /// One line for the worker's state.
    pub fn summary(&self) -> String {
        if self.found.is_empty() {
            return "nothing found".into();
        }
        self.found
            .iter()
            .map(|f| format!("{} ({})", f.what, f.action))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Each finding with what became of it (`would remove`, `removed`, ...).
    pub fn findings(&self) -> Vec<(Garbage, &str)> {
        self.found
            .iter()
            .map(|f| (f.garbage.clone(), f.action.as_str()))
            .collect()
    }

    /// Whether something found could not be removed.
    pub fn failed(&self) -> bool {
        self.found.iter().any(|f| f.action.starts_with("failed"))
    }

    /// The report as text, one finding a line.
    pub fn render(&self) -> String {
        let mut out = format!(
            "gc on {} ({}; agent {}{}):\n",
            self.node,
            if self.dry_run { "dry run" } else { "removing" },
            self.agent,
            self.phase
                .as_deref()
                .map(|p| format!(", phase {p}"))
                .unwrap_or_default()
        );
        if self.found.is_empty() {
            out.push_str("  nothing found\n");
        }
        for found in &self.found {
            out.push_str(&format!("  {}: {}\n", found.what, found.action));
        }
        if let Some(why) = &self.host_refused {
            out.push_str(&format!("  host resources left alone: {why}\n"));
        }
        for error in &self.errors {
            out.push_str(&format!("  could not read: {error}\n"));
        }
        out
    }
}

/// Which of the agent files exist in `data_dir`, and whether a live process
/// holds each one's lock (an advisory lock dies with its process, so an
/// unlocked file is one a dead process left behind).
pub fn inspect_agent_files(data_dir: &Path) -> Vec<AgentFile> {
    AGENT_FILES
        .iter()
        .map(|name| data_dir.join(name))
        .filter(|path| path.exists())
        .map(|path| AgentFile {
            locked: is_locked(&path),
            path: path.display().to_string(),
        })
        .collect()
}

/// Whether another open file holds `path`'s lock. A file we cannot open
/// counts as locked: never remove what cannot be checked.
fn is_locked(path: &Path) -> bool {
    match std::fs::File::open(path) {
        Ok(file) => match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        },
        Err(_) => true,
    }
}

/// Removes `path` if no process holds its lock, holding the lock while
/// removing it so that a process starting meanwhile is not robbed.
fn remove_stale_file(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    file.try_lock()
        .map_err(|_| format!("{} is locked by a live process now", path.display()))?;
    std::fs::remove_file(path).map_err(|e| format!("removing {}: {e}", path.display()))
}

/// Takes the agent's pid file lock for the life of the returned file, and
/// writes the pid; fails when another agent holds it (two agents on one
/// node would both run pipelines on the same host).
pub fn lock_pid_file(data_dir: &Path) -> anyhow::Result<(std::fs::File, PathBuf)> {
    use anyhow::Context;
    use std::io::Write;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join(AGENT_PID_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock().is_err() {
        anyhow::bail!(
            "another mailherd agent runs on {} (it holds the lock of {})",
            data_dir.display(),
            path.display()
        );
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((file, path))
}

/// Where and how a pass runs.
pub struct GcPass<'a> {
    pub config: &'a Config,
    pub drivers: &'a Drivers,
    /// The cluster, when the agent runs the pass: the history comes from
    /// it and its pruning goes through it (a Raft command).
    pub consensus: Option<&'a Consensus>,
    /// The holder's phase; `None` when the agent is down.
    pub phase: Option<&'a Phase>,
    pub pipeline_running: bool,
    pub dry_run: bool,
    pub now_unix_ms: u64,
}

/// Runs one pass.
pub async fn run_pass(pass: GcPass<'_>) -> GcReport {
    let holdings = pass.drivers.observe().await;
    let files = inspect_agent_files(&pass.config.node.data_dir);
    let breaker_window_ms = pass.config.cluster.breaker_window_s.saturating_mul(1_000);
    let keep_since = history_keep_since(
        pass.now_unix_ms,
        pass.config.gc.history_retention_ms(),
        breaker_window_ms,
    );
    let prunable = match pass.consensus {
        Some(consensus) => prunable_history(&consensus.current_state().history, keep_since),
        None => Vec::new(),
    };
    let findings = collect_garbage(&GcView {
        phase: pass.phase,
        pipeline_running: pass.pipeline_running,
        holdings: &holdings,
        files: &files,
        prunable_epochs: &prunable,
    });

    // Host garbage goes together, through the urgent demotion and its
    // read-back: the same path the fence and the reconciler take.
    let host_found = findings.garbage.iter().any(|g| {
        matches!(
            g,
            Garbage::StaleMount { .. }
                | Garbage::StrayAddress
                | Garbage::StackOnBackup
                | Garbage::WritableDatabase
        )
    });
    let host_result = if pass.dry_run || !host_found {
        None
    } else {
        Some(pipelines::demote_until_clean(pass.drivers, true).await)
    };
    let mut found = Vec::new();
    for garbage in findings.garbage {
        let action = if pass.dry_run {
            "would remove".to_string()
        } else {
            match &garbage {
                Garbage::StaleMount { .. }
                | Garbage::StrayAddress
                | Garbage::StackOnBackup
                | Garbage::WritableDatabase => match &host_result {
                    Some(Ok(())) => "removed".to_string(),
                    Some(Err(left)) => format!("failed: {left}"),
                    None => "removed".to_string(),
                },
                Garbage::StaleFile { path } => match remove_stale_file(Path::new(path)) {
                    Ok(()) => "removed".to_string(),
                    Err(error) => format!("failed: {error}"),
                },
                Garbage::OldHistory { .. } => match pass.consensus {
                    Some(consensus) => {
                        let command = Command::PruneHistory {
                            before_unix_ms: keep_since,
                            breaker_window_ms,
                            at_unix_ms: pass.now_unix_ms,
                        };
                        match consensus
                            .propose(command, std::time::Duration::from_secs(5))
                            .await
                        {
                            Ok(Ok(())) => "removed".to_string(),
                            Ok(Err(rejection)) => format!("failed: {rejection}"),
                            Err(error) => format!("failed: {error}"),
                        }
                    }
                    None => "left: the history is replicated; prune it through the agent".into(),
                },
            }
        };
        if !pass.dry_run {
            tracing::info!(what = %garbage, %action, "garbage collector");
        }
        found.push(Found {
            what: garbage.to_string(),
            garbage,
            action,
        });
    }
    GcReport {
        node: pass.config.me().name.clone(),
        dry_run: pass.dry_run,
        agent: if pass.consensus.is_some() {
            "running".into()
        } else {
            "down".into()
        },
        phase: pass.phase.map(|p| p.name().to_string()),
        found,
        host_refused: findings.host_refused,
        errors: holdings
            .unreadable()
            .into_iter()
            .map(|(resource, error)| format!("{resource}: {error}"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_locked_by_a_live_holder_is_not_stale_and_an_unlocked_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let (held, _) = lock_pid_file(dir.path()).unwrap();
        // A second agent on the same data_dir is refused.
        let error = lock_pid_file(dir.path()).unwrap_err().to_string();
        assert!(error.contains("another mailherd agent runs"), "{error}");
        let lock = dir.path().join("keepalived-notify.lock");
        std::fs::write(&lock, "").unwrap();
        let files = inspect_agent_files(dir.path());
        assert_eq!(
            files,
            vec![
                AgentFile {
                    path: dir.path().join(AGENT_PID_FILE).display().to_string(),
                    locked: true,
                },
                AgentFile {
                    path: lock.display().to_string(),
                    locked: false,
                },
            ]
        );
        assert!(remove_stale_file(&dir.path().join(AGENT_PID_FILE)).is_err());
        remove_stale_file(&lock).unwrap();
        assert!(!lock.exists());
        // The agent is gone: its pid file is stale now.
        drop(held);
        assert!(!inspect_agent_files(dir.path())[0].locked);
    }
}
