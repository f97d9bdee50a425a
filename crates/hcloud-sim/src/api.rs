//! The Hetzner paths under `/v1`, and the gate every request to them
//! passes: latency, token, rate limit, injected faults, then the handler,
//! then the rate-limit headers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::fault::{self, Fault};
use crate::render;
use crate::server::Shared;
use crate::state::ApiFailure;

/// The API's default page size, and its largest.
const DEFAULT_PER_PAGE: u64 = 25;
const MAX_PER_PAGE: u64 = 50;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let v1 = Router::new()
        .route("/floating_ips", get(list_floating_ips))
        .route("/floating_ips/{id}", get(get_floating_ip))
        .route(
            "/floating_ips/{id}/actions/assign",
            post(assign_floating_ip),
        )
        .route(
            "/floating_ips/{id}/actions/unassign",
            post(unassign_floating_ip),
        )
        .route("/volumes", get(list_volumes))
        .route("/volumes/{id}", get(get_volume))
        .route("/volumes/{id}/actions/attach", post(attach_volume))
        .route("/volumes/{id}/actions/detach", post(detach_volume))
        .route("/servers", get(list_servers))
        .route("/servers/{id}", get(get_server))
        .route("/actions/{id}", get(get_action))
        .fallback(unknown_path)
        .method_not_allowed_fallback(unknown_path)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared);
    Router::new().nest("/v1", v1)
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = render::error(&self.code, &self.message, self.details);
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiFailure>;

/// What the gate decided before the handler.
enum Verdict {
    Pass,
    Refuse(ApiFailure),
    Fault(Fault),
}

async fn gate(
    State(shared): State<Arc<Shared>>,
    OriginalUri(uri): OriginalUri,
    request: Request,
    next: Next,
) -> Response {
    let latency = shared.config.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let authorized = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| token == shared.config.token);
    let method = request.method().as_str().to_string();
    let verdict = {
        let mut state = shared.lock();
        if !authorized {
            // Checked before the bucket: a request without a project's
            // token is not counted against that project.
            Verdict::Refuse(ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unable to authenticate",
            ))
        } else if !state.bucket.try_take(Instant::now()) {
            Verdict::Refuse(ApiFailure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                format!(
                    "limit of {} requests reached",
                    shared.config.rate_limit.limit
                ),
            ))
        } else {
            match fault::take_first(&mut state.faults, |fault| {
                fault.matches_request(&method, uri.path())
            }) {
                Some(fault) => Verdict::Fault(fault),
                None => Verdict::Pass,
            }
        }
    };
    let response = match verdict {
        Verdict::Pass => next.run(request).await,
        Verdict::Refuse(failure) => failure.into_response(),
        Verdict::Fault(Fault::Http {
            status,
            code: Some(code),
            message,
            ..
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = message.unwrap_or_else(|| format!("{code} (injected)"));
            ApiFailure::new(status, &code, message).into_response()
        }
        // The edge in front of the API answers these: no error document
        // and no rate-limit headers.
        Verdict::Fault(Fault::Http { status, .. }) => return bare_status(status),
        Verdict::Fault(Fault::Timeout { hang_ms, .. }) => {
            let hang = async {
                match hang_ms {
                    Some(hang_ms) => tokio::time::sleep(Duration::from_millis(hang_ms)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hang => {}
                _ = shared.stopped() => {}
            }
            return bare_status(504);
        }
        Verdict::Fault(
            Fault::ActionError { .. }
            | Fault::ActionStuck { .. }
            | Fault::ActionWithoutEffect { .. },
        ) => {
            unreachable!("action faults never match a request")
        }
    };
    with_rate_limit_headers(&shared, response)
}

fn with_rate_limit_headers(shared: &Shared, mut response: Response) -> Response {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let headers = shared.lock().bucket.headers(Instant::now(), unix_now);
    let map = response.headers_mut();
    map.insert("ratelimit-limit", HeaderValue::from(headers.limit));
    map.insert("ratelimit-remaining", HeaderValue::from(headers.remaining));
    map.insert("ratelimit-reset", HeaderValue::from(headers.reset_unix));
    response
}

fn bare_status(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    (status, [(CONTENT_TYPE, "text/html")], body).into_response()
}

async fn unknown_path(OriginalUri(uri): OriginalUri) -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such path: {}", uri.path()),
    )
}

