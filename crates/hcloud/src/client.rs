//! [`Client`]: the requests, their retries, pagination, and waiting for
//! actions.
//!
//! Every request goes through [`Client::execute`]: wait if the rate limit
//! is known to be spent, send, remember the rate-limit headers, and on
//! failure ask the [`RetryPolicy`](crate::RetryPolicy) whether and when to
//! send again. Lists follow `meta.pagination.next_page` until it is null.
//! Action requests answer at once with a running [`Action`];
//! [`Client::wait_action`] polls it until it succeeds, fails or runs out of
//! time.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::retry::{Failure, ObservedRateLimit, RetryBudget};
use crate::{
    Action, ActionStatus, ApiError, ClientConfig, Error, ErrorCode, FloatingIp, Pagination,
    RateLimit, Result, Server, Volume,
};

/// The largest page the API serves: fewer round trips, fewer requests
/// against the rate limit.
const PER_PAGE: u32 = 50;

/// How much of an unexpected body an error quotes.
const BODY_SNIPPET_CHARS: usize = 200;

/// A Hetzner Cloud API client. Cheap to clone; clones share the
/// connection pool and the rate-limit state.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// [`ClientConfig::base_url`] without a trailing slash; paths start
    /// with one.
    base_url: String,
    /// `Bearer <token>`, built once and marked sensitive so that `http`
    /// types never print it.
    authorization: HeaderValue,
    config: ClientConfig,
    /// The rate-limit headers of the last answer that had them. Shared by
    /// all requests of all clones: the limit is per project, not per call.
    rate_limit: Mutex<Option<ObservedRateLimit>>,
}

/// One logical request, sent once or more.
struct Call<'a> {
    method: Method,
    /// Relative to the base URL, with its query: `/volumes?page=2&per_page=50`.
    path: &'a str,
    body: Option<Value>,
    /// Only action requests (attach, detach, assign, unassign) retry
    /// `locked`.
    locked_is_retried: bool,
}

impl<'a> Call<'a> {
    fn get(path: &'a str) -> Call<'a> {
        Call {
            method: Method::GET,
            path,
            body: None,
            locked_is_retried: false,
        }
    }

    fn action(path: &'a str, body: Option<Value>) -> Call<'a> {
        Call {
            method: Method::POST,
            path,
            body,
            locked_is_retried: true,
        }
    }
}

/// Why one attempt failed, before the retry decision.
enum FailedAttempt {
    Api(ApiError),
    Status { status: u16, body: String },
    Transport { reason: String, timed_out: bool },
}

impl FailedAttempt {
    fn transport(error: reqwest::Error) -> FailedAttempt {
        let timed_out = error.is_timeout();
        // The URL is dropped because the message names the path already.
        let error = error.without_url();
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        FailedAttempt::Transport { reason, timed_out }
    }

    fn kind(&self) -> Failure<'_> {
        match self {
            FailedAttempt::Api(api) => Failure::Api(&api.code),
            FailedAttempt::Status { status, .. } => Failure::BareStatus(*status),
            FailedAttempt::Transport { .. } => Failure::Transport,
        }
    }

    fn into_error(
        self,
        call: &Call<'_>,
        attempts: u32,
        observed: Option<ObservedRateLimit>,
    ) -> Error {
        let method = call.method.clone();
        let path = call.path.to_string();
        let reset_unix = observed.map(|observed| observed.rate_limit.reset_unix);
        match self {
            FailedAttempt::Api(source) if source.code == ErrorCode::RateLimitExceeded => {
                Error::RateLimited {
                    method,
                    path,
                    attempts,
                    reset_unix,
                    message: source.message,
                }
            }
            FailedAttempt::Status { status: 429, body } => Error::RateLimited {
                method,
                path,
                attempts,
                reset_unix,
                message: format!("HTTP 429 {body:?}"),
            },
            FailedAttempt::Api(source) => Error::Api {
                method,
                path,
                attempts,
                source: Box::new(source),
            },
            FailedAttempt::Status { status, body } => Error::UnexpectedStatus {
                method,
                path,
                status,
                body,
                attempts,
            },
            FailedAttempt::Transport { reason, timed_out } => Error::Transport {
                method,
                path,
                reason,
                timed_out,
                attempts,
            },
        }
    }
}

impl fmt::Display for FailedAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailedAttempt::Api(api) => write!(f, "{api}"),
            FailedAttempt::Status { status, .. } => write!(f, "HTTP {status}"),
            FailedAttempt::Transport { reason, .. } => f.write_str(reason),
        }
    }
}

