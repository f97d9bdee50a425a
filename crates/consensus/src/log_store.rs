//! The Raft log, the vote and the committed index in redb
//! (openraft's [`RaftLogStorage`] v2 API).
//!
//! The same cloneable [`LogStore`] serves as the log reader of the
//! replication tasks: redb read transactions see every committed write, and
//! `append` commits before it returns, so an appended entry is readable by
//! every reader at once, as openraft requires.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftTypeConfig};
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::arrivals::Arrivals;
use crate::db::{self, Commit, StoreError, COMMITTED, LAST_PURGED, LOG, LOG_META, VOTE};
use crate::types::{Entry, LogId, TypeConfig, Vote};

#[derive(Clone)]
pub(crate) struct LogStore {
    database: Arc<Database>,
    /// Arrival times of appended entries (see `arrivals`).
    arrivals: Arrivals,
}

impl LogStore {
    pub(crate) fn new(database: Arc<Database>, arrivals: Arrivals) -> Self {
        LogStore { database, arrivals }
    }
}

fn read_entries(
    database: &Database,
    start: Bound<u64>,
    end: Bound<u64>,
) -> Result<Vec<Entry>, StoreError> {
    let transaction = database.begin_read()?;
    let table = transaction.open_table(LOG)?;
    let mut entries = Vec::new();
    for item in table.range::<u64>((start, end))? {
        let (_, bytes) = item?;
        entries.push(db::decode("log entry", bytes.value())?);
    }
    Ok(entries)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<<TypeConfig as RaftTypeConfig>::Entry>, io::Error> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        db::blocking(&self.database, move |database| {
            read_entries(database, start, end)
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        db::blocking(&self.database, |database| {
            db::read_value(database, LOG_META, VOTE)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        db::blocking(&self.database, |database| {
            let last_purged_log_id: Option<LogId> =
                db::read_value(database, LOG_META, LAST_PURGED)?;
            let transaction = database.begin_read()?;
            let table = transaction.open_table(LOG)?;
            let last_in_log = match table.last()? {
                Some((_, bytes)) => Some(db::decode::<Entry>("log entry", bytes.value())?.log_id),
                None => None,
            };
            // With an empty log the last log id is the last purged one: the
            // entry is gone but its id is still known.
            let last_log_id = last_in_log.or(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        db::blocking(&self.database, move |database| {
            db::write_value(database, LOG_META, VOTE, &vote, Commit::Durably)
        })
        .await
    }

    // The committed index is persisted so that a restarted node re-applies
    // its committed entries at once instead of serving an older state until
    // it hears from a leader. Lazily: an older committed index after a crash
    // only means less is applied at once, and it changes with every entry.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        db::blocking(&self.database, move |database| {
            db::write_value(database, LOG_META, COMMITTED, &committed, Commit::Lazily)
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        db::blocking(&self.database, |database| {
            Ok(db::read_value::<Option<LogId>>(database, LOG_META, COMMITTED)?.flatten())
        })
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Encode before going to the blocking pool: entries need not be
        // Send + 'static as a lazy iterator, their bytes are.
        let mut encoded = Vec::new();
        let mut indexes = Vec::new();
        for entry in entries {
            indexes.push(entry.log_id.index);
            encoded.push((
                entry.log_id.index,
                db::encode("log entry", &entry).map_err(io::Error::from)?,
            ));
        }
        self.arrivals.arrived(indexes);
        let result = db::blocking(&self.database, move |database| {
            let transaction = database.begin_write()?;
            {
                let mut table = transaction.open_table(LOG)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            transaction.commit()?;
            Ok(())
        })
        .await;
        // The commit above is durable, so the flush is complete now.
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.io_completed(Err(io::Error::other(error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep_up_to = last_log_id.map(|log_id| log_id.index);
        db::blocking(&self.database, move |database| {
            let transaction = database.begin_write()?;
            {
                let mut table = transaction.open_table(LOG)?;
                match keep_up_to {
                    Some(index) => table.retain_in::<u64, _>(
                        (Bound::Excluded(index), Bound::Unbounded),
                        |_, _| false,
                    )?,
                    None => table.retain(|_, _| false)?,
                }
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        db::blocking(&self.database, move |database| {
            let encoded = db::encode("last purged log id", &log_id)?;
            // One transaction: the purge marker and the removal can never be
            // seen apart, so there is no hole between them after a crash.
            let transaction = database.begin_write()?;
            {
                let mut meta = transaction.open_table(LOG_META)?;
                meta.insert(LAST_PURGED, encoded.as_slice())?;
                let mut table = transaction.open_table(LOG)?;
                table.retain_in::<u64, _>(..=log_id.index, |_, _| false)?;
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }
}
