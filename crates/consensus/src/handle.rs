//! [`Consensus`]: the one handle the agent holds on its Raft node.
//!
//! It owns the openraft [`Raft`](openraft::Raft), derives the leadership
//! view from openraft's metrics, and turns "commit this command" into the
//! right call: a local `client_write` on the leader, or a POST to the
//! leader's `/raft/propose`, retried while leadership is in flux.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mailherd_core::{ClusterState, Command, CommandResult, NodeId};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{
    ClientWriteError, Fatal, InitializeError, LinearizableReadError, RaftError,
};
use openraft::{BasicNode, Instant as _, LinearizerOption, RaftMetrics, ReadPolicy};
use redb::Database;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::arrivals::Arrivals;
use crate::config::{raft_config, ConsensusConfig, ConsensusOptions};
use crate::db;
use crate::error::{ConsensusError, ProposeError};
use crate::log_store::LogStore;
use crate::network::{default_peer_client, PeerNetworkFactory};
use crate::state_machine::StateMachineStore;
use crate::types::{Leadership, LogStatus, MailherdRaft, Proposal, ProposeReply, TypeConfig};

/// How long `shutdown` waits for openraft's tasks to let go of the redb
/// file, so that the same `data_dir` can be opened again right after.
const STORAGE_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `open` waits for the Raft core to publish its first metrics.
const FIRST_METRICS_TIMEOUT: Duration = Duration::from_secs(2);

