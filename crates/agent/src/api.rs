//! The agent's HTTP API.
//!
//! - `GET /health`: alive (text, keyword-friendly for Uptime Kuma).
//! - `GET /status`: the status document (JSON) plus what the host holds.
//! - `GET /master`: 200 only on a master that finished its promotion and
//!   whose stack is operational (or degraded: every critical check up), so
//!   HAProxy's `option httpchk GET /master` sends traffic to exactly the
//!   node that serves.
//! - `GET /backup`: 200 only on a ready backup holding nothing.
//! - `POST /v1/switchover` (`{"to": "n2"}` or `{}`), `POST /v1/maintenance`
//!   (`{"on": true}`), `POST /v1/breaker/reset`: control, with
//!   `Authorization: Bearer <token>` (the `api.token_file`); 401 otherwise.
//!   Each proposes one command through Raft and answers once it committed.

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

use crate::pipelines::Drivers;
use crate::status::StatusDocument;

/// How long a control request waits for its command to commit.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ApiState {
    pub status: watch::Receiver<StatusDocument>,
    pub drivers: Drivers,
    pub consensus: Consensus,
    pub config: Arc<Config>,
    /// The control token; `None` refuses every control request.
    pub token: Option<Arc<str>>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/master", get(master))
        .route("/backup", get(backup))
        .route("/v1/switchover", post(switchover))
        .route("/v1/maintenance", post(maintenance))
        .route("/v1/breaker/reset", post(breaker_reset))
        .with_state(state)
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
    }
    Json(value)
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
    headers: HeaderMap,
    body: Option<Json<SwitchoverRequest>>,
) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
    let request = body
        .map(|Json(b)| b)
        .unwrap_or(SwitchoverRequest { to: None });
    let cluster = state.consensus.state().borrow().clone();
    let Some(current) = cluster.assignment else {
        return error(
            StatusCode::CONFLICT,
            "there is no master to switch over from",
        );
    };
    let to = match &request.to {
        None => None,
        Some(name) => match state.config.members.iter().find(|m| &m.name == name) {
            None => {
                let known: Vec<&str> = state
                    .config
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect();
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
    headers: HeaderMap,
    body: Option<Json<MaintenanceRequest>>,
) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
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

async fn breaker_reset(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
    let command = Command::ResetBreaker {
        at_unix_ms: crate::clock::Clock::new().unix_ms(),
    };
    propose(&state, command, json!({ "breaker": "reset" })).await
}
