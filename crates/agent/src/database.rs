//! The database follower: while this node is a backup, its database stays
//! a read-only replica of the current master's.
//!
//! The new master repoints the other databases when it is promoted, but an
//! old master that was down then, or a node whose database restarted,
//! learns the new master only from the replicated state. So every
//! `follow_interval_ms` a backup whose master finished its promotion makes
//! its database follow that master ([`Database::follow`] changes nothing
//! when it already does). Errors are logged once per change of text, so a
//! diverged old master (it holds transactions the new master lacks) says
//! so loudly without flooding the log.

use std::sync::Arc;

use mailherd_config::Config;
use mailherd_consensus::Consensus;
use mailherd_drivers::Database;
use tokio::sync::watch;

use crate::status::StatusDocument;

/// The master this backup's database should follow now: the assigned node,
/// once its promotion for the current epoch is recorded as done; `None`
/// while this node is (or is becoming) master, or nobody is.
fn master_to_follow(
    config: &Config,
    consensus: &Consensus,
    status: &StatusDocument,
) -> Option<String> {
    // `phase`, not `role`: a node cooling down after a fault is `fault`
    // but its database should follow all the same.
    if status.phase != "backup" {
        return None;
    }
    let state = consensus.current_state();
    let assignment = state.assignment?;
    if assignment.node == config.me().id {
        return None;
    }
    let promoted = state
        .history
        .iter()
        .rev()
        .find(|record| record.epoch == assignment.epoch)
        .and_then(|record| record.outcome.as_ref())
        .is_some_and(|outcome| outcome.ok);
    if !promoted {
        return None;
    }
    config
        .effective_members(&state)
        .into_iter()
        .find(|member| member.id == assignment.node)
        .map(|member| member.name)
}

/// Runs until `stop` turns true.
pub async fn follow_master(
    config: Arc<Config>,
    consensus: Consensus,
    database: Arc<dyn Database>,
    status: watch::Receiver<StatusDocument>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = database.follow_interval();
    let mut last_outcome = String::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let doc = status.borrow().clone();
        let Some(master) = master_to_follow(&config, &consensus, &doc) else {
            continue;
        };
        let still_valid = {
            let (config, consensus, status, master) = (
                config.clone(),
                consensus.clone(),
                status.clone(),
                master.clone(),
            );
            move || {
                let doc = status.borrow().clone();
                master_to_follow(&config, &consensus, &doc).as_deref() == Some(master.as_str())
            }
        };
        let outcome = match database.follow(&master, &still_valid).await {
            Ok(done) if done == "unchanged" => continue,
            Ok(done) => {
                tracing::info!(%master, %done, "database follows the master");
                done
            }
            Err(error) => {
                let text = error.to_string();
                if text != last_outcome {
                    tracing::error!(%master, error = %text, "this node's database cannot follow the master");
                }
                text
            }
        };
        last_outcome = outcome;
    }
}