/// A running consensus node. Cheap to clone; all clones share the node.
///
/// Dropping the last clone does not stop openraft's tasks (they hold the
/// storage); call [`Consensus::shutdown`] first, and stop serving
/// [`Consensus::peer_router`] so peers stop talking to a stopped node.
#[derive(Clone)]
pub struct Consensus {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConsensusConfig,
    raft: MailherdRaft,
    /// The applied `ClusterState`, published by the state machine.
    state: watch::Receiver<Arc<ClusterState>>,
    /// When the last accepted Assign/Renew arrived in this node's log.
    arrivals: Arrivals,
    /// Leadership as derived from openraft's metrics by `leadership_task`.
    leadership: watch::Receiver<Leadership>,
    /// Copies openraft metrics into `leadership`; aborted on shutdown so it
    /// does not outlive the node.
    leadership_task: Mutex<Option<JoinHandle<()>>>,
    /// Forwards proposals to the leader (the same client Raft RPCs use).
    peer_http: reqwest::Client,
    peer_scheme: &'static str,
    /// Lets `shutdown` see when storage has released the redb file; only
    /// openraft's tasks hold strong references.
    database: Weak<Database>,
    /// How long `propose` waits for a leader to appear before asking again.
    leader_retry_pause: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .leadership_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl Consensus {
    /// Opens (or creates) the node's storage under `config.data_dir` and
    /// starts its Raft. The node takes part in elections as soon as peers
    /// reach it, but a brand-new cluster needs [`Self::initialize_if_new`].
    pub async fn open(config: ConsensusConfig) -> Result<Consensus, ConsensusError> {
        Self::open_with(config, ConsensusOptions::default()).await
    }

    /// [`Self::open`] with non-default snapshot policy or peer HTTP client.
    pub async fn open_with(
        config: ConsensusConfig,
        options: ConsensusOptions,
    ) -> Result<Consensus, ConsensusError> {
        config.validate()?;
        options.validate()?;
        let raft_config = Arc::new(raft_config(&config, &options)?);

        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .map_err(|source| ConsensusError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        let path = config.data_dir.join(db::FILE_NAME);
        let storage_error = |reason: String| ConsensusError::Storage {
            path: path.clone(),
            reason,
        };
        let database = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || db::open(&path))
                .await
                .map_err(|error| storage_error(error.to_string()))?
                .map_err(|error| storage_error(error.to_string()))?
        };
        let weak_database = Arc::downgrade(&database);
        let arrivals = Arrivals::default();
        let log_store = LogStore::new(database.clone(), arrivals.clone());
        let state_machine = StateMachineStore::open(database, arrivals.clone())
            .await
            .map_err(|error| storage_error(error.to_string()))?;
        let state = state_machine.subscribe();

        let peer_http = match options.peer_client {
            Some(client) => client,
            None => default_peer_client(Duration::from_millis(config.election_timeout_min_ms))
                .map_err(|error| ConsensusError::Config {
                    reason: format!("cannot build the peer HTTP client: {error}"),
                })?,
        };
        let network = PeerNetworkFactory {
            node_id: config.node_id,
            http: peer_http.clone(),
            scheme: options.peer_scheme,
            min_rpc_timeout: Duration::from_millis(config.election_timeout_min_ms),
        };
        let raft = openraft::Raft::new(
            config.node_id,
            raft_config,
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|fatal| ConsensusError::Raft(format!("cannot start raft: {fatal}")))?;

        // Until the core task publishes its first metrics they are
        // placeholders (term 0, no leader); wait for the real ones so that
        // `leadership()` reflects the stored vote from the start. The first
        // publication comes right after the core has loaded its state.
        let mut metrics = raft.metrics();
        if tokio::time::timeout(FIRST_METRICS_TIMEOUT, metrics.changed())
            .await
            .is_err()
        {
            tracing::warn!(
                "raft published no metrics within {FIRST_METRICS_TIMEOUT:?} of starting"
            );
        }
        let initial = leadership_from(&metrics.borrow_watched());
        let (leadership_sender, leadership) = watch::channel(initial);
        let leadership_task = tokio::spawn(track_leadership(metrics, leadership_sender));

        Ok(Consensus {
            inner: Arc::new(Inner {
                leader_retry_pause: Duration::from_millis(config.heartbeat_interval_ms),
                config,
                raft,
                state,
                arrivals,
                leadership,
                leadership_task: Mutex::new(Some(leadership_task)),
                peer_http,
                peer_scheme: options.peer_scheme,
                database: weak_database,
            }),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.config.node_id
    }

    /// axum Router serving the peer endpoints under `/raft/...` (append,
    /// vote, pre-vote, snapshot, transfer-leader, propose). The agent serves
    /// it on its peer listener, at the address the voters map names.
    pub fn peer_router(&self) -> axum::Router {
        crate::server::router(
            self.inner.raft.clone(),
            WeakConsensus(Arc::downgrade(&self.inner)),
        )
    }

    /// Initialises the cluster with all voters if this node's log has never
    /// been initialised; a no-op (Ok) if it already is or another node did
    /// it. Safe to call on every node at startup: openraft resolves
    /// concurrent identical initialisations by election.
    pub async fn initialize_if_new(&self) -> Result<(), ConsensusError> {
        let raft = &self.inner.raft;
        let initialized = raft.is_initialized().await.map_err(stopped)?;
        if initialized {
            self.warn_if_membership_differs();
            return Ok(());
        }
        if self.inner.config.join {
            tracing::info!("joining: waiting to be added to the running cluster");
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .inner
            .config
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Someone else initialised the cluster and replicated to us
            // between the check and now: exactly what we wanted.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(error)) => Err(ConsensusError::Initialize {
                reason: error.to_string(),
            }),
            Err(RaftError::Fatal(fatal)) => Err(stopped(fatal)),
        }
    }

    /// Membership changes go through `add_voter`/`remove_voter`; a changed
    /// voters map in the config does not change it, which an operator
    /// should hear about.
    fn warn_if_membership_differs(&self) {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        let in_raft: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let in_config: Vec<NodeId> = self.inner.config.voters.keys().copied().collect();
        if in_raft != in_config {
            tracing::warn!(
                ?in_raft,
                ?in_config,
                "raft membership differs from the configured voters; the cluster's membership wins (change it with `mailherd members`)"
            );
        }
    }

