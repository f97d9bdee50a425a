//! The simulator's own paths, outside the Hetzner ones: fault injection,
//! the world, the request counters and server power under `/_sim`; and
//! the metadata service.
//!
//! The control paths take no token and are not rate limited: only tests
//! and the lab, on loopback or a lab bridge, reach them.
//!
//! The metadata service answers for one server per request: the one named
//! in the `X-Sim-Server` header, or the one named in the path prefix
//! `/_sim/as/{name}` (so a node's metadata URL can be set to
//! `http://sim/_sim/as/n2` without sending headers), or else the server
//! with the lowest id.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::server::Shared;
use crate::Fault;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/world", get(world))
        .route("/_sim/requests", get(requests).delete(reset_requests))
        .route("/_sim/servers/{id}/power", post(power))
        .route(
            "/_sim/as/{name}/hetzner/v1/metadata/instance-id",
            get(instance_id_as),
        )
        .route(
            "/_sim/as/{name}/hetzner/v1/metadata/hostname",
            get(hostname_as),
        )
        .route("/hetzner/v1/metadata/instance-id", get(instance_id))
        .route("/hetzner/v1/metadata/hostname", get(hostname))
        .with_state(shared)
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "faults": shared.lock().faults })).into_response()
}

async fn add_fault(State(shared): State<Arc<Shared>>, Json(value): Json<Value>) -> Response {
    match Fault::from_json(value) {
        Ok(fault) => {
            shared.lock().faults.push(fault.clone());
            (StatusCode::CREATED, Json(json!({ "fault": fault }))).into_response()
        }
        Err(error) => refuse(StatusCode::BAD_REQUEST, format!("not a fault: {error}")),
    }
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn world(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.lock().world.clone()).into_response()
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "requests": shared.lock().requests })).into_response()
}

async fn reset_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.lock().requests.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct PowerRequest {
    on: bool,
}

async fn power(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Json(request): Json<PowerRequest>,
) -> Response {
    let mut state = shared.lock();
    if !state.set_power(id, request.on) {
        return refuse(StatusCode::NOT_FOUND, format!("no server {id}"));
    }
    let server = state.world.server(id).cloned();
    Json(json!({ "server": server })).into_response()
}

/// Which metadata field to answer.
#[derive(Clone, Copy)]
enum Field {
    InstanceId,
    Hostname,
}

async fn answer_metadata(shared: &Shared, name: Option<&str>, field: Field) -> Response {
    let latency = shared.config.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let state = shared.lock();
    let server = match name {
        Some(name) => state.world.server_by_name(name),
        // Servers are kept sorted by id.
        None => state.world.servers.first(),
    };
    match server {
        Some(server) => match field {
            Field::InstanceId => server.id.to_string().into_response(),
            Field::Hostname => server.name.clone().into_response(),
        },
        None => (
            StatusCode::NOT_FOUND,
            format!("no server named {:?}", name.unwrap_or("")),
        )
            .into_response(),
    }
}

fn named_in_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-sim-server")
        .and_then(|value| value.to_str().ok())
}

async fn instance_id(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    answer_metadata(&shared, named_in_header(&headers), Field::InstanceId).await
}

async fn hostname(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    answer_metadata(&shared, named_in_header(&headers), Field::Hostname).await
}

async fn instance_id_as(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    answer_metadata(&shared, Some(&name), Field::InstanceId).await
}

async fn hostname_as(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    answer_metadata(&shared, Some(&name), Field::Hostname).await
}