impl Client {
    /// A client for `config`. Fails only on a base URL that is not http(s)
    /// or an HTTP stack that cannot be set up.
    pub fn new(config: ClientConfig) -> Result<Client> {
        let base_url = config.base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::Config {
                reason: format!("base_url {base_url:?} is not an http:// or https:// URL"),
            });
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", config.token.expose_secret())).map_err(
                |_| Error::Config {
                    reason: "the token cannot be sent in an HTTP header".to_string(),
                },
            )?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent(concat!("mailherd-hcloud/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::Config {
                reason: format!("cannot set up the HTTP client: {error}"),
            })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                authorization,
                config,
                rate_limit: Mutex::new(None),
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The rate-limit headers of the last answer that had them.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.observed_rate_limit()
            .map(|observed| observed.rate_limit)
    }

    pub async fn floating_ip(&self, id: u64) -> Result<FloatingIp> {
        self.get_one(&format!("/floating_ips/{id}"), "floating_ip")
            .await
    }

    /// All floating IPs of the project, every page.
    pub async fn floating_ips(&self) -> Result<Vec<FloatingIp>> {
        self.get_all("/floating_ips", "floating_ips").await
    }

    /// Starts routing floating IP `id` to `server`.
    pub async fn assign_floating_ip(&self, id: u64, server: u64) -> Result<Action> {
        let path = format!("/floating_ips/{id}/actions/assign");
        self.start_action(&path, Some(json!({ "server": server })))
            .await
    }

    pub async fn unassign_floating_ip(&self, id: u64) -> Result<Action> {
        let path = format!("/floating_ips/{id}/actions/unassign");
        self.start_action(&path, None).await
    }

    pub async fn volume(&self, id: u64) -> Result<Volume> {
        self.get_one(&format!("/volumes/{id}"), "volume").await
    }

    /// All volumes of the project, every page.
    pub async fn volumes(&self) -> Result<Vec<Volume>> {
        self.get_all("/volumes", "volumes").await
    }

    /// Starts attaching volume `id` to `server`. mailherd mounts volumes
    /// itself, so it passes `automount: false`.
    pub async fn attach_volume(&self, id: u64, server: u64, automount: bool) -> Result<Action> {
        let path = format!("/volumes/{id}/actions/attach");
        self.start_action(
            &path,
            Some(json!({ "server": server, "automount": automount })),
        )
        .await
    }

    pub async fn detach_volume(&self, id: u64) -> Result<Action> {
        let path = format!("/volumes/{id}/actions/detach");
        self.start_action(&path, None).await
    }

    pub async fn server(&self, id: u64) -> Result<Server> {
        self.get_one(&format!("/servers/{id}"), "server").await
    }

    /// All servers of the project, every page.
    pub async fn servers(&self) -> Result<Vec<Server>> {
        self.get_all("/servers", "servers").await
    }

    pub async fn action(&self, id: u64) -> Result<Action> {
        self.get_one(&format!("/actions/{id}"), "action").await
    }

    /// Polls `action` every [`ClientConfig::poll_interval`] until it ends:
    /// `success` gives the finished action, `error` gives
    /// [`Error::ActionFailed`], and still `running` after
    /// [`ClientConfig::action_timeout`] gives [`Error::ActionTimeout`].
    pub async fn wait_action(&self, action: &Action) -> Result<Action> {
        let config = &self.inner.config;
        let started = Instant::now();
        let deadline = started + config.action_timeout;
        let mut current = action.clone();
        loop {
            match current.status {
                ActionStatus::Success => return Ok(current),
                ActionStatus::Error => {
                    let error = current.error.unwrap_or_default();
                    return Err(Error::ActionFailed {
                        id: current.id,
                        command: current.command,
                        code: error.code,
                        message: error.message,
                    });
                }
                ActionStatus::Running | ActionStatus::Unknown => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::ActionTimeout {
                    id: current.id,
                    command: current.command,
                    waited_ms: millis(now - started),
                });
            }
            tokio::time::sleep(config.poll_interval.min(deadline - now)).await;
            current = self.action(action.id).await?;
        }
    }

    /// [`Client::assign_floating_ip`], then [`Client::wait_action`].
    pub async fn assign_and_wait(&self, id: u64, server: u64) -> Result<Action> {
        let action = self.assign_floating_ip(id, server).await?;
        self.wait_action(&action).await
    }

    /// [`Client::unassign_floating_ip`], then [`Client::wait_action`].
    pub async fn unassign_and_wait(&self, id: u64) -> Result<Action> {
        let action = self.unassign_floating_ip(id).await?;
        self.wait_action(&action).await
    }

    /// [`Client::attach_volume`], then [`Client::wait_action`].
    pub async fn attach_and_wait(&self, id: u64, server: u64, automount: bool) -> Result<Action> {
        let action = self.attach_volume(id, server, automount).await?;
        self.wait_action(&action).await
    }

    /// [`Client::detach_volume`], then [`Client::wait_action`].
    pub async fn detach_and_wait(&self, id: u64) -> Result<Action> {
        let action = self.detach_volume(id).await?;
        self.wait_action(&action).await
    }

    async fn get_one<T: DeserializeOwned>(&self, path: &str, field: &str) -> Result<T> {
        let call = Call::get(path);
        let body = self.execute(&call).await?;
        let mut document = parse_object(&call, &body)?;
        take_field(&call, &mut document, field)
    }

    async fn get_all<T: DeserializeOwned>(&self, path: &str, field: &str) -> Result<Vec<T>> {
        #[derive(Deserialize)]
        struct Meta {
            pagination: Pagination,
        }
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let page_path = format!("{path}?page={page}&per_page={PER_PAGE}");
            let call = Call::get(&page_path);
            let body = self.execute(&call).await?;
            let mut document = parse_object(&call, &body)?;
            let batch: Vec<T> = take_field(&call, &mut document, field)?;
            items.extend(batch);
            // No (readable) meta means no more pages. A next page that does
            // not move forward would loop forever: stop there too.
            let next_page = document
                .remove("meta")
                .and_then(|meta| serde_json::from_value::<Meta>(meta).ok())
                .and_then(|meta| meta.pagination.next_page);
            match next_page {
                Some(next_page) if next_page > page => page = next_page,
                _ => return Ok(items),
            }
        }
    }

    async fn start_action(&self, path: &str, body: Option<Value>) -> Result<Action> {
        let call = Call::action(path, body);
        let body = self.execute(&call).await?;
        let mut document = parse_object(&call, &body)?;
        let action: Action = take_field(&call, &mut document, "action")?;
        tracing::debug!(
            path,
            action = action.id,
            command = %action.command,
            "hcloud action started"
        );
        Ok(action)
    }

    /// Sends `call` until it succeeds or the retry policy gives up, and
    /// returns the body of the success.
    async fn execute(&self, call: &Call<'_>) -> Result<Vec<u8>> {
        let policy = &self.inner.config.retry;
        let mut budget = RetryBudget::default();
        let mut attempts = 0;
        loop {
            if let Some(wait) =
                policy.wait_before_request(self.observed_rate_limit().as_ref(), unix_now())
            {
                tracing::info!(
                    method = %call.method,
                    path = call.path,
                    wait_ms = millis(wait),
                    "hcloud rate limit spent; waiting before the request"
                );
                tokio::time::sleep(wait).await;
            }
            attempts += 1;
            let failure = match self.send_once(call).await {
                Ok(body) => return Ok(body),
                Err(failure) => failure,
            };
            let observed = self.observed_rate_limit();
            let delay = policy.retry_delay(
                failure.kind(),
                &mut budget,
                call.locked_is_retried,
                observed.as_ref(),
                unix_now(),
                rand::random(),
            );
            match delay {
                Some(delay) => {
                    // `locked` is expected while another action runs (up to
                    // locked_max_retries of them): not worth a warning each.
                    if matches!(failure.kind(), Failure::Api(ErrorCode::Locked)) {
                        tracing::debug!(
                            method = %call.method,
                            path = call.path,
                            attempt = attempts,
                            retry_in_ms = millis(delay),
                            "hcloud resource locked, retrying"
                        );
                    } else {
                        tracing::warn!(
                            method = %call.method,
                            path = call.path,
                            attempt = attempts,
                            retry_in_ms = millis(delay),
                            "hcloud request failed, retrying: {failure}"
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
                None => return Err(failure.into_error(call, attempts, observed)),
            }
        }
    }

    async fn send_once(&self, call: &Call<'_>) -> Result<Vec<u8>, FailedAttempt> {
        let url = format!("{}{}", self.inner.base_url, call.path);
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), url)
            .header(AUTHORIZATION, self.inner.authorization.clone());
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(FailedAttempt::transport)?;
        self.remember_rate_limit(response.headers());
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(FailedAttempt::transport)?;
        tracing::debug!(method = %call.method, path = call.path, status, "hcloud answered");
        if (200..300).contains(&status) {
            return Ok(body.to_vec());
        }
        Err(match ApiError::from_body(status, &body) {
            Some(api) => FailedAttempt::Api(api),
            None => FailedAttempt::Status {
                status,
                body: snippet(&body),
            },
        })
    }

    fn observed_rate_limit(&self) -> Option<ObservedRateLimit> {
        *self
            .inner
            .rate_limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the headers if the answer had all three; an answer without
    /// them (a proxy's 502) leaves the last ones in place.
    fn remember_rate_limit(&self, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        let (Some(limit), Some(remaining), Some(reset_unix)) = (
            number("RateLimit-Limit"),
            number("RateLimit-Remaining"),
            number("RateLimit-Reset"),
        ) else {
            return;
        };
        let observed = ObservedRateLimit {
            rate_limit: RateLimit {
                limit,
                remaining,
                reset_unix,
            },
            seen_at_unix: unix_now(),
        };
        *self
            .inner
            .rate_limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(observed);
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn parse_object(call: &Call<'_>, body: &[u8]) -> Result<Map<String, Value>> {
    serde_json::from_slice(body)
        .map_err(|error| decode_error(call, format!("not a JSON object: {error}")))
}

fn take_field<T: DeserializeOwned>(
    call: &Call<'_>,
    document: &mut Map<String, Value>,
    field: &str,
) -> Result<T> {
    let value = document
        .remove(field)
        .ok_or_else(|| decode_error(call, format!("no {field:?} field")))?;
    serde_json::from_value(value)
        .map_err(|error| decode_error(call, format!("field {field:?}: {error}")))
}

fn decode_error(call: &Call<'_>, reason: String) -> Error {
    Error::Decode {
        method: call.method.clone(),
        path: call.path.to_string(),
        reason,
    }
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(BODY_SNIPPET_CHARS)
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
