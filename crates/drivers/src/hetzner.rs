//! The Hetzner Cloud API as the `hetzner` drivers use it: a client built
//! from `[hetzner]`, this server's id (from the config, or asked once from
//! the metadata service), the bound on a whole move, and the record of how
//! long the API part of the last move took.
//!
//! A move (assign a floating IP, detach and attach a volume) is a few
//! requests and one to three actions. The client retries what is safe to
//! retry; this module bounds the whole move by [`HetznerApi::move_budget`]
//! so that a stuck action or an API that keeps answering 429 ends in a
//! [`DriverError::Cloud`] naming the resource, the failed step and what was
//! done before it, within a time the promotion pipeline knows in advance.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mailherd_config::HetznerSection;
use mailherd_hcloud::{Client, ClientConfig, Token};

use crate::DriverError;

/// Bound on one HTTP exchange with the API. Shorter than the client's
/// default: a request hanging in the middle of a promotion is better
/// retried or reported than waited for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Room for the requests around the actions (reads, retries with
/// backoff) in a move's budget.
const REQUESTS_SLACK: Duration = Duration::from_secs(20);

/// How long the metadata service may take to say who we are.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// One driver's view of the API.
#[derive(Debug)]
pub struct HetznerApi {
    client: Client,
    /// From the config, or learnt from the metadata service on first use
    /// (a driver is built before the runtime makes requests).
    server_id: tokio::sync::OnceCell<u64>,
    metadata_url: String,
    action_timeout: Duration,
    /// How long the API part of the last move took, for the promotion
    /// record; `None` before the first move and while one runs.
    last_move_ms: Mutex<Option<u64>>,
}

impl HetznerApi {
    /// An API for `client`; `server_id` `None` asks `metadata_url`.
    pub fn new(client: Client, server_id: Option<u64>, metadata_url: impl Into<String>) -> Self {
        let action_timeout = client.config().action_timeout;
        HetznerApi {
            client,
            server_id: match server_id {
                Some(id) => tokio::sync::OnceCell::new_with(Some(id)),
                None => tokio::sync::OnceCell::new(),
            },
            metadata_url: metadata_url.into(),
            action_timeout,
            last_move_ms: Mutex::new(None),
        }
    }

    /// Reads the token (`token_file`, else `HCLOUD_TOKEN`) and builds the
    /// client of `[hetzner]`.
    pub fn from_config(section: &HetznerSection) -> Result<Self, DriverError> {
        let invalid = |reason: String| DriverError::InvalidConfig {
            section: "hetzner",
            reason,
        };
        let token = match &section.token_file {
            Some(path) => Token::from_file(path),
            None => Token::from_env(),
        }
        .map_err(|error| invalid(error.to_string()))?;
        let mut config = ClientConfig::new(token).with_base_url(section.api_url.clone());
        config.request_timeout = REQUEST_TIMEOUT;
        config.action_timeout = Duration::from_millis(section.action_timeout_ms);
        config.poll_interval = Duration::from_millis(section.poll_interval_ms);
        let client = Client::new(config).map_err(|error| invalid(error.to_string()))?;
        Ok(HetznerApi::new(
            client,
            section.server_id,
            section.metadata_url.clone(),
        ))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This server's id.
    pub async fn server_id(&self) -> Result<u64, mailherd_hcloud::Error> {
        self.server_id
            .get_or_try_init(|| async {
                let id = tokio::time::timeout(
                    METADATA_TIMEOUT,
                    mailherd_hcloud::metadata_instance_id(&self.metadata_url),
                )
                .await
                .map_err(|_| mailherd_hcloud::Error::Config {
                    reason: format!(
                        "the metadata service at {} did not answer within {} ms",
                        self.metadata_url,
                        METADATA_TIMEOUT.as_millis()
                    ),
                })??;
                tracing::info!(
                    server_id = id,
                    "hcloud: this server's id, from the metadata service"
                );
                Ok(id)
            })
            .await
            .copied()
    }

    /// The longest a move of `actions` actions may take, retries included:
    /// what the driver enforces and the pipeline adds to its step timeout.
    pub fn move_budget(&self, actions: u32) -> Duration {
        self.action_timeout * actions + REQUESTS_SLACK
    }

    /// How long the API part of the last finished move took.
    pub fn last_move_ms(&self) -> Option<u64> {
        *self
            .last_move_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the API part of a move under `budget`, records and logs how
    /// long it took, and turns a failure into [`DriverError::Cloud`] for
    /// `resource`. `work` notes each step it completes in the `Vec` it is
    /// given, so an error (or the budget running out) says what was done.
    pub async fn timed_move<F, Fut>(
        &self,
        resource: &str,
        budget: Duration,
        work: F,
    ) -> Result<(), DriverError>
    where
        F: FnOnce(Progress) -> Fut,
        Fut: Future<Output = Result<(), MoveError>>,
    {
        *self
            .last_move_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        let started = Instant::now();
        let progress = Progress::default();
        let result = tokio::time::timeout(budget, work(progress.clone())).await;
        let took_ms = started.elapsed().as_millis() as u64;
        *self
            .last_move_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(took_ms);
        let done = progress.steps();
        let failure = match result {
            Ok(Ok(())) => {
                tracing::info!(resource, api_ms = took_ms, steps = ?done, "hcloud move done");
                return Ok(());
            }
            Ok(Err(error)) => error,
            Err(_) => MoveError {
                step: progress.current().unwrap_or_else(|| "the move".to_string()),
                reason: format!(
                    "the move did not finish within its budget of {} ms",
                    budget.as_millis()
                ),
            },
        };
        tracing::error!(
            resource,
            api_ms = took_ms,
            step = %failure.step,
            reason = %failure.reason,
            done = ?done,
            "hcloud move failed"
        );
        Err(DriverError::Cloud {
            resource: resource.to_string(),
            step: failure.step,
            reason: failure.reason,
            done,
        })
    }
}

/// Why one step of a move failed.
#[derive(Debug)]
pub struct MoveError {
    pub step: String,
    pub reason: String,
}

impl MoveError {
    pub fn new(step: impl Into<String>, reason: impl ToString) -> MoveError {
        MoveError {
            step: step.into(),
            reason: reason.to_string(),
        }
    }
}

/// The steps of a move so far, shared with [`HetznerApi::timed_move`] so
/// that they survive the move's future being dropped at its deadline.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: std::sync::Arc<Mutex<ProgressInner>>,
}

#[derive(Debug, Default)]
struct ProgressInner {
    done: Vec<String>,
    current: Option<String>,
}

impl Progress {
    /// Notes the step now running (named in a timeout).
    pub fn start(&self, step: impl Into<String>) {
        self.lock().current = Some(step.into());
    }

    /// Runs one step: notes it as running and names it in its error.
    pub async fn run<T, E: ToString>(
        &self,
        step: impl Into<String>,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, MoveError> {
        let step = step.into();
        self.start(step.clone());
        work.await.map_err(|error| MoveError::new(step, error))
    }

    /// Notes that `step` succeeded.
    pub fn done(&self, step: impl Into<String>) {
        let mut inner = self.lock();
        inner.done.push(step.into());
        inner.current = None;
    }

    fn steps(&self) -> Vec<String> {
        self.lock().done.clone()
    }

    fn current(&self) -> Option<String> {
        self.lock().current.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
