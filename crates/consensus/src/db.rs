//! The redb file shared by the log store and the state machine.
//!
//! One database file (`consensus.redb` in `data_dir`) holds four tables.
//! Values are JSON: the volumes are tiny (a few commands a second) and an
//! operator can read them with any redb tool.
//!
//! What Raft's safety rests on (log entries, the vote, truncations, purges,
//! snapshots) is committed with `Durability::Immediate`: on disk when the
//! call returns. The applied state and the committed index are committed
//! with [`Lazily`]: no fsync of their own, made durable by the next durable
//! commit (redb persists commits in order). A crash can therefore only take
//! them back to an older point that the durable log still covers, and
//! openraft applies the log again from there. That saves two of the three
//! fsyncs every entry cost on every node, which matters because the
//! master's lease renewals are entries: on a disk busy with other writes an
//! fsync can take a few hundred milliseconds (see `slow_storage`).
//!
//! redb is synchronous and `commit` fsyncs, so every access runs on tokio's
//! blocking pool instead of stalling the Raft core task.

use std::io;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Raft log entries by index.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Log-side metadata: [`VOTE`], [`COMMITTED`], [`LAST_PURGED`].
pub(crate) const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");
/// The applied state: [`LAST_APPLIED`], [`LAST_MEMBERSHIP`], [`CLUSTER_STATE`].
pub(crate) const STATE_MACHINE: TableDefinition<&str, &[u8]> =
    TableDefinition::new("state_machine");
/// The current snapshot: [`SNAPSHOT_META`] and [`SNAPSHOT_DATA`].
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

pub(crate) const VOTE: &str = "vote";
pub(crate) const COMMITTED: &str = "committed";
pub(crate) const LAST_PURGED: &str = "last_purged";
pub(crate) const LAST_APPLIED: &str = "last_applied";
pub(crate) const LAST_MEMBERSHIP: &str = "last_membership";
pub(crate) const CLUSTER_STATE: &str = "cluster_state";
pub(crate) const SNAPSHOT_META: &str = "meta";
pub(crate) const SNAPSHOT_DATA: &str = "data";

/// The file name inside `data_dir`.
pub(crate) const FILE_NAME: &str = "consensus.redb";

/// Opens (or creates) the database and makes sure every table exists, so
/// that read transactions never meet a missing table.
pub(crate) fn open(path: &Path) -> Result<Arc<Database>, redb::Error> {
    let database = Database::create(path)?;
    let transaction = database.begin_write()?;
    {
        transaction.open_table(LOG)?;
        transaction.open_table(LOG_META)?;
        transaction.open_table(STATE_MACHINE)?;
        transaction.open_table(SNAPSHOT)?;
    }
    transaction.commit()?;
    Ok(Arc::new(database))
}

/// Runs `work` against the database on the blocking pool.
pub(crate) async fn blocking<T, F>(database: &Arc<Database>, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
{
    let database = database.clone();
    let timed = move || {
        let started = std::time::Instant::now();
        let result = work(&database);
        slow_storage::note(started.elapsed());
        result
    };
    match tokio::task::spawn_blocking(timed).await {
        Ok(result) => result.map_err(io::Error::from),
        Err(join_error) => Err(io::Error::other(format!(
            "storage task failed: {join_error}"
        ))),
    }
}

/// Warns when the disk under `data_dir` is slow enough to cost leases.
///
/// Every Raft write waits for an fsync on the leader and on a majority of
/// followers before it commits, and the master's lease renewal is such a
/// write: a disk that stalls for longer than the lease (500 ms with
/// `timing = "fast"`) moves the role although every node is healthy. The
/// usual cause is another program's burst of buffered writes that the
/// kernel flushes ahead of the log's fsync. The warning names the figure so
/// that an operator can tell this from a network problem.
mod slow_storage {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// A storage call slower than this is counted and reported.
    const SLOW: Duration = Duration::from_millis(100);
    /// At most one warning per this interval; the others are counted in it.
    const REPORT_EVERY: Duration = Duration::from_secs(10);

    static SLOW_CALLS: AtomicU64 = AtomicU64::new(0);
    static WORST_MS: AtomicU64 = AtomicU64::new(0);
    /// Milliseconds since `EPOCH` of the last warning, plus one (0: never).
    static LAST_REPORT: AtomicU64 = AtomicU64::new(0);
    static EPOCH: OnceLock<Instant> = OnceLock::new();

    pub(super) fn note(took: Duration) {
        if took < SLOW {
            return;
        }
        SLOW_CALLS.fetch_add(1, Ordering::Relaxed);
        WORST_MS.fetch_max(took.as_millis() as u64, Ordering::Relaxed);
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        let last = LAST_REPORT.load(Ordering::Relaxed);
        if last != 0 && now - last < REPORT_EVERY.as_millis() as u64 {
            return;
        }
        if LAST_REPORT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let calls = SLOW_CALLS.swap(0, Ordering::Relaxed);
        let worst_ms = WORST_MS.swap(0, Ordering::Relaxed);
        tracing::warn!(
            slow_calls = calls,
            worst_ms,
            "raft storage is slow: {calls} call(s) over {} ms, the worst {worst_ms} ms; \
             each delays every commit, the master's lease renewals included \
             (is the disk under data_dir busy with other writes?)",
            SLOW.as_millis()
        );
    }
}

/// What can go wrong inside one storage transaction.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("cannot encode or decode {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl From<redb::TransactionError> for StoreError {
    fn from(error: redb::TransactionError) -> Self {
        StoreError::Redb(error.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(error: redb::TableError) -> Self {
        StoreError::Redb(error.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(error: redb::StorageError) -> Self {
        StoreError::Redb(error.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(error: redb::CommitError) -> Self {
        StoreError::Redb(error.into())
    }
}

impl From<StoreError> for io::Error {
    fn from(error: StoreError) -> Self {
        io::Error::other(error.to_string())
    }
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Json { what, source })
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Json { what, source })
}

/// Reads one JSON value from a `&str`-keyed table.
pub(crate) fn read_value<T: DeserializeOwned>(
    database: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &'static str,
) -> Result<Option<T>, StoreError> {
    let transaction = database.begin_read()?;
    let table = transaction.open_table(table)?;
    match table.get(key)? {
        Some(bytes) => Ok(Some(decode(key, bytes.value())?)),
        None => Ok(None),
    }
}

/// How a write transaction is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// On disk when `commit` returns (fsync).
    Durably,
    /// Without an fsync of its own: durable with the next durable commit,
    /// and after a crash either all there or not at all. Only for what can
    /// be rebuilt from the durable log.
    Lazily,
}

/// Starts a write transaction committed as `commit` says.
pub(crate) fn begin_write(
    database: &Database,
    commit: Commit,
) -> Result<redb::WriteTransaction, StoreError> {
    let mut transaction = database.begin_write()?;
    if commit == Commit::Lazily {
        transaction
            .set_durability(redb::Durability::None)
            .map_err(|error| StoreError::Redb(error.into()))?;
    }
    Ok(transaction)
}

/// Writes one JSON value to a `&str`-keyed table in its own transaction.
pub(crate) fn write_value<T: Serialize>(
    database: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &'static str,
    value: &T,
    commit: Commit,
) -> Result<(), StoreError> {
    let bytes = encode(key, value)?;
    let transaction = begin_write(database, commit)?;
    {
        let mut table = transaction.open_table(table)?;
        table.insert(key, bytes.as_slice())?;
    }
    transaction.commit()?;
    Ok(())
}
