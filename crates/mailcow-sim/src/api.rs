//! The routes of the simulated API and the gate every request passes.
//!
//! The gate: the `X-API-Key` must be the read-write or the read-only key
//! and the client's address must be in the allow-list, else 401
//! `{"type":"error","msg":"authentication failed"}`; the read-only key on a
//! write is 403. Behind it, `add/mailbox` answers HTTP 200 whatever
//! happens, with one `{"type","log","msg"}` entry in an array, as mailcow
//! does; a body that is not JSON is 400.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::{Mailbox, Shared};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/add/mailbox", post(add_mailbox))
        .route("/api/v1/get/mailbox/{id}", get(get_mailbox))
        .route("/api/v1/get/domain/{id}", get(get_domain))
        .route("/api/v1/get/status/containers", get(containers))
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"type": "error", "msg": msg}))).into_response()
}

async fn gate(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let config = &shared.config;
    let read_write = key == Some(config.api_key.as_str());
    let read_only = key.is_some() && key == config.read_only_key.as_deref();
    // Not in the reference: what a key from an address outside
    // API_ALLOW_FROM gets. mailcow only accepts a key from an allowed
    // address, so such a request is answered as if the key were wrong.
    let allowed = config.allow_from.is_empty() || config.allow_from.contains(&peer.ip());
    if !(read_write || read_only) || !allowed {
        return error(StatusCode::UNAUTHORIZED, "authentication failed");
    }
    if read_only && request.method() != Method::GET {
        return error(StatusCode::FORBIDDEN, "access denied");
    }
    shared.lock().requests += 1;
    next.run(request).await
}

/// One `{"type","log","msg"}` entry in an array, with HTTP 200.
fn reply(kind: &str, log: Value, msg: Value) -> Response {
    (
        StatusCode::OK,
        Json(json!([{"type": kind, "log": log, "msg": msg}])),
    )
        .into_response()
}

/// mailcow accepts numbers and strings alike in its JSON forms.
fn text(body: &Value, key: &str) -> Option<String> {
    match body.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

fn valid_domain(domain: &str) -> bool {
    domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// mailcow's check on the local part: what makes a valid address with the
/// domain (letters, digits and `.!#$%&'*+-/=?^_`{|}~`, no dot at either end).
fn valid_local_part(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".!#$%&'*+-/=?^_`{|}~".contains(c))
}

async fn add_mailbox(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Request body doesn't contain valid json!",
        );
    };
    // What mailcow logs: the action and the request with the passwords
    // masked.
    let mut logged = body.clone();
    for key in ["password", "password2"] {
        if logged.get(key).is_some() {
            logged[key] = json!("*");
        }
    }
    let log = json!(["mailbox", "add", "mailbox", logged]);
    let danger = |msg: Value| reply("danger", log.clone(), msg);

    let domain = text(&body, "domain").unwrap_or_default().to_lowercase();
    let local_part = text(&body, "local_part").unwrap_or_default().to_lowercase();
    let password = text(&body, "password").unwrap_or_default();
    let password2 = text(&body, "password2").unwrap_or_default();
    let name = text(&body, "name").unwrap_or_default();
    let active = text(&body, "active").as_deref() != Some("0");
    let address = format!("{local_part}@{domain}");

    if !valid_domain(&domain) {
        return danger(json!(["domain_invalid"]));
    }
    if !valid_local_part(&local_part) {
        return danger(json!(["mailbox_invalid", address]));
    }
    if password != password2 {
        return danger(json!(["password_mismatch"]));
    }
    if password.chars().count() < shared.config.min_password_length {
        return danger(json!(["password_complexity"]));
    }
    let Some(settings) = shared.config.domains.iter().find(|d| d.name == domain) else {
        return danger(json!(["domain_not_found", domain]));
    };
    let quota_text = text(&body, "quota").unwrap_or_else(|| "0".to_string());
    let Ok(requested_quota) = quota_text.parse::<u64>() else {
        return danger(json!(["quota_not_numeric"]));
    };
    // Not in the reference: quota 0 means "unlimited" in mailcow; the
    // simulator gives such a mailbox the domain's per-mailbox maximum.
    let quota_mib = if requested_quota == 0 {
        settings.max_quota_mib
    } else {
        requested_quota
    };

    let mut state = shared.lock();
    if settings.aliases.contains(&address) {
        return danger(json!(["is_alias", address]));
    }
    if state.mailboxes.contains_key(&address) {
        return danger(json!(["object_exists", address]));
    }
    let in_domain: Vec<&Mailbox> = state
        .mailboxes
        .values()
        .filter(|m| m.domain == domain)
        .collect();
    if in_domain.len() as u64 >= settings.max_mailboxes {
        return danger(json!([
            "max_mailbox_exceeded",
            in_domain.len(),
            settings.max_mailboxes
        ]));
    }
    if quota_mib > settings.max_quota_mib {
        return danger(json!(["mailbox_quota_exceeded", settings.max_quota_mib]));
    }
    let used: u64 = in_domain.iter().map(|m| m.quota_mib).sum();
    let left = settings.total_quota_mib.saturating_sub(used);
    if quota_mib > left {
        return danger(json!(["mailbox_quota_left_exceeded", left]));
    }
    state.mailboxes.insert(
        address.clone(),
        Mailbox {
            username: address.clone(),
            domain,
            local_part,
            name,
            quota_mib,
            active,
        },
    );
    tracing::info!(%address, "mailcow-sim: mailbox added");
    reply("success", log, json!(["mailbox_added", address]))
}