    /// The replicated state as applied on this node, sent after every apply
    /// batch that contained a command (and on snapshot install); its first
    /// value is what storage held on open.
    pub fn state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.inner.state.clone()
    }

    /// The replicated state as applied on this node now. Holds the watch's
    /// lock only for the copy of the `Arc`: a caller that kept a borrow
    /// while working could block the next apply behind it.
    pub fn current_state(&self) -> Arc<ClusterState> {
        self.inner.state.borrow().clone()
    }

    /// When the entry behind the latest applied progress (an accepted
    /// `Assign` or `Renew`) arrived in this node's log; read it after seeing
    /// a new state and the value is at least as recent as that state's
    /// progress. `None` before any progress was applied here. The decider
    /// measures `lease + drift_margin` from it (see the `arrivals` module).
    pub fn last_progress_arrival(&self) -> Option<std::time::Instant> {
        self.inner.arrivals.last_progress()
    }

    /// Current view of leadership from openraft metrics.
    pub fn leadership(&self) -> Leadership {
        leadership_from(&self.inner.raft.metrics().borrow_watched())
    }

    /// Subscribe to leadership changes (updated from openraft's metrics).
    pub fn leadership_watch(&self) -> watch::Receiver<Leadership> {
        self.inner.leadership.clone()
    }

    /// On the leader: for each other voter, how long since it last
    /// acknowledged an RPC of this leader. The age is measured from when the
    /// acknowledged RPC was *sent* (openraft records the send time), so it
    /// is never younger than the truth. `None` if never acknowledged, or if
    /// this node is not the leader.
    pub fn follower_ack_ages(&self) -> BTreeMap<NodeId, Option<Duration>> {
        // Before the borrow below: `voters` borrows the metrics too, and a
        // second read of a watch while openraft waits to write it blocks
        // behind that writer, which waits for the first read: a deadlock
        // (seen: the leader's control loop hung in here).
        let voters = self.voters();
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        let heartbeat = if metrics.state.is_leader() {
            metrics.heartbeat.as_ref()
        } else {
            None
        };
        voters
            .keys()
            .filter(|id| **id != self.node_id())
            .map(|id| {
                let age = heartbeat
                    .and_then(|acks| acks.get(id))
                    .and_then(|sent_at| sent_at.as_ref())
                    .map(|sent_at| sent_at.elapsed());
                (*id, age)
            })
            .collect()
    }

    /// Where this node's log, state machine and snapshot stand.
    pub fn log_status(&self) -> LogStatus {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        LogStatus {
            last_log_index: metrics.last_log_index,
            last_applied_index: metrics.last_applied.as_ref().map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.as_ref().map(|log_id| log_id.index),
            purged_index: metrics.purged.as_ref().map(|log_id| log_id.index),
        }
    }

    /// Commits `command`: directly if this node is the leader, else
    /// forwarded over HTTP to the current leader, retrying while there is no
    /// (accepting) leader until `timeout`. Returns the state machine's
    /// result for that entry; a CAS rejection is `Ok(Err(Rejection))`.
    ///
    /// A proposal is only re-sent when the previous attempt certainly did
    /// not append it (a refusal with a leader hint, or a connection that
    /// could not be opened), so one call never applies a command twice.
    pub async fn propose(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<CommandResult, ProposeError> {
        let deadline = Instant::now() + timeout;
        let after_ms = timeout.as_millis() as u64;
        let me = self.node_id();
        let mut leadership_changes = self.inner.leadership.clone();
        // A leader named in a refusal is tried before the metrics' view.
        let mut hinted_leader: Option<NodeId> = None;
        // Hints followed in a row; bounds ping-pong between two nodes that
        // disagree about who leads while an election settles.
        let mut hints_followed = 0usize;
        let mut obstacle = ProposeError::NoLeader { after_ms };
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(obstacle);
            }
            let remaining = deadline - now;
            let target = hinted_leader
                .take()
                .or(self.leadership().leader)
                .filter(|leader| *leader != me);
            let reply = match target {
                None => write_locally(&self.inner.raft, command.clone(), remaining).await,
                Some(leader) => match self.propose_remotely(leader, &command, remaining).await {
                    Ok(ProposeReply::Stopped) => {
                        // Its Raft stopped while or before handling the
                        // proposal; which one cannot be told apart, and in
                        // the first case the entry may still commit.
                        return Err(ProposeError::OutcomeUnknown {
                            reason: format!(
                                "raft on leader {leader} stopped while handling the proposal"
                            ),
                        });
                    }
                    Ok(reply) => reply,
                    Err(RemoteFailure::NotSent(error)) => {
                        obstacle = error;
                        self.pause_for_leader(&mut leadership_changes, deadline)
                            .await;
                        continue;
                    }
                    Err(RemoteFailure::MaybeSent(error)) => return Err(error),
                },
            };
            match reply {
                ProposeReply::Applied { result } => return Ok(result),
                ProposeReply::TimedOut => return Err(ProposeError::Timeout { after_ms }),
                ProposeReply::OutcomeUnknown { reason } => {
                    return Err(ProposeError::OutcomeUnknown { reason })
                }
                ProposeReply::Stopped => return Err(ProposeError::Stopped),
                ProposeReply::Failed { reason } => return Err(ProposeError::Raft(reason)),
                ProposeReply::ForwardToLeader { leader } => {
                    obstacle = ProposeError::NoLeader { after_ms };
                    let fresh_hint = leader.filter(|hint| Some(*hint) != target);
                    if fresh_hint.is_some() && hints_followed < self.inner.config.voters.len() {
                        hints_followed += 1;
                        hinted_leader = fresh_hint;
                    } else {
                        // No leader, or a leader whose lease lapsed (it
                        // answers with an empty hint): wait for a change.
                        hints_followed = 0;
                        self.pause_for_leader(&mut leadership_changes, deadline)
                            .await;
                    }
                }
            }
        }
    }

    /// [`Self::propose`], and if it did not succeed within `relay_after`
    /// while another node leads, the same command relayed through every other
    /// voter as well (`POST /raft/relay`: each proposes it as its own,
    /// forwarding to the leader). The first applied result wins; if none
    /// applies, the direct attempt's error is returned.
    ///
    /// For the master's lease renewals, which are idempotent: a master cut
    /// off from the leader alone still has its renewals committed through
    /// the voters it reaches, so losing one link does not cost it the role.
    /// The command may be applied more than once, so only renewals go
    /// through here (peers refuse to relay anything else). When this node
    /// leads, relays would only come back to it, so none are sent; when
    /// its own Raft has stopped, neither: a node that cannot run its own
    /// consensus must not keep a role through its peers.
    pub async fn propose_with_relays(
        &self,
        command: Command,
        timeout: Duration,
        relay_after: Duration,
    ) -> Result<Relayed, ProposeError> {
        debug_assert!(
            matches!(command, Command::Renew { .. }),
            "only renewals are relayed"
        );
        let deadline = Instant::now() + timeout;
        let direct = self.propose(command.clone(), timeout);
        tokio::pin!(direct);
        let relay_at = tokio::time::sleep(relay_after);
        tokio::pin!(relay_at);
        let mut relays = tokio::task::JoinSet::new();
        let mut relays_sent = false;
        // Set once the direct attempt failed; relays may still succeed.
        let mut direct_error = None;
        loop {
            tokio::select! {
                result = &mut direct, if direct_error.is_none() => match result {
                    Ok(result) => return Ok(Relayed { result, via: None }),
                    Err(ProposeError::Stopped) => return Err(ProposeError::Stopped),
                    Err(error) => {
                        direct_error = Some(error);
                        // A non-2xx answer or a connection broken
                        // mid-request ends it early: relay at once.
                        if !relays_sent {
                            relays_sent = true;
                            self.send_relays(&mut relays, &command, deadline);
                        }
                    }
                },
                () = &mut relay_at, if !relays_sent => {
                    relays_sent = true;
                    self.send_relays(&mut relays, &command, deadline);
                }
                joined = relays.join_next(), if !relays.is_empty() => {
                    if let Some(Ok((relay, Some(result)))) = joined {
                        return Ok(Relayed { result, via: Some(relay) });
                    }
                }
                else => break,
            }
        }
        // Every branch is off only once the direct attempt has failed and
        // every relay has ended without an applied answer.
        Err(direct_error.expect("the direct attempt failed"))
    }

    /// Spawns `command` relayed through every voter but this node and the
    /// leader, into `relays`; none when this node leads (they would only
    /// come back here). Each ends with the relay's id and the applied
    /// result, if it got one.
    fn send_relays(
        &self,
        relays: &mut tokio::task::JoinSet<(NodeId, Option<CommandResult>)>,
        command: &Command,
        deadline: Instant,
    ) {
        let me = self.node_id();
        let leader = self.leadership().leader;
        if leader == Some(me) {
            return;
        }
        for relay in self.voters().into_keys() {
            if relay == me || Some(relay) == leader {
                continue;
            }
            let consensus = self.clone();
            let command = command.clone();
            let remaining = deadline.saturating_duration_since(Instant::now());
            relays.spawn(async move {
                let applied = consensus.relay_through(relay, &command, remaining).await;
                (relay, applied)
            });
        }
    }

    /// `command` proposed by voter `relay` on this node's behalf: the
    /// applied result, or `None` (why not is only logged: the direct
    /// attempt's error is the one the caller hears).
    async fn relay_through(
        &self,
        relay: NodeId,
        command: &Command,
        remaining: Duration,
    ) -> Option<CommandResult> {
        match self
            .post_proposal(relay, "/raft/relay", command, remaining)
            .await
        {
            Ok(ProposeReply::Applied { result }) => Some(result),
            Ok(reply) => {
                tracing::debug!(relay, ?reply, "relay did not get the proposal applied");
                None
            }
            Err(RemoteFailure::NotSent(error) | RemoteFailure::MaybeSent(error)) => {
                tracing::debug!(relay, %error, "relay not reached");
                None
            }
        }
    }

    /// Waits until leadership changes, a heartbeat interval passes, or the
    /// deadline comes, whichever is first.
    async fn pause_for_leader(
        &self,
        leadership_changes: &mut watch::Receiver<Leadership>,
        deadline: Instant,
    ) {
        leadership_changes.mark_unchanged();
        let until = (Instant::now() + self.inner.leader_retry_pause).min(deadline);
        if let Ok(Err(_closed)) = tokio::time::timeout_at(until, leadership_changes.changed()).await
        {
            // The node is shut down and leadership will not change any
            // more; still pause instead of spinning.
            tokio::time::sleep_until(until).await;
        }
    }

    async fn propose_remotely(
        &self,
        leader: NodeId,
        command: &Command,
        remaining: Duration,
    ) -> Result<ProposeReply, RemoteFailure> {
        self.post_proposal(leader, "/raft/propose", command, remaining)
            .await
    }

    /// POSTs `command` to `path` on peer `peer`, which answers a
    /// [`ProposeReply`] within `remaining`.
    async fn post_proposal(
        &self,
        peer: NodeId,
        path: &str,
        command: &Command,
        remaining: Duration,
    ) -> Result<ProposeReply, RemoteFailure> {
        let Some(addr) = self.peer_addr(peer) else {
            return Err(RemoteFailure::NotSent(ProposeError::Transport {
                peer,
                reason: "it is not a configured voter".into(),
            }));
        };
        // The peer gives up a little before we do, so that its TimedOut
        // answer arrives instead of our own timeout firing blind.
        let peer_budget =
            remaining.saturating_sub((remaining / 10).min(Duration::from_millis(100)));
        let url = format!(
            "{}://{}{path}?timeout_ms={}",
            self.inner.peer_scheme,
            addr,
            peer_budget.as_millis().max(1)
        );
        let transport = |reason: String| ProposeError::Transport { peer, reason };
        let response = self
            .inner
            .peer_http
            .post(&url)
            .json(command)
            .timeout(remaining)
            .send()
            .await
            .map_err(|error| {
                if error.is_connect() {
                    RemoteFailure::NotSent(transport(error.to_string()))
                } else if error.is_timeout() {
                    RemoteFailure::MaybeSent(ProposeError::Timeout {
                        after_ms: remaining.as_millis() as u64,
                    })
                } else {
                    RemoteFailure::MaybeSent(ProposeError::OutcomeUnknown {
                        reason: format!("connection to peer {peer} failed mid-request: {error}"),
                    })
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            // Refused before it reached Raft (e.g. a body the peer cannot
            // parse); sending it again would be refused again.
            return Err(RemoteFailure::MaybeSent(transport(format!(
                "{url} answered {status}: {body}"
            ))));
        }
        response.json::<ProposeReply>().await.map_err(|error| {
            RemoteFailure::MaybeSent(ProposeError::OutcomeUnknown {
                reason: format!("unreadable answer from {url}: {error}"),
            })
        })
    }

    /// Confirms with a quorum that this node is still the leader (openraft
    /// `ensure_linearizable` with the ReadIndex policy: a fresh heartbeat
    /// round must be acknowledged), then waits until this node has applied
    /// everything committed before the call. Used by the decider before it
    /// acts on the state it reads.
    pub async fn confirm_leadership(&self, timeout: Duration) -> Result<(), ProposeError> {
        // openraft gives up on the quorum a little before our own timeout,
        // so that a missing quorum is reported as such, not as a timeout.
        let quorum_wait = timeout.saturating_sub((timeout / 10).min(Duration::from_millis(50)));
        let option = LinearizerOption::from(ReadPolicy::ReadIndex).with_wait_timeout(quorum_wait);
        let after_ms = timeout.as_millis() as u64;
        match tokio::time::timeout(timeout, self.inner.raft.ensure_linearizable(option)).await {
            Err(_) => Err(ProposeError::Timeout { after_ms }),
            Ok(Ok(_read_log_id)) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                Err(ProposeError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(quorum)))) => {
                Err(ProposeError::QuorumNotReached {
                    reason: quorum.to_string(),
                })
            }
            Ok(Err(RaftError::Fatal(Fatal::Stopped))) => Err(ProposeError::Stopped),
            Ok(Err(RaftError::Fatal(fatal))) => Err(ProposeError::Raft(fatal.to_string())),
        }
    }

    /// Asks the current leader (this node) to hand Raft leadership to `to`;
    /// for planned switchovers of the decider. Returns once the request is
    /// queued; watch [`Self::leadership_watch`] for the outcome.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), ConsensusError> {
        if !self.inner.config.voters.contains_key(&to) {
            return Err(ConsensusError::Config {
                reason: format!("cannot transfer leadership to {to}: not a voter"),
            });
        }
        self.inner
            .raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(stopped)
    }

    /// The cluster's voters and their peer addresses, as the Raft
    /// membership says (the config's list only until the cluster exists).
    pub fn voters(&self) -> BTreeMap<NodeId, String> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let voters: BTreeMap<NodeId, String> = membership
            .voter_ids()
            .map(|id| {
                let addr = membership
                    .get_node(&id)
                    .map(|node| node.addr.clone())
                    .unwrap_or_default();
                (id, addr)
            })
            .collect();
        if voters.is_empty() {
            return self
                .inner
                .config
                .voters
                .iter()
                .map(|(id, addr)| (*id, addr.to_string()))
                .collect();
        }
        voters
    }

    /// The peer endpoint of `node`: from the membership, else the config.
    fn peer_addr(&self, node: NodeId) -> Option<std::net::SocketAddr> {
        self.voters()
            .get(&node)
            .and_then(|addr| addr.parse().ok())
            .or_else(|| self.inner.config.peer_addr(node))
    }

    /// Adds `id` at `peer` as a voter: first as a learner that catches up
    /// with the log, then into the voters (joint consensus). Only on the
    /// leader; bounded by `timeout`.
    pub async fn add_voter(
        &self,
        id: NodeId,
        peer: std::net::SocketAddr,
        timeout: Duration,
    ) -> Result<(), ConsensusError> {
        let raft = &self.inner.raft;
        let work = async {
            raft.add_learner(id, BasicNode::new(peer), true)
                .await
                .map_err(|error| ConsensusError::Membership {
                    reason: format!("adding {id} at {peer} as a learner: {error}"),
                })?;
            raft.change_membership(
                openraft::ChangeMembers::AddVoterIds(std::collections::BTreeSet::from([id])),
                false,
            )
            .await
            .map_err(|error| ConsensusError::Membership {
                reason: format!("making {id} a voter: {error}"),
            })?;
            Ok(())
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ConsensusError::Membership {
                reason: format!(
                    "adding {id} at {peer} did not finish within {} ms (is it running and reachable?)",
                    timeout.as_millis()
                ),
            })?
    }

    /// Removes voter `id` from the cluster (not kept as a learner). Only on
    /// the leader; bounded by `timeout`.
    pub async fn remove_voter(&self, id: NodeId, timeout: Duration) -> Result<(), ConsensusError> {
        let work = self.inner.raft.change_membership(
            openraft::ChangeMembers::RemoveVoters(std::collections::BTreeSet::from([id])),
            false,
        );
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(ConsensusError::Membership {
                reason: format!("removing {id}: {error}"),
            }),
            Err(_) => Err(ConsensusError::Membership {
                reason: format!(
                    "removing {id} did not finish within {} ms",
                    timeout.as_millis()
                ),
            }),
        }
    }

    /// Stops Raft and waits until storage has released the redb file, so
    /// the same `data_dir` can be opened again. Idempotent.
    pub async fn shutdown(&self) {
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!(%error, "raft core task ended abnormally");
        }
        if let Some(task) = self
            .inner
            .leadership_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        let deadline = Instant::now() + STORAGE_RELEASE_TIMEOUT;
        while self.inner.database.strong_count() > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    data_dir = %self.inner.config.data_dir.display(),
                    "raft storage still open after shutdown"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// What [`Consensus::propose_with_relays`] got applied, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// The state machine's result for the entry.
    pub result: CommandResult,
    /// The voter that proposed it on this node's behalf; `None` when the
    /// direct proposal was applied first.
    pub via: Option<NodeId>,
}

