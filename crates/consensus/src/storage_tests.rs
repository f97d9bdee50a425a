//! Tests of the redb stores: openraft's own storage conformance suite, plus
//! what the suite does not check (durability across reopen, real commands,
//! the state watch).

use std::sync::Arc;

use futures::stream;
use mailherd_core::{ClusterState, Command, NodeHealth};
use openraft::storage::{
    IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{EntryPayload, StorageError};
use tempfile::TempDir;

use crate::db;
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::types::{Entry, LogId, Proposal, TypeConfig, Vote};

struct RedbStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("temp dir");
        let (log_store, state_machine) = open_stores(&dir).await;
        Ok((dir, log_store, state_machine))
    }
}

async fn open_stores(dir: &TempDir) -> (LogStore, StateMachineStore) {
    let database = db::open(&dir.path().join(db::FILE_NAME)).expect("open redb");
    let state_machine = StateMachineStore::open(database.clone(), Default::default())
        .await
        .expect("open state machine");
    (LogStore::new(database, Default::default()), state_machine)
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, node, index)
}

fn normal(term: u64, index: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(Proposal(command)),
    }
}

fn health(node: u64, ready: bool) -> Command {
    Command::Health {
        node,
        health: NodeHealth {
            ready,
            detail: format!("node {node} ready={ready}"),
        },
    }
}

async fn apply(state_machine: &mut StateMachineStore, entries: Vec<Entry>) {
    let items = entries.into_iter().map(|entry| Ok((entry, None)));
    state_machine
        .apply(stream::iter(items))
        .await
        .expect("apply");
}

#[tokio::test]
async fn openraft_storage_suite_passes() {
    Suite::test_all(RedbStoreBuilder)
        .await
        .expect("openraft storage suite");
}

#[tokio::test]
async fn vote_log_and_purge_survive_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let (mut log_store, _state_machine) = open_stores(&dir).await;
        let vote = Vote::new_committed(3, 2);
        log_store.save_vote(&vote).await.unwrap();
        let entries: Vec<Entry> = (1..=5)
            .map(|index| normal(3, index, health(index, true)))
            .collect();
        log_store.append(entries, IOFlushed::noop()).await.unwrap();
        log_store.purge(log_id(3, 1, 2)).await.unwrap();
        log_store
            .truncate_after(Some(log_id(3, 1, 4)))
            .await
            .unwrap();
        log_store
            .save_committed(Some(log_id(3, 1, 4)))
            .await
            .unwrap();
    }
    let (mut log_store, _state_machine) = open_stores(&dir).await;
    assert_eq!(
        log_store.read_vote().await.unwrap(),
        Some(Vote::new_committed(3, 2))
    );
    assert_eq!(
        log_store.read_committed().await.unwrap(),
        Some(log_id(3, 1, 4))
    );
    let state = log_store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(3, 1, 4)));
    let indexes: Vec<u64> = log_store
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .iter()
        .map(|entry| entry.log_id.index)
        .collect();
    assert_eq!(indexes, vec![3, 4]);
}

#[tokio::test]
async fn applied_commands_are_persisted_and_published() {
    let dir = TempDir::new().unwrap();
    let assign = Command::Assign {
        node: 2,
        epoch: 1,
        expected_epoch: 0,
        expected_renewals: 0,
        kind: mailherd_core::AssignmentKind::Failover,
        reason: "initial".into(),
        at_unix_ms: 1,
    };
    {
        let (_log_store, mut state_machine) = open_stores(&dir).await;
        let mut watch = state_machine.subscribe();
        watch.mark_unchanged();
        apply(
            &mut state_machine,
            vec![normal(1, 1, assign.clone()), normal(1, 2, assign.clone())],
        )
        .await;
        assert!(
            watch.has_changed().unwrap(),
            "an apply batch with commands must notify"
        );
        assert_eq!(watch.borrow_and_update().epoch, 1);

        // A batch without commands (a leader's blank entry) changes nothing
        // and must not wake the decider.
        apply(
            &mut state_machine,
            vec![Entry {
                log_id: log_id(2, 1, 3),
                payload: EntryPayload::Blank,
            }],
        )
        .await;
        assert!(!watch.has_changed().unwrap());
    }
    let (_log_store, mut state_machine) = open_stores(&dir).await;
    assert_eq!(
        state_machine.subscribe().borrow().epoch,
        1,
        "state survives reopen"
    );
    let (last_applied, _) = state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(2, 1, 3)));
}

#[tokio::test]
async fn snapshot_round_trip_carries_the_cluster_state() {
    let leader_dir = TempDir::new().unwrap();
    let follower_dir = TempDir::new().unwrap();
    let (_leader_log, mut leader) = open_stores(&leader_dir).await;
    let (_follower_log, mut follower) = open_stores(&follower_dir).await;
    apply(
        &mut leader,
        vec![
            normal(1, 1, health(1, false)),
            normal(1, 2, health(2, true)),
        ],
    )
    .await;

    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let text = String::from_utf8(snapshot.snapshot.clone()).unwrap();
    let decoded: ClusterState =
        serde_json::from_str(&text).expect("snapshot data is ClusterState JSON");
    assert!(!decoded.is_ready(1));

    let mut watch = follower.subscribe();
    watch.mark_unchanged();
    follower
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert!(
        watch.has_changed().unwrap(),
        "installing a snapshot must notify"
    );
    assert_eq!(*watch.borrow(), Arc::new(decoded));
    let (last_applied, _) = follower.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, 1, 2)));

    // The follower keeps applying on top of the snapshot.
    apply(
        &mut follower,
        vec![normal(1, 3, Command::Renew { node: 9, epoch: 9 })],
    )
    .await;
    assert_eq!(follower.subscribe().borrow().renewals, 0);
}
