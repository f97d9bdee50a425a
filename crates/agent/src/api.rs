//! The agent's HTTP API.
//!
//! - `GET /health`: alive (text, keyword-friendly for Uptime Kuma).
//! - `GET /status`: the status document (JSON) plus what the host holds.
//! - `GET /master`: 200 only on a master that finished its promotion and
//!   whose stack is operational (or degraded: every critical check up), so
//!   HAProxy's `option httpchk GET /master` sends traffic to exactly the
//!   node that serves.
//! - `GET /backup`: 200 only on a ready backup holding nothing.
//! - `GET /metrics`: Prometheus metrics in the OpenMetrics text format
//!   (see [`crate::metrics`]).
//! - `GET /`: the dashboard (HTML, see [`crate::dashboard`]).
//! - `POST /v1/switchover` (`{"to": "n2"}` or `{}`), `POST /v1/maintenance`
//!   (`{"on": true}`), `POST /v1/breaker/reset`: control, with
//!   `Authorization: Bearer <token>` (the `api.token_file`); 401 otherwise.
//!   Each proposes one command through Raft and answers once it committed.
//! - `POST /v1/gc` (`{"dry_run": true|false}`): one garbage collection
//!   pass (token-protected), run by the control loop; answers with its
//!   report. Host resources are only touched on a backup with no pipeline
//!   running.
//! - `POST /v1/members` (`{"name", "id", "role", "priority", "peer",
//!   "api"}`) and `POST /v1/members/remove` (`{"name"}`): membership
//!   changes, on the Raft leader only (elsewhere 409 naming the leader's
//!   API, which the CLI follows).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::Router;
use mailherd_config::{Config, MemberRole};
use mailherd_consensus::Consensus;
use mailherd_core::state::Command;
use mailherd_core::Verdict;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::dashboard::Dashboard;
use crate::metrics::Metrics;
use crate::pipelines::Drivers;
use crate::status::StatusDocument;

/// How long a control request waits for its command to commit.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ApiState {
    pub status: watch::Receiver<StatusDocument>,
    /// Its counters are served under `"alerts"` in `/status`.
    pub alerter: mailherd_alerts::Alerter,
    /// The Uptime Kuma push worker, served under `"uptime_kuma"`.
    pub kuma: Option<Arc<mailherd_alerts::KumaPush>>,
    pub drivers: Drivers,
    pub consensus: Consensus,
    pub config: Arc<Config>,
    /// The control token; `None` refuses every control request.
    pub token: Option<Arc<str>>,
    /// Served as `/metrics`.
    pub metrics: Metrics,
    /// Garbage collection passes are asked of the control loop here.
    pub gc: tokio::sync::mpsc::Sender<crate::control::GcRequest>,
}

pub fn router(state: ApiState) -> Router {
    // The token is checked before anything else of a control request is
    // looked at: a caller without it learns nothing, not even whether its
    // body had the right shape.
    let control = Router::new()
        .route("/v1/switchover", post(switchover))
        .route("/v1/maintenance", post(maintenance))
        .route("/v1/breaker/reset", post(breaker_reset))
        .route("/v1/gc", post(gc))
        .route("/v1/members", post(add_member))
        .route("/v1/members/remove", post(remove_member))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/master", get(master))
        .route("/backup", get(backup))
        .merge(control)
        .with_state(state)
}

/// Lets a control request through only with the right bearer token.
async fn require_token(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match refusal(&state, request.headers()) {
        Some(response) => response,
        None => next.run(request).await,
    }
}

async fn health(State(state): State<ApiState>) -> impl IntoResponse {
    let doc = state.status.borrow().clone();
    (
        StatusCode::OK,
        format!("OK mailherd node={} role={}\n", doc.node, doc.role),
    )
}

async fn status(State(state): State<ApiState>) -> impl IntoResponse {
    let doc = state.status.borrow().clone();
    let holdings = state.drivers.observe().await;
    let mut value = serde_json::to_value(&doc).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "holds".into(),
            serde_json::to_value(&holdings).unwrap_or_default(),
        );
        object.insert(
            "alerts".into(),
            serde_json::to_value(state.alerter.counters()).unwrap_or_default(),
        );
        if let Some(kuma) = &state.kuma {
            object.insert(
                "uptime_kuma".into(),
                serde_json::to_value(kuma.state()).unwrap_or_default(),
            );
        }
    }
    Json(value)
}

async fn metrics(State(state): State<ApiState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(failure) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {failure}"),
        ),
    }
}

async fn dashboard(State(state): State<ApiState>) -> Response {
    let doc = state.status.borrow().clone();
    let page = Dashboard::from_status(&doc, &state.alerter.counters());
    match askama::Template::render(&page) {
        Ok(html) => axum::response::Html(html).into_response(),
        Err(failure) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the dashboard failed: {failure}"),
        ),
    }
}

