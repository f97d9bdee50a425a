//! The postfix_queue probe: at most `max_messages` messages wait in
//! Postfix's queue.
//!
//! It counts the queue files under `queue_directory` (maildrop, incoming,
//! active and deferred; `hold` is mail an operator set aside on purpose)
//! rather than running `postqueue -j`, because:
//! - it works while Postfix is stopped, and the queue of a stopped or
//!   failing Postfix is exactly what matters on a node being demoted;
//! - it needs no Postfix binaries on the host: mailcow's queue lives in a
//!   Docker volume (`postfix-vol-1`) that the host reads directly, where
//!   `postqueue` would have to run through `docker exec`;
//! - it costs a directory walk, not a process and a JSON line per message,
//!   and stops as soon as the count is over the limit, so a queue of a
//!   million messages is judged as fast as one of a thousand.
//!
//! Postfix keeps one file per message in these directories (hashed into
//! subdirectories for deferred mail), so files are messages.

use std::path::{Path, PathBuf};

use mailherd_config::{CheckSection, DEFAULT_POSTFIX_QUEUE_DIRECTORY};
use tokio::time::Instant;

use crate::{timed_out, Verdict};

/// The queues that hold mail on its way; in the order mail moves.
const QUEUES: [&str; 4] = ["maildrop", "incoming", "active", "deferred"];
/// Postfix hashes at most a few levels deep (`hash_queue_depth`).
const MAX_DEPTH: usize = 4;

pub(crate) async fn probe(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let directory = check
        .queue_directory
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_POSTFIX_QUEUE_DIRECTORY));
    let max_messages = check
        .max_messages
        .ok_or_else(|| "no max_messages configured".to_string())?;
    // Directory walks block; see the mount probe for why that is bounded.
    let blocking = tokio::task::spawn_blocking(move || count_queue(&directory, max_messages));
    let detail = tokio::time::timeout_at(deadline, blocking)
        .await
        .map_err(|_| timed_out(check.timeout_ms, "the queue count"))?
        .map_err(|error| format!("queue count crashed: {error}"))??;
    Ok(Verdict {
        detail,
        goodbye: None,
    })
}

fn count_queue(directory: &Path, max_messages: u64) -> Result<String, String> {
    let mut counts = Vec::new();
    let mut total: u64 = 0;
    for queue in QUEUES {
        let path = directory.join(queue);
        // Count one past the limit at most: enough to know it is over.
        let budget = max_messages.saturating_add(1).saturating_sub(total);
        let count = count_files(&path, budget, MAX_DEPTH).map_err(|error| {
            format!(
                "{}: {error} (is queue_directory a Postfix queue?)",
                path.display()
            )
        })?;
        total += count;
        counts.push(format!("{queue} {count}"));
        if total > max_messages {
            return Err(format!(
                "over {max_messages} queued messages (counting stopped at {total}: {})",
                counts.join(", ")
            ));
        }
    }
    Ok(format!(
        "{total} queued messages ({}), at most {max_messages}",
        counts.join(", ")
    ))
}

/// Regular files under `path`, counting stops at `budget`.
fn count_files(path: &Path, budget: u64, depth: usize) -> std::io::Result<u64> {
    let mut count = 0;
    for entry in std::fs::read_dir(path)? {
        if count >= budget {
            break;
        }
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_file() {
            count += 1;
        } else if file_type.is_dir() && depth > 0 {
            count += count_files(&entry.path(), budget - count, depth - 1)?;
        }
    }
    Ok(count)
}
