//! The routes: the HTML form and the JSON API.
//!
//! - `GET /`: the form (askama template `templates/signup.html`, no
//!   script): address, domain, name, password, the hidden honeypot field
//!   and a fresh token;
//! - `POST /`: the form's submission; the page again with the reasons, or
//!   the new address, with the same status code the API would give;
//! - `GET /api/token`: `{"token", "min_age_s"}` for API clients;
//! - `POST /api/signup`: `{"local_part", "domain", "password", "name",
//!   "token"}` → 201 `{"address"}`, 409, 422 `{"reasons"}`, 429, 503, 502;
//! - `GET /health`: `OK`.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use serde_json::json;

use crate::{Outcome, Service, SignupInput};

pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(form).post(submit_form))
        .route("/api/token", get(api_token))
        .route("/api/signup", axum::routing::post(api_signup))
        .route("/health", get(|| async { "OK" }))
        .with_state(service)
}

#[derive(Template)]
#[template(path = "signup.html")]
struct FormPage<'a> {
    domains: &'a [String],
    selected_domain: &'a str,
    local_part: &'a str,
    name: &'a str,
    min_password_length: usize,
    token: String,
    errors: Vec<String>,
    created: Option<String>,
}

fn render(page: FormPage<'_>, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the signup form");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the form").into_response()
        }
    }
}

async fn form(State(service): State<Arc<Service>>) -> Response {
    let (token, _) = service.issue_token();
    render(
        FormPage {
            domains: service.domains(),
            selected_domain: service.domains().first().map(String::as_str).unwrap_or(""),
            local_part: "",
            name: "",
            min_password_length: service.min_password_length(),
            token,
            errors: Vec::new(),
            created: None,
        },
        StatusCode::OK,
    )
}

fn status_of(outcome: &Outcome) -> StatusCode {
    StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The human sentences of an outcome, for the form.
fn sentences(outcome: &Outcome) -> Vec<String> {
    match outcome.body["reasons"].as_array() {
        Some(reasons) => reasons
            .iter()
            .map(|r| {
                let field = match r["field"].as_str().unwrap_or("") {
                    "local_part" => "Address",
                    "domain" => "Domain",
                    "password" => "Password",
                    "name" => "Name",
                    "token" => "Form",
                    _ => "Form",
                };
                format!("{field}: {}", r["message"].as_str().unwrap_or(""))
            })
            .collect(),
        None => vec![outcome.body["message"]
            .as_str()
            .unwrap_or("something went wrong")
            .to_string()],
    }
}

async fn submit_form(
    State(service): State<Arc<Service>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(input): Form<SignupInput>,
) -> Response {
    let local_part = input.local_part.clone();
    let name = input.name.clone();
    let domain = input.domain.clone();
    let outcome = service.signup(client.ip(), input).await;
    let status = status_of(&outcome);
    let created = (outcome.status == 201).then(|| {
        outcome.body["address"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    let (token, _) = service.issue_token();
    let mut response = render(
        FormPage {
            domains: service.domains(),
            selected_domain: &domain,
            local_part: &local_part,
            name: &name,
            min_password_length: service.min_password_length(),
            token,
            errors: if created.is_some() {
                Vec::new()
            } else {
                sentences(&outcome)
            },
            created,
        },
        status,
    );
    add_retry_after(&mut response, &outcome);
    response
}

async fn api_token(State(service): State<Arc<Service>>) -> Response {
    let (token, min_age_s) = service.issue_token();
    Json(json!({"token": token, "min_age_s": min_age_s})).into_response()
}

async fn api_signup(
    State(service): State<Arc<Service>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let input: SignupInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "bad_request", "message": format!("the body is not the signup JSON: {error}")})),
            )
                .into_response()
        }
    };
    let outcome = service.signup(client.ip(), input).await;
    let mut response = (status_of(&outcome), Json(outcome.body.clone())).into_response();
    add_retry_after(&mut response, &outcome);
    response
}

fn add_retry_after(response: &mut Response, outcome: &Outcome) {
    if let Some(seconds) = outcome.retry_after_s {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
}
