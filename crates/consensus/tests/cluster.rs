//! Multi-node tests: real consensus nodes on ephemeral loopback ports, node
//! N on its own address 127.0.0.N (listening and connecting from it), each
//! serving its peer router with axum, each with its own redb data dir.
//! [`Cluster::cut`] makes one node refuse what another sends it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;

use mailherd_consensus::{Consensus, ConsensusConfig, ConsensusOptions, ProposeError, Relayed};
use mailherd_core::{ClusterState, Command, NodeHealth, Rejection};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One running node: its consensus handle and the HTTP server in front.
struct RunningNode {
    consensus: Consensus,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

struct Cluster {
    _root: TempDir,
    voters: BTreeMap<u64, SocketAddr>,
    data_dirs: BTreeMap<u64, PathBuf>,
    options: ConsensusOptions,
    nodes: BTreeMap<u64, Option<RunningNode>>,
    /// (from, to): `to` answers 503 to every request that `from` sends.
    cuts: Arc<Mutex<BTreeSet<(u64, u64)>>>,
}

/// Node `id`'s own loopback address.
fn address_of(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, id as u8))
}

impl Cluster {
    /// Binds every listener first (so the voters map has real ports), then
    /// opens and initialises every node.
    async fn start(size: u64, options: ConsensusOptions) -> Cluster {
        let root = TempDir::new().unwrap();
        let mut listeners = BTreeMap::new();
        for id in 1..=size {
            listeners.insert(id, TcpListener::bind((address_of(id), 0)).await.unwrap());
        }
        let voters = listeners
            .iter()
            .map(|(id, listener)| (*id, listener.local_addr().unwrap()))
            .collect();
        let data_dirs = (1..=size)
            .map(|id| (id, root.path().join(format!("n{id}"))))
            .collect();
        let mut cluster = Cluster {
            _root: root,
            voters,
            data_dirs,
            options,
            nodes: BTreeMap::new(),
            cuts: Arc::default(),
        };
        for (id, listener) in listeners {
            let node = cluster.open_node(id, listener).await;
            cluster.nodes.insert(id, Some(node));
        }
        for id in 1..=size {
            cluster.node(id).initialize_if_new().await.unwrap();
        }
        cluster
    }

    async fn open_node(&self, id: u64, listener: TcpListener) -> RunningNode {
        let config = ConsensusConfig::new(id, self.voters.clone(), self.data_dirs[&id].clone());
        let mut options = self.options.clone();
        if options.peer_client.is_none() {
            options.peer_client = Some(
                reqwest::Client::builder()
                    .no_proxy()
                    .local_address(address_of(id))
                    .connect_timeout(Duration::from_millis(150))
                    .build()
                    .unwrap(),
            );
        }
        let consensus = Consensus::open_with(config, options).await.unwrap();
        let (stop_server, stopped) = oneshot::channel::<()>();
        let cuts = self.cuts.clone();
        let router = consensus
            .peer_router()
            .layer(axum::middleware::from_fn(
                move |ConnectInfo(from): ConnectInfo<SocketAddr>, request: Request, next: Next| {
                    let cut = cuts.lock().unwrap().iter().any(|(sender, receiver)| {
                        *receiver == id && address_of(*sender) == from.ip()
                    });
                    async move {
                        if cut {
                            (StatusCode::SERVICE_UNAVAILABLE, "cut off").into_response()
                        } else {
                            next.run(request).await
                        }
                    }
                },
            ))
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        RunningNode {
            consensus,
            stop_server,
            server,
        }
    }

    /// From now on `to` refuses (HTTP 503) everything `from` sends it;
    /// what `to` sends `from`, and the answers, still arrive.
    fn cut(&self, from: u64, to: u64) {
        self.cuts.lock().unwrap().insert((from, to));
    }

    fn node(&self, id: u64) -> &Consensus {
        &self.nodes[&id].as_ref().expect("node is running").consensus
    }

    fn running(&self) -> impl Iterator<Item = (u64, &Consensus)> {
        self.nodes
            .iter()
            .filter_map(|(id, node)| node.as_ref().map(|node| (*id, &node.consensus)))
    }

    /// Stops the server (idle keep-alive connections close, so peers do not
    /// keep talking to a dead node) and the node, keeping its data dir.
    async fn stop(&mut self, id: u64) {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap()
            .take()
            .expect("node is running");
        let _ = node.stop_server.send(());
        node.consensus.shutdown().await;
        match tokio::time::timeout(Duration::from_secs(3), node.server).await {
            Ok(result) => result.unwrap(),
            Err(_) => panic!("server of node {id} did not stop"),
        }
    }

