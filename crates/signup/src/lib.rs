//! mailherd's self-service signup: people make a mailbox themselves.
//!
//! `mailherd signup --config F` serves an HTML form (`GET /`, `POST /`)
//! and a JSON API (`GET /api/token`, `POST /api/signup`). A signup passes,
//! in this order: the per-IP and global rate limits (429), the honeypot
//! field and the form's signed, time-based token (422), the policy —
//! local part syntax, offered domain, password length and known-weak list
//! (422 with every reason) —, the master lookup (503 without a master),
//! and the backend, which enforces the domain quota and answers 201, or
//! 409 when the address exists or the domain is full.
//!
//! Writes always go to the current master: the `mailcow` backend asks
//! the agents' `GET /master` which node that is (and can put its address
//! in the API URL as `{master}`); the `dovecot` backend writes only when
//! this node's own agent says it is the master, since only the master
//! mounts the shared volume its files are on.
//!
//! # Layout
//! - this file: [`Service`] (built from the config) and [`run`];
//! - [`policy`]: what a signup may ask for;
//! - [`limits`]: the rate limits;
//! - [`token`]: the form's signed, time-based token;
//! - [`master`]: which agent is master;
//! - [`backend`]: `mailcow` and `dovecot`;
//! - `web`: the routes, the form's template, the JSON answers.

pub mod backend;
pub mod limits;
pub mod master;
pub mod policy;
pub mod token;
mod web;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mailherd_config::{Config, SignupBackend, SignupSection};
use rand::RngCore;
use serde_json::{json, Value};

use crate::backend::{Backend, BackendError, NewMailbox};
use crate::limits::{RateLimits, Refusal};
use crate::master::{Agent, MasterFinder};
use crate::policy::{Policy, Reason};
use crate::token::Tokens;

pub use web::router;

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    #[error("the config has no [signup] section")]
    NoSection,
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the token key must be at least 16 bytes (it has {len})")]
    ShortKey { path: PathBuf, len: usize },
    #[error("the {what} file {path} is empty")]
    Empty { what: &'static str, path: PathBuf },
    #[error("cannot serve on {address}: {source}")]
    Serve {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// How long the master lookup waits for an agent.
const AGENT_TIMEOUT: Duration = Duration::from_secs(2);

/// The signup service: its rules, its limits and its backend.
pub struct Service {
    policy: Policy,
    limits: Mutex<RateLimits>,
    tokens: Mutex<Tokens>,
    backend: Backend,
    finder: MasterFinder,
    /// This node's own agent: the `dovecot` backend writes only when it is
    /// the master (the shared volume is mounted only there).
    local_agent: Agent,
    quota_mib: u64,
    max_mailboxes_per_domain: u64,
    /// One signup at a time talks to the backend, so that counting a
    /// domain's mailboxes and adding one cannot interleave within this
    /// service (the dovecot backend's file lock covers other processes).
    write_lock: tokio::sync::Mutex<()>,
}

/// The answer to one signup: an HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: u16,
    pub body: Value,
    /// 429 only: when to try again.
    pub retry_after_s: Option<u64>,
}

impl Outcome {
    fn new(status: u16, body: Value) -> Outcome {
        Outcome {
            status,
            body,
            retry_after_s: None,
        }
    }

    fn invalid(reasons: Vec<Reason>) -> Outcome {
        Outcome::new(422, json!({"error": "invalid", "reasons": reasons}))
    }

    fn invalid_field(field: &'static str, message: impl Into<String>) -> Outcome {
        Outcome::invalid(vec![Reason {
            field,
            message: message.into(),
        }])
    }
}

/// What the form and the API send.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct SignupInput {
    pub local_part: String,
    pub domain: String,
    pub password: String,
    pub name: String,
    /// The honeypot: hidden from people, so only bots fill it.
    pub website: String,
    pub token: String,
}

