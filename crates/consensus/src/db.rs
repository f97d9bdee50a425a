//! The redb file shared by the log store and the state machine.
//!
//! One database file (`consensus.redb` in `data_dir`) holds four tables.
//! Values are JSON: the volumes are tiny (a few commands a second) and an
//! operator can read them with any redb tool. Every write is a redb
//! transaction committed with redb's default `Durability::Immediate`, so it
//! is on disk when the call returns.
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
    match tokio::task::spawn_blocking(move || work(&database)).await {
        Ok(result) => result.map_err(io::Error::from),
        Err(join_error) => Err(io::Error::other(format!(
            "storage task failed: {join_error}"
        ))),
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

/// Writes one JSON value to a `&str`-keyed table in its own transaction.
pub(crate) fn write_value<T: Serialize>(
    database: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &'static str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = encode(key, value)?;
    let transaction = database.begin_write()?;
    {
        let mut table = transaction.open_table(table)?;
        table.insert(key, bytes.as_slice())?;
    }
    transaction.commit()?;
    Ok(())
}
