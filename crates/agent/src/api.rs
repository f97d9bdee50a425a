//! The agent's HTTP API: `/health`, `/status`, `/master`, `/backup`.
//!
//! `/master` answers 200 only on a master that finished its promotion and
//! whose stack is operational (or degraded: every critical check up), so
//! HAProxy's `option httpchk GET /master` sends traffic to exactly the node
//! that serves. `/backup` answers 200 only on a ready backup holding nothing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use mailherd_core::Verdict;
use tokio::sync::watch;

use crate::pipelines::Drivers;
use crate::status::StatusDocument;

#[derive(Clone)]
pub struct ApiState {
    pub status: watch::Receiver<StatusDocument>,
    pub drivers: Drivers,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/master", get(master))
        .route("/backup", get(backup))
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