/// The node behind the peer router's `/raft/relay`, without keeping it
/// alive: once every `Consensus` handle is gone, a router still served
/// answers `Stopped`.
#[derive(Clone)]
pub(crate) struct WeakConsensus(Weak<Inner>);

impl WeakConsensus {
    pub(crate) fn upgrade(&self) -> Option<Consensus> {
        self.0.upgrade().map(|inner| Consensus { inner })
    }
}

/// A relayed proposal's outcome, as `/raft/relay` answers it.
pub(crate) fn reply_of(result: Result<CommandResult, ProposeError>) -> ProposeReply {
    match result {
        Ok(result) => ProposeReply::Applied { result },
        Err(ProposeError::Timeout { .. }) => ProposeReply::TimedOut,
        Err(ProposeError::OutcomeUnknown { reason }) => ProposeReply::OutcomeUnknown { reason },
        Err(ProposeError::Stopped) => ProposeReply::Stopped,
        Err(error) => ProposeReply::Failed {
            reason: error.to_string(),
        },
    }
}

/// Why a forwarded proposal failed, by whether it may have reached Raft.
enum RemoteFailure {
    /// Certainly not appended; trying again cannot apply it twice.
    NotSent(ProposeError),
    /// It may have been appended; the caller must not blindly resend.
    MaybeSent(ProposeError),
}