async fn master(State(state): State<ApiState>) -> impl IntoResponse {
    let doc = state.status.borrow().clone();
    let operational = doc
        .verdict
        .as_ref()
        .is_none_or(|v| matches!(v.verdict, Verdict::Operational | Verdict::Degraded));
    if doc.phase == "master" && operational {
        (StatusCode::OK, format!("MASTER {}\n", doc.node))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("NOT MASTER {} role={}\n", doc.node, doc.role),
        )
    }
}

async fn backup(State(state): State<ApiState>) -> impl IntoResponse {
    let doc = state.status.borrow().clone();
    if doc.role == "backup" && doc.phase == "backup" {
        (StatusCode::OK, format!("BACKUP {}\n", doc.node))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("NOT BACKUP {} role={}\n", doc.node, doc.role),
        )
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Checks `Authorization: Bearer <token>` in constant time; the refusal
/// to send when it does not match.
fn refusal(state: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.token else {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "control requests are disabled: this agent has no api.token_file",
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches = presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    (!matches).then(|| error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

async fn propose(state: &ApiState, command: Command, done: serde_json::Value) -> Response {
    match state.consensus.propose(command, CONTROL_TIMEOUT).await {
        Ok(Ok(())) => (StatusCode::OK, Json(done)).into_response(),
        Ok(Err(rejection)) => error(StatusCode::CONFLICT, rejection.to_string()),
        Err(failure) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the cluster did not commit the request: {failure}"),
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// Node name to hand over to; the best candidate when absent.
    #[serde(default)]
    pub to: Option<String>,
}

async fn switchover(
    State(state): State<ApiState>,
    body: Option<Json<SwitchoverRequest>>,
) -> Response {
    let request = body
        .map(|Json(b)| b)
        .unwrap_or(SwitchoverRequest { to: None });
    let cluster = state.consensus.current_state();
    let Some(current) = cluster.assignment else {
        return error(
            StatusCode::CONFLICT,
            "there is no master to switch over from",
        );
    };
    let members = state.config.effective_members(&cluster);
    let to = match &request.to {
        None => None,
        Some(name) => match members.iter().find(|m| &m.name == name) {
            None => {
                let known: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("unknown node `{name}` (known: {})", known.join(", ")),
                );
            }
            Some(member) if member.role == MemberRole::Witness => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`{name}` is a witness and never holds the role"),
                );
            }
            Some(member) if member.id == current.node => {
                return error(
                    StatusCode::CONFLICT,
                    format!("`{name}` is already the master"),
                );
            }
            Some(member) => Some(member.id),
        },
    };
    let command = Command::RequestSwitchover {
        epoch: current.epoch,
        to,
        at_unix_ms: crate::clock::Clock::new().unix_ms(),
    };
    let done = json!({ "switchover": { "from_epoch": current.epoch, "to": request.to } });
    propose(&state, command, done).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    pub on: bool,
}

async fn maintenance(
    State(state): State<ApiState>,
    body: Option<Json<MaintenanceRequest>>,
) -> Response {
    let Some(Json(request)) = body else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body must be {\"on\": true|false}",
        );
    };
    let command = Command::SetMaintenance {
        on: request.on,
        at_unix_ms: crate::clock::Clock::new().unix_ms(),
    };
    propose(&state, command, json!({ "maintenance": request.on })).await
}

async fn breaker_reset(State(state): State<ApiState>) -> Response {
    let command = Command::ResetBreaker {
        at_unix_ms: crate::clock::Clock::new().unix_ms(),
    };
    propose(&state, command, json!({ "breaker": "reset" })).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequestBody {
    #[serde(default)]
    pub dry_run: bool,
}

/// How long a garbage collection pass may take (an urgent demotion and a
/// Raft proposal at most).
const GC_TIMEOUT: Duration = Duration::from_secs(30);

async fn gc(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Option<Json<GcRequestBody>>,
) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
    let dry_run = body.is_none_or(|Json(b)| b.dry_run);
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = crate::control::GcRequest { dry_run, reply };
    if state.gc.send(request).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping");
    }
    match tokio::time::timeout(GC_TIMEOUT, answer).await {
        Ok(Ok(Ok(report))) => (StatusCode::OK, Json(report)).into_response(),
        Ok(Ok(Err(busy))) => error(StatusCode::CONFLICT, busy),
        Ok(Err(_)) => error(
            StatusCode::CONFLICT,
            "the pass was abandoned: a pipeline took over the host",
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no report within {} s", GC_TIMEOUT.as_secs()),
        ),
    }
}

/// How long adding a member may take: its log must catch up first.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub name: String,
    pub id: u64,
    #[serde(default)]
    pub role: MemberRole,
    #[serde(default = "default_priority")]
    pub priority: u32,
    pub peer: std::net::SocketAddr,
    pub api: std::net::SocketAddr,
}

fn default_priority() -> u32 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveMemberRequest {
    pub name: String,
}

