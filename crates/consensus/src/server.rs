//! The server side of peer traffic: an axum [`Router`] with the endpoints
//! that [`crate::network`] and `Consensus::propose` call.
//!
//! | endpoint                    | body                         | answer                              |
//! |-----------------------------|------------------------------|-------------------------------------|
//! | `POST /raft/append`         | `AppendEntriesRequest`       | `Result<AppendEntriesResponse, _>`  |
//! | `POST /raft/vote`           | `VoteRequest`                | `Result<VoteResponse, _>`           |
//! | `POST /raft/pre-vote`       | `VoteRequest`                | `Result<VoteResponse, _>`           |
//! | `POST /raft/snapshot`       | vote, meta, state JSON       | `Result<SnapshotResponse, _>`       |
//! | `POST /raft/transfer-leader`| `TransferLeaderRequest`      | `Result<TransferLeaderResponse, _>` |
//! | `POST /raft/propose`        | a `Command` (`?timeout_ms=`) | applied result or a leader hint     |
//! | `POST /raft/relay`          | a `Command` (`?timeout_ms=`) | applied result, or why not          |
//!
//! The Raft RPC answers are `Result`s whose error is openraft's
//! `RaftError` (only ever `Fatal`: the local Raft is stopping). Malformed
//! bodies get axum's 4xx, which the client reports as a network error.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Json, Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use mailherd_core::Command;
use openraft::errors::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::Deserialize;

use crate::handle::{write_locally, WeakConsensus};
use crate::types::{MailherdRaft, ProposeReply, Snapshot, SnapshotRequest, TypeConfig};

/// Snapshots and append batches are JSON; a full history plus a batch of
/// large entries stays far below this, and anything above is an error.
const BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// How long `/raft/propose` waits for a commit when the caller gives no
/// `timeout_ms`, and the most it waits when the caller asks for more.
const DEFAULT_PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_PROPOSE_TIMEOUT: Duration = Duration::from_secs(60);

type RaftResult<T> = Json<Result<T, RaftError<TypeConfig>>>;

pub(crate) fn router(raft: MailherdRaft, relay: WeakConsensus) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/pre-vote", post(pre_vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/transfer-leader", post(transfer_leader))
        .route("/raft/propose", post(propose))
        .with_state(Arc::new(raft))
        .merge(
            Router::new()
                .route("/raft/relay", post(relay_proposal))
                .with_state(relay),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
}

async fn append(
    State(raft): State<Arc<MailherdRaft>>,
    Json(request): Json<AppendEntriesRequest<TypeConfig>>,
) -> RaftResult<AppendEntriesResponse<TypeConfig>> {
    Json(raft.append_entries(request).await)
}

async fn vote(
    State(raft): State<Arc<MailherdRaft>>,
    Json(request): Json<VoteRequest<TypeConfig>>,
) -> RaftResult<VoteResponse<TypeConfig>> {
    Json(raft.vote(request).await)
}

async fn pre_vote(
    State(raft): State<Arc<MailherdRaft>>,
    Json(request): Json<VoteRequest<TypeConfig>>,
) -> RaftResult<VoteResponse<TypeConfig>> {
    Json(raft.pre_vote(request).await)
}

async fn snapshot(
    State(raft): State<Arc<MailherdRaft>>,
    Json(request): Json<SnapshotRequest>,
) -> RaftResult<SnapshotResponse<TypeConfig>> {
    let snapshot = Snapshot {
        meta: request.meta,
        snapshot: request.data.into_bytes(),
    };
    Json(
        raft.install_full_snapshot(request.vote, snapshot)
            .await
            .map_err(RaftError::Fatal),
    )
}

async fn transfer_leader(
    State(raft): State<Arc<MailherdRaft>>,
    Json(request): Json<TransferLeaderRequest<TypeConfig>>,
) -> RaftResult<TransferLeaderResponse<TypeConfig>> {
    Json(
        raft.handle_transfer_leader(request)
            .await
            .map_err(RaftError::Fatal),
    )
}

#[derive(Debug, Deserialize)]
struct ProposeQuery {
    timeout_ms: Option<u64>,
}

fn propose_timeout(query: &ProposeQuery) -> Duration {
    query
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_PROPOSE_TIMEOUT)
        .clamp(Duration::from_millis(1), MAX_PROPOSE_TIMEOUT)
}

/// Commits a command if this node is the accepting leader. It never
/// forwards further: the caller follows the hint itself, so a proposal can
/// not bounce between two nodes that disagree about who leads.
async fn propose(
    State(raft): State<Arc<MailherdRaft>>,
    Query(query): Query<ProposeQuery>,
    Json(command): Json<Command>,
) -> Result<Json<ProposeReply>, (StatusCode, String)> {
    Ok(Json(
        write_locally(&raft, command, propose_timeout(&query)).await,
    ))
}

/// Proposes a lease renewal on behalf of a peer that cannot reach the
/// leader itself (see `Consensus::propose_with_relays`): this node's own
/// `propose`, which writes locally or forwards to the leader. It never
/// relays further. The answer is never a leader hint: the relay already
/// followed those. Anything but a renewal is refused: a relayed command
/// may be applied twice, which only a renewal tolerates.
async fn relay_proposal(
    State(relay): State<WeakConsensus>,
    Query(query): Query<ProposeQuery>,
    Json(command): Json<Command>,
) -> Json<ProposeReply> {
    if !matches!(command, Command::Renew { .. }) {
        return Json(ProposeReply::Failed {
            reason: format!("only lease renewals are relayed, not {command:?}"),
        });
    }
    let Some(consensus) = relay.upgrade() else {
        return Json(ProposeReply::Stopped);
    };
    Json(crate::handle::reply_of(
        consensus.propose(command, propose_timeout(&query)).await,
    ))
}