/// Runs `client_write` on this node, bounded by `timeout`. Shared by
/// `propose` and the `/raft/propose` endpoint.
pub(crate) async fn write_locally(
    raft: &MailherdRaft,
    command: Command,
    timeout: Duration,
) -> ProposeReply {
    match tokio::time::timeout(timeout, raft.client_write(Proposal(command))).await {
        Err(_) => ProposeReply::TimedOut,
        Ok(Ok(response)) => ProposeReply::Applied {
            result: response.data,
        },
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            ProposeReply::ForwardToLeader {
                leader: forward.leader_id,
            }
        }
        Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward)))) => {
            ProposeReply::OutcomeUnknown {
                reason: format!(
                    "entry discarded by a leader change (leader now {:?}); it may have committed",
                    forward.leader_id
                ),
            }
        }
        Ok(Err(RaftError::APIError(other))) => ProposeReply::Failed {
            reason: other.to_string(),
        },
        Ok(Err(RaftError::Fatal(Fatal::Stopped))) => ProposeReply::Stopped,
        Ok(Err(RaftError::Fatal(fatal))) => ProposeReply::Failed {
            reason: fatal.to_string(),
        },
    }
}

fn leadership_from(metrics: &RaftMetrics<TypeConfig>) -> Leadership {
    Leadership {
        leader: metrics.current_leader,
        term: metrics.current_term,
        is_me: metrics.state.is_leader(),
    }
}

/// Mirrors openraft's metrics into the leadership watch, publishing only
/// real changes (metrics are re-sent on every Raft event).
async fn track_leadership(
    mut metrics: openraft::type_config::alias::WatchReceiverOf<TypeConfig, RaftMetrics<TypeConfig>>,
    sender: watch::Sender<Leadership>,
) {
    loop {
        let leadership = leadership_from(&metrics.borrow_watched());
        sender.send_if_modified(|current| {
            let changed = *current != leadership;
            *current = leadership;
            changed
        });
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn stopped(fatal: Fatal<TypeConfig>) -> ConsensusError {
    ConsensusError::Stopped {
        reason: fatal.to_string(),
    }
}
