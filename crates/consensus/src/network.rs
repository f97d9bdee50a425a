//! The client side of peer traffic: openraft's RPCs as JSON over HTTP.
//!
//! Every RPC is a `POST {scheme}://{peer}/raft/{name}` whose body is the
//! openraft request and whose answer is `Result<response, RaftError>`, the
//! shape [`crate::server`] produces. Errors are classified for openraft's
//! retry logic: a peer that refuses the connection, or whose Raft has
//! stopped, is `Unreachable` (openraft backs off); a request that ran out of
//! time is a `Timeout`; anything else is a `NetworkError` (retried soon).

use std::future::Future;
use std::time::Duration;

use mailherd_core::NodeId;
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RPCTypes};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{Snapshot, SnapshotData, SnapshotRequest, TypeConfig, Vote};

/// Builds the default peer HTTP client.
///
/// Proxies are ignored: peer traffic must go straight to the peer, never to
/// whatever `HTTP_PROXY` happens to be set in the agent's environment. The
/// connect timeout is short because a peer that does not accept within it is
/// treated as down anyway; per-request timeouts come from openraft.
pub(crate) fn default_peer_client(
    connect_timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

/// Hands openraft one [`PeerClient`] per target.
pub(crate) struct PeerNetworkFactory {
    pub(crate) node_id: NodeId,
    pub(crate) http: reqwest::Client,
    pub(crate) scheme: &'static str,
    /// The shortest time an RPC may take before it counts as failed; see
    /// [`PeerClient::post`].
    pub(crate) min_rpc_timeout: Duration,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            node_id: self.node_id,
            target,
            min_rpc_timeout: self.min_rpc_timeout,
            base_url: format!("{}://{}/raft", self.scheme, node.addr),
            http: self.http.clone(),
        }
    }
}

/// Sends RPCs to one peer. Cheap: the HTTP client's connection pool is
/// shared, and an idle pooled connection is reused per request, so a
/// heartbeat never queues behind a large append on the same connection.
pub(crate) struct PeerClient {
    node_id: NodeId,
    target: NodeId,
    min_rpc_timeout: Duration,
    base_url: String,
    http: reqwest::Client,
}

impl PeerClient {
    async fn post<Request, Response>(
        &self,
        endpoint: &str,
        request: &Request,
        option: &RPCOption,
        action: RPCTypes,
    ) -> Result<Response, RPCError<TypeConfig>>
    where
        Request: Serialize,
        Response: DeserializeOwned,
    {
        // openraft may cancel the RPC at hard_ttl; the soft one lets the
        // transport report a timeout before that.
        // openraft asks for appends and heartbeats to finish within three
        // quarters of the heartbeat interval (37.5 ms by default). A
        // follower's append includes its fsync, which on a busy disk takes
        // longer than that now and then; failing the RPC then makes openraft
        // back off and resend, and the leader commits nothing for hundreds
        // of milliseconds although every node is up, which cost healthy
        // masters their lease. A slow answer is still an answer: wait at
        // least the election timeout's minimum for it.
        let timeout = option.soft_ttl().max(self.min_rpc_timeout);
        let url = format!("{}/{}", self.base_url, endpoint);
        let timeout_error = || {
            RPCError::Timeout(Timeout {
                action,
                id: self.node_id,
                target: self.target,
                timeout,
            })
        };
        let response = self
            .http
            .post(&url)
            .json(request)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| {
                if error.is_timeout() {
                    timeout_error()
                } else if error.is_connect() {
                    RPCError::Unreachable(Unreachable::from_string(format!(
                        "peer {} at {url} refuses connections: {error}",
                        self.target
                    )))
                } else {
                    RPCError::Network(NetworkError::from_string(format!("{url}: {error}")))
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(RPCError::Network(NetworkError::from_string(format!(
                "{url} answered {status}: {body}"
            ))));
        }
        let answer: Result<Response, RaftError<TypeConfig>> =
            response.json().await.map_err(|error| {
                if error.is_timeout() {
                    timeout_error()
                } else {
                    RPCError::Network(NetworkError::from_string(format!(
                        "{url}: unreadable answer: {error}"
                    )))
                }
            })?;
        // The only error a peer returns is Fatal: its Raft is stopping or
        // broken. Treat it like a dead peer so openraft backs off.
        answer.map_err(|fatal| {
            RPCError::Unreachable(Unreachable::from_string(format!(
                "raft on peer {} is not running: {fatal}",
                self.target
            )))
        })
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.post("append", &request, &option, RPCTypes::AppendEntries)
            .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.post("vote", &request, &option, RPCTypes::Vote).await
    }

    // Implemented for real: the default grants every pre-vote, which would
    // make enabling pre-vote pointless.
    async fn pre_vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.post("pre-vote", &request, &option, RPCTypes::Vote)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = String::from_utf8(snapshot.snapshot).map_err(|error| {
            StreamingError::Network(NetworkError::from_string(format!(
                "snapshot is not UTF-8 JSON: {error}"
            )))
        })?;
        let request = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data,
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            answer = self.post("snapshot", &request, &option, RPCTypes::InstallSnapshot) => Ok(answer?),
        }
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.post(
            "transfer-leader",
            &request,
            &option,
            RPCTypes::TransferLeader,
        )
        .await
    }
}