fn mailbox_json(m: &Mailbox) -> Value {
    json!({
        "username": m.username,
        "domain": m.domain,
        "local_part": m.local_part,
        "name": m.name,
        "quota": m.quota_mib * 1024 * 1024,
        "active": if m.active { 1 } else { 0 },
    })
}

/// `get/mailbox/all` is every mailbox; `get/mailbox/ADDRESS` one, or `{}`
/// when it does not exist (mailcow answers unknown objects with an empty
/// object, HTTP 200).
async fn get_mailbox(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let state = shared.lock();
    if id == "all" {
        let all: Vec<Value> = state.mailboxes.values().map(mailbox_json).collect();
        return Json(Value::Array(all)).into_response();
    }
    match state.mailboxes.get(&id.to_lowercase()) {
        Some(m) => Json(mailbox_json(m)).into_response(),
        None => Json(json!({})).into_response(),
    }
}

/// A domain with its mailbox count and limits, under mailcow's field names
/// (`mboxes_in_domain`, `max_num_mboxes_for_domain`, quotas in bytes);
/// `{}` for an unknown domain.
async fn get_domain(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let id = id.to_lowercase();
    let Some(settings) = shared.config.domains.iter().find(|d| d.name == id) else {
        return Json(json!({})).into_response();
    };
    let state = shared.lock();
    let in_domain: Vec<&Mailbox> = state
        .mailboxes
        .values()
        .filter(|m| m.domain == id)
        .collect();
    let used: u64 = in_domain.iter().map(|m| m.quota_mib).sum();
    Json(json!({
        "domain_name": settings.name,
        "mboxes_in_domain": in_domain.len(),
        "max_num_mboxes_for_domain": settings.max_mailboxes,
        "max_quota_for_mbox": settings.max_quota_mib * 1024 * 1024,
        "max_quota_for_domain": settings.total_quota_mib * 1024 * 1024,
        "quota_used_in_domain": (used * 1024 * 1024).to_string(),
        "active": 1,
    }))
    .into_response()
}

/// The containers' states, as `GET /api/v1/get/status/containers` lists
/// them: every service of the reference, running.
async fn containers() -> Response {
    let services = [
        "unbound",
        "mysql",
        "redis",
        "clamd",
        "rspamd",
        "php-fpm",
        "sogo",
        "dovecot",
        "postfix",
        "postfix-tlspol",
        "memcached",
        "nginx",
        "acme",
        "netfilter",
        "watchdog",
        "dockerapi",
        "olefy",
        "ofelia",
    ];
    let mut all = serde_json::Map::new();
    for service in services {
        all.insert(
            format!("{service}-mailcow"),
            json!({"type": "info", "container": format!("{service}-mailcow"), "state": "running"}),
        );
    }
    Json(Value::Object(all)).into_response()
}