fn parse_id(id: &str) -> Result<u64, ApiFailure> {
    id.parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiFailure::invalid_input("id", format!("{id:?} is not an id")))
}

/// `page` and `per_page` of a list request.
struct PageRequest {
    page: u64,
    per_page: u64,
}

impl PageRequest {
    fn parse(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
    ) -> Result<PageRequest, ApiFailure> {
        let Query(query) =
            query.map_err(|error| ApiFailure::invalid_input("query", error.body_text()))?;
        let number = |name: &str, default: u64| match query.get(name) {
            None => Ok(default),
            Some(value) => value
                .parse::<u64>()
                .ok()
                .filter(|number| *number >= 1)
                .ok_or_else(|| {
                    ApiFailure::invalid_input(name, format!("{value:?} is not a positive integer"))
                }),
        };
        Ok(PageRequest {
            page: number("page", 1)?,
            // Larger pages are served at the maximum, not refused.
            per_page: number("per_page", DEFAULT_PER_PAGE)?.min(MAX_PER_PAGE),
        })
    }
}

type ListQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

fn list(key: &str, items: Vec<Value>, page: PageRequest) -> Response {
    Json(render::page(key, items, page.page, page.per_page)).into_response()
}

fn one(key: &str, item: Value) -> Response {
    Json(json!({ key: item })).into_response()
}

fn action_started(document: Value) -> Response {
    (StatusCode::CREATED, Json(json!({ "action": document }))).into_response()
}

/// Reads a request body, naming `field` (the one required field) when it
/// is missing or malformed.
fn parse_body<T: DeserializeOwned>(body: &[u8], field: &str) -> Result<T, ApiFailure> {
    serde_json::from_slice(body)
        .map_err(|error| ApiFailure::invalid_input(field, error.to_string()))
}

#[derive(Deserialize)]
struct AssignRequest {
    server: u64,
}

#[derive(Deserialize)]
struct AttachRequest {
    server: u64,
    /// Accepted for the shape; the simulator has no file systems to mount.
    #[serde(default)]
    #[allow(dead_code)]
    automount: Option<bool>,
}

async fn list_floating_ips(State(shared): State<Arc<Shared>>, query: ListQuery) -> ApiResult {
    let page = PageRequest::parse(query)?;
    let items = shared.lock().floating_ip_documents();
    Ok(list("floating_ips", items, page))
}

async fn get_floating_ip(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let document = shared.lock().floating_ip_document(id)?;
    Ok(one("floating_ip", document))
}

async fn assign_floating_ip(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id(&id)?;
    let request: AssignRequest = parse_body(&body, "server")?;
    let document = shared.start_action(|state| state.plan_assign(id, request.server))?;
    Ok(action_started(document))
}

async fn unassign_floating_ip(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let document = shared.start_action(|state| state.plan_unassign(id))?;
    Ok(action_started(document))
}

async fn list_volumes(State(shared): State<Arc<Shared>>, query: ListQuery) -> ApiResult {
    let page = PageRequest::parse(query)?;
    let items = shared.lock().volume_documents();
    Ok(list("volumes", items, page))
}

async fn get_volume(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let document = shared.lock().volume_document(id)?;
    Ok(one("volume", document))
}

async fn attach_volume(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id(&id)?;
    let request: AttachRequest = parse_body(&body, "server")?;
    let document = shared.start_action(|state| state.plan_attach(id, request.server))?;
    Ok(action_started(document))
}

async fn detach_volume(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let document = shared.start_action(|state| state.plan_detach(id))?;
    Ok(action_started(document))
}

async fn list_servers(State(shared): State<Arc<Shared>>, query: ListQuery) -> ApiResult {
    let page = PageRequest::parse(query)?;
    let items = shared.lock().server_documents();
    Ok(list("servers", items, page))
}

async fn get_server(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let document = shared.lock().server_document(id)?;
    Ok(one("server", document))
}

async fn get_action(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let document = shared.lock().action_document(id)?;
    Ok(one("action", document))
}