/// Membership changes run on the leader: anywhere else, a 409 that names
/// the leader's API (`leader_api`) for the caller to retry there.
fn not_leader(state: &ApiState, cluster: &mailherd_core::ClusterState) -> Option<Response> {
    let leadership = state.consensus.leadership();
    if leadership.is_me {
        return None;
    }
    let leader_api = leadership.leader.and_then(|id| {
        state
            .config
            .effective_members(cluster)
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| format!("http://{}", m.api))
    });
    Some(
        (
            StatusCode::CONFLICT,
            Json(json!({
                "error": if leader_api.is_some() {
                    "membership changes run on the Raft leader; this node is not it"
                } else {
                    "membership changes run on the Raft leader, and this node knows none yet: retry"
                },
                "leader_api": leader_api,
            })),
        )
            .into_response(),
    )
}

/// What every membership request passes after the token: a body of the
/// right shape (`usage` says which), and this node being the leader. The
/// refusal is an ordinary HTTP answer, returned right away by the caller.
#[allow(clippy::result_large_err)]
fn membership_request<T>(
    state: &ApiState,
    body: Option<Json<T>>,
    usage: &str,
) -> Result<(T, Arc<mailherd_core::ClusterState>), Response> {
    let Some(Json(request)) = body else {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the body must be {usage}"),
        ));
    };
    let cluster = state.consensus.current_state();
    if let Some(response) = not_leader(state, &cluster) {
        return Err(response);
    }
    Ok((request, cluster))
}

async fn add_member(
    State(state): State<ApiState>,
    body: Option<Json<AddMemberRequest>>,
) -> Response {
    let (request, cluster) = match membership_request(
        &state,
        body,
        "{\"name\", \"id\", \"role\", \"priority\", \"peer\", \"api\"}",
    ) {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    let name = request.name.trim();
    if name.is_empty() || request.id == 0 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a member needs a non-empty name and a non-zero id",
        );
    }
    let members = state.config.effective_members(&cluster);
    if let Some(clash) = members.iter().find(|m| {
        (m.id == request.id) != (m.name == name) || m.peer == request.peer && m.id != request.id
    }) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "`{name}` (id {}, peer {}) clashes with member `{}` (id {}, peer {})",
                request.id, request.peer, clash.name, clash.id, clash.peer
            ),
        );
    }
    let member = mailherd_core::MemberInfo {
        id: request.id,
        name: name.to_string(),
        mail: request.role == MemberRole::Mail,
        priority: request.priority,
        peer: request.peer,
        api: request.api,
    };
    // The directory first, so that every node can name the new voter as
    // soon as it votes.
    if let Err(failure) = state
        .consensus
        .propose(Command::SetMember { member }, CONTROL_TIMEOUT)
        .await
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the cluster did not record the new member: {failure}"),
        );
    }
    tracing::info!(name, id = request.id, peer = %request.peer, "adding a member");
    match state
        .consensus
        .add_voter(request.id, request.peer, MEMBERSHIP_TIMEOUT)
        .await
    {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "added": name, "voters": state.consensus.voters() })),
        )
            .into_response(),
        Err(failure) => error(StatusCode::SERVICE_UNAVAILABLE, failure.to_string()),
    }
}

async fn remove_member(
    State(state): State<ApiState>,
    body: Option<Json<RemoveMemberRequest>>,
) -> Response {
    let (request, cluster) = match membership_request(&state, body, "{\"name\": \"n4\"}") {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    let members = state.config.effective_members(&cluster);
    let Some(member) = members.iter().find(|m| m.name == request.name) else {
        let known: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "unknown node `{}` (known: {})",
                request.name,
                known.join(", ")
            ),
        );
    };
    if let Some(assignment) = cluster.assignment.filter(|a| a.node == member.id) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "`{}` holds the master role (epoch {}): `mailherd switchover` first",
                member.name, assignment.epoch
            ),
        );
    }
    if member.id == state.config.me().id {
        return error(
            StatusCode::CONFLICT,
            "this node is the Raft leader: remove it through another node after \
             `mailherd switchover` moved leadership (or stop it: the others elect a leader)",
        );
    }
    let voters = state.consensus.voters();
    if voters.contains_key(&member.id) && voters.len() <= 2 {
        return error(
            StatusCode::CONFLICT,
            format!(
                "removing `{}` would leave fewer than two voters",
                member.name
            ),
        );
    }
    tracing::info!(name = %member.name, id = member.id, "removing a member");
    // The directory first: once removed there the decider never picks it,
    // and `apply` refuses the removal of the holder, so the role cannot
    // land on a node that is leaving.
    match state
        .consensus
        .propose(Command::RemoveMember { node: member.id }, CONTROL_TIMEOUT)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(rejection)) => return error(StatusCode::CONFLICT, rejection.to_string()),
        Err(failure) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the cluster did not record the removal: {failure}"),
            )
        }
    }
    if voters.contains_key(&member.id) {
        if let Err(failure) = state
            .consensus
            .remove_voter(member.id, MEMBERSHIP_TIMEOUT)
            .await
        {
            return error(StatusCode::SERVICE_UNAVAILABLE, failure.to_string());
        }
    }
    (
        StatusCode::OK,
        Json(json!({ "removed": member.name, "voters": state.consensus.voters() })),
    )
        .into_response()
}
