//! The replicated [`ClusterState`] as an openraft state machine, persisted
//! in redb, with snapshots that are the state's JSON.
//!
//! The state machine is persistent: each apply batch is written (state, last
//! applied log id, last membership) in one redb transaction before the
//! callers hear about it. Snapshots are therefore only needed for
//! replication to followers whose log was purged, and for log compaction.
//!
//! After each batch that applied at least one command, and after a snapshot
//! is installed, the new state is published on a watch channel: the agent's
//! decider timestamps the changes it sees there.

use std::io;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use mailherd_core::{ClusterState, CommandResult};
use openraft::storage::{ApplyResponder, EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use redb::Database;
use tokio::sync::watch;

use crate::arrivals::Arrivals;
use crate::db::{
    self, Commit, StoreError, CLUSTER_STATE, LAST_APPLIED, LAST_MEMBERSHIP, SNAPSHOT,
    SNAPSHOT_DATA, SNAPSHOT_META, STATE_MACHINE,
};
use crate::types::{
    LogId, Proposal, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

/// What has been applied, as one consistent value.
#[derive(Debug, Clone, Default)]
pub(crate) struct Applied {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: Arc<ClusterState>,
}

pub(crate) struct StateMachineStore {
    database: Arc<Database>,
    applied: Applied,
    /// Publishes the state after every apply batch and snapshot install;
    /// `Consensus::state` hands out receivers.
    state_sender: watch::Sender<Arc<ClusterState>>,
    /// Arrival times, to tell when the last progress arrived.
    arrivals: Arrivals,
}

impl StateMachineStore {
    /// Loads the applied state from redb (or starts empty).
    pub(crate) async fn open(database: Arc<Database>, arrivals: Arrivals) -> io::Result<Self> {
        let applied = db::blocking(&database, |database| {
            let last_applied: Option<Option<LogId>> =
                db::read_value(database, STATE_MACHINE, LAST_APPLIED)?;
            let last_membership: Option<StoredMembership> =
                db::read_value(database, STATE_MACHINE, LAST_MEMBERSHIP)?;
            let state: Option<ClusterState> =
                db::read_value(database, STATE_MACHINE, CLUSTER_STATE)?;
            Ok(Applied {
                last_applied: last_applied.flatten(),
                last_membership: last_membership.unwrap_or_default(),
                state: Arc::new(state.unwrap_or_default()),
            })
        })
        .await?;
        let (state_sender, _) = watch::channel(applied.state.clone());
        Ok(StateMachineStore {
            database,
            applied,
            state_sender,
            arrivals,
        })
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state_sender.subscribe()
    }
}

/// Writes the applied state, and optionally a snapshot, in one transaction:
/// lazily without a snapshot (the durable log covers what a crash takes
/// back), durably with one (an installed snapshot replaces log entries this
/// node may never have had).
fn persist(
    database: &Database,
    applied: &Applied,
    snapshot: Option<(&SnapshotMeta, &[u8])>,
) -> Result<(), StoreError> {
    let commit = if snapshot.is_some() {
        Commit::Durably
    } else {
        Commit::Lazily
    };
    let last_applied = db::encode(LAST_APPLIED, &applied.last_applied)?;
    let last_membership = db::encode(LAST_MEMBERSHIP, &applied.last_membership)?;
    let state = db::encode(CLUSTER_STATE, &*applied.state)?;
    let snapshot_meta = match snapshot {
        Some((meta, _)) => Some(db::encode(SNAPSHOT_META, meta)?),
        None => None,
    };
    let transaction = db::begin_write(database, commit)?;
    {
        let mut table = transaction.open_table(STATE_MACHINE)?;
        table.insert(LAST_APPLIED, last_applied.as_slice())?;
        table.insert(LAST_MEMBERSHIP, last_membership.as_slice())?;
        table.insert(CLUSTER_STATE, state.as_slice())?;
        if let (Some(meta), Some((_, data))) = (snapshot_meta, snapshot) {
            let mut table = transaction.open_table(SNAPSHOT)?;
            table.insert(SNAPSHOT_META, meta.as_slice())?;
            table.insert(SNAPSHOT_DATA, data)?;
        }
    }
    transaction.commit()?;
    Ok(())
}

fn write_snapshot(database: &Database, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
    let meta = db::encode(SNAPSHOT_META, meta)?;
    let transaction = database.begin_write()?;
    {
        let mut table = transaction.open_table(SNAPSHOT)?;
        table.insert(SNAPSHOT_META, meta.as_slice())?;
        table.insert(SNAPSHOT_DATA, data)?;
    }
    transaction.commit()?;
    Ok(())
}

fn read_snapshot(database: &Database) -> Result<Option<Snapshot>, StoreError> {
    use redb::ReadableDatabase;
    let transaction = database.begin_read()?;
    let table = transaction.open_table(SNAPSHOT)?;
    let meta = match table.get(SNAPSHOT_META)? {
        Some(bytes) => db::decode::<SnapshotMeta>(SNAPSHOT_META, bytes.value())?,
        None => return Ok(None),
    };
    let data = match table.get(SNAPSHOT_DATA)? {
        Some(bytes) => bytes.value().to_vec(),
        None => return Ok(None),
    };
    Ok(Some(Snapshot {
        meta,
        snapshot: data,
    }))
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((
            self.applied.last_applied,
            self.applied.last_membership.clone(),
        ))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut next = self.applied.clone();
        let mut state = (*self.applied.state).clone();
        let mut applied_a_command = false;
        // Log indexes of accepted commands that moved the role forward.
        let mut progress: Vec<u64> = Vec::new();
        // Responses wait until the batch is durable and published, so that
        // a proposer that gets its result also finds it in `state()`.
        let mut responses: Vec<(ApplyResponder<TypeConfig>, CommandResult)> = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            next.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(Proposal(command)) => {
                    applied_a_command = true;
                    let result = state.apply(&command);
                    if result.is_ok() && command.moves_the_role() {
                        progress.push(entry.log_id.index);
                    }
                    result
                }
                EntryPayload::Membership(membership) => {
                    next.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(())
                }
            };
            if let Some(responder) = responder {
                responses.push((responder, result));
            }
        }
        next.state = Arc::new(state);
        let to_persist = next.clone();
        db::blocking(&self.database, move |database| {
            persist(database, &to_persist, None)
        })
        .await?;
        self.applied = next;
        // Progress first, then the state: whoever sees the new state finds
        // an arrival time at least as recent as the one behind it.
        for index in progress {
            self.arrivals.progressed_at(index);
        }
        if let Some(last) = self.applied.last_applied {
            self.arrivals.forget_up_to(last.index);
        }
        if applied_a_command {
            self.state_sender.send_replace(self.applied.state.clone());
        }
        for (responder, result) in responses {
            responder.send(result);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            database: self.database.clone(),
            applied: self.applied.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let state: ClusterState =
            db::decode("snapshot data", &snapshot).map_err(io::Error::from)?;
        let installed = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            state: Arc::new(state),
        };
        let to_persist = installed.clone();
        let meta = meta.clone();
        db::blocking(&self.database, move |database| {
            persist(database, &to_persist, Some((&meta, snapshot.as_slice())))
        })
        .await?;
        self.applied = installed;
        self.arrivals.progressed_now();
        self.state_sender.send_replace(self.applied.state.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        db::blocking(&self.database, read_snapshot).await
    }
}

/// A frozen copy of the applied state that serialises itself into a
/// snapshot, away from the state machine task.
pub(crate) struct SnapshotBuilder {
    database: Arc<Database>,
    applied: Applied,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = db::encode("snapshot data", &*self.applied.state).map_err(io::Error::from)?;
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.last_membership.clone(),
        };
        let (stored_meta, stored_data) = (meta.clone(), data.clone());
        db::blocking(&self.database, move |database| {
            write_snapshot(database, &stored_meta, &stored_data)
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}