/// The honeypot field's name: one a form-filling bot finds tempting.
pub const HONEYPOT_FIELD: &str = "website";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Service {
    /// Builds the service from a validated config with a `[signup]` section.
    pub fn from_config(config: &Config) -> Result<Service, SignupError> {
        let section = config.signup.as_ref().ok_or(SignupError::NoSection)?;
        let extra_weak = match &section.weak_passwords_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| SignupError::Read {
                    what: "the weak-passwords file",
                    path: path.clone(),
                    source,
                })?
                .lines()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        let key = token_key(section)?;
        let backend = match section.backend {
            SignupBackend::Mailcow => {
                let mailcow = section
                    .mailcow
                    .as_ref()
                    .expect("validated: [signup.mailcow]");
                let api_key = std::fs::read_to_string(&mailcow.api_key_file)
                    .map_err(|source| SignupError::Read {
                        what: "the mailcow API key file",
                        path: mailcow.api_key_file.clone(),
                        source,
                    })?
                    .trim()
                    .to_string();
                if api_key.is_empty() {
                    return Err(SignupError::Empty {
                        what: "mailcow API key",
                        path: mailcow.api_key_file.clone(),
                    });
                }
                Backend::Mailcow(backend::mailcow::MailcowBackend::new(
                    mailcow.api_url.clone(),
                    api_key,
                    Duration::from_millis(mailcow.timeout_ms),
                ))
            }
            SignupBackend::Dovecot => Backend::Dovecot(backend::dovecot::DovecotBackend::new(
                section
                    .dovecot
                    .clone()
                    .expect("validated: [signup.dovecot]"),
            )),
        };
        let agents = if section.agents.is_empty() {
            config
                .members
                .iter()
                .filter(|m| m.role == mailherd_config::MemberRole::Mail)
                .map(|m| Agent {
                    url: format!("http://{}", m.api),
                })
                .collect()
        } else {
            section
                .agents
                .iter()
                .map(|url| Agent {
                    url: url.trim_end_matches('/').to_string(),
                })
                .collect()
        };
        Ok(Service {
            policy: Policy::new(
                section.domains.clone(),
                section.min_password_length,
                &extra_weak,
            ),
            limits: Mutex::new(RateLimits::new(
                section.per_ip_limit,
                section.global_limit,
                Duration::from_secs(section.rate_window_s),
            )),
            tokens: Mutex::new(Tokens::new(
                key,
                section.token_min_age_s,
                section.token_max_age_s,
            )),
            backend,
            finder: MasterFinder::new(agents, AGENT_TIMEOUT),
            local_agent: Agent {
                url: format!("http://{}", config.me().api),
            },
            quota_mib: section.quota_mib,
            max_mailboxes_per_domain: section.max_mailboxes_per_domain,
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn domains(&self) -> &[String] {
        &self.policy.domains
    }

    pub fn min_password_length(&self) -> usize {
        self.policy.min_password_length
    }

    /// A fresh form token and how many seconds it must age before use.
    pub fn issue_token(&self) -> (String, u64) {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        (tokens.issue(unix_now()), tokens.min_age_s())
    }

    /// One signup from `client`, through every check, to the backend.
    pub async fn signup(&self, client: IpAddr, input: SignupInput) -> Outcome {
        let limited = self
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .attempt(client, Instant::now());
        if let Err(refusal) = limited {
            let retry_after_s = refusal.retry_after().as_secs().max(1);
            let scope = match refusal {
                Refusal::PerIp { .. } => "this address",
                Refusal::Global { .. } => "everyone",
            };
            tracing::warn!(%client, scope, "signup rate-limited");
            return Outcome {
                status: 429,
                body: json!({
                    "error": "rate_limited",
                    "message": format!("too many signups from {scope}; try again in {retry_after_s} s"),
                    "retry_after_s": retry_after_s,
                }),
                retry_after_s: Some(retry_after_s),
            };
        }
        if !input.website.is_empty() {
            tracing::warn!(%client, "signup refused: honeypot field filled");
            return Outcome::invalid_field(HONEYPOT_FIELD, "must be left empty");
        }
        let redeemed = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .redeem(&input.token, unix_now());
        if let Err(error) = redeemed {
            return Outcome::invalid_field("token", error.to_string());
        }
        let account = match self.policy.check(&policy::Request {
            local_part: input.local_part,
            domain: input.domain,
            password: input.password,
            name: input.name,
        }) {
            Ok(account) => account,
            Err(reasons) => return Outcome::invalid(reasons),
        };
        let new = NewMailbox {
            account,
            quota_mib: self.quota_mib,
            max_mailboxes_per_domain: self.max_mailboxes_per_domain,
        };
        let _one_at_a_time = self.write_lock.lock().await;
        let result = self.create(new).await;
        match result {
            Ok(address) => {
                tracing::info!(%client, %address, backend = self.backend.name(), "signup");
                Outcome::new(201, json!({"address": address}))
            }
            Err(BackendError::Exists { address }) => Outcome::new(
                409,
                json!({"error": "exists", "address": address, "message": format!("{address} already exists")}),
            ),
            Err(error @ BackendError::DomainFull { .. }) => Outcome::new(
                409,
                json!({"error": "domain_full", "message": error.to_string()}),
            ),
            Err(BackendError::Refused { field, message }) => Outcome::invalid_field(field, message),
            Err(BackendError::NotMaster(message)) => {
                tracing::warn!(%message, "signup refused: no master here");
                Outcome::new(503, json!({"error": "no_master", "message": message}))
            }
            Err(BackendError::Failed(message)) => {
                tracing::error!(%message, backend = self.backend.name(), "signup failed in the backend");
                Outcome::new(
                    502,
                    json!({"error": "backend", "message": "the mail server could not make the mailbox; try again later"}),
                )
            }
        }
    }

    /// Finds the master, then makes the mailbox there.
    async fn create(&self, new: NewMailbox) -> Result<String, BackendError> {
        match &self.backend {
            Backend::Mailcow(mailcow) => {
                let master = self
                    .finder
                    .find()
                    .await
                    .map_err(|error| BackendError::NotMaster(error.to_string()))?;
                mailcow.create(&mailcow.base_url(master.host()), &new).await
            }
            Backend::Dovecot(_) => {
                match self.finder.is_master(&self.local_agent).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let elsewhere = match self.finder.find().await {
                            Ok(master) => format!("the master is {}", master.url),
                            Err(error) => error.to_string(),
                        };
                        return Err(BackendError::NotMaster(format!(
                            "this node ({}) is not the master; {elsewhere}",
                            self.local_agent.url
                        )));
                    }
                    Err(error) => {
                        return Err(BackendError::NotMaster(format!(
                            "cannot ask this node's agent whether it is master: {error}"
                        )))
                    }
                }
                let Backend::Dovecot(dovecot) = &self.backend else {
                    unreachable!("matched above")
                };
                // Blocking file I/O, a file lock and postmap: off the async
                // threads.
                let dovecot = dovecot.clone();
                tokio::task::spawn_blocking(move || dovecot.create(&new))
                    .await
                    .map_err(|error| {
                        BackendError::Failed(format!("the file writer failed: {error}"))
                    })?
            }
        }
    }
}

/// The token key from `token_key_file`, or a random one.
fn token_key(section: &SignupSection) -> Result<Vec<u8>, SignupError> {
    match &section.token_key_file {
        Some(path) => {
            let key = std::fs::read(path).map_err(|source| SignupError::Read {
                what: "the token key file",
                path: path.clone(),
                source,
            })?;
            let key = key.trim_ascii().to_vec();
            if key.len() < 16 {
                return Err(SignupError::ShortKey {
                    path: path.clone(),
                    len: key.len(),
                });
            }
            Ok(key)
        }
        None => {
            let mut key = vec![0u8; 32];
            rand::rng().fill_bytes(&mut key);
            Ok(key)
        }
    }
}

/// Serves the signup service on `listener` until `shutdown` resolves;
/// requests in flight finish first.
pub async fn run(
    service: Service,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SignupError> {
    let address = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    tracing::info!(%address, backend = service.backend.name(), "signup service listening");
    let app = router(Arc::new(service));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|source| SignupError::Serve { address, source })
}