    /// Opens the node again from its data dir, on the same address.
    async fn restart(&mut self, id: u64) -> &Consensus {
        let listener = TcpListener::bind(self.voters[&id]).await.unwrap();
        let node = self.open_node(id, listener).await;
        self.nodes.insert(id, Some(node));
        self.node(id)
    }

    /// Waits until a running node says it leads and every running node
    /// agrees on who that is.
    async fn leader(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let leaders: Vec<u64> = self
                .running()
                .filter(|(_, node)| node.leadership().is_me)
                .map(|(id, _)| id)
                .collect();
            if let [leader] = leaders[..] {
                if self
                    .running()
                    .all(|(_, node)| node.leadership().leader == Some(leader))
                {
                    return leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader within {SETTLE_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn followers(&self, leader: u64) -> Vec<u64> {
        self.running()
            .map(|(id, _)| id)
            .filter(|id| *id != leader)
            .collect()
    }

    /// Waits until node `id` has applied a state satisfying `condition`.
    async fn wait_state(
        &self,
        id: u64,
        what: &str,
        condition: impl Fn(&ClusterState) -> bool,
    ) -> Arc<ClusterState> {
        let mut state = self.node(id).state();
        let reached =
            match tokio::time::timeout(SETTLE_TIMEOUT, state.wait_for(|state| condition(state)))
                .await
            {
                Ok(Ok(state)) => Some(state.clone()),
                _ => None,
            };
        reached.unwrap_or_else(|| {
            panic!(
                "node {id} never reached: {what}; it has {:?}",
                *state.borrow()
            )
        })
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.running().map(|(id, _)| id).collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

fn health(node: u64, ready: bool, detail: &str) -> Command {
    Command::Health {
        node,
        health: NodeHealth {
            ready,
            detail: detail.to_string(),
        },
    }
}

fn assign(node: u64, epoch: u64, expected_epoch: u64, expected_renewals: u64) -> Command {
    Command::Assign {
        node,
        epoch,
        expected_epoch,
        expected_renewals,
        kind: mailherd_core::AssignmentKind::Failover,
        reason: "test".into(),
        at_unix_ms: 0,
    }
}

fn has_health(state: &ClusterState, node: u64, detail: &str) -> bool {
    state
        .health
        .get(&node)
        .is_some_and(|health| health.detail == detail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_a_leader_and_commit_a_command_proposed_on_a_follower() {
    let cluster = Cluster::start(3, ConsensusOptions::default()).await;
    let leader = cluster.leader().await;
    let followers = cluster.followers(leader);
    let follower = followers[0];

    // Proposed on a follower: forwarded over HTTP to the leader.
    let result = cluster
        .node(follower)
        .propose(health(follower, false, "from follower"), PROPOSE_TIMEOUT)
        .await;
    assert_eq!(result, Ok(Ok(())));
    for id in 1..=3 {
        let state = cluster
            .wait_state(id, "the follower's health report", |state| {
                has_health(state, follower, "from follower")
            })
            .await;
        assert!(!state.is_ready(follower));
    }

    // Leadership primitives agree with who leads.
    let leadership = cluster.node(follower).leadership();
    assert_eq!((leadership.leader, leadership.is_me), (Some(leader), false));
    assert_eq!(
        *cluster.node(follower).leadership_watch().borrow(),
        leadership
    );
    assert_eq!(
        cluster
            .node(leader)
            .confirm_leadership(Duration::from_secs(2))
            .await,
        Ok(())
    );
    assert_eq!(
        cluster
            .node(follower)
            .confirm_leadership(Duration::from_secs(2))
            .await,
        Err(ProposeError::NotLeader {
            leader: Some(leader)
        })
    );

    // The leader has fresh acks from both followers; a follower knows none.
    let ages = cluster.node(leader).follower_ack_ages();
    assert_eq!(ages.keys().copied().collect::<Vec<_>>(), followers);
    for (id, age) in &ages {
        let age = age.unwrap_or_else(|| panic!("no ack from follower {id}"));
        assert!(
            age < Duration::from_millis(500),
            "ack from {id} is {age:?} old"
        );
    }
    assert!(cluster
        .node(follower)
        .follower_ack_ages()
        .values()
        .all(Option::is_none));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cas_rejection_comes_back_as_ok_err_from_leader_and_follower() {
    let cluster = Cluster::start(3, ConsensusOptions::default()).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    let not_next = assign(1, 5, 0, 0);
    let expected = Err(Rejection::EpochNotNext {
        proposed: 5,
        current: 0,
    });
    assert_eq!(
        cluster
            .node(leader)
            .propose(not_next.clone(), PROPOSE_TIMEOUT)
            .await,
        Ok(expected.clone())
    );
    // Through /raft/propose: the rejection survives the JSON round trip.
    assert_eq!(
        cluster
            .node(follower)
            .propose(not_next, PROPOSE_TIMEOUT)
            .await,
        Ok(expected)
    );

    assert_eq!(
        cluster
            .node(follower)
            .propose(assign(1, 1, 0, 0), PROPOSE_TIMEOUT)
            .await,
        Ok(Ok(()))
    );
    // The same decision again: the state moved on since it was taken.
    assert_eq!(
        cluster
            .node(follower)
            .propose(assign(2, 2, 0, 0), PROPOSE_TIMEOUT)
            .await,
        Ok(Err(Rejection::StateMoved {
            epoch: 1,
            renewals: 0
        }))
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_node_down_the_other_two_still_commit() {
    let mut cluster = Cluster::start(3, ConsensusOptions::default()).await;
    let leader = cluster.leader().await;
    let [down, up] = cluster.followers(leader)[..] else {
        panic!("two followers expected")
    };
    cluster.stop(down).await;

    let result = cluster
        .node(up)
        .propose(health(up, true, "two of three"), PROPOSE_TIMEOUT)
        .await;
    assert_eq!(result, Ok(Ok(())));
    cluster
        .wait_state(leader, "the commit", |state| {
            has_health(state, up, "two of three")
        })
        .await;
    assert_eq!(
        cluster
            .node(leader)
            .confirm_leadership(Duration::from_secs(2))
            .await,
        Ok(())
    );

    // The stopped follower's ack ages while the live one stays fresh.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ages = cluster.node(leader).follower_ack_ages();
    assert!(
        ages[&up].expect("live follower acks") < Duration::from_millis(300),
        "{ages:?}"
    );
    assert!(
        ages[&down].expect("acked before it stopped") > Duration::from_millis(300),
        "{ages:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_leader_keeps_its_state_and_rejoins() {
    let mut cluster = Cluster::start(3, ConsensusOptions::default()).await;
    let old_leader = cluster.leader().await;
    assert_eq!(
        cluster
            .node(old_leader)
            .propose(assign(old_leader, 1, 0, 0), PROPOSE_TIMEOUT)
            .await,
        Ok(Ok(()))
    );
    for id in 1..=3 {
        cluster
            .wait_state(id, "epoch 1", |state| state.epoch == 1)
            .await;
    }
    let old_term = cluster.node(old_leader).leadership().term;

    cluster.stop(old_leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    let renew = Command::Renew {
        node: old_leader,
        epoch: 1,
    };
    assert_eq!(
        cluster
            .node(new_leader)
            .propose(renew, PROPOSE_TIMEOUT)
            .await,
        Ok(Ok(()))
    );

    let restarted = cluster.restart(old_leader).await;
    // Before hearing from anyone, storage alone gives back the epoch and
    // the vote.
    assert_eq!(restarted.state().borrow().epoch, 1);
    assert!(restarted.leadership().term >= old_term);
    restarted.initialize_if_new().await.unwrap();

    cluster
        .wait_state(
            old_leader,
            "the renewal committed while it was down",
            |state| state.renewals == 1,
        )
        .await;
    let result = cluster
        .node(old_leader)
        .propose(health(old_leader, true, "back"), PROPOSE_TIMEOUT)
        .await;
    assert_eq!(result, Ok(Ok(())));
    for id in 1..=3 {
        cluster
            .wait_state(id, "the rejoined node's report", |state| {
                has_health(state, old_leader, "back")
            })
            .await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_purge_the_log_and_catch_up_a_node_that_was_down() {
    let options = ConsensusOptions {
        snapshot_every_logs: 5,
        logs_kept_after_snapshot: 0,
        ..ConsensusOptions::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let leader = cluster.leader().await;
    let lagging = cluster.followers(leader)[0];
    cluster.stop(lagging).await;

    for round in 0..30 {
        let command = health(leader, true, &format!("round {round}"));
        assert_eq!(
            cluster.node(leader).propose(command, PROPOSE_TIMEOUT).await,
            Ok(Ok(()))
        );
    }
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let status = loop {
        let status = cluster.node(leader).log_status();
        if status.snapshot_index >= Some(25) && status.purged_index >= Some(20) {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot and purge: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.last_log_index >= Some(30), "{status:?}");

    // The lagging node's next entry is purged on the leader: it can only
    // catch up by installing the snapshot.
    let restarted = cluster.restart(lagging).await;
    let before = restarted.log_status();
    assert!(
        before.last_applied_index < status.purged_index,
        "{before:?} vs {status:?}"
    );
    let caught_up = cluster
        .wait_state(lagging, "the leader's last report", |state| {
            has_health(state, leader, "round 29")
        })
        .await;
    assert!(cluster.node(lagging).log_status().snapshot_index.is_some());
    assert_eq!(*caught_up, **cluster.node(leader).state().borrow());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_keeps_its_server_state_but_refuses_proposals() {
    let mut cluster = Cluster::start(3, ConsensusOptions::default()).await;
    let leader = cluster.leader().await;
    for follower in cluster.followers(leader) {
        cluster.stop(follower).await;
    }
    // Let the quorum lease (election_timeout_max, 300 ms) run out.
    tokio::time::sleep(Duration::from_millis(700)).await;

    // openraft keeps the leader a leader: callers must never read "leader"
    // as "may hold the role".
    assert!(cluster.node(leader).leadership().is_me);
    let timeout = Duration::from_millis(500);
    assert_eq!(
        cluster
            .node(leader)
            .propose(health(leader, true, "alone"), timeout)
            .await,
        Err(ProposeError::NoLeader { after_ms: 500 })
    );
    let confirmed = cluster.node(leader).confirm_leadership(timeout).await;
    assert!(
        matches!(confirmed, Err(ProposeError::QuorumNotReached { .. })),
        "{confirmed:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_can_be_handed_to_another_voter() {
    let cluster = Cluster::start(3, ConsensusOptions::default()).await;
    let leader = cluster.leader().await;
    let successor = cluster.followers(leader)[0];
    let mut watch = cluster.node(successor).leadership_watch();
    cluster
        .node(leader)
        .transfer_leadership(successor)
        .await
        .unwrap();
    let became_leader = tokio::time::timeout(
        SETTLE_TIMEOUT,
        watch.wait_for(|leadership| leadership.is_me),
    )
    .await;
    assert!(
        matches!(became_leader, Ok(Ok(_))),
        "node {successor} never took over"
    );
    assert_eq!(cluster.leader().await, successor);
    assert!(
        cluster.node(leader).transfer_leadership(9).await.is_err(),
        "9 is not a voter"
    );
    cluster.shutdown().await;
}

/// A follower whose own requests to the leader are all refused cannot
/// commit directly, but through the third voter it can; the leader relays
/// nothing (a relay would only come back to it), and no voter relays
/// anything but a lease renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_cut_off_from_the_leader_commits_through_another_voter() {
    let cluster = Cluster::start(3, ConsensusOptions::default()).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    let third = cluster
        .followers(leader)
        .into_iter()
        .find(|id| *id != follower)
        .unwrap();
    let renew = Command::Renew {
        node: follower,
        epoch: 1,
    };
    assert_eq!(
        cluster
            .node(leader)
            .propose(assign(follower, 1, 0, 0), PROPOSE_TIMEOUT)
            .await,
        Ok(Ok(()))
    );
    cluster.cut(follower, leader);
    let cut_off = cluster.node(follower);

    let direct = cut_off
        .propose(renew.clone(), Duration::from_millis(500))
        .await;
    assert!(
        matches!(direct, Err(ProposeError::Transport { peer, .. }) if peer == leader),
        "{direct:?}"
    );
    let relayed = cut_off
        .propose_with_relays(
            renew.clone(),
            Duration::from_secs(2),
            Duration::from_millis(50),
        )
        .await;
    assert_eq!(
        relayed,
        Ok(Relayed {
            result: Ok(()),
            via: Some(third)
        })
    );
    // Once: the direct copy was refused before it reached the log.
    cluster
        .wait_state(leader, "the relayed renewal applied", |state| {
            state.renewals == 1
        })
        .await;
    // A proposal the leader answers in time is not relayed.
    let direct = cluster
        .node(third)
        .propose_with_relays(
            renew.clone(),
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(
        direct,
        Ok(Relayed {
            result: Ok(()),
            via: None
        })
    );
    // Still one leader, the same: the cut cost the follower nothing.
    assert_eq!(cluster.leader().await, leader);

    // Anything but a renewal is refused by the relay.
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/raft/relay", cluster.voters[&third]))
        .json(&health(follower, true, "relayed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["outcome"], "failed", "{reply}");
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .contains("only lease renewals are relayed"),
        "{reply}"
    );

    // With the third voter also refusing it, nothing gets through, and the
    // direct attempt's error is what the caller hears.
    cluster.cut(follower, third);
    let nowhere = cut_off
        .propose_with_relays(renew, Duration::from_millis(500), Duration::from_millis(50))
        .await;
    assert!(
        matches!(nowhere, Err(ProposeError::Transport { peer, .. }) if peer == leader),
        "{nowhere:?}"
    );
    cluster.shutdown().await;
}
